/* loaders/imatrix.c: importance-matrix files (loaders/imatrix.h). */
#include "loaders/imatrix.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "loaders/gguf_write.h"
#include "loaders/loader.h"

/* The weight whose input an entry shares in a Llama block (attn_k/v -> attn_q, ffn_up ->
 * ffn_gate), written into out; false if none. */
static bool shared_input_owner(const char *name, char *out, size_t cap) {
    static const char *const pairs[][2] = {{".attn_k.weight", ".attn_q.weight"},
                                           {".attn_v.weight", ".attn_q.weight"},
                                           {".ffn_up.weight", ".ffn_gate.weight"}};
    size_t ln = strlen(name);
    for (size_t k = 0; k < sizeof pairs / sizeof pairs[0]; k++) {
        size_t ls = strlen(pairs[k][0]);
        if (ln > ls && strcmp(name + ln - ls, pairs[k][0]) == 0 && ln - ls + strlen(pairs[k][1]) < cap) {
            memcpy(out, name, ln - ls);
            strcpy(out + ln - ls, pairs[k][1]);
            return true;
        }
    }
    return false;
}

static bool ends_with(const char *s, const char *suf, size_t *stem) {
    size_t a = strlen(s), b = strlen(suf);
    if (a <= b || strcmp(s + a - b, suf) != 0) return false;
    *stem = a - b;
    return true;
}

static int load_gguf(struct calib *c, const char *path, struct err *e) {
    struct model_file mf;
    int rc = gguf_open_tensors(&mf, path, e);
    if (rc) return rc;
    // pass 1: sums and counts
    for (int i = 0; i < mf.n_tensors && !rc; i++) {
        const struct tensor_view *t = &mf.tensors[i];
        size_t stem;
        if (!ends_with(t->name, ".in_sum2", &stem)) continue;
        char name[96], cname[112];
        memcpy(name, t->name, stem);
        name[stem] = 0;
        snprintf(cname, sizeof cname, "%s.counts", name);
        const struct tensor_view *ct = model_file_find(&mf, cname);
        if (!ct) { rc = ERR(e, ERR_FORMAT, "%s: %s has no %s", path, t->name, cname); break; }
        if (t->type != QT_F32 || ct->type != QT_F32) { rc = ERR(e, ERR_FORMAT, "%s: %s: sums and counts must be f32", path, name); break; }
        const int64_t ncount = ct->ne[0] * ct->ne[1] * ct->ne[2] * ct->ne[3];
        if (ncount != 1 || t->ne[1] != 1 || t->ne[2] != 1 || t->ne[3] != 1) {
            rc = ERR(e, ERR_UNSUPPORTED, "%s: %s holds %lld matrices (MoE experts are not supported)", path, name, (long long)ncount);
            break;
        }
        float cnt;
        memcpy(&cnt, ct->data, 4);
        if (!(cnt >= 1) || !isfinite(cnt)) { rc = ERR(e, ERR_FORMAT, "%s: %s: count %g", path, name, cnt); break; }
        int k = calib_add(c, name, t->ne[0], false, e);
        if (k < 0) { rc = e->code; break; }
        struct calib_entry *ce = &c->e[k];
        ce->count = cnt;
        const float *s = t->data;
        for (int64_t j = 0; j < ce->n; j++) {
            float v;
            memcpy(&v, s + j, 4);
            if (!(v >= 0) || !isfinite(v)) { rc = ERR(e, ERR_FORMAT, "%s: %s: sum of squares [%lld] = %g", path, name, (long long)j, v); break; }
            ce->x2[j] = (float)(v / cnt);
        }
    }
    // pass 2: Gram matrices (ours)
    for (int i = 0; i < mf.n_tensors && !rc; i++) {
        const struct tensor_view *t = &mf.tensors[i];
        size_t stem;
        if (!ends_with(t->name, ".in_xtx", &stem)) continue;
        char name[96];
        memcpy(name, t->name, stem);
        name[stem] = 0;
        const struct calib_entry *cf = calib_find(c, name);
        if (!cf) { rc = ERR(e, ERR_FORMAT, "%s: %s has no matching .in_sum2", path, t->name); break; }
        struct calib_entry *ce = (struct calib_entry *)cf;
        const int64_t want = calib_tri_row(ce->n, ce->n);
        if (t->type != QT_F32 || t->n_dims != 1 || t->ne[0] != want) {
            rc = ERR(e, ERR_FORMAT, "%s: %s: expected f32 [%lld] (n = %lld)", path, t->name, (long long)want, (long long)ce->n);
            break;
        }
        ce->xtx = malloc((size_t)want * sizeof(float));
        if (!ce->xtx) { rc = ERR(e, ERR_OOM, "%s: out of memory for %s", path, t->name); break; }
        memcpy(ce->xtx, t->data, (size_t)want * sizeof(float));
        ce->xtx_count = ce->count;
        const float inv = (float)(1.0 / ce->count);
        for (int64_t j = 0; j < want; j++) {
            if (!isfinite(ce->xtx[j])) { rc = ERR(e, ERR_FORMAT, "%s: %s: element %lld is not finite", path, t->name, (long long)j); break; }
            ce->xtx[j] *= inv;
        }
        // a Gram matrix's diagonal is the sum of squares: a file mixing two runs is caught here
        for (int64_t j = 0; j < ce->n && !rc; j++) {
            float dj = ce->xtx[calib_tri_row(ce->n, j)];
            if (!(fabsf(dj - ce->x2[j]) <= 1e-3f * (dj + ce->x2[j]) + 1e-30f))
                rc = ERR(e, ERR_FORMAT, "%s: %s: diagonal %lld (%g) disagrees with in_sum2 (%g)", path, t->name, (long long)j, dj, ce->x2[j]);
        }
    }
    if (!rc)
        for (int i = 0; i < c->n; i++) {
            char owner[96];
            if (!c->e[i].xtx && shared_input_owner(c->e[i].name, owner, sizeof owner)) {
                const struct calib_entry *o = calib_find(c, owner);
                if (o && o->xtx && o->n == c->e[i].n) c->e[i].xtx_of = (int)(o - c->e);
            }
        }
    if (!rc && c->n == 0) rc = ERR(e, ERR_FORMAT, "%s: no .in_sum2 tensors (not an imatrix file)", path);
    model_file_close(&mf);
    return rc;
}

