/* loaders/native.c: our single-file model format ("LLMQ", written by ./quantize): config, full
 * vocabulary, tensor table with qtypes by name, 64-byte aligned data. Layout: docs/FORMAT_NATIVE.md.
 * The header carries the total file size and an FNV-1a-64 checksum of itself; tensor data is
 * checked by bounds and sizes only (hashing gigabytes at every load would cost seconds).
 * Test: tests/test_loader_native.c */
#include "loaders/loader.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NATIVE_MAGIC "LLMQ"
#define NATIVE_VERSION 1u
#define NATIVE_ALIGN 64
#define NATIVE_NULL_STR 0xffffffffu

static uint64_t fnv1a64(const unsigned char *p, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

// ------------------------------------------------------------------------------------------------
// Writer: the header is built in memory, then header + padding + tensors go to the file.

struct wbuf { unsigned char *p; size_t n, cap; bool oom; };

static void put(struct wbuf *b, const void *src, size_t k) {
    if (b->oom) return;
    if (b->cap - b->n < k) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap - b->n < k) cap *= 2;
        unsigned char *np = realloc(b->p, cap);
        if (!np) { b->oom = true; return; }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->n, src, k);
    b->n += k;
}
static void put_u8(struct wbuf *b, uint8_t x) { put(b, &x, 1); }
static void put_u32(struct wbuf *b, uint32_t x) { put(b, &x, 4); }
static void put_i32(struct wbuf *b, int32_t x) { put(b, &x, 4); }
static void put_u64(struct wbuf *b, uint64_t x) { put(b, &x, 8); }
static void put_f32(struct wbuf *b, float x) { put(b, &x, 4); }
static void put_str(struct wbuf *b, const char *s, size_t len) {
    if (!s) { put_u32(b, NATIVE_NULL_STR); return; }
    put_u32(b, (uint32_t)len);
    put(b, s, len);
}

