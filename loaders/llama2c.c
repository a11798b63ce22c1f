/* loaders/llama2c.c: karpathy/llama2.c checkpoints and tokenizer.bin.
 * Formats (llama2.c export.py): legacy v0 = 7 int32 header + fp32 weights (+ freq_cis tail);
 * v1/v2 = "ak42" magic, version, 7 int32, shared-classifier byte, [v2: group size], padded to 256 B;
 * v1 fp32, v2 int8 groups + fp32 scales (dequantized here to f32). Tensor views get GGUF names.
 * Test: tests/test_loader_llama2c.c */
#include "loaders/loader.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define LLAMA2C_MAGIC 0x616b3432u   // "ak42" as written by struct.pack('I', ...)
#define LLAMA2C_HEADER_V1 256

static int fmt_err(struct err *e, const char *file, const char *field, uint64_t off, const char *what) {
    return err_set(e, ERR_FORMAT, file, "%s at byte %" PRIu64 ": %s", field, off, what);
}

static int32_t rd_i32(const unsigned char *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

// ------------------------------------------------------------------------------------------------
// Tokenizer: int32 max_token_length, then per token: f32 score, int32 len, len bytes

/* Reads a whole (small) file into malloc'd memory. */
static int slurp(const char *path, unsigned char **out, size_t *len, struct err *e) {
    FILE *f = fopen(path, "rb");
    if (!f) return err_set(e, ERR_IO, path, "cannot open");
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return err_set(e, ERR_IO, path, "not a regular file");
    }
    if ((uint64_t)st.st_size > (1ull << 31)) {
        fclose(f);
        return err_set(e, ERR_FORMAT, path, "file at byte 0: %lld bytes is too large for a tokenizer",
                       (long long)st.st_size);
    }
    size_t n = (size_t)st.st_size;
    unsigned char *buf = malloc(n ? n : 1);
    if (!buf) {
        fclose(f);
        return err_set(e, ERR_OOM, path, "out of memory reading %zu bytes", n);
    }
    if (fread(buf, 1, n, f) != n) {
        free(buf);
        fclose(f);
        return err_set(e, ERR_IO, path, "read error");
    }
    fclose(f);
    *out = buf;
    *len = n;
    return ERR_OK;
}

static bool is_byte_token(const char *s, uint32_t len) {
    if (len != 6 || memcmp(s, "<0x", 3) || s[5] != '>') return false;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'F') || (c >= 'a' && c <= 'f'))) return false;
    }
    return true;
}

