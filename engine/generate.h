/* engine/generate.h: the generation loop shared by ./infer (single, -np, -md, -i) and its grid
 * runner: feed tokens (prefill), sample, decode, stream text, shift the context when it fills.
 * A struct gen follows one sequence of an engine: the token ids in its KV cache, the sampler,
 * the pending logits. Tests: tests/test_generation.c. Flags: docs/GENERATION.md. */
#ifndef ENGINE_GENERATE_H
#define ENGINE_GENERATE_H

#include <signal.h>

#include "engine/engine.h"
#include "engine/sampler.h"
#include "engine/tokenizer.h"

struct gen_params {
    struct sampler_params sp;
    int n_predict;     // tokens to generate: 128; -1 = until end of sequence (shifting the context as
                       // needed), -2 = until the context is full
    int n_keep;        // --keep: prompt tokens kept at a context shift (BOS always); -1 = whole prompt
    bool ctx_shift;    // shift when the context fills (default); false = stop there
    bool ignore_eos;   // do not stop at end-of-generation tokens
};
void gen_params_default(struct gen_params *p);

struct gen_stats {
    int n_prompt;            // tokens fed (prompt and later turns)
    int n_gen;               // tokens sampled and emitted
    int n_eval;              // decode passes (one per generated token but the last)
    int n_shift;             // context shifts
    int n_drafted, n_accepted;   // speculative decoding
    double t_prompt_ms, t_eval_ms;
    uint64_t hash;           // FNV-1a 64 of the emitted text
    bool eog;                // stopped at an end-of-generation token
    bool interrupted;        // *stop was set
    bool ctx_full;           // stopped because the context is full (shift off or impossible)
};

/* Called with each piece of generated text (complete UTF-8 characters). */
typedef void (*gen_emit_fn)(void *user, const char *text, size_t len);

struct gen {
    struct engine *en;
    int seq;                 // sequence of en (its KV cache)
    struct gen_params p;
    struct sampler *smp;
    int32_t *tokens;         // the ids held in the KV cache, positions 0 .. n_past-1
    int n_past, n_ctx, n_vocab;
    int n_keep;              // resolved at the first gen_feed: tokens a shift keeps
    bool keep_set;
    float *logits;           // next-token logits (valid once anything was fed)
    struct detok dt;
    gen_emit_fn emit;
    void *user;
};

int gen_init(struct gen *g, struct engine *en, int seq, const struct gen_params *p, gen_emit_fn emit,
             void *user, struct err *e);
void gen_free(struct gen *g);
/* Appends n tokens to the context (prefill) and to the sampler's history, shifting first when they
 * do not fit. The first call resolves --keep against these tokens (the prompt). */
int gen_feed(struct gen *g, const int32_t *toks, int n, struct gen_stats *st, struct err *e);
/* One context shift: keep n_keep tokens, discard half of the rest (llama.cpp's rule). */
int gen_shift(struct gen *g, struct gen_stats *st, struct err *e);
/* Samples, emits and decodes until n_predict tokens, an end-of-generation token (not fed), a full
 * context (shift off), or *stop (may be NULL). */
int gen_run(struct gen *g, volatile sig_atomic_t *stop, struct gen_stats *st, struct err *e);
/* Speculative decoding: draft (an engine with the same vocabulary) proposes n_draft tokens greedily,
 * the target verifies them in one batched pass, the longest prefix the target's own sampler agrees
 * with is kept. Same stopping rules as gen_run; no context shift (stops when full). */
int gen_run_speculative(struct gen *g, struct engine *draft, int n_draft, volatile sig_atomic_t *stop,
                        struct gen_stats *st, struct err *e);
/* -np: gens[0..n) (sequences of one engine, already fed their prompts) advance together, one
 * batched decode per step; each gen emits to its own callback. Stats are summed into st. */
int gen_run_parallel(struct gen *gens, int n, volatile sig_atomic_t *stop, struct gen_stats *st,
                     struct err *e);

bool gen_is_eog(const struct vocab *v, int32_t tok);
uint64_t gen_hash(uint64_t h, const void *data, size_t len);   // FNV-1a 64; start with GEN_HASH_INIT
#define GEN_HASH_INIT 0xcbf29ce484222325ULL

#endif
