/* loaders/gguf.c: GGUF v2/v3 reader (the ggml file format: header, typed key/value metadata, tensor
 * infos, aligned tensor data). Hostile-input safe: every read is checked against the bytes that
 * remain, every count against loader.h's limits before anything is allocated from it.
 * Layout facts from the GGUF spec (ggml docs/gguf.md). Test: tests/test_loader_gguf.c, tests/fuzz_gguf.c */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loaders/loader.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf.c reads little-endian files with memcpy; add byte swaps for this host"
#endif

// GGUF metadata value types
enum {
    GV_U8 = 0, GV_I8 = 1, GV_U16 = 2, GV_I16 = 3, GV_U32 = 4, GV_I32 = 5, GV_F32 = 6, GV_BOOL = 7,
    GV_STR = 8, GV_ARR = 9, GV_U64 = 10, GV_I64 = 11, GV_F64 = 12, GV_COUNT
};
static const char *const gv_name[GV_COUNT] = {"u8",  "i8",   "u16", "i16", "u32", "i32", "f32",
                                              "bool", "string", "array", "u64", "i64", "f64"};
static const uint8_t gv_size[GV_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};  // 0: variable

#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_NESTING 8  // arrays of arrays deeper than this are rejected (bounds the recursion)

// One metadata entry, pointing into the mapping.
struct kv {
    const char *key;
    uint64_t key_len;
    uint64_t off;  // byte offset of the value (after the type word), for messages
    uint32_t type;
    union {
        uint64_t u;
        int64_t i;
        double f;
    } num;             // scalars, widened
    const char *str;   // GV_STR
    uint64_t str_len;
    uint32_t arr_type; // GV_ARR: element type, count and offset of the first element
    uint64_t arr_n;
    uint64_t arr_off;
};

struct reader {
    const uint8_t *base;
    uint64_t size, off;  // invariant: off <= size
    const char *path;
    struct err *e;
    struct kv *kvs;
    uint64_t n_kv;
};

// ------------------------------------------------------------------------------------------------
// Errors: "<file>: <field> at byte <offset>: <problem>"

