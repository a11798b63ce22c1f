/* loaders/gguf_write.c: streaming GGUF v3 writer. Metadata values are encoded when set (so the
 * writer owns copies); tensor data is referenced and streamed through one FILE* at write time.
 * Layout: "GGUF" u32 3 | u64 n_tensors | u64 n_kv | kv... | tensor infos... | pad | data (32-aligned).
 * Test: tests/test_loader_gguf.c (round trip through gguf_open). */
#include "loaders/gguf_write.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define GGUF_WRITE_ALIGNMENT 32

struct wkv {
    char *key;
    uint32_t type;
    unsigned char *val;  // encoded value, without the type word
    size_t nval;
};

struct wtensor {
    char *name;
    enum qtype type;
    int n_dims;
    int64_t ne[4];
    const void *data;
    size_t nbytes;
};

struct gguf_writer {
    struct wkv *kvs;
    int n_kv, cap_kv;
    struct wtensor *ts;
    int n_ts, cap_ts;
    int first_err;  // sticky error of the setters
    char err_msg[200];
};

static const uint8_t type_size[13] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

struct gguf_writer *gguf_writer_create(void) { return calloc(1, sizeof(struct gguf_writer)); }

void gguf_writer_free(struct gguf_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->n_kv; i++) free(w->kvs[i].key), free(w->kvs[i].val);
    for (int i = 0; i < w->n_ts; i++) free(w->ts[i].name);
    free(w->kvs);
    free(w->ts);
    free(w);
}

static int sticky(struct gguf_writer *w, int code, const char *what, const char *key) {
    if (!w->first_err) {
        w->first_err = code;
        snprintf(w->err_msg, sizeof w->err_msg, "%s '%s'", what, key ? key : "(null)");
    }
    return code;
}

/* Takes ownership of val (freed on failure too). */
static int set_kv(struct gguf_writer *w, const char *key, uint32_t type, unsigned char *val, size_t n) {
    if (!key || !*key) {
        free(val);
        return sticky(w, ERR_ARG, "empty metadata key", key);
    }
    for (int i = 0; i < w->n_kv; i++)
        if (strcmp(w->kvs[i].key, key) == 0) {  // replace in place
            free(w->kvs[i].val);
            w->kvs[i].type = type;
            w->kvs[i].val = val;
            w->kvs[i].nval = n;
            return ERR_OK;
        }
    if (w->n_kv == w->cap_kv) {
        int cap = w->cap_kv ? 2 * w->cap_kv : 32;
        struct wkv *p = realloc(w->kvs, (size_t)cap * sizeof *p);
        if (!p) {
            free(val);
            return sticky(w, ERR_OOM, "out of memory setting", key);
        }
        w->kvs = p;
        w->cap_kv = cap;
    }
    char *k = strdup(key);
    if (!k) {
        free(val);
        return sticky(w, ERR_OOM, "out of memory setting", key);
    }
    w->kvs[w->n_kv++] = (struct wkv){.key = k, .type = type, .val = val, .nval = n};
    return ERR_OK;
}

int gguf_writer_set_raw(struct gguf_writer *w, const char *key, enum gguf_value_type type,
                        const void *bytes, size_t nbytes) {
    unsigned char *val = malloc(nbytes ? nbytes : 1);
    if (!val) return sticky(w, ERR_OOM, "out of memory setting", key);
    if (nbytes) memcpy(val, bytes, nbytes);
    return set_kv(w, key, (uint32_t)type, val, nbytes);
}

int gguf_writer_set_scalar(struct gguf_writer *w, const char *key, enum gguf_value_type type,
                           const void *v) {
    if ((unsigned)type > GGUF_F64 || !type_size[type]) return sticky(w, ERR_ARG, "not a scalar type for", key);
    return gguf_writer_set_raw(w, key, type, v, type_size[type]);
}

