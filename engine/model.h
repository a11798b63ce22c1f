/* engine/model.h: the engine's internal state: weights on a backend, KV cache, activations.
 * Shapes use struct tensor's convention: ne[0] = row length, ne[1] = rows. */
#ifndef ENGINE_MODEL_H
#define ENGINE_MODEL_H

#include "engine/engine.h"
#include "engine/kv_cache.h"

#define ENGINE_MAX_BATCH 512   // prefill processes at most this many tokens per pass

struct layer_weights {
    struct tensor attn_norm;           // (dim)
    struct tensor wq, wk, wv, wo;      // wq (dim -> n_heads*hd), wk/wv (dim -> kv_dim), wo (q_dim -> dim)
    struct tensor ffn_norm;            // (dim)
    struct tensor w1, w2, w3;          // gate (dim -> hidden), down (hidden -> dim), up (dim -> hidden)
};

struct weights {
    struct tensor token_embd;          // (dim, vocab)
    struct tensor output_norm;         // (dim)
    struct tensor output;              // (dim, vocab): may share data with token_embd (tied)
    struct layer_weights *layers;      // n_layers
};

/* Activations for up to ENGINE_MAX_BATCH tokens, all f32 on the backend. */
struct run_state {
    struct tensor x, xb, xb2;          // (t, dim) residual stream and scratch
    struct tensor q, k, v, att;        // (t, q_dim), (t, kv_dim), (t, kv_dim), (t, q_dim)
    struct tensor hb, hb2;             // (t, hidden_dim)
    struct tensor logits;              // (t_logits, vocab)
    int logits_rows;                   // rows allocated in logits
};

struct engine {
    struct model_file mf;
    struct model_config cfg;
    struct tokenizer *tok;
    struct backend *be;
    struct weights w;
    struct kv_cache *kv;               // n_seq caches: one per parallel sequence (-np)
    int n_seq;
    struct run_state s;
    int n_ctx;
    void **allocs;                     // backend allocations to free
    void **save_bufs;                  // natural-layout copies of X8 weights made for engine_tensor_views
    int n_save_bufs;
    int n_allocs, cap_allocs;
    size_t weight_bytes, weight_bytes_per_token, scratch_bytes;
    double load_seconds;
    float *host_logits;                // staging for download when the backend is not host memory
    engine_matmul_observer observe;    // calibration hook (NULL: none), see engine.h
    void *observe_ctx;
};

/* Rows [row0, row0 + n) of a batch belong to sequence seq (its KV cache) at positions pos .. pos+n-1. */
struct seq_span { int seq, row0, n, pos; };

/* engine/forward.c: one pass over n <= ENGINE_MAX_BATCH tokens made of n_sp spans (in row order,
 * covering 0..n); logits rows written to s.logits for the last token (or every token when
 * all_logits). Returns rows of logits produced. */
int forward_batch(struct engine *en, const int32_t *tokens, int n, const struct seq_span *sp, int n_sp,
                  bool all_logits);

#endif