static int rd(FILE *f, void *p, size_t n) { return fread(p, 1, n, f) == n ? 0 : -1; }

static int load_dat(struct calib *c, const char *path, struct err *e) {
    FILE *f = fopen(path, "rb");
    if (!f) return ERR(e, ERR_IO, "%s: %s", path, strerror(errno));
    int rc = ERR_OK;
    int32_t n_entries;
    if (rd(f, &n_entries, 4) || n_entries <= 0 || n_entries > 65536) {
        rc = ERR(e, ERR_FORMAT, "%s: not an imatrix file (entry count %d)", path, n_entries);
        goto out;
    }
    for (int32_t k = 0; k < n_entries; k++) {
        int32_t len, ncall, nval;
        char name[96];
        if (rd(f, &len, 4) || len <= 0 || len >= (int32_t)sizeof name || rd(f, name, (size_t)len)) {
            rc = ERR(e, ERR_FORMAT, "%s: entry %d: bad or truncated name", path, k);
            goto out;
        }
        name[len] = 0;
        if (memchr(name, 0, (size_t)len)) { rc = ERR(e, ERR_FORMAT, "%s: entry %d: NUL in name", path, k); goto out; }
        if (rd(f, &ncall, 4) || rd(f, &nval, 4) || ncall < 0 || nval <= 0 || nval > (1 << 20)) {
            rc = ERR(e, ERR_FORMAT, "%s: %s: bad call/value counts", path, name);
            goto out;
        }
        int i = calib_add(c, name, nval, false, e);
        if (i < 0) { rc = e->code; goto out; }
        struct calib_entry *ce = &c->e[i];
        if (rd(f, ce->x2, (size_t)nval * 4)) { rc = ERR(e, ERR_FORMAT, "%s: %s: truncated values", path, name); goto out; }
        ce->count = ncall > 0 ? ncall : 1;
        for (int32_t j = 0; j < nval; j++) {
            if (!(ce->x2[j] >= 0) || !isfinite(ce->x2[j])) { rc = ERR(e, ERR_FORMAT, "%s: %s: value %d = %g", path, name, j, ce->x2[j]); goto out; }
            if (ncall > 0) ce->x2[j] /= (float)ncall;
        }
    }
    int32_t chunks, dlen;   // optional trailer
    if (!rd(f, &chunks, 4)) {
        c->chunks = chunks > 0 ? chunks : 0;
        if (!rd(f, &dlen, 4) && dlen > 0 && dlen < (int32_t)sizeof c->dataset && !rd(f, c->dataset, (size_t)dlen))
            c->dataset[dlen] = 0;
        else c->dataset[0] = 0;
    }
out:
    fclose(f);
    return rc;
}