int gguf_writer_set_u32(struct gguf_writer *w, const char *key, uint32_t v) {
    return gguf_writer_set_scalar(w, key, GGUF_U32, &v);
}
int gguf_writer_set_i32(struct gguf_writer *w, const char *key, int32_t v) {
    return gguf_writer_set_scalar(w, key, GGUF_I32, &v);
}
int gguf_writer_set_f32(struct gguf_writer *w, const char *key, float v) {
    return gguf_writer_set_scalar(w, key, GGUF_F32, &v);
}
int gguf_writer_set_bool(struct gguf_writer *w, const char *key, bool v) {
    uint8_t b = v ? 1 : 0;
    return gguf_writer_set_scalar(w, key, GGUF_BOOL, &b);
}

int gguf_writer_set_str(struct gguf_writer *w, const char *key, const char *v) {
    uint64_t len = v ? strlen(v) : 0;
    unsigned char *val = malloc(8 + len);
    if (!val) return sticky(w, ERR_OOM, "out of memory setting", key);
    memcpy(val, &len, 8);
    if (len) memcpy(val + 8, v, len);
    return set_kv(w, key, GGUF_STRING, val, 8 + len);
}

int gguf_writer_set_arr(struct gguf_writer *w, const char *key, enum gguf_value_type elem_type,
                        const void *v, int64_t n) {
    if ((unsigned)elem_type > GGUF_F64 || !type_size[elem_type] || n < 0)
        return sticky(w, ERR_ARG, "bad array type or length for", key);
    uint64_t un = (uint64_t)n, bytes;
    if (!mul_ok_u64(un, type_size[elem_type], &bytes) || bytes > SIZE_MAX - 12)
        return sticky(w, ERR_ARG, "array too large for", key);
    unsigned char *val = malloc(12 + (size_t)bytes);
    if (!val) return sticky(w, ERR_OOM, "out of memory setting", key);
    uint32_t et = (uint32_t)elem_type;
    memcpy(val, &et, 4);
    memcpy(val + 4, &un, 8);
    if (bytes) memcpy(val + 12, v, (size_t)bytes);
    return set_kv(w, key, GGUF_ARRAY, val, 12 + (size_t)bytes);
}

int gguf_writer_set_arr_f32(struct gguf_writer *w, const char *key, const float *v, int64_t n) {
    return gguf_writer_set_arr(w, key, GGUF_F32, v, n);
}
int gguf_writer_set_arr_i32(struct gguf_writer *w, const char *key, const int32_t *v, int64_t n) {
    return gguf_writer_set_arr(w, key, GGUF_I32, v, n);
}

int gguf_writer_set_arr_str(struct gguf_writer *w, const char *key, const char *const *strs,
                            const uint32_t *lens, int64_t n) {
    if (n < 0) return sticky(w, ERR_ARG, "negative array length for", key);
    size_t total = 12;
    for (int64_t i = 0; i < n; i++) {
        size_t l = lens ? lens[i] : strlen(strs[i]);
        if (l > SIZE_MAX / 2 - total - 8) return sticky(w, ERR_ARG, "array too large for", key);
        total += 8 + l;
    }
    unsigned char *val = malloc(total), *p = val;
    if (!val) return sticky(w, ERR_OOM, "out of memory setting", key);
    uint32_t et = GGUF_STRING;
    uint64_t un = (uint64_t)n;
    memcpy(p, &et, 4);
    memcpy(p + 4, &un, 8);
    p += 12;
    for (int64_t i = 0; i < n; i++) {
        uint64_t l = lens ? lens[i] : strlen(strs[i]);
        memcpy(p, &l, 8);
        if (l) memcpy(p + 8, strs[i], (size_t)l);
        p += 8 + l;
    }
    return set_kv(w, key, GGUF_ARRAY, val, total);
}