int llama2c_tokenizer_load(struct vocab *v, const char *path, int32_t vocab_size, struct err *e) {
    vocab_free(v);
    if (vocab_size < 0 || vocab_size > LOADER_MAX_VOCAB)
        return err_set(e, ERR_ARG, path, "vocab_size %d out of range", (int)vocab_size);
    unsigned char *buf = NULL;
    size_t n = 0;
    int rc = slurp(path, &buf, &n, e);
    if (rc) return rc;
    if (n < 4) {
        rc = fmt_err(e, path, "max_token_length", 0, "file shorter than 4 bytes");
        goto done;
    }
    int32_t max_len = rd_i32(buf);
    if (max_len < 0 || (uint32_t)max_len > LOADER_MAX_STRING) {
        rc = fmt_err(e, path, "max_token_length", 0, "negative or absurd");
        goto done;
    }
    // Count tokens first (vocab_size 0 = read to the end), each needs at least 8 bytes.
    size_t pos = 4;
    int32_t count = 0;
    while (pos < n && (vocab_size == 0 || count < vocab_size)) {
        if (n - pos < 8) {
            rc = fmt_err(e, path, "token header", pos, "truncated (need 8 bytes: score, len)");
            goto done;
        }
        int32_t len = rd_i32(buf + pos + 4);
        if (len < 0 || len > max_len || (size_t)len > n - pos - 8) {
            char msg[128];
            snprintf(msg, sizeof msg, "token %d length %d invalid (max_token_length %d, %zu bytes left)",
                     count, len, max_len, n - pos - 8);
            rc = fmt_err(e, path, "token length", pos + 4, msg);
            goto done;
        }
        pos += 8 + (size_t)len;
        if (++count > LOADER_MAX_VOCAB) {
            rc = fmt_err(e, path, "token count", pos, "more than LOADER_MAX_VOCAB tokens");
            goto done;
        }
    }
    if (vocab_size > 0 && count < vocab_size) {
        char msg[96];
        snprintf(msg, sizeof msg, "file ends after %d of %d tokens", count, vocab_size);
        rc = fmt_err(e, path, "tokens", pos, msg);
        goto done;
    }
    if (count == 0) {
        rc = fmt_err(e, path, "tokens", pos, "no tokens");
        goto done;
    }
    v->kind = VOCAB_SPM;
    v->n_tokens = count;
    v->tokens = vocab_alloc(v, (size_t)count * sizeof *v->tokens);
    v->lens = vocab_alloc(v, (size_t)count * sizeof *v->lens);
    v->scores = vocab_alloc(v, (size_t)count * sizeof *v->scores);
    v->types = vocab_alloc(v, (size_t)count * sizeof *v->types);
    if (!v->tokens || !v->lens || !v->scores || !v->types) {
        rc = err_set(e, ERR_OOM, path, "out of memory for %d tokens", count);
        goto done;
    }
    pos = 4;
    for (int32_t i = 0; i < count; i++) {
        float score;
        memcpy(&score, buf + pos, 4);
        uint32_t len = (uint32_t)rd_i32(buf + pos + 4);
        const char *s = (const char *)buf + pos + 8;
        v->tokens[i] = vocab_strdup(v, s, len);
        if (!v->tokens[i]) {
            rc = err_set(e, ERR_OOM, path, "out of memory");
            goto done;
        }
        v->lens[i] = len;
        v->scores[i] = isfinite(score) ? score : 0.0f;
        v->types[i] = i == 0 ? TOK_UNKNOWN : (i == 1 || i == 2) ? TOK_CONTROL
                    : is_byte_token(s, len) ? TOK_BYTE : TOK_NORMAL;
        pos += 8 + len;
    }
    v->n_merges = 0;
    v->bos = count > 1 ? 1 : -1;
    v->eos = count > 2 ? 2 : -1;
    v->unk = 0;
    v->pad = -1;
    v->eot = -1;
    v->add_bos = true;
    v->add_space_prefix = true;
    v->llama2c_style = true;
    rc = ERR_OK;
done:
    free(buf);
    if (rc) vocab_free(v);
    return rc;
}

// ------------------------------------------------------------------------------------------------
// Checkpoint

/* The weight matrices in llama2.c file order. kind: 0 per-layer, 1 global. rows/cols in units
 * resolved by llama2c_open (row-major [rows][cols], cols = GGUF ne[0]). */
enum { W_EMB, W_ATT_NORM, W_Q, W_K, W_V, W_O, W_FFN_NORM, W_GATE, W_DOWN, W_UP, W_NORM, W_CLS, W_N };
static const char *const w_names[W_N] = {
    "token_embd", "attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
    "ffn_norm", "ffn_gate", "ffn_down", "ffn_up", "output_norm", "output",
};
static const bool w_layer[W_N] = {0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0};
// file orders (legacy/v1 fp32 and v2 quantized part); W_N ends a list
static const int order_v0[] = {W_EMB, W_ATT_NORM, W_Q, W_K, W_V, W_O, W_FFN_NORM, W_GATE, W_DOWN, W_UP, W_NORM, W_N};
static const int order_v1[] = {W_ATT_NORM, W_FFN_NORM, W_NORM, W_EMB, W_Q, W_K, W_V, W_O, W_GATE, W_DOWN, W_UP, W_N};
static const int order_v2_q[] = {W_EMB, W_Q, W_K, W_V, W_O, W_GATE, W_DOWN, W_UP, W_N};

struct shape { int64_t rows, cols; };