int imatrix_load(struct calib *c, const char *path, struct err *e) {
    memset(c, 0, sizeof *c);
    FILE *f = fopen(path, "rb");
    if (!f) return ERR(e, ERR_IO, "%s: %s", path, strerror(errno));
    char magic[4] = {0};
    size_t got = fread(magic, 1, 4, f);
    fclose(f);
    int rc = got == 4 && memcmp(magic, "GGUF", 4) == 0 ? load_gguf(c, path, e) : load_dat(c, path, e);
    if (rc) calib_free(c);
    return rc;
}

int imatrix_save(const struct calib *c, const char *path, struct err *e) {
    struct gguf_writer *w = gguf_writer_create();
    if (!w) return ERR(e, ERR_OOM, "out of memory");
    int rc = ERR_OK;
    float **bufs = calloc((size_t)c->n * 3 + 1, sizeof *bufs);
    int nb = 0;
    char *tmp = malloc(strlen(path) + 32);
    if (!bufs || !tmp) { rc = ERR(e, ERR_OOM, "out of memory"); goto out; }
    gguf_writer_set_str(w, "general.type", "imatrix");
    const char *ds = c->dataset[0] ? c->dataset : "unknown";
    gguf_writer_set_arr_str(w, "imatrix.datasets", &ds, NULL, 1);
    gguf_writer_set_u32(w, "imatrix.chunk_count", (uint32_t)c->chunks);
    gguf_writer_set_u32(w, "imatrix.chunk_size", (uint32_t)c->chunk_size);
    for (int i = 0; i < c->n && !rc; i++) {
        const struct calib_entry *ce = &c->e[i];
        float *s = malloc((size_t)ce->n * sizeof *s), *cnt = malloc(sizeof *cnt);
        bufs[nb++] = s, bufs[nb++] = cnt;
        if (!s || !cnt) { rc = ERR(e, ERR_OOM, "out of memory"); break; }
        for (int64_t j = 0; j < ce->n; j++) s[j] = (float)((double)ce->x2[j] * ce->count);
        *cnt = (float)ce->count;
        char name[128];
        const int64_t ne_s[2] = {ce->n, 1}, ne_c[2] = {1, 1};
        snprintf(name, sizeof name, "%s.in_sum2", ce->name);
        rc = gguf_writer_add_tensor(w, name, QT_F32, 2, ne_s, s, (size_t)ce->n * 4);
        snprintf(name, sizeof name, "%s.counts", ce->name);
        if (!rc) rc = gguf_writer_add_tensor(w, name, QT_F32, 2, ne_c, cnt, 4);
        if (!rc && ce->xtx) {
            const int64_t m = calib_tri_row(ce->n, ce->n);
            float *x = malloc((size_t)m * sizeof *x);
            bufs[nb++] = x;
            if (!x) { rc = ERR(e, ERR_OOM, "out of memory for %s's Gram matrix", ce->name); break; }
            for (int64_t j = 0; j < m; j++) x[j] = (float)((double)ce->xtx[j] * ce->count);
            snprintf(name, sizeof name, "%s.in_xtx", ce->name);
            rc = gguf_writer_add_tensor(w, name, QT_F32, 1, &m, x, (size_t)m * 4);
        }
        if (rc) rc = ERR(e, rc, "cannot add %s to the imatrix file", ce->name);
    }
    if (!rc) {
        sprintf(tmp, "%s.tmp.%ld", path, (long)getpid());
        rc = gguf_writer_write(w, tmp, e);
        if (!rc && rename(tmp, path) != 0) {
            rc = ERR(e, ERR_IO, "%s: %s", path, strerror(errno));
            unlink(tmp);
        }
    }
out:
    for (int i = 0; i < nb; i++) free(bufs[i]);
    free(bufs), free(tmp);
    gguf_writer_free(w);
    return rc;
}