int native_write(const char *path, const struct model_config *cfg, const struct vocab *v,
                 const struct tensor_view *tensors, int n_tensors, struct err *e) {
    if (n_tensors < 0 || n_tensors > LOADER_MAX_TENSORS) return err_set(e, ERR_ARG, path, "bad tensor count %d", n_tensors);
    struct wbuf b = {0};
    put(&b, NATIVE_MAGIC, 4);
    put_u32(&b, NATIVE_VERSION);
    put_u64(&b, 0);   // file_size, patched below
    put_u64(&b, 0);   // header_size
    put_u64(&b, 0);   // data_offset
    put_u32(&b, (uint32_t)n_tensors);
    put_u32(&b, 0);   // flags
    // config
    const int32_t ci[8] = {cfg->dim, cfg->hidden_dim, cfg->n_layers, cfg->n_heads, cfg->n_kv_heads,
                           cfg->vocab_size, cfg->seq_len, cfg->head_dim};
    for (int i = 0; i < 8; i++) put_i32(&b, ci[i]);
    put_f32(&b, cfg->rope_theta);
    put_f32(&b, cfg->norm_eps);
    put_u32(&b, (uint32_t)cfg->rope);
    put_u8(&b, cfg->tied_output);
    put_str(&b, cfg->arch, strnlen(cfg->arch, sizeof cfg->arch));
    put_str(&b, cfg->name, strnlen(cfg->name, sizeof cfg->name));
    // vocab
    int32_t nt = v ? v->n_tokens : 0;
    put_u32(&b, v ? (uint32_t)v->kind : 0);
    put_i32(&b, nt);
    for (int32_t i = 0; i < nt; i++) {
        put_str(&b, v->tokens[i], v->lens ? v->lens[i] : strlen(v->tokens[i]));
        put_f32(&b, v->scores ? v->scores[i] : 0.0f);
        put_i32(&b, v->types ? v->types[i] : TOK_NORMAL);
    }
    int32_t nm = v && v->merges ? v->n_merges : 0;
    put_i32(&b, nm);
    for (int32_t i = 0; i < nm; i++) put_str(&b, v->merges[i], strlen(v->merges[i]));
    const int32_t sp[5] = {v ? v->bos : -1, v ? v->eos : -1, v ? v->unk : -1, v ? v->pad : -1, v ? v->eot : -1};
    for (int i = 0; i < 5; i++) put_i32(&b, sp[i]);
    put_u8(&b, v && v->add_bos);
    put_u8(&b, v && v->add_space_prefix);
    put_u8(&b, v && v->llama2c_style);
    put_str(&b, v ? v->pre : "", v ? strnlen(v->pre, sizeof v->pre) : 0);
    put_str(&b, v ? v->chat_template : NULL, v && v->chat_template ? strlen(v->chat_template) : 0);
    // tensor table: offsets relative to the data section, each 64-byte aligned
    uint64_t off = 0;
    for (int i = 0; i < n_tensors; i++) {
        const struct tensor_view *t = &tensors[i];
        uint64_t rows = 1, want;
        for (int d = 1; d < t->n_dims; d++) rows *= (uint64_t)t->ne[d];
        if ((unsigned)t->type >= QT_COUNT || qtype_traits[t->type].internal || t->n_dims < 1 || t->n_dims > 4 ||
            !qtype_nbytes(t->type, t->ne[0], (int64_t)rows, &want) || want != t->nbytes || !t->data) {
            free(b.p);
            return err_set(e, ERR_ARG, path, "tensor %s: bad type, shape or nbytes", t->name);
        }
        put_str(&b, t->name, strnlen(t->name, sizeof t->name));
        const char *qn = qtype_traits[t->type].name;
        put_str(&b, qn, strlen(qn));
        put_u32(&b, (uint32_t)t->n_dims);
        for (int d = 0; d < t->n_dims; d++) put(&b, &t->ne[d], 8);
        put_u64(&b, off);
        put_u64(&b, t->nbytes);
        off += (t->nbytes + NATIVE_ALIGN - 1) / NATIVE_ALIGN * NATIVE_ALIGN;
    }
    put_u64(&b, 0);   // header checksum slot
    if (b.oom) { free(b.p); return err_set(e, ERR_OOM, path, "out of memory building the header"); }
    uint64_t header_size = b.n, data_offset = (header_size + NATIVE_ALIGN - 1) / NATIVE_ALIGN * NATIVE_ALIGN;
    uint64_t file_size = data_offset + off;
    memcpy(b.p + 8, &file_size, 8);
    memcpy(b.p + 16, &header_size, 8);
    memcpy(b.p + 24, &data_offset, 8);
    uint64_t sum = fnv1a64(b.p, header_size - 8);
    memcpy(b.p + header_size - 8, &sum, 8);

    FILE *f = fopen(path, "wb");
    if (!f) { free(b.p); return err_set(e, ERR_IO, path, "cannot create: %s", strerror(errno)); }
    static const unsigned char zeros[NATIVE_ALIGN];
    bool ok = fwrite(b.p, 1, header_size, f) == header_size &&
              fwrite(zeros, 1, data_offset - header_size, f) == data_offset - header_size;
    for (int i = 0; ok && i < n_tensors; i++) {
        uint64_t nb = tensors[i].nbytes, pad = (NATIVE_ALIGN - nb % NATIVE_ALIGN) % NATIVE_ALIGN;
        ok = fwrite(tensors[i].data, 1, nb, f) == nb && fwrite(zeros, 1, pad, f) == pad;
    }
    free(b.p);
    if (fclose(f) != 0 || !ok) return err_set(e, ERR_IO, path, "write failed: %s", strerror(errno));
    return ERR_OK;
}

// ------------------------------------------------------------------------------------------------
// Reader

struct rd { const unsigned char *p; uint64_t n, pos; const char *path; struct err *e; };

static int rfail(struct rd *r, const char *field, const char *what) {
    return err_set(r->e, ERR_FORMAT, r->path, "%s at byte %" PRIu64 ": %s", field, r->pos, what);
}
static int need(struct rd *r, uint64_t k, const char *field) {
    return k > r->n - r->pos ? rfail(r, field, "truncated") : ERR_OK;
}
static int get(struct rd *r, void *dst, size_t k, const char *field) {
    int rc = need(r, k, field);
    if (rc) return rc;
    memcpy(dst, r->p + r->pos, k);
    r->pos += k;
    return ERR_OK;
}
/* A string: pointer into the mapping (not NUL-terminated) and its length; *s = NULL for null. */
static int get_str(struct rd *r, const char **s, uint32_t *len, uint32_t max, bool nullable, const char *field) {
    uint32_t n;
    int rc = get(r, &n, 4, field);
    if (rc) return rc;
    if (n == NATIVE_NULL_STR && nullable) { *s = NULL; *len = 0; return ERR_OK; }
    if (n > max) { r->pos -= 4; return rfail(r, field, "string longer than its limit"); }
    if ((rc = need(r, n, field))) return rc;
    *s = (const char *)r->p + r->pos;
    *len = n;
    r->pos += n;
    return ERR_OK;
}

