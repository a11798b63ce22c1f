/* engine/kv_cache.c: allocation of the KV cache, and the context shift. Keys and values of position
 * p of layer l live in row p of kv->k[l] / kv->v[l]; the forward pass appends with be->set_rows and
 * attention reads (dequantizing rows of quantized caches through the traits table). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/kv_cache.h"

bool kv_cache_type_parse(const char *name, enum qtype *out) {
    static const struct { const char *name; enum qtype t; } types[] = {
        {"f32", QT_F32}, {"f16", QT_F16}, {"q8_0", QT_GGML_Q8_0}, {"q4_0", QT_GGML_Q4_0}};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (name && strcmp(name, types[i].name) == 0) { *out = types[i].t; return true; }
    return false;
}

int kv_cache_init(struct kv_cache *kv, struct backend *be, int n_layers, int n_ctx, int n_kv_heads,
                  int head_dim, enum qtype type_k, enum qtype type_v, struct err *e) {
    memset(kv, 0, sizeof *kv);
    const int kv_dim = n_kv_heads * head_dim;
    const enum qtype types[2] = {type_k, type_v};
    for (int i = 0; i < 2; i++) {
        const enum qtype t = types[i];
        if (t != QT_F32 && (head_dim % qtype_traits[t].group != 0 || !qtype_traits[t].quantize_row))
            return ERR(e, ERR_ARG, "KV cache type %s needs head_dim (%d) to be a multiple of %d",
                       qtype_traits[t].name, head_dim, qtype_traits[t].group);
        if (t != QT_F32 && !be->host_memory)
            return ERR(e, ERR_UNSUPPORTED, "KV cache type %s: backend %s supports only f32 caches",
                       qtype_traits[t].name, be->ops->name);
    }
    kv->n_layers = n_layers;
    kv->n_ctx = n_ctx;
    kv->kv_dim = kv_dim;
    kv->head_dim = head_dim;
    kv->type_k = type_k;
    kv->type_v = type_v;
    kv->k = calloc((size_t)n_layers, sizeof *kv->k);
    kv->v = calloc((size_t)n_layers, sizeof *kv->v);
    if (!kv->k || !kv->v) { kv_cache_free(kv, be); return ERR(e, ERR_OOM, "out of memory"); }
    for (int l = 0; l < n_layers; l++) {
        struct tensor *ts[2] = {&kv->k[l], &kv->v[l]};
        for (int i = 0; i < 2; i++) {
            const size_t layer_bytes = qtype_row_bytes(types[i], kv_dim) * (size_t)n_ctx;
            ts[i]->type = types[i];
            ts[i]->ne[0] = kv_dim;
            ts[i]->ne[1] = n_ctx;
            ts[i]->nbytes = layer_bytes;
            ts[i]->name = i ? "v_cache" : "k_cache";
            ts[i]->data = be->ops->alloc(be, layer_bytes);
            if (!ts[i]->data) {
                kv_cache_free(kv, be);
                return ERR(e, ERR_OOM, "KV cache: cannot allocate %.1f MiB per layer (n_ctx=%d); try a smaller -c",
                           layer_bytes / 1048576.0, n_ctx);
            }
            // Host caches are zeroed (first-touched) here, not on the first write of each page during
            // decode: a page fault per 4 KiB of new rows made set_rows ~5.6 us per call (11 us per
            // layer per token, ~1.3% of TinyLlama q4 decode; llama.cpp clears its KV buffer too).
            if (be->host_memory) memset(ts[i]->data, 0, layer_bytes);
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

int kv_cache_shift(struct kv_cache *kv, struct backend *be, int keep, int n_discard, int n_past,
                   float rope_theta, int rope_style, struct err *e) {
    if (!be->host_memory) return ERR(e, ERR_UNSUPPORTED, "context shift: backend %s keeps the cache off the host", be->ops->name);
    if (keep < 0 || n_discard <= 0 || keep + n_discard > n_past || n_past > kv->n_ctx)
        return ERR(e, ERR_ARG, "context shift: bad range keep=%d discard=%d n_past=%d", keep, n_discard, n_past);
    const int n_move = n_past - keep - n_discard, kv_dim = kv->kv_dim;
    float *row = malloc((size_t)kv_dim * sizeof *row);
    if (!row) return ERR(e, ERR_OOM, "out of memory");
    struct tensor t = {.type = QT_F32, .ne = {kv_dim, 1}, .data = row, .nbytes = (size_t)kv_dim * sizeof *row,
                       .name = "k_shift"};
    const size_t rbk = qtype_row_bytes(kv->type_k, kv_dim), rbv = qtype_row_bytes(kv->type_v, kv_dim);
    for (int l = 0; l < kv->n_layers; l++) {
        uint8_t *k = kv->k[l].data, *v = kv->v[l].data;
        for (int i = 0; i < n_move; i++) {   // ascending: the destination row never overlaps a later source
            const int src = keep + n_discard + i, dst = keep + i;
            qtype_traits[kv->type_k].dequantize_row(row, k + (size_t)src * rbk, kv_dim);
            be->ops->rope(be, &t, kv_dim / kv->head_dim, kv->head_dim, -n_discard, rope_theta, rope_style);
            be->ops->set_rows(be, &kv->k[l], dst, &t);
        }
        memmove(v + (size_t)keep * rbv, v + (size_t)(keep + n_discard) * rbv, (size_t)n_move * rbv);
    }
    free(row);
    return be->ops->sync(be, e);
}