int gguf_writer_add_tensor(struct gguf_writer *w, const char *name, enum qtype type, int n_dims,
                           const int64_t *ne, const void *data, size_t nbytes) {
    if (!name || !*name || strlen(name) >= sizeof(((struct tensor_view *)0)->name))
        return sticky(w, ERR_ARG, "bad tensor name", name);
    if ((int)type < 0 || type >= QT_COUNT || qtype_traits[type].ggml_type < 0)
        return sticky(w, ERR_UNSUPPORTED, "type has no GGUF id, tensor", name);
    if (n_dims < 1 || n_dims > 4) return sticky(w, ERR_ARG, "n_dims not in 1..4, tensor", name);
    uint64_t rows = 1, need;
    for (int i = 0; i < n_dims; i++) {
        if (ne[i] <= 0) return sticky(w, ERR_ARG, "non-positive dimension, tensor", name);
        if (i > 0 && !mul_ok_u64(rows, (uint64_t)ne[i], &rows))
            return sticky(w, ERR_ARG, "size overflow, tensor", name);
    }
    if (rows > INT64_MAX || !qtype_nbytes(type, ne[0], (int64_t)rows, &need) || need != nbytes)
        return sticky(w, ERR_ARG, "nbytes does not match type and shape, tensor", name);
    for (int i = 0; i < w->n_ts; i++)
        if (strcmp(w->ts[i].name, name) == 0) return sticky(w, ERR_ARG, "duplicate tensor", name);
    if (w->n_ts == w->cap_ts) {
        int cap = w->cap_ts ? 2 * w->cap_ts : 64;
        struct wtensor *p = realloc(w->ts, (size_t)cap * sizeof *p);
        if (!p) return sticky(w, ERR_OOM, "out of memory adding tensor", name);
        w->ts = p;
        w->cap_ts = cap;
    }
    struct wtensor *t = &w->ts[w->n_ts];
    memset(t, 0, sizeof *t);
    if (!(t->name = strdup(name))) return sticky(w, ERR_OOM, "out of memory adding tensor", name);
    t->type = type;
    t->n_dims = n_dims;
    for (int i = 0; i < 4; i++) t->ne[i] = i < n_dims ? ne[i] : 1;
    t->data = data;
    t->nbytes = nbytes;
    w->n_ts++;
    return ERR_OK;
}

// ------------------------------------------------------------------------------------------------
// Streaming

struct out {
    FILE *f;
    uint64_t pos;
    bool bad;
};

static void put(struct out *o, const void *p, size_t n) {
    if (o->bad || n == 0) return;
    if (fwrite(p, 1, n, o->f) != n) o->bad = true;
    o->pos += n;
}
static void put_u32(struct out *o, uint32_t v) { put(o, &v, 4); }
static void put_u64(struct out *o, uint64_t v) { put(o, &v, 8); }
static void pad_to(struct out *o, uint64_t align) {
    static const unsigned char zeros[GGUF_WRITE_ALIGNMENT];
    put(o, zeros, (size_t)((align - o->pos % align) % align));
}

static uint64_t align_up(uint64_t x) {
    return (x + GGUF_WRITE_ALIGNMENT - 1) / GGUF_WRITE_ALIGNMENT * GGUF_WRITE_ALIGNMENT;
}