static int parse_vocab(struct rd *r, struct vocab *v) {
    uint32_t kind;
    int32_t nt, nm;
    int rc;
    if ((rc = get(r, &kind, 4, "vocab.kind"))) return rc;
    if (kind > VOCAB_BPE) { r->pos -= 4; return rfail(r, "vocab.kind", "unknown vocabulary kind"); }
    if ((rc = get(r, &nt, 4, "vocab.n_tokens"))) return rc;
    // each token takes at least 12 bytes, so the count is bounded by what remains
    if (nt < 0 || nt > LOADER_MAX_VOCAB || (uint64_t)nt * 12 > r->n - r->pos) {
        r->pos -= 4;
        return rfail(r, "vocab.n_tokens", "negative, above LOADER_MAX_VOCAB, or more than the file holds");
    }
    v->kind = (enum vocab_kind)kind;
    v->n_tokens = nt;
    if (nt) {
        v->tokens = vocab_alloc(v, (size_t)nt * sizeof *v->tokens);
        v->lens = vocab_alloc(v, (size_t)nt * sizeof *v->lens);
        v->scores = vocab_alloc(v, (size_t)nt * sizeof *v->scores);
        v->types = vocab_alloc(v, (size_t)nt * sizeof *v->types);
        if (!v->tokens || !v->lens || !v->scores || !v->types) return err_set(r->e, ERR_OOM, r->path, "out of memory");
    }
    for (int32_t i = 0; i < nt; i++) {
        const char *s;
        uint32_t len;
        if ((rc = get_str(r, &s, &len, LOADER_MAX_STRING, false, "vocab.token"))) return rc;
        if (!(v->tokens[i] = vocab_strdup(v, s, len))) return err_set(r->e, ERR_OOM, r->path, "out of memory");
        v->lens[i] = len;
        if ((rc = get(r, &v->scores[i], 4, "vocab.score")) || (rc = get(r, &v->types[i], 4, "vocab.type"))) return rc;
        if (v->types[i] < TOK_UNDEFINED || v->types[i] > TOK_BYTE) { r->pos -= 4; return rfail(r, "vocab.type", "unknown token type"); }
    }
    if ((rc = get(r, &nm, 4, "vocab.n_merges"))) return rc;
    if (nm < 0 || nm > (int32_t)LOADER_MAX_ARRAY || (uint64_t)nm * 4 > r->n - r->pos) {
        r->pos -= 4;
        return rfail(r, "vocab.n_merges", "negative, too large, or more than the file holds");
    }
    v->n_merges = nm;
    if (nm && !(v->merges = vocab_alloc(v, (size_t)nm * sizeof *v->merges))) return err_set(r->e, ERR_OOM, r->path, "out of memory");
    for (int32_t i = 0; i < nm; i++) {
        const char *s;
        uint32_t len;
        if ((rc = get_str(r, &s, &len, LOADER_MAX_STRING, false, "vocab.merge"))) return rc;
        if (!(v->merges[i] = vocab_strdup(v, s, len))) return err_set(r->e, ERR_OOM, r->path, "out of memory");
    }
    int32_t sp[5];
    uint64_t sp_at = r->pos;
    if ((rc = get(r, sp, sizeof sp, "vocab.special_ids"))) return rc;
    for (int i = 0; i < 5; i++)
        if (sp[i] < -1 || sp[i] >= nt) { r->pos = sp_at + 4 * (uint64_t)i; return rfail(r, "vocab.special_ids", "id out of range"); }
    v->bos = sp[0]; v->eos = sp[1]; v->unk = sp[2]; v->pad = sp[3]; v->eot = sp[4];
    uint8_t fl[3];
    if ((rc = get(r, fl, 3, "vocab.flags"))) return rc;
    v->add_bos = fl[0] != 0;
    v->add_space_prefix = fl[1] != 0;
    v->llama2c_style = fl[2] != 0;
    const char *s;
    uint32_t len;
    if ((rc = get_str(r, &s, &len, sizeof v->pre - 1, false, "vocab.pre"))) return rc;
    memcpy(v->pre, s, len);
    v->pre[len] = 0;
    if ((rc = get_str(r, &s, &len, LOADER_MAX_STRING, true, "vocab.chat_template"))) return rc;
    if (s && !(v->chat_template = vocab_strdup(v, s, len))) return err_set(r->e, ERR_OOM, r->path, "out of memory");
    return ERR_OK;
}