static void weight_shapes(const struct model_config *c, struct shape s[W_N]) {
    int64_t dim = c->dim, hid = c->hidden_dim, kv = (int64_t)c->n_kv_heads * c->head_dim;
    int64_t q = (int64_t)c->n_heads * c->head_dim;
    s[W_EMB] = (struct shape){c->vocab_size, dim};
    s[W_ATT_NORM] = s[W_FFN_NORM] = s[W_NORM] = (struct shape){1, dim};
    s[W_Q] = (struct shape){q, dim};
    s[W_K] = s[W_V] = (struct shape){kv, dim};
    s[W_O] = (struct shape){dim, q};
    s[W_GATE] = s[W_UP] = (struct shape){hid, dim};
    s[W_DOWN] = (struct shape){dim, hid};
    s[W_CLS] = (struct shape){c->vocab_size, dim};
}

static struct tensor_view *add_view(struct model_file *mf, int w, int layer, const struct shape *sh,
                                    const void *data, uint64_t off) {
    struct tensor_view *t = &mf->tensors[mf->n_tensors++];
    memset(t, 0, sizeof *t);
    if (w_layer[w]) snprintf(t->name, sizeof t->name, "blk.%d.%s.weight", layer, w_names[w]);
    else snprintf(t->name, sizeof t->name, "%s.weight", w_names[w]);
    t->type = QT_F32;
    t->n_dims = sh->rows == 1 ? 1 : 2;
    t->ne[0] = sh->cols;
    t->ne[1] = sh->rows;
    t->ne[2] = t->ne[3] = 1;
    t->data = data;
    t->nbytes = (uint64_t)sh->rows * (uint64_t)sh->cols * 4;
    t->offset = off;
    return t;
}

/* Finds the tokenizer: explicit path, tokenizer.bin next to the model, or tok<vocab>.bin. */
static int find_tokenizer(const char *model, const char *tok, int vocab, char *out, size_t cap,
                          struct err *e) {
    if (tok) {
        snprintf(out, cap, "%s", tok);
        return ERR_OK;
    }
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", model);
    char *slash = strrchr(dir, '/');
    if (slash) slash[1] = 0;
    else dir[0] = 0;
    struct stat st;
    snprintf(out, cap, "%stokenizer.bin", dir);
    if (stat(out, &st) == 0 && S_ISREG(st.st_mode)) return ERR_OK;
    snprintf(out, cap, "%stok%d.bin", dir, vocab);
    if (stat(out, &st) == 0 && S_ISREG(st.st_mode)) return ERR_OK;
    return err_set(e, ERR_IO, model,
                   "no tokenizer: give its path, or put tokenizer.bin or tok%d.bin next to the model",
                   vocab);
}

