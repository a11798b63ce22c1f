/* engine/kv_cache.h: per-layer key/value cache on the backend, (n_ctx, kv_dim) per layer.
 * Keys and values may have different types (-ctk / -ctv): f32, f16, q8_0 or q4_0.
 * Test: tests/test_generation.c (types, context shift). */
#ifndef ENGINE_KV_CACHE_H
#define ENGINE_KV_CACHE_H

#include "kernels/backend.h"

struct kv_cache {
    int n_layers, n_ctx, kv_dim, head_dim;
    enum qtype type_k, type_v;   // f32 (default), f16, q8_0, q4_0
    struct tensor *k, *v;        // n_layers each: ne[0] = kv_dim, ne[1] = n_ctx
    size_t nbytes;
};

/* The cache types llama.cpp's -ctk/-ctv accept: "f32", "f16", "q8_0", "q4_0". false if unknown. */
bool kv_cache_type_parse(const char *name, enum qtype *out);

/* Quantized types need head_dim to be a multiple of their group (32 for q8_0 / q4_0): attention
 * dequantizes one head's slice of a row at a time. */
int kv_cache_init(struct kv_cache *kv, struct backend *be, int n_layers, int n_ctx, int n_kv_heads,
                  int head_dim, enum qtype type_k, enum qtype type_v, struct err *e);
void kv_cache_free(struct kv_cache *kv, struct backend *be);

/* Context shift: drops positions [keep, keep + n_discard) and moves [keep + n_discard, n_past)
 * down by n_discard. Keys are stored after RoPE, so each moved key is re-rotated by -n_discard
 * positions with the backend's rope op (rotations compose: R(p - d) = R(-d) R(p)); values are
 * position-free and only move. Host-memory backends only (ERR_UNSUPPORTED otherwise). */
int kv_cache_shift(struct kv_cache *kv, struct backend *be, int keep, int n_discard, int n_past,
                   float rope_theta, int rope_style, struct err *e);

#endif