int native_open(struct model_file *mf, const char *path, struct err *e) {
    memset(mf, 0, sizeof *mf);
    mf->file_type = -1;
    mf->vocab.bos = mf->vocab.eos = mf->vocab.unk = mf->vocab.pad = mf->vocab.eot = -1;
    snprintf(mf->path, sizeof mf->path, "%s", path);
    mf->format = MF_NATIVE;
    const unsigned char *base;
    size_t size;
    int rc = loader_map_file(mf, path, (const void **)&base, &size, e);
    if (rc) goto fail;
    struct rd r = {base, size, 0, path, e};

    // ---- fixed header
    char magic[4];
    uint32_t version, n_tensors, flags;
    uint64_t file_size, header_size, data_offset;
    if ((rc = get(&r, magic, 4, "magic"))) goto fail;
    if (memcmp(magic, NATIVE_MAGIC, 4)) { r.pos = 0; rc = rfail(&r, "magic", "not \"LLMQ\" (not a native model file)"); goto fail; }
    if ((rc = get(&r, &version, 4, "version"))) goto fail;
    if (version != NATIVE_VERSION) {
        r.pos = 4;
        rc = version > NATIVE_VERSION
             ? err_set(e, ERR_UNSUPPORTED, path, "version at byte 4: %u: made by a newer version of this program "
                       "(this one reads version %u); rebuild or re-quantize", version, NATIVE_VERSION)
             : rfail(&r, "version", "unknown version 0");
        goto fail;
    }
    if ((rc = get(&r, &file_size, 8, "file_size")) || (rc = get(&r, &header_size, 8, "header_size")) ||
        (rc = get(&r, &data_offset, 8, "data_offset")) || (rc = get(&r, &n_tensors, 4, "n_tensors")) ||
        (rc = get(&r, &flags, 4, "flags")))
        goto fail;
    if (file_size != size) {
        r.pos = 8;
        char msg[128];
        snprintf(msg, sizeof msg, "header says %" PRIu64 " bytes, the file has %zu (truncated or appended to)", file_size, size);
        rc = rfail(&r, "file_size", msg);
        goto fail;
    }
    if (header_size < 48 || header_size > data_offset || data_offset > size || data_offset % NATIVE_ALIGN) {
        r.pos = 16;
        rc = rfail(&r, "header_size", "header_size/data_offset inconsistent with the file or not 64-aligned");
        goto fail;
    }
    uint64_t sum, want_sum = fnv1a64(base, header_size - 8);
    memcpy(&sum, base + header_size - 8, 8);
    if (sum != want_sum) { r.pos = header_size - 8; rc = rfail(&r, "header checksum", "mismatch (corrupt header)"); goto fail; }
    if (n_tensors > LOADER_MAX_TENSORS) { r.pos = 32; rc = rfail(&r, "n_tensors", "above LOADER_MAX_TENSORS"); goto fail; }
    r.n = header_size - 8;   // everything below parses inside the header

    // ---- config
    struct model_config *c = &mf->cfg;
    int32_t ci[8];
    uint32_t rope;
    uint8_t tied;
    if ((rc = get(&r, ci, sizeof ci, "config"))) goto fail;
    c->dim = ci[0]; c->hidden_dim = ci[1]; c->n_layers = ci[2]; c->n_heads = ci[3];
    c->n_kv_heads = ci[4]; c->vocab_size = ci[5]; c->seq_len = ci[6]; c->head_dim = ci[7];
    if ((rc = get(&r, &c->rope_theta, 4, "config.rope_theta")) || (rc = get(&r, &c->norm_eps, 4, "config.norm_eps")) ||
        (rc = get(&r, &rope, 4, "config.rope")) || (rc = get(&r, &tied, 1, "config.tied_output")))
        goto fail;
    if (rope > ROPE_NEOX) { r.pos -= 5; rc = rfail(&r, "config.rope", "unknown RoPE style"); goto fail; }
    c->rope = (enum rope_style)rope;
    c->tied_output = tied != 0;
    const char *s;
    uint32_t len;
    if ((rc = get_str(&r, &s, &len, sizeof c->arch - 1, false, "config.arch"))) goto fail;
    memcpy(c->arch, s, len);
    if ((rc = get_str(&r, &s, &len, sizeof c->name - 1, false, "config.name"))) goto fail;
    memcpy(c->name, s, len);

    // ---- vocab
    if ((rc = parse_vocab(&r, &mf->vocab))) goto fail;

    // ---- tensors: each entry takes at least 32 bytes
    if ((uint64_t)n_tensors * 32 > r.n - r.pos) { r.pos = 32; rc = rfail(&r, "n_tensors", "more tensors than the header holds"); goto fail; }
    if (n_tensors && !(mf->tensors = loader_own(mf, (size_t)n_tensors * sizeof *mf->tensors))) {
        rc = err_set(e, ERR_OOM, path, "out of memory");
        goto fail;
    }
    uint64_t data_size = size - data_offset;
    for (uint32_t i = 0; i < n_tensors; i++) {
        struct tensor_view *t = &mf->tensors[i];
        uint64_t at = r.pos;
        if ((rc = get_str(&r, &s, &len, sizeof t->name - 1, false, "tensor.name"))) goto fail;
        memcpy(t->name, s, len);
        char qn[32];
        if ((rc = get_str(&r, &s, &len, sizeof qn - 1, false, "tensor.qtype"))) goto fail;
        memcpy(qn, s, len);
        qn[len] = 0;
        int qt = -1;
        for (int k = 0; k < QT_COUNT; k++)   // exact traits name, not the CLI aliases
            if (qtype_traits[k].name && !qtype_traits[k].internal && !strcmp(qtype_traits[k].name, qn)) qt = k;
        if (qt < 0) {
            rc = err_set(e, ERR_UNSUPPORTED, path, "%s at byte %" PRIu64 ": unknown qtype '%s' (newer file?)", t->name, at, qn);
            goto fail;
        }
        t->type = (enum qtype)qt;
        uint32_t nd;
        if ((rc = get(&r, &nd, 4, "tensor.n_dims"))) goto fail;
        if (nd < 1 || nd > 4) { r.pos -= 4; rc = rfail(&r, "tensor.n_dims", "not in 1..4"); goto fail; }
        t->n_dims = (int)nd;
        t->ne[0] = t->ne[1] = t->ne[2] = t->ne[3] = 1;
        uint64_t rows = 1;
        for (uint32_t d = 0; d < nd; d++) {
            if ((rc = get(&r, &t->ne[d], 8, "tensor.ne"))) goto fail;
            if (t->ne[d] <= 0 || t->ne[d] > LOADER_MAX_DIM) { r.pos -= 8; rc = rfail(&r, "tensor.ne", "dimension not in 1..2^32"); goto fail; }
            if (d && !mul_ok_u64(rows, (uint64_t)t->ne[d], &rows)) { r.pos -= 8; rc = rfail(&r, "tensor.ne", "overflow"); goto fail; }
        }
        uint64_t off, nbytes, want;
        if ((rc = get(&r, &off, 8, "tensor.offset")) || (rc = get(&r, &nbytes, 8, "tensor.nbytes"))) goto fail;
        if (rows > (uint64_t)INT64_MAX || !qtype_nbytes(t->type, t->ne[0], (int64_t)rows, &want) || want != nbytes) {
            rc = err_set(e, ERR_FORMAT, path, "%s at byte %" PRIu64 ": nbytes %" PRIu64 " does not match type %s "
                         "and shape (row length must be a multiple of %d)", t->name, r.pos - 8, nbytes, qn,
                         qtype_traits[t->type].group);
            goto fail;
        }
        if (off % NATIVE_ALIGN || off > data_size || nbytes > data_size - off) {
            rc = err_set(e, ERR_FORMAT, path, "%s at byte %" PRIu64 ": data [%" PRIu64 ", +%" PRIu64 ") not 64-aligned "
                         "or outside the data section (%" PRIu64 " bytes)", t->name, r.pos - 16, off, nbytes, data_size);
            goto fail;
        }
        for (uint32_t k = 0; k < i; k++)
            if (!strcmp(mf->tensors[k].name, t->name)) {
                rc = err_set(e, ERR_FORMAT, path, "%s at byte %" PRIu64 ": duplicate tensor name", t->name, at);
                goto fail;
            }
        t->nbytes = nbytes;
        t->offset = data_offset + off;
        t->data = base + t->offset;
        mf->n_tensors = (int)i + 1;
    }
    if (r.pos != r.n) { rc = rfail(&r, "header", "unexpected bytes after the tensor table"); goto fail; }
    mf->has_weights = n_tensors > 0;
    return ERR_OK;
fail:
    model_file_close(mf);
    return rc;
}
