/* engine/kv_cache.h: per-layer key/value cache on the backend, (n_ctx, kv_dim) per layer. */
#ifndef ENGINE_KV_CACHE_H
#define ENGINE_KV_CACHE_H

#include "kernels/backend.h"

struct kv_cache {
    int n_layers, n_ctx, kv_dim;
    enum qtype type;       // f32 (default) or f16
    struct tensor *k, *v;  // n_layers each: ne[0] = kv_dim, ne[1] = n_ctx
    size_t nbytes;
};

int kv_cache_init(struct kv_cache *kv, struct backend *be, int n_layers, int n_ctx, int kv_dim,
                  enum qtype type, struct err *e);
void kv_cache_free(struct kv_cache *kv, struct backend *be);

#endif