int llama2c_open(struct model_file *mf, const char *path, const char *tokenizer_path, struct err *e) {
    memset(mf, 0, sizeof *mf);
    mf->file_type = -1;
    mf->vocab.bos = mf->vocab.eos = mf->vocab.unk = mf->vocab.pad = mf->vocab.eot = -1;
    snprintf(mf->path, sizeof mf->path, "%s", path);
    mf->format = MF_LLAMA2C;
    const unsigned char *base;
    size_t size;
    int rc = loader_map_file(mf, path, (const void **)&base, &size, e);
    if (rc) goto fail;

    // ---- header
    int version = 0, group = 0;
    bool shared;
    size_t off;
    int32_t h[7];
    if (size >= 8 && (uint32_t)rd_i32(base) == LLAMA2C_MAGIC) {
        version = rd_i32(base + 4);
        if (version != 1 && version != 2) {
            char msg[96];
            snprintf(msg, sizeof msg, "version %d not supported (1 = fp32, 2 = int8 groups)", version);
            rc = err_set(e, ERR_UNSUPPORTED, path, "version at byte 4: %s", msg);
            goto fail;
        }
        if (size < LLAMA2C_HEADER_V1) {
            rc = fmt_err(e, path, "header", size, "truncated (the v1/v2 header is 256 bytes)");
            goto fail;
        }
        for (int i = 0; i < 7; i++) h[i] = rd_i32(base + 8 + 4 * i);
        if (base[36] > 1) { rc = fmt_err(e, path, "shared_classifier", 36, "not 0 or 1"); goto fail; }
        shared = base[36] == 1;
        if (version == 2) {
            group = rd_i32(base + 37);
            if (group <= 0 || group > (1 << 20)) {
                rc = fmt_err(e, path, "group_size", 37, "not in 1..2^20");
                goto fail;
            }
        }
        off = LLAMA2C_HEADER_V1;
    } else {
        if (size < 28) { rc = fmt_err(e, path, "header", 0, "truncated (the legacy header is 28 bytes)"); goto fail; }
        for (int i = 0; i < 7; i++) h[i] = rd_i32(base + 4 * i);
        shared = h[5] > 0;
        if (h[5] < 0 && h[5] != INT32_MIN) h[5] = -h[5];
        off = 28;
    }
    static const char *const hn[7] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads",
                                      "vocab_size", "seq_len"};
    const int64_t hmax[7] = {1 << 20, 1 << 22, LOADER_MAX_LAYERS, 1 << 16, 1 << 16, LOADER_MAX_VOCAB, 1 << 24};
    size_t hdr0 = version ? 8 : 0;
    for (int i = 0; i < 7; i++) {
        if (h[i] <= 0 || h[i] > hmax[i]) {
            char msg[96];
            snprintf(msg, sizeof msg, "%d is out of range 1..%lld (not a llama2.c checkpoint?)", h[i],
                     (long long)hmax[i]);
            rc = fmt_err(e, path, hn[i], hdr0 + 4 * (size_t)i, msg);
            goto fail;
        }
    }
    struct model_config *c = &mf->cfg;
    c->dim = h[0]; c->hidden_dim = h[1]; c->n_layers = h[2]; c->n_heads = h[3];
    c->n_kv_heads = h[4]; c->vocab_size = h[5]; c->seq_len = h[6];
    if (c->dim % c->n_heads || c->n_heads % c->n_kv_heads || (c->dim / c->n_heads) % 2) {
        rc = fmt_err(e, path, "n_heads", hdr0 + 12, "dim must split into n_heads even-sized heads, "
                     "n_heads a multiple of n_kv_heads");
        goto fail;
    }
    c->head_dim = c->dim / c->n_heads;
    c->rope_theta = 10000.0f;
    c->norm_eps = 1e-5f;
    c->rope = ROPE_INTERLEAVED;
    c->tied_output = shared;
    snprintf(c->arch, sizeof c->arch, "llama");
    const char *stem = strrchr(path, '/');
    snprintf(c->name, sizeof c->name, "%s", stem ? stem + 1 : path);

    // ---- size check: the file must be exactly what the header implies
    struct shape sh[W_N];
    weight_shapes(c, sh);
    const int *order = version == 0 ? order_v0 : version == 1 ? order_v1 : order_v2_q;
    uint64_t n_elems = 0, n_norm = 0;   // elements of the listed weights (v2: quantized ones)
    for (const int *w = order; *w != W_N; w++)
        n_elems += (uint64_t)sh[*w].rows * (uint64_t)sh[*w].cols * (w_layer[*w] ? (uint64_t)c->n_layers : 1);
    uint64_t n_cls = shared ? 0 : (uint64_t)sh[W_CLS].rows * (uint64_t)sh[W_CLS].cols;
    uint64_t freq = (uint64_t)c->seq_len * (uint64_t)c->head_dim;   // 2 x seq_len*head_dim/2 floats
    uint64_t want = off, want_alt = 0;
    if (version == 2) {
        n_norm = (uint64_t)c->dim * (2 * (uint64_t)c->n_layers + 1);
        uint64_t nq = n_elems + n_cls;
        for (const int *w = order; *w != W_N; w++) {
            uint64_t per = (uint64_t)sh[*w].rows * (uint64_t)sh[*w].cols;
            if (per % (uint64_t)group) {
                rc = fmt_err(e, path, "group_size", 37, "does not divide every weight matrix");
                goto fail;
            }
        }
        want += 4 * n_norm + nq + 4 * (nq / (uint64_t)group);
    } else {
        want += 4 * (n_elems + n_cls);
        if (version == 0) want_alt = want + 4 * freq;   // the freq_cis tail run.c skips
    }
    bool has_freq = version == 0 && size == want_alt;
    if (size != want && !has_freq) {
        char msg[200];
        if (version == 0)
            snprintf(msg, sizeof msg, "file is %zu bytes, the header implies %" PRIu64 " (or %" PRIu64
                     " with the freq_cis tail)", size, want, want_alt);
        else
            snprintf(msg, sizeof msg, "file is %zu bytes, the header implies %" PRIu64, size, want);
        rc = fmt_err(e, path, "file size", size < want ? size : want, msg);
        goto fail;
    }

    // ---- tensor views
    int n_views = 2 + 9 * c->n_layers + (shared ? 0 : 1);
    mf->tensors = loader_own(mf, (size_t)n_views * sizeof *mf->tensors);
    if (!mf->tensors) { rc = err_set(e, ERR_OOM, path, "out of memory"); goto fail; }
    if (version != 2) {
        uint64_t pos = off;
        for (const int *w = order; *w != W_N; w++) {
            int nl = w_layer[*w] ? c->n_layers : 1;
            uint64_t per = (uint64_t)sh[*w].rows * (uint64_t)sh[*w].cols * 4;
            for (int l = 0; l < nl; l++, pos += per) add_view(mf, *w, l, &sh[*w], base + pos, pos);
            if (*w == W_NORM && has_freq) pos += 4 * freq;   // the tail sits right after rms_final
        }
        if (!shared) add_view(mf, W_CLS, 0, &sh[W_CLS], base + pos, pos);
    } else {
        // norms fp32 (attn norms, ffn norms, final), then all int8 q's, then all fp32 scales
        uint64_t pos = off;
        static const int norms[] = {W_ATT_NORM, W_FFN_NORM, W_NORM};
        for (int k = 0; k < 3; k++) {
            int nl = w_layer[norms[k]] ? c->n_layers : 1;
            for (int l = 0; l < nl; l++, pos += 4 * (uint64_t)c->dim)
                add_view(mf, norms[k], l, &sh[norms[k]], base + pos, pos);
        }
        uint64_t qpos = pos, spos = pos + n_elems + n_cls;
        int wl[W_N + 1], nw = 0;
        for (const int *w = order; *w != W_N; w++) wl[nw++] = *w;
        if (!shared) wl[nw++] = W_CLS;
        for (int k = 0; k < nw; k++) {
            int w = wl[k], nl = w_layer[w] ? c->n_layers : 1;
            uint64_t per = (uint64_t)sh[w].rows * (uint64_t)sh[w].cols;
            for (int l = 0; l < nl; l++) {
                float *dst = loader_own(mf, per * 4);
                if (!dst) { rc = err_set(e, ERR_OOM, path, "out of memory (%" PRIu64 " floats)", per); goto fail; }
                const int8_t *q = (const int8_t *)(base + qpos);
                for (uint64_t g = 0; g < per / (uint64_t)group; g++) {
                    float s;
                    memcpy(&s, base + spos + 4 * g, 4);
                    for (int i = 0; i < group; i++) dst[g * group + i] = (float)q[g * group + i] * s;
                }
                add_view(mf, w, l, &sh[w], dst, qpos);
                qpos += per;
                spos += 4 * (per / (uint64_t)group);
            }
        }
    }
    mf->has_weights = true;

    // ---- tokenizer
    char tpath[1100];
    if ((rc = find_tokenizer(path, tokenizer_path, c->vocab_size, tpath, sizeof tpath, e))) goto fail;
    if ((rc = llama2c_tokenizer_load(&mf->vocab, tpath, c->vocab_size, e))) goto fail;
    return ERR_OK;
fail:
    model_file_close(mf);
    return rc;
}