int gguf_writer_write(struct gguf_writer *w, const char *path, struct err *e) {
    if (w->first_err) return err_set(e, w->first_err, path, "gguf writer: %s", w->err_msg);
    FILE *f = fopen(path, "wb");
    if (!f) return err_set(e, ERR_IO, path, "cannot create: %s", strerror(errno));
    struct stat st;
    bool regular = fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode);  // never unlink /dev/full etc.
    setvbuf(f, NULL, _IOFBF, 1 << 20);
    struct out o = {.f = f};
    put(&o, "GGUF", 4);
    put_u32(&o, 3);
    put_u64(&o, (uint64_t)w->n_ts);
    put_u64(&o, (uint64_t)w->n_kv);
    for (int i = 0; i < w->n_kv; i++) {
        const struct wkv *kv = &w->kvs[i];
        uint64_t klen = strlen(kv->key);
        put_u64(&o, klen);
        put(&o, kv->key, klen);
        put_u32(&o, kv->type);
        put(&o, kv->val, kv->nval);
    }
    uint64_t data_off = 0;  // relative to the start of the data section
    for (int i = 0; i < w->n_ts; i++) {
        const struct wtensor *t = &w->ts[i];
        uint64_t nlen = strlen(t->name);
        put_u64(&o, nlen);
        put(&o, t->name, nlen);
        put_u32(&o, (uint32_t)t->n_dims);
        for (int d = 0; d < t->n_dims; d++) put_u64(&o, (uint64_t)t->ne[d]);
        put_u32(&o, (uint32_t)qtype_traits[t->type].ggml_type);
        put_u64(&o, data_off);
        data_off = align_up(data_off + t->nbytes);
    }
    if (w->n_ts > 0) pad_to(&o, GGUF_WRITE_ALIGNMENT);
    for (int i = 0; i < w->n_ts && !o.bad; i++) {
        put(&o, w->ts[i].data, w->ts[i].nbytes);
        pad_to(&o, GGUF_WRITE_ALIGNMENT);
    }
    int saved = errno;
    bool bad = o.bad || ferror(f);
    if (fclose(f) != 0 && !bad) {
        bad = true;
        saved = errno;
    }
    if (bad) {
        if (regular) remove(path);
        return err_set(e, ERR_IO, path, "write failed after %" PRIu64 " bytes: %s", o.pos,
                       strerror(saved ? saved : EIO));
    }
    return ERR_OK;
}

// ------------------------------------------------------------------------------------------------
// Whole models

/* llama2.c vocabularies store spaces as ' '; GGUF llama vocabularies use U+2581 ("▁"). */
static char *spm_space(const char *s, uint32_t len, uint32_t *out_len) {
    uint32_t n_sp = 0;
    for (uint32_t i = 0; i < len; i++) n_sp += s[i] == ' ';
    char *p = malloc((size_t)len + 2u * n_sp + 1), *q = p;
    if (!p) return NULL;
    for (uint32_t i = 0; i < len; i++) {
        if (s[i] == ' ') {
            memcpy(q, "\xe2\x96\x81", 3);
            q += 3;
        } else {
            *q++ = s[i];
        }
    }
    *q = 0;
    *out_len = (uint32_t)(q - p);
    return p;
}

static int write_vocab(struct gguf_writer *w, const struct vocab *v) {
    gguf_writer_set_str(w, "tokenizer.ggml.model", v->kind == VOCAB_BPE ? "gpt2" : "llama");
    if (v->pre[0]) gguf_writer_set_str(w, "tokenizer.ggml.pre", v->pre);
    if (v->llama2c_style && v->kind != VOCAB_BPE) {
        char **conv = calloc((size_t)v->n_tokens, sizeof *conv);
        uint32_t *lens = calloc((size_t)v->n_tokens, sizeof *lens);
        int rc = conv && lens ? ERR_OK : ERR_OOM;
        for (int32_t i = 0; i < v->n_tokens && !rc; i++)
            if (!(conv[i] = spm_space(v->tokens[i], v->lens[i], &lens[i]))) rc = ERR_OOM;
        if (!rc)
            gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)conv, lens, v->n_tokens);
        for (int32_t i = 0; conv && i < v->n_tokens; i++) free(conv[i]);
        free(conv);
        free(lens);
        if (rc) return sticky(w, rc, "out of memory converting", "tokenizer.ggml.tokens");
    } else {
        gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)v->tokens, v->lens,
                                v->n_tokens);
    }
    if (v->scores) gguf_writer_set_arr_f32(w, "tokenizer.ggml.scores", v->scores, v->n_tokens);
    if (v->types) gguf_writer_set_arr_i32(w, "tokenizer.ggml.token_type", v->types, v->n_tokens);
    if (v->n_merges > 0)
        gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", (const char *const *)v->merges, NULL,
                                v->n_merges);
    if (v->bos >= 0) gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)v->bos);
    if (v->eos >= 0) gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)v->eos);
    if (v->unk >= 0) gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", (uint32_t)v->unk);
    if (v->pad >= 0) gguf_writer_set_u32(w, "tokenizer.ggml.padding_token_id", (uint32_t)v->pad);
    if (v->eot >= 0) gguf_writer_set_u32(w, "tokenizer.ggml.eot_token_id", (uint32_t)v->eot);
    gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", v->add_bos);
    gguf_writer_set_bool(w, "tokenizer.ggml.add_space_prefix", v->add_space_prefix);
    if (v->chat_template) gguf_writer_set_str(w, "tokenizer.chat_template", v->chat_template);
    return w->first_err;
}

