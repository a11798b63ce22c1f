/* engine/sampler.h: turns logits into the next token. llama.cpp's sampler chain and defaults:
 * penalties (repeat/presence/frequency over the last n) -> top-k -> tail-free -> typical -> top-p ->
 * min-p -> temperature -> draw (or greedy at temp <= 0; or mirostat 1/2 instead of the truncations).
 * Deterministic for a given seed. Test: tests/test_sampler.c */
#ifndef ENGINE_SAMPLER_H
#define ENGINE_SAMPLER_H

#include <stdbool.h>
#include <stdint.h>

struct sampler_params {
    float temp;             // 0.8; <= 0 means greedy
    int top_k;              // 40; <= 0 disables
    float top_p;            // 0.95; 1 disables
    float min_p;            // 0.05; 0 disables
    float typical_p;        // 1.0 disables
    float tfs_z;            // 1.0 disables
    float repeat_penalty;   // 1.0 disables (llama.cpp's current default; 1.1 in older versions)
    int repeat_last_n;      // 64; 0 off, -1 whole history
    float presence_penalty; // 0
    float frequency_penalty;// 0
    int mirostat;           // 0 off, 1 or 2
    float mirostat_tau;     // 5.0 target surprise (bits)
    float mirostat_eta;     // 0.1 learning rate
    uint64_t seed;          // RNG seed
};
void sampler_params_default(struct sampler_params *p);

struct sampler;
struct sampler *sampler_create(const struct sampler_params *p, int n_vocab);  // NULL on OOM
void sampler_free(struct sampler *s);
/* Record a token as part of the history (prompt tokens too) for the penalties. */
void sampler_accept(struct sampler *s, int32_t token);
/* Sample from logits[n_vocab] (not modified). */
int32_t sampler_sample(struct sampler *s, const float *logits);
/* The candidates that survive penalties, top-k, tail-free, typical, top-p and min-p, with their
 * probabilities after temperature (temp > 0, mirostat off), in descending probability order.
 * Writes at most max of them; returns how many survive. For tests and --verbose inspection. */
int sampler_survivors(struct sampler *s, const float *logits, int32_t *ids, float *probs, int max);
/* Mirostat's running mu (for tests). */
float sampler_mirostat_mu(const struct sampler *s);
/* Uniform [0,1) from the sampler's RNG (xorshift64*), exposed for tests. */
float sampler_rand(struct sampler *s);

#endif