__attribute__((format(printf, 5, 6))) static int fail(struct reader *r, int code, uint64_t off,
                                                      const char *field, const char *fmt, ...) {
    char problem[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(problem, sizeof problem, fmt, ap);
    va_end(ap);
    int rc = err_set(r->e, code, r->path, "%s at byte %" PRIu64 ": %s", field, off, problem);
    if (r->e)  // keys and names come from the file: keep the message one printable line
        for (char *c = r->e->msg; *c; c++)
            if ((unsigned char)*c < 0x20 || *c == 0x7f) *c = '?';
    return rc;
}

static int need(struct reader *r, uint64_t n, const char *field) {
    if (n > r->size - r->off)  // off <= size, so this cannot wrap
        return fail(r, ERR_FORMAT, r->off, field, "truncated (need %" PRIu64 " bytes, %" PRIu64 " left)",
                    n, r->size - r->off);
    return ERR_OK;
}

static int rd(struct reader *r, void *dst, uint64_t n, const char *field) {
    int rc = need(r, n, field);
    if (rc) return rc;
    memcpy(dst, r->base + r->off, n);
    r->off += n;
    return ERR_OK;
}
static int rd_u32(struct reader *r, uint32_t *v, const char *field) { return rd(r, v, 4, field); }
static int rd_u64(struct reader *r, uint64_t *v, const char *field) { return rd(r, v, 8, field); }

/* A GGUF string: uint64 length + bytes (no NUL). Points into the mapping. */
static int rd_str(struct reader *r, const char **s, uint64_t *len, const char *field) {
    uint64_t at = r->off;
    int rc = rd_u64(r, len, field);
    if (rc) return rc;
    if (*len > LOADER_MAX_STRING)
        return fail(r, ERR_FORMAT, at, field, "string length %" PRIu64 " exceeds limit %u", *len,
                    LOADER_MAX_STRING);
    if ((rc = need(r, *len, field))) return rc;
    *s = (const char *)r->base + r->off;
    r->off += *len;
    return ERR_OK;
}

// ------------------------------------------------------------------------------------------------
// Metadata

/* Skips n elements of type t (strings and nested arrays walked one by one). */
static int skip_values(struct reader *r, uint32_t t, uint64_t n, int depth, const char *field) {
    if (gv_size[t]) {
        uint64_t bytes;
        if (!mul_ok_u64(n, gv_size[t], &bytes))
            return fail(r, ERR_FORMAT, r->off, field, "array of %" PRIu64 " %s overflows", n, gv_name[t]);
        int rc = need(r, bytes, field);
        if (rc) return rc;
        r->off += bytes;
        return ERR_OK;
    }
    for (uint64_t i = 0; i < n; i++) {
        int rc;
        if (t == GV_STR) {
            const char *s;
            uint64_t len;
            rc = rd_str(r, &s, &len, field);
        } else {  // nested array: element type, count, elements
            uint64_t at = r->off;
            uint32_t et;
            uint64_t en;
            if ((rc = rd_u32(r, &et, field)) || (rc = rd_u64(r, &en, field))) return rc;
            if (et >= GV_COUNT)
                return fail(r, ERR_FORMAT, at, field, "unknown array element type %u", et);
            if (et == GV_ARR && depth + 1 >= GGUF_MAX_NESTING)
                return fail(r, ERR_FORMAT, at, field, "arrays nested deeper than %d", GGUF_MAX_NESTING);
            if (en > LOADER_MAX_ARRAY)
                return fail(r, ERR_FORMAT, at, field, "array length %" PRIu64 " exceeds limit %u", en,
                            LOADER_MAX_ARRAY);
            rc = skip_values(r, et, en, depth + 1, field);
        }
        if (rc) return rc;
    }
    return ERR_OK;
}

static int read_kv(struct reader *r, uint64_t idx, struct kv *kv) {
    char field[160];
    snprintf(field, sizeof field, "kv[%" PRIu64 "].key", idx);
    int rc = rd_str(r, &kv->key, &kv->key_len, field);
    if (rc) return rc;
    // from here on, name the key in messages
    snprintf(field, sizeof field, "%.*s", (int)(kv->key_len < 100 ? kv->key_len : 100), kv->key);
    uint64_t at = r->off;
    if ((rc = rd_u32(r, &kv->type, field))) return rc;
    if (kv->type >= GV_COUNT) return fail(r, ERR_FORMAT, at, field, "unknown value type %u", kv->type);
    kv->off = r->off;
    uint8_t b[8] = {0};
    switch (kv->type) {
    case GV_STR: return rd_str(r, &kv->str, &kv->str_len, field);
    case GV_ARR:
        at = r->off;
        if ((rc = rd_u32(r, &kv->arr_type, field)) || (rc = rd_u64(r, &kv->arr_n, field))) return rc;
        if (kv->arr_type >= GV_COUNT)
            return fail(r, ERR_FORMAT, at, field, "unknown array element type %u", kv->arr_type);
        if (kv->arr_n > LOADER_MAX_ARRAY)
            return fail(r, ERR_FORMAT, at, field, "array length %" PRIu64 " exceeds limit %u",
                        kv->arr_n, LOADER_MAX_ARRAY);
        kv->arr_off = r->off;
        return skip_values(r, kv->arr_type, kv->arr_n, 1, field);
    default:
        if ((rc = rd(r, b, gv_size[kv->type], field))) return rc;
    }
    switch (kv->type) {  // widen scalars (little-endian bytes in b)
    case GV_U8: kv->num.u = b[0]; break;
    case GV_I8: kv->num.i = (int8_t)b[0]; break;
    case GV_BOOL: kv->num.u = b[0] != 0; break;
    case GV_U16: { uint16_t v; memcpy(&v, b, 2); kv->num.u = v; } break;
    case GV_I16: { int16_t v; memcpy(&v, b, 2); kv->num.i = v; } break;
    case GV_U32: { uint32_t v; memcpy(&v, b, 4); kv->num.u = v; } break;
    case GV_I32: { int32_t v; memcpy(&v, b, 4); kv->num.i = v; } break;
    case GV_F32: { float v; memcpy(&v, b, 4); kv->num.f = v; } break;
    case GV_U64: memcpy(&kv->num.u, b, 8); break;
    case GV_I64: memcpy(&kv->num.i, b, 8); break;
    case GV_F64: memcpy(&kv->num.f, b, 8); break;
    }
    return ERR_OK;
}

static const struct kv *kv_find(const struct reader *r, const char *key) {
    size_t n = strlen(key);
    for (uint64_t i = 0; i < r->n_kv; i++)
        if (r->kvs[i].key_len == n && memcmp(r->kvs[i].key, key, n) == 0) return &r->kvs[i];
    return NULL;
}

static bool is_unsigned(uint32_t t) { return t == GV_U8 || t == GV_U16 || t == GV_U32 || t == GV_U64; }
static bool is_signed(uint32_t t) { return t == GV_I8 || t == GV_I16 || t == GV_I32 || t == GV_I64; }

/* Integer key (any integer type) in [lo, hi]. Absent: *out untouched, *found false (if given). */
static int kv_int(struct reader *r, const char *key, int64_t lo, int64_t hi, int64_t *out, bool *found) {
    const struct kv *kv = kv_find(r, key);
    if (found) *found = kv != NULL;
    if (!kv) return ERR_OK;
    int64_t v;
    if (is_unsigned(kv->type)) {
        if (kv->num.u > (uint64_t)INT64_MAX)
            return fail(r, ERR_FORMAT, kv->off, key, "value %" PRIu64 " out of range", kv->num.u);
        v = (int64_t)kv->num.u;
    } else if (is_signed(kv->type)) {
        v = kv->num.i;
    } else {
        return fail(r, ERR_FORMAT, kv->off, key, "expected an integer, found %s", gv_name[kv->type]);
    }
    if (v < lo || v > hi)
        return fail(r, ERR_FORMAT, kv->off, key, "value %" PRId64 " outside [%" PRId64 ", %" PRId64 "]",
                    v, lo, hi);
    *out = v;
    return ERR_OK;
}

static int kv_float(struct reader *r, const char *key, float *out) {
    const struct kv *kv = kv_find(r, key);
    if (!kv) return ERR_OK;
    if (kv->type != GV_F32 && kv->type != GV_F64)
        return fail(r, ERR_FORMAT, kv->off, key, "expected a float, found %s", gv_name[kv->type]);
    if (!isfinite(kv->num.f) || fabs(kv->num.f) > 3.0e38)
        return fail(r, ERR_FORMAT, kv->off, key, "value %g not a finite float", kv->num.f);
    *out = (float)kv->num.f;
    return ERR_OK;
}

static int kv_bool(struct reader *r, const char *key, bool *out) {
    const struct kv *kv = kv_find(r, key);
    if (!kv) return ERR_OK;
    if (kv->type != GV_BOOL && !is_unsigned(kv->type) && !is_signed(kv->type))
        return fail(r, ERR_FORMAT, kv->off, key, "expected a bool, found %s", gv_name[kv->type]);
    *out = kv->num.u != 0;
    return ERR_OK;
}

/* String key; *s NULL when absent. */
static int kv_str(struct reader *r, const char *key, const char **s, uint64_t *len) {
    const struct kv *kv = kv_find(r, key);
    *s = NULL;
    *len = 0;
    if (!kv) return ERR_OK;
    if (kv->type != GV_STR)
        return fail(r, ERR_FORMAT, kv->off, key, "expected a string, found %s", gv_name[kv->type]);
    *s = kv->str;
    *len = kv->str_len;
    return ERR_OK;
}

/* Array key with elements of type et; NULL when absent. */
static int kv_arr(struct reader *r, const char *key, uint32_t et, const struct kv **out) {
    const struct kv *kv = kv_find(r, key);
    *out = NULL;
    if (!kv) return ERR_OK;
    if (kv->type != GV_ARR || kv->arr_type != et)
        return fail(r, ERR_FORMAT, kv->off, key, "expected an array of %s, found %s of %s", gv_name[et],
                    gv_name[kv->type], kv->type == GV_ARR ? gv_name[kv->arr_type] : "-");
    *out = kv;
    return ERR_OK;
}

static void copy_str(char *dst, size_t cap, const char *s, uint64_t len) {
    size_t n = len < cap - 1 ? (size_t)len : cap - 1;
    memcpy(dst, s, n);
    dst[n] = 0;
}

// ------------------------------------------------------------------------------------------------
// Model config from llama.* keys

static int read_config(struct reader *r, struct model_file *mf) {
    struct model_config *c = &mf->cfg;
    const char *s;
    uint64_t len;
    int rc = kv_str(r, "general.architecture", &s, &len);
    if (rc) return rc;
    if (!s) return fail(r, ERR_FORMAT, 24, "general.architecture", "required key missing");
    if (len != 5 || memcmp(s, "llama", 5) != 0) {
        const struct kv *kv = kv_find(r, "general.architecture");
        return fail(r, ERR_UNSUPPORTED, kv->off, "general.architecture",
                    "architecture '%.*s' not supported (only llama)", (int)(len < 64 ? len : 64), s);
    }
    copy_str(c->arch, sizeof c->arch, s, len);
    if ((rc = kv_str(r, "general.name", &s, &len))) return rc;
    if (s) {
        copy_str(c->name, sizeof c->name, s, len);
    } else {  // the file stem
        const char *base = strrchr(mf->path, '/');
        base = base ? base + 1 : mf->path;
        size_t n = strcspn(base, ".");
        copy_str(c->name, sizeof c->name, base, n);
    }
    int64_t v;
    const int64_t imax = LOADER_MAX_DIM < INT32_MAX ? LOADER_MAX_DIM : INT32_MAX;
    bool found;
#define REQ(key, field, max)                                                                      \
    do {                                                                                          \
        if ((rc = kv_int(r, key, 1, max, &v, &found))) return rc;                                 \
        if (!found && mf->has_weights) return fail(r, ERR_FORMAT, 24, key, "required key missing"); \
        c->field = found ? (int)v : 0;                                                            \
    } while (0)
    REQ("llama.embedding_length", dim, imax);
    REQ("llama.feed_forward_length", hidden_dim, imax);
    REQ("llama.block_count", n_layers, LOADER_MAX_LAYERS);
    REQ("llama.attention.head_count", n_heads, imax);
#undef REQ
    c->n_kv_heads = c->n_heads;
    if ((rc = kv_int(r, "llama.attention.head_count_kv", 1, imax, &v, &found))) return rc;
    if (found) c->n_kv_heads = (int)v;
    c->seq_len = 2048;  // GGUF llama files always carry context_length; this only covers odd writers
    if ((rc = kv_int(r, "llama.context_length", 1, imax, &v, &found))) return rc;
    if (found) c->seq_len = (int)v;
    c->head_dim = c->n_heads > 0 ? c->dim / c->n_heads : 0;
    if ((rc = kv_int(r, "llama.attention.key_length", 1, imax, &v, &found))) return rc;
    if (found) c->head_dim = (int)v;
    int64_t vlen = c->head_dim;
    if ((rc = kv_int(r, "llama.attention.value_length", 1, imax, &vlen, NULL))) return rc;
    if (vlen != c->head_dim) {
        const struct kv *kv = kv_find(r, "llama.attention.value_length");
        return fail(r, ERR_UNSUPPORTED, kv->off, "llama.attention.value_length",
                    "%" PRId64 " differs from key_length %d", vlen, c->head_dim);
    }
    if ((rc = kv_int(r, "llama.rope.dimension_count", 1, imax, &v, &found))) return rc;
    if (found && v != c->head_dim) {
        const struct kv *kv = kv_find(r, "llama.rope.dimension_count");
        return fail(r, ERR_UNSUPPORTED, kv->off, "llama.rope.dimension_count",
                    "%" PRId64 " != head_dim %d (partial RoPE not supported)", v, c->head_dim);
    }
    c->rope_theta = 10000.0f;
    c->norm_eps = 1e-5f;
    if ((rc = kv_float(r, "llama.rope.freq_base", &c->rope_theta))) return rc;
    if ((rc = kv_float(r, "llama.attention.layer_norm_rms_epsilon", &c->norm_eps))) return rc;
    c->rope = ROPE_INTERLEAVED;
    c->vocab_size = 0;
    if ((rc = kv_int(r, "llama.vocab_size", 1, LOADER_MAX_VOCAB, &v, &found))) return rc;
    if (found) c->vocab_size = (int)v;
    int64_t ft = -1;
    if ((rc = kv_int(r, "general.file_type", -1, INT32_MAX, &ft, NULL))) return rc;
    mf->file_type = (int)ft;
    return ERR_OK;
}

// ------------------------------------------------------------------------------------------------
// Vocabulary from tokenizer.ggml.* keys

static int token_id(struct reader *r, struct vocab *vb, const char *key, int32_t *out) {
    const struct kv *kv = kv_find(r, key);
    if (!kv) return ERR_OK;
    if (is_unsigned(kv->type))  // writers store "none" as 0xffffffff: out-of-range ids mean absent
        *out = kv->num.u < (uint64_t)vb->n_tokens ? (int32_t)kv->num.u : -1;
    else if (is_signed(kv->type))
        *out = kv->num.i >= 0 && kv->num.i < vb->n_tokens ? (int32_t)kv->num.i : -1;
    else
        return fail(r, ERR_FORMAT, kv->off, key, "expected an integer, found %s", gv_name[kv->type]);
    return ERR_OK;
}

static int read_vocab(struct reader *r, struct model_file *mf) {
    struct vocab *vb = &mf->vocab;
    const char *s;
    uint64_t len;
    int rc = kv_str(r, "tokenizer.ggml.model", &s, &len);
    if (rc) return rc;
    if (!s || (len == 8 && memcmp(s, "no_vocab", 8) == 0)) return ERR_OK;  // no tokenizer in the file
    const struct kv *kmodel = kv_find(r, "tokenizer.ggml.model");
    if (len == 5 && memcmp(s, "llama", 5) == 0)
        vb->kind = VOCAB_SPM;
    else if (len == 4 && memcmp(s, "gpt2", 4) == 0)
        vb->kind = VOCAB_BPE;
    else
        return fail(r, ERR_UNSUPPORTED, kmodel->off, "tokenizer.ggml.model",
                    "tokenizer '%.*s' not supported (llama or gpt2)", (int)(len < 64 ? len : 64), s);

    // tokens: the array was walked by read_kv, so every string in it lies inside the file
    const struct kv *kt;
    if ((rc = kv_arr(r, "tokenizer.ggml.tokens", GV_STR, &kt))) return rc;
    if (!kt) return fail(r, ERR_FORMAT, kmodel->off, "tokenizer.ggml.tokens", "required key missing");
    if (kt->arr_n == 0 || kt->arr_n > LOADER_MAX_VOCAB)
        return fail(r, ERR_FORMAT, kt->off, "tokenizer.ggml.tokens", "%" PRIu64 " tokens, expected 1..%d",
                    kt->arr_n, LOADER_MAX_VOCAB);
    int32_t n = (int32_t)kt->arr_n;
    vb->n_tokens = n;
    vb->tokens = vocab_alloc(vb, (size_t)n * sizeof *vb->tokens);
    vb->lens = vocab_alloc(vb, (size_t)n * sizeof *vb->lens);
    vb->scores = vocab_alloc(vb, (size_t)n * sizeof *vb->scores);
    vb->types = vocab_alloc(vb, (size_t)n * sizeof *vb->types);
    if (!vb->tokens || !vb->lens || !vb->scores || !vb->types)
        return err_set(r->e, ERR_OOM, r->path, "tokenizer: out of memory for %d tokens", n);
    uint64_t off = kt->arr_off;
    for (int32_t i = 0; i < n; i++) {
        uint64_t l;
        memcpy(&l, r->base + off, 8);
        vb->tokens[i] = vocab_strdup(vb, (const char *)r->base + off + 8, l);
        if (!vb->tokens[i]) return err_set(r->e, ERR_OOM, r->path, "tokenizer: out of memory");
        vb->lens[i] = (uint32_t)l;
        off += 8 + l;
    }
    for (int32_t i = 0; i < n; i++) vb->types[i] = TOK_NORMAL;

    const struct kv *ka;
    if ((rc = kv_arr(r, "tokenizer.ggml.scores", GV_F32, &ka))) return rc;
    if (ka) {
        if (ka->arr_n != (uint64_t)n)
            return fail(r, ERR_FORMAT, ka->off, "tokenizer.ggml.scores", "%" PRIu64 " scores for %d tokens",
                        ka->arr_n, n);
        memcpy(vb->scores, r->base + ka->arr_off, (size_t)n * 4);
    }
    if ((rc = kv_arr(r, "tokenizer.ggml.token_type", GV_I32, &ka))) return rc;
    if (ka) {
        if (ka->arr_n != (uint64_t)n)
            return fail(r, ERR_FORMAT, ka->off, "tokenizer.ggml.token_type",
                        "%" PRIu64 " types for %d tokens", ka->arr_n, n);
        memcpy(vb->types, r->base + ka->arr_off, (size_t)n * 4);
        for (int32_t i = 0; i < n; i++)
            if (vb->types[i] < TOK_UNDEFINED || vb->types[i] > TOK_BYTE)
                return fail(r, ERR_FORMAT, ka->arr_off + 4 * (uint64_t)i, "tokenizer.ggml.token_type",
                            "token %d has type %d (expected 0..6)", i, vb->types[i]);
    }
    if ((rc = kv_arr(r, "tokenizer.ggml.merges", GV_STR, &ka))) return rc;
    if (ka && ka->arr_n > 0) {
        vb->n_merges = (int32_t)ka->arr_n;  // <= LOADER_MAX_ARRAY, checked by read_kv
        vb->merges = vocab_alloc(vb, (size_t)vb->n_merges * sizeof *vb->merges);
        if (!vb->merges) return err_set(r->e, ERR_OOM, r->path, "tokenizer: out of memory for merges");
        off = ka->arr_off;
        for (int32_t i = 0; i < vb->n_merges; i++) {
            uint64_t l;
            memcpy(&l, r->base + off, 8);
            vb->merges[i] = vocab_strdup(vb, (const char *)r->base + off + 8, l);
            if (!vb->merges[i]) return err_set(r->e, ERR_OOM, r->path, "tokenizer: out of memory");
            off += 8 + l;
        }
    }

    // special ids: llama.cpp's SPM defaults when the keys are absent
    vb->bos = vb->eos = vb->unk = vb->pad = vb->eot = -1;
    if (vb->kind == VOCAB_SPM && n > 2) vb->unk = 0, vb->bos = 1, vb->eos = 2;
    if ((rc = token_id(r, vb, "tokenizer.ggml.bos_token_id", &vb->bos))) return rc;
    if ((rc = token_id(r, vb, "tokenizer.ggml.eos_token_id", &vb->eos))) return rc;
    if ((rc = token_id(r, vb, "tokenizer.ggml.unknown_token_id", &vb->unk))) return rc;
    if ((rc = token_id(r, vb, "tokenizer.ggml.padding_token_id", &vb->pad))) return rc;
    if ((rc = token_id(r, vb, "tokenizer.ggml.eot_token_id", &vb->eot))) return rc;
    if (vb->eot < 0) {
        static const char *const eot_names[] = {"<|im_end|>", "<|eot_id|>", "<|end_of_text|>"};
        for (size_t k = 0; k < 3 && vb->eot < 0; k++)
            for (int32_t i = 0; i < n; i++)
                if (strcmp(vb->tokens[i], eot_names[k]) == 0) { vb->eot = i; break; }
    }
    vb->add_bos = vb->kind == VOCAB_SPM;
    vb->add_space_prefix = vb->kind == VOCAB_SPM;
    if ((rc = kv_bool(r, "tokenizer.ggml.add_bos_token", &vb->add_bos))) return rc;
    if ((rc = kv_bool(r, "tokenizer.ggml.add_space_prefix", &vb->add_space_prefix))) return rc;
    if ((rc = kv_str(r, "tokenizer.ggml.pre", &s, &len))) return rc;
    if (s) copy_str(vb->pre, sizeof vb->pre, s, len);
    if ((rc = kv_str(r, "tokenizer.chat_template", &s, &len))) return rc;
    if (s && !(vb->chat_template = vocab_strdup(vb, s, len)))
        return err_set(r->e, ERR_OOM, r->path, "tokenizer: out of memory");
    return ERR_OK;
}

// ------------------------------------------------------------------------------------------------
// Tensor infos

static int read_tensor_info(struct reader *r, uint64_t idx, struct tensor_view *t, uint64_t *rel_off) {
    char field[160];
    snprintf(field, sizeof field, "tensor[%" PRIu64 "].name", idx);
    const char *name;
    uint64_t len, at = r->off;
    int rc = rd_str(r, &name, &len, field);
    if (rc) return rc;
    if (len == 0 || len >= sizeof t->name)
        return fail(r, ERR_FORMAT, at, field, "name length %" PRIu64 " (expected 1..%zu)", len,
                    sizeof t->name - 1);
    if (memchr(name, 0, len)) return fail(r, ERR_FORMAT, at, field, "name contains a NUL byte");
    copy_str(t->name, sizeof t->name, name, len);
    snprintf(field, sizeof field, "tensor '%s'", t->name);
    uint32_t n_dims;
    at = r->off;
    if ((rc = rd_u32(r, &n_dims, field))) return rc;
    if (n_dims < 1 || n_dims > 4) return fail(r, ERR_FORMAT, at, field, "n_dims %u (expected 1..4)", n_dims);
    t->n_dims = (int)n_dims;
    uint64_t n_elem = 1;
    for (uint32_t i = 0; i < 4; i++) t->ne[i] = 1;
    for (uint32_t i = 0; i < n_dims; i++) {
        uint64_t ne;
        at = r->off;
        if ((rc = rd_u64(r, &ne, field))) return rc;
        if (ne == 0 || ne > (uint64_t)LOADER_MAX_DIM)
            return fail(r, ERR_FORMAT, at, field, "ne[%u] = %" PRIu64 " (expected 1..%lld)", i, ne,
                        (long long)LOADER_MAX_DIM);
        if (!mul_ok_u64(n_elem, ne, &n_elem) || n_elem > (uint64_t)INT64_MAX)
            return fail(r, ERR_FORMAT, at, field, "element count overflows");
        t->ne[i] = (int64_t)ne;
    }
    uint32_t gtype;
    at = r->off;
    if ((rc = rd_u32(r, &gtype, field))) return rc;
    int qt = gtype > 0x7fffffffu ? -1 : qtype_from_ggml((int)gtype);
    if (qt < 0 || qt >= QT_COUNT)
        return fail(r, ERR_UNSUPPORTED, at, field, "ggml tensor type %u not supported", gtype);
    t->type = (enum qtype)qt;
    if (t->ne[0] % qtype_traits[qt].group != 0)
        return fail(r, ERR_FORMAT, at, field, "ne[0] = %" PRId64 " not a multiple of %s's block of %d",
                    t->ne[0], qtype_traits[qt].name, qtype_traits[qt].group);
    if (!qtype_nbytes(t->type, t->ne[0], (int64_t)(n_elem / (uint64_t)t->ne[0]), &t->nbytes))
        return fail(r, ERR_FORMAT, at, field, "byte size overflows");
    t->offset = r->off;  // where the data offset is stored; replaced by the absolute offset later
    return rd_u64(r, rel_off, field);
}

static int cmp_key(const void *a, const void *b) {
    const struct kv *x = *(const struct kv *const *)a, *y = *(const struct kv *const *)b;
    int c = memcmp(x->key, y->key, x->key_len < y->key_len ? x->key_len : y->key_len);
    return c ? c : (x->key_len > y->key_len) - (x->key_len < y->key_len);
}

/* Rejects a key that appears twice (which value would win is otherwise up to the reader). */
static int check_duplicate_keys(struct reader *r) {
    if (r->n_kv < 2) return ERR_OK;
    const struct kv **idx = malloc(r->n_kv * sizeof *idx);
    if (!idx) return err_set(r->e, ERR_OOM, r->path, "out of memory for %" PRIu64 " kv", r->n_kv);
    for (uint64_t i = 0; i < r->n_kv; i++) idx[i] = &r->kvs[i];
    qsort(idx, r->n_kv, sizeof *idx, cmp_key);
    int rc = ERR_OK;
    for (uint64_t i = 1; i < r->n_kv && !rc; i++)
        if (cmp_key(&idx[i - 1], &idx[i]) == 0) {
            const struct kv *d = idx[i - 1]->off > idx[i]->off ? idx[i - 1] : idx[i];
            char field[112];
            snprintf(field, sizeof field, "%.*s", (int)(d->key_len < 100 ? d->key_len : 100), d->key);
            rc = fail(r, ERR_FORMAT, d->off, field, "duplicate metadata key");
        }
    free(idx);
    return rc;
}

static int cmp_name(const void *a, const void *b) {
    return strcmp((*(const struct tensor_view *const *)a)->name,
                  (*(const struct tensor_view *const *)b)->name);
}

// ------------------------------------------------------------------------------------------------

static int gguf_open_impl(struct model_file *mf, const char *path, bool model, struct err *e) {
    memset(mf, 0, sizeof *mf);
    mf->file_type = -1;
    mf->vocab.bos = mf->vocab.eos = mf->vocab.unk = mf->vocab.pad = mf->vocab.eot = -1;
    mf->format = MF_GGUF;
    copy_str(mf->path, sizeof mf->path, path, strlen(path));

    const void *addr = NULL;
    size_t size = 0;
    struct reader rd0 = {.path = path, .e = e}, *r = &rd0;
    struct tensor_view **sorted = NULL;
    uint64_t *rel = NULL;
    int rc = loader_map_file(mf, path, &addr, &size, e);
    if (rc) goto done;
    r->base = addr;
    r->size = size;

    // header: magic, version, n_tensors, n_kv
    uint32_t magic, version;
    if ((rc = rd_u32(r, &magic, "header.magic"))) goto done;
    if (memcmp(&magic, "GGUF", 4) != 0) {
        rc = fail(r, ERR_FORMAT, 0, "header.magic", "not a GGUF file (magic %08x)", magic);
        goto done;
    }
    if ((rc = rd_u32(r, &version, "header.version"))) goto done;
    if (version == 1) {
        rc = fail(r, ERR_UNSUPPORTED, 4, "header.version", "GGUF v1 is not supported (re-convert to v3)");
        goto done;
    }
    if ((version & 0xffff) == 0 && version != 0) {
        rc = fail(r, ERR_UNSUPPORTED, 4, "header.version", "big-endian GGUF (version word %08x) not supported",
                  version);
        goto done;
    }
    if (version != 2 && version != 3) {
        rc = fail(r, ERR_UNSUPPORTED, 4, "header.version", "version %u not supported (2 or 3)", version);
        goto done;
    }
    uint64_t n_tensors, n_kv;
    if ((rc = rd_u64(r, &n_tensors, "header.n_tensors")) || (rc = rd_u64(r, &n_kv, "header.n_kv")))
        goto done;
    // every tensor info takes >= 8+1 (name) + 4 + 8 (one dim) + 4 + 8 bytes; every kv >= 8 + 4 + 1
    if (n_tensors > LOADER_MAX_TENSORS || n_tensors > (r->size - r->off) / 33) {
        rc = fail(r, ERR_FORMAT, 8, "header.n_tensors", "%" PRIu64 " tensors (limit %d, or more than the file holds)",
                  n_tensors, LOADER_MAX_TENSORS);
        goto done;
    }
    if (n_kv > LOADER_MAX_KV || n_kv > (r->size - r->off) / 13) {
        rc = fail(r, ERR_FORMAT, 16, "header.n_kv", "%" PRIu64 " entries (limit %d, or more than the file holds)",
                  n_kv, LOADER_MAX_KV);
        goto done;
    }

    // metadata
    r->kvs = calloc(n_kv ? n_kv : 1, sizeof *r->kvs);
    if (!r->kvs) { rc = err_set(e, ERR_OOM, path, "out of memory for %" PRIu64 " kv", n_kv); goto done; }
    for (uint64_t i = 0; i < n_kv; i++) {
        if ((rc = read_kv(r, i, &r->kvs[i]))) goto done;
        r->n_kv = i + 1;
    }
    if ((rc = check_duplicate_keys(r))) goto done;
    uint64_t alignment = GGUF_DEFAULT_ALIGNMENT;
    {
        int64_t a = GGUF_DEFAULT_ALIGNMENT;
        if ((rc = kv_int(r, "general.alignment", 1, 1 << 30, &a, NULL))) goto done;
        alignment = (uint64_t)a;
        if (alignment & (alignment - 1)) {
            rc = fail(r, ERR_FORMAT, kv_find(r, "general.alignment")->off, "general.alignment",
                      "%" PRIu64 " is not a power of two", alignment);
            goto done;
        }
    }

    // tensor infos
    mf->n_tensors = (int)n_tensors;
    mf->tensors = loader_own(mf, (n_tensors ? n_tensors : 1) * sizeof *mf->tensors);
    rel = calloc(n_tensors ? n_tensors : 1, sizeof *rel);
    sorted = calloc(n_tensors ? n_tensors : 1, sizeof *sorted);
    if (!mf->tensors || !rel || !sorted) {
        rc = err_set(e, ERR_OOM, path, "out of memory for %" PRIu64 " tensors", n_tensors);
        goto done;
    }
    for (uint64_t i = 0; i < n_tensors; i++)
        if ((rc = read_tensor_info(r, i, &mf->tensors[i], &rel[i]))) goto done;

    // tensor data: starts at the next multiple of alignment; every tensor must lie inside the file
    uint64_t data_start = (r->off + alignment - 1) / alignment * alignment;  // off < 2^63: no wrap
    for (uint64_t i = 0; i < n_tensors; i++) {
        struct tensor_view *t = &mf->tensors[i];
        char field[160];
        snprintf(field, sizeof field, "tensor '%s'.offset", t->name);
        if (rel[i] % alignment != 0) {
            rc = fail(r, ERR_FORMAT, t->offset, field, "%" PRIu64 " not a multiple of the alignment %" PRIu64,
                      rel[i], alignment);
            goto done;
        }
        uint64_t abs, end;
        if (!add_ok_u64(data_start, rel[i], &abs) || !add_ok_u64(abs, t->nbytes, &end) || end > r->size) {
            rc = fail(r, ERR_FORMAT, t->offset, field,
                      "data [%" PRIu64 " + %" PRIu64 ", %" PRIu64 " bytes] runs past the end of the file (%" PRIu64 " bytes)",
                      data_start, rel[i], t->nbytes, r->size);
            goto done;
        }
        t->offset = abs;
        t->data = r->base + abs;
        sorted[i] = t;
    }
    qsort(sorted, n_tensors, sizeof *sorted, cmp_name);
    for (uint64_t i = 1; i < n_tensors; i++)
        if (strcmp(sorted[i]->name, sorted[i - 1]->name) == 0) {
            rc = fail(r, ERR_FORMAT, sorted[i]->offset, sorted[i]->name, "duplicate tensor name");
            goto done;
        }
    mf->has_weights = n_tensors > 0;
    if (!model) { rc = ERR_OK; goto done; }   // tensors only (imatrix files)

    if ((rc = read_config(r, mf))) goto done;
    if ((rc = read_vocab(r, mf))) goto done;
    // vocab_size: llama.vocab_size, else the embedding's rows (which may be padded past the
    // tokenizer's size), else the token count
    struct model_config *c = &mf->cfg;
    const struct tensor_view *emb = model_file_find(mf, "token_embd.weight");
    if (c->vocab_size == 0 && emb && emb->n_dims >= 2 && emb->ne[1] <= LOADER_MAX_VOCAB)
        c->vocab_size = (int)emb->ne[1];
    if (c->vocab_size == 0) c->vocab_size = mf->vocab.n_tokens;
    if (mf->has_weights) {
        // Tied when output.weight is absent, or is a byte-identical copy of the embedding (some
        // converters, e.g. the one behind stories260K.gguf, write the shared matrix twice).
        // memcmp stops at the first differing byte, so untied models cost almost nothing here.
        const struct tensor_view *out = model_file_find(mf, "output.weight");
        c->tied_output = !out || (emb && out->type == emb->type && out->nbytes == emb->nbytes &&
                                  out->n_dims == emb->n_dims && out->ne[0] == emb->ne[0] &&
                                  out->ne[1] == emb->ne[1] && memcmp(out->data, emb->data, out->nbytes) == 0);
    }
    rc = ERR_OK;

done:
    free(r->kvs);
    free(rel);
    free(sorted);
    if (rc != ERR_OK) model_file_close(mf);
    return rc;
}

int gguf_open(struct model_file *mf, const char *path, struct err *e) {
    return gguf_open_impl(mf, path, true, e);
}

int gguf_open_tensors(struct model_file *mf, const char *path, struct err *e) {
    return gguf_open_impl(mf, path, false, e);
}