int gguf_write_model(const char *path, const struct model_config *cfg, const struct vocab *v,
                     const struct tensor_view *t, int n_tensors, struct err *e) {
    if (cfg->rope != ROPE_INTERLEAVED)
        return err_set(e, ERR_UNSUPPORTED, path,
                       "GGUF llama stores Q/K for interleaved RoPE; permute the NeoX-style weights first");
    if (cfg->dim <= 0 || cfg->hidden_dim <= 0 || cfg->n_layers <= 0 || cfg->n_heads <= 0 ||
        cfg->n_kv_heads <= 0 || cfg->seq_len <= 0 || cfg->head_dim <= 0 || cfg->vocab_size <= 0)
        return err_set(e, ERR_ARG, path, "config has a non-positive dimension");
    struct gguf_writer *w = gguf_writer_create();
    if (!w) return err_set(e, ERR_OOM, path, "out of memory");
    gguf_writer_set_str(w, "general.architecture", "llama");
    if (cfg->name[0]) gguf_writer_set_str(w, "general.name", cfg->name);
    gguf_writer_set_u32(w, "general.alignment", GGUF_WRITE_ALIGNMENT);
    gguf_writer_set_u32(w, "llama.context_length", (uint32_t)cfg->seq_len);
    gguf_writer_set_u32(w, "llama.embedding_length", (uint32_t)cfg->dim);
    gguf_writer_set_u32(w, "llama.block_count", (uint32_t)cfg->n_layers);
    gguf_writer_set_u32(w, "llama.feed_forward_length", (uint32_t)cfg->hidden_dim);
    gguf_writer_set_u32(w, "llama.attention.head_count", (uint32_t)cfg->n_heads);
    gguf_writer_set_u32(w, "llama.attention.head_count_kv", (uint32_t)cfg->n_kv_heads);
    gguf_writer_set_f32(w, "llama.rope.freq_base", cfg->rope_theta);
    gguf_writer_set_f32(w, "llama.attention.layer_norm_rms_epsilon", cfg->norm_eps);
    gguf_writer_set_u32(w, "llama.rope.dimension_count", (uint32_t)cfg->head_dim);
    if ((int64_t)cfg->head_dim * cfg->n_heads != cfg->dim) {
        gguf_writer_set_u32(w, "llama.attention.key_length", (uint32_t)cfg->head_dim);
        gguf_writer_set_u32(w, "llama.attention.value_length", (uint32_t)cfg->head_dim);
    }
    gguf_writer_set_u32(w, "llama.vocab_size", (uint32_t)cfg->vocab_size);
    if (v && v->n_tokens > 0) write_vocab(w, v);
    for (int i = 0; i < n_tensors; i++)
        gguf_writer_add_tensor(w, t[i].name, t[i].type, t[i].n_dims, t[i].ne, t[i].data,
                               (size_t)t[i].nbytes);
    int rc = gguf_writer_write(w, path, e);
    gguf_writer_free(w);
    return rc;
}
