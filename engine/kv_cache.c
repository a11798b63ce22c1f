/* engine/kv_cache.c: allocation of the KV cache. Keys and values of position p of layer l live in
 * row p of kv->k[l] / kv->v[l]; the forward pass appends with be->set_rows and attention reads. */
#include <stdio.h>
#include <stdlib.h>

#include "engine/kv_cache.h"

int kv_cache_init(struct kv_cache *kv, struct backend *be, int n_layers, int n_ctx, int kv_dim,
                  enum qtype type, struct err *e) {
    memset(kv, 0, sizeof *kv);
    if (type != QT_F32 && (kv_dim % qtype_traits[type].group != 0 || !qtype_traits[type].quantize_row))
        return ERR(e, ERR_ARG, "KV cache type %s needs kv_dim (%d) to be a multiple of %d",
                   qtype_traits[type].name, kv_dim, qtype_traits[type].group);
    kv->n_layers = n_layers;
    kv->n_ctx = n_ctx;
    kv->kv_dim = kv_dim;
    kv->type = type;
    kv->k = calloc((size_t)n_layers, sizeof *kv->k);
    kv->v = calloc((size_t)n_layers, sizeof *kv->v);
    if (!kv->k || !kv->v) return ERR(e, ERR_OOM, "out of memory");
    const size_t layer_bytes = qtype_row_bytes(type, kv_dim) * (size_t)n_ctx;
    for (int l = 0; l < n_layers; l++) {
        struct tensor *ts[2] = {&kv->k[l], &kv->v[l]};
        for (int i = 0; i < 2; i++) {
            ts[i]->type = type;
            ts[i]->ne[0] = kv_dim;
            ts[i]->ne[1] = n_ctx;
            ts[i]->nbytes = layer_bytes;
            ts[i]->name = i ? "v_cache" : "k_cache";
            ts[i]->data = be->ops->alloc(be, layer_bytes);
            if (!ts[i]->data) {
                kv_cache_free(kv, be);
                return ERR(e, ERR_OOM, "KV cache: cannot allocate %.1f MiB (n_ctx=%d); try a smaller -c",
                           2.0 * n_layers * layer_bytes / 1048576.0, n_ctx);
            }
            kv->nbytes += layer_bytes;
        }
    }
    return ERR_OK;
}

void kv_cache_free(struct kv_cache *kv, struct backend *be) {
    for (int l = 0; l < kv->n_layers; l++) {
        if (kv->k && kv->k[l].data) be->ops->free(be, kv->k[l].data);
        if (kv->v && kv->v[l].data) be->ops->free(be, kv->v[l].data);
    }
    free(kv->k);
    free(kv->v);
    memset(kv, 0, sizeof *kv);
}
