/* loaders/safetensors.c: a Hugging Face Llama folder: config.json, model.safetensors (or the shards
 * named by model.safetensors.index.json), tokenizer.json (or tokenizer.model) and
 * tokenizer_config.json. Each shard is mmapped; a shard is | u64 n | n bytes of JSON | data |, the
 * JSON giving per tensor {dtype, shape (row-major), data_offsets [begin, end) relative to the data}.
 * HF names become GGUF names; ne is the reversed shape. q/k rows stay in HF order, so cfg.rope is
 * ROPE_NEOX. Test: tests/test_loader_safetensors.c */
#include "loaders/json_min.h"
#include "loaders/loader.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define ST_MAX_HEADER (100u << 20)   // the reference implementation's limit (100 MB)

static int read_text(const char *path, char **out, size_t *len, struct err *e) {
    FILE *f = fopen(path, "rb");
    if (!f) return err_set(e, ERR_IO, path, "cannot open");
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return err_set(e, ERR_IO, path, "not a regular file");
    }
    if ((uint64_t)st.st_size > JSON_MAX_BYTES) {
        fclose(f);
        return err_set(e, ERR_FORMAT, path, "file at byte 0: larger than 1 GiB");
    }
    size_t n = (size_t)st.st_size;
    char *buf = malloc(n + 1);
    if (!buf) { fclose(f); return err_set(e, ERR_OOM, path, "out of memory"); }
    if (fread(buf, 1, n, f) != n) { free(buf); fclose(f); return err_set(e, ERR_IO, path, "read error"); }
    fclose(f);
    buf[n] = 0;
    *out = buf;
    *len = n;
    return ERR_OK;
}

/* Reads and parses a JSON file; on success doc owns the tree. */
static int load_json(const char *path, struct json_doc *doc, struct err *e) {
    char *text = NULL;
    size_t len = 0;
    int rc = read_text(path, &text, &len, e);
    if (rc) return rc;
    rc = json_parse(doc, text, len, path, e);
    free(text);
    return rc;
}

static bool file_exists_(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

// ------------------------------------------------------------------------------------------------
// config.json

static int cfg_int(const struct json *root, const char *key, bool required, int def, int64_t max,
                   const char *path, int *out, struct err *e) {
    const struct json *v = json_get(root, key);
    if (!v || json_is_null(v)) {
        if (required) return err_set(e, ERR_FORMAT, path, "%s at byte 0: missing", key);
        *out = def;
        return ERR_OK;
    }
    int64_t x;
    if (!json_int(v, &x) || x <= 0 || x > max)
        return err_set(e, ERR_FORMAT, path, "%s at byte %" PRIu64 ": expected an integer in 1..%lld",
                       key, v->off, (long long)max);
    *out = (int)x;
    return ERR_OK;
}

static int cfg_float(const struct json *root, const char *key, double def, const char *path,
                     float *out, struct err *e) {
    const struct json *v = json_get(root, key);
    double d = def;
    if (v && !json_is_null(v) && (!json_num(v, &d) || !(d > 0) || !isfinite(d) || d > 3e38))
        return err_set(e, ERR_FORMAT, path, "%s at byte %" PRIu64 ": expected a positive number", key, v->off);
    *out = (float)d;
    return ERR_OK;
}

static int load_config(struct model_file *mf, const char *dir, struct err *e) {
    char path[1100];
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (!file_exists_(path))
        return err_set(e, ERR_IO, dir, "no config.json in this folder (not a Hugging Face model?)");
    struct json_doc doc;
    int rc = load_json(path, &doc, e);
    if (rc) return rc;
    const struct json *r = doc.root;
    struct model_config *c = &mf->cfg;
    if (r->type != JSON_OBJECT) { rc = err_set(e, ERR_FORMAT, path, "config at byte 0: not a JSON object"); goto done; }
    const char *mt = json_get_str(r, "model_type");
    const char *arch = json_str(json_at(json_get(r, "architectures"), 0));
    bool llama = (mt && !strcmp(mt, "llama")) || (arch && !strcmp(arch, "LlamaForCausalLM"));
    if (!llama) {
        rc = err_set(e, ERR_UNSUPPORTED, path, "model_type at byte 0: '%s' / architectures '%s': only "
                     "llama (LlamaForCausalLM) is supported", mt ? mt : "?", arch ? arch : "?");
        goto done;
    }
    if ((rc = cfg_int(r, "hidden_size", true, 0, 1 << 20, path, &c->dim, e))) goto done;
    if ((rc = cfg_int(r, "intermediate_size", true, 0, 1 << 22, path, &c->hidden_dim, e))) goto done;
    if ((rc = cfg_int(r, "num_hidden_layers", true, 0, LOADER_MAX_LAYERS, path, &c->n_layers, e))) goto done;
    if ((rc = cfg_int(r, "num_attention_heads", true, 0, 1 << 16, path, &c->n_heads, e))) goto done;
    if ((rc = cfg_int(r, "num_key_value_heads", false, c->n_heads, 1 << 16, path, &c->n_kv_heads, e))) goto done;
    if ((rc = cfg_int(r, "vocab_size", true, 0, LOADER_MAX_VOCAB, path, &c->vocab_size, e))) goto done;
    if ((rc = cfg_int(r, "max_position_embeddings", false, 2048, 1 << 24, path, &c->seq_len, e))) goto done;
    if ((rc = cfg_int(r, "head_dim", false, c->dim / c->n_heads, 1 << 16, path, &c->head_dim, e))) goto done;
    if ((rc = cfg_float(r, "rope_theta", 10000.0, path, &c->rope_theta, e))) goto done;
    if ((rc = cfg_float(r, "rms_norm_eps", 1e-6, path, &c->norm_eps, e))) goto done;   // LlamaConfig default
    const struct json *rs = json_get(r, "rope_scaling");
    if (rs && !json_is_null(rs)) {
        const char *t = json_get_str(rs, "rope_type");
        if (!t) t = json_get_str(rs, "type");
        rc = err_set(e, ERR_UNSUPPORTED, path, "rope_scaling at byte %" PRIu64 ": type '%s' is not supported",
                     rs->off, t ? t : "?");
        goto done;
    }
    bool tie = false;
    const struct json *tv = json_get(r, "tie_word_embeddings");
    if (tv && !json_bool(tv, &tie)) {
        rc = err_set(e, ERR_FORMAT, path, "tie_word_embeddings at byte %" PRIu64 ": expected true/false", tv->off);
        goto done;
    }
    c->tied_output = tie;
    c->rope = ROPE_NEOX;
    snprintf(c->arch, sizeof c->arch, "llama");
    char tmp[1024];   // the folder's last path component names the model
    snprintf(tmp, sizeof tmp, "%s", dir);
    for (size_t k = strlen(tmp); k > 1 && tmp[k - 1] == '/'; k--) tmp[k - 1] = 0;
    const char *slash = strrchr(tmp, '/');
    snprintf(c->name, sizeof c->name, "%.127s", slash && slash[1] ? slash + 1 : tmp);
done:
    json_free(&doc);
    return rc;
}

// ------------------------------------------------------------------------------------------------
// Tensor names: HF -> GGUF

/* Writes the GGUF name of an HF tensor into out; false if the tensor is not one we use. */
static bool map_name(const char *hf, char *out, size_t cap) {
    static const struct { const char *hf, *gg; } glob[] = {
        {"model.embed_tokens.weight", "token_embd.weight"},
        {"model.norm.weight", "output_norm.weight"},
        {"lm_head.weight", "output.weight"},
    };
    for (size_t i = 0; i < sizeof glob / sizeof glob[0]; i++)
        if (!strcmp(hf, glob[i].hf)) { snprintf(out, cap, "%s", glob[i].gg); return true; }
    static const struct { const char *hf, *gg; } layer[] = {
        {"self_attn.q_proj.weight", "attn_q"}, {"self_attn.k_proj.weight", "attn_k"},
        {"self_attn.v_proj.weight", "attn_v"}, {"self_attn.o_proj.weight", "attn_output"},
        {"mlp.gate_proj.weight", "ffn_gate"}, {"mlp.up_proj.weight", "ffn_up"},
        {"mlp.down_proj.weight", "ffn_down"}, {"input_layernorm.weight", "attn_norm"},
        {"post_attention_layernorm.weight", "ffn_norm"},
    };
    const char *pre = "model.layers.";
    if (strncmp(hf, pre, strlen(pre))) return false;
    const char *p = hf + strlen(pre);
    int l = 0, digits = 0;
    while (*p >= '0' && *p <= '9' && digits < 5) l = l * 10 + (*p++ - '0'), digits++;
    if (!digits || *p != '.' || l >= LOADER_MAX_LAYERS) return false;
    p++;
    for (size_t i = 0; i < sizeof layer / sizeof layer[0]; i++)
        if (!strcmp(p, layer[i].hf)) { snprintf(out, cap, "blk.%d.%s.weight", l, layer[i].gg); return true; }
    return false;
}

// ------------------------------------------------------------------------------------------------
// One .safetensors file

struct tlist { struct tensor_view *v; int n, cap; };

static int load_shard(struct model_file *mf, const char *path, struct tlist *tl, struct err *e) {
    const unsigned char *base;
    size_t size;
    int rc = loader_map_file(mf, path, (const void **)&base, &size, e);
    if (rc) return rc;
    if (size < 8) return err_set(e, ERR_FORMAT, path, "header length at byte 0: file shorter than 8 bytes");
    uint64_t hlen;
    memcpy(&hlen, base, 8);
    if (hlen > ST_MAX_HEADER || hlen > size - 8)
        return err_set(e, ERR_FORMAT, path, "header length at byte 0: %" PRIu64 " exceeds the file (%zu bytes) "
                       "or 100 MB", hlen, size);
    struct json_doc doc;
    if ((rc = json_parse(&doc, (const char *)base + 8, (size_t)hlen, path, e))) return rc;
    const struct json *r = doc.root;
    uint64_t data0 = 8 + hlen, data_size = size - data0;
    if (r->type != JSON_OBJECT) { rc = err_set(e, ERR_FORMAT, path, "header at byte 8: not a JSON object"); goto done; }
    for (size_t i = 0; i < json_len(r); i++) {
        const struct json *t = json_at(r, i);
        uint64_t at = 8 + t->off;
        if (!strcmp(t->key, "__metadata__")) continue;
        char name[96];
        if (!map_name(t->key, name, sizeof name)) continue;   // e.g. rotary_emb.inv_freq: not used
        const char *dt = json_get_str(t, "dtype");
        const struct json *shape = json_get(t, "shape"), *offs = json_get(t, "data_offsets");
        if (!dt || !shape || shape->type != JSON_ARRAY || json_len(offs) != 2) {
            rc = err_set(e, ERR_FORMAT, path, "%s at byte %" PRIu64 ": needs dtype, shape and data_offsets[2]", t->key, at);
            goto done;
        }
        enum qtype qt;
        uint64_t esize;
        if (!strcmp(dt, "F32")) qt = QT_F32, esize = 4;
        else if (!strcmp(dt, "F16")) qt = QT_F16, esize = 2;
        else if (!strcmp(dt, "BF16")) qt = QT_BF16, esize = 2;
        else {
            rc = err_set(e, ERR_UNSUPPORTED, path, "%s at byte %" PRIu64 ": dtype %s not supported (F32, F16, BF16)",
                         t->key, at, dt);
            goto done;
        }
        size_t nd = json_len(shape);
        if (nd < 1 || nd > 4) {
            rc = err_set(e, ERR_FORMAT, path, "%s at byte %" PRIu64 ": %zu dims (1..4 supported)", t->key, at, nd);
            goto done;
        }
        int64_t ne[4] = {1, 1, 1, 1};
        uint64_t numel = 1;
        for (size_t d = 0; d < nd; d++) {
            int64_t x;
            if (!json_int(json_at(shape, d), &x) || x <= 0 || x > LOADER_MAX_DIM || !mul_ok_u64(numel, (uint64_t)x, &numel)) {
                rc = err_set(e, ERR_FORMAT, path, "%s at byte %" PRIu64 ": bad shape[%zu]", t->key, at, d);
                goto done;
            }
            ne[nd - 1 - d] = x;   // row-major shape [.., out, in] -> ne[0] = in
        }
        int64_t b0, b1;
        uint64_t nbytes;
        if (!json_int(json_at(offs, 0), &b0) || !json_int(json_at(offs, 1), &b1) || b0 < 0 || b1 < b0 ||
            (uint64_t)b1 > data_size) {
            rc = err_set(e, ERR_FORMAT, path, "%s at byte %" PRIu64 ": data_offsets outside the data section "
                         "(%" PRIu64 " bytes)", t->key, at, data_size);
            goto done;
        }
        if (!mul_ok_u64(numel, esize, &nbytes) || nbytes != (uint64_t)(b1 - b0)) {
            rc = err_set(e, ERR_FORMAT, path, "%s at byte %" PRIu64 ": data_offsets span %" PRId64
                         " bytes, shape x %s needs %" PRIu64, t->key, at, b1 - b0, dt, nbytes);
            goto done;
        }
        for (int k = 0; k < tl->n; k++)
            if (!strcmp(tl->v[k].name, name)) {
                rc = err_set(e, ERR_FORMAT, path, "%s at byte %" PRIu64 ": duplicate tensor", t->key, at);
                goto done;
            }
        if (tl->n == tl->cap) {
            int cap = tl->cap ? tl->cap * 2 : 64;
            struct tensor_view *nv = realloc(tl->v, (size_t)cap * sizeof *nv);
            if (!nv) { rc = err_set(e, ERR_OOM, path, "out of memory"); goto done; }
            tl->v = nv;
            tl->cap = cap;
        }
        if (tl->n >= LOADER_MAX_TENSORS) { rc = err_set(e, ERR_FORMAT, path, "too many tensors"); goto done; }
        struct tensor_view *tv = &tl->v[tl->n++];
        memset(tv, 0, sizeof *tv);
        snprintf(tv->name, sizeof tv->name, "%s", name);
        tv->type = qt;
        tv->n_dims = (int)nd;
        memcpy(tv->ne, ne, sizeof ne);
        tv->nbytes = nbytes;
        tv->offset = data0 + (uint64_t)b0;
        const unsigned char *src = base + tv->offset;
        if ((uintptr_t)src % esize) {   // header length not a multiple of 4: copy to aligned memory
            void *dst = loader_own(mf, nbytes);
            if (!dst) { rc = err_set(e, ERR_OOM, path, "out of memory"); goto done; }
            memcpy(dst, src, nbytes);
            src = dst;
        }
        tv->data = src;
    }
done:
    json_free(&doc);
    return rc;
}

/* A shard file name from the index must be a plain file name inside the folder. */
static bool safe_name(const char *s) {
    return s && *s && !strchr(s, '/') && !strchr(s, '\\') && strcmp(s, ".") && strcmp(s, "..");
}

// ------------------------------------------------------------------------------------------------
// tokenizer_config.json: chat template, bos/eos, add_bos

static int find_token(const struct vocab *v, const char *s) {
    for (int i = 0; i < v->n_tokens; i++)
        if (!strcmp(v->tokens[i], s)) return i;
    return -1;
}

static const char *token_content(const struct json *t) {
    const char *s = json_str(t);
    return s ? s : json_get_str(t, "content");
}

static int load_tokenizer_config(struct vocab *v, const char *path, struct err *e) {
    struct json_doc doc;
    int rc = load_json(path, &doc, e);
    if (rc) return rc;
    const struct json *r = doc.root;
    const char *s;
    if ((s = token_content(json_get(r, "bos_token"))) && find_token(v, s) >= 0) v->bos = find_token(v, s);
    if ((s = token_content(json_get(r, "eos_token"))) && find_token(v, s) >= 0) v->eos = find_token(v, s);
    if ((s = token_content(json_get(r, "pad_token"))) && find_token(v, s) >= 0) v->pad = find_token(v, s);
    bool b;
    if (json_bool(json_get(r, "add_bos_token"), &b)) v->add_bos = b;
    const struct json *ct = json_get(r, "chat_template");
    const char *tmpl = json_str(ct);
    if (!tmpl && ct && ct->type == JSON_ARRAY) {   // [{"name": "default", "template": "..."}, ...]
        for (size_t i = 0; i < json_len(ct) && !tmpl; i++)
            if (json_get_str(json_at(ct, i), "name") && !strcmp(json_get_str(json_at(ct, i), "name"), "default"))
                tmpl = json_get_str(json_at(ct, i), "template");
        if (!tmpl) tmpl = json_get_str(json_at(ct, 0), "template");
    }
    if (tmpl) {
        const struct json *tj = ct->type == JSON_STRING ? ct : NULL;
        size_t len = tj ? tj->len : strlen(tmpl);
        if (len > LOADER_MAX_STRING) {
            rc = err_set(e, ERR_FORMAT, path, "chat_template at byte %" PRIu64 ": longer than 16 MiB", ct->off);
        } else if (!(v->chat_template = vocab_strdup(v, tmpl, len))) {
            rc = err_set(e, ERR_OOM, path, "out of memory");
        }
    }
    json_free(&doc);
    return rc;
}

// ------------------------------------------------------------------------------------------------

int safetensors_open(struct model_file *mf, const char *dir, struct err *e) {
    memset(mf, 0, sizeof *mf);
    mf->file_type = -1;
    mf->vocab.bos = mf->vocab.eos = mf->vocab.unk = mf->vocab.pad = mf->vocab.eot = -1;
    snprintf(mf->path, sizeof mf->path, "%s", dir);
    mf->format = MF_SAFETENSORS;
    struct tlist tl = {0};
    struct json_doc idx = {0};
    char path[1100];
    int rc = load_config(mf, dir, e);
    if (rc) goto fail;

    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (file_exists_(path)) {
        if ((rc = load_shard(mf, path, &tl, e))) goto fail;
    } else {
        snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
        if (!file_exists_(path)) {
            rc = err_set(e, ERR_IO, dir, "no model.safetensors or model.safetensors.index.json in this folder");
            goto fail;
        }
        if ((rc = load_json(path, &idx, e))) goto fail;
        const struct json *wm = json_get(idx.root, "weight_map");
        if (!wm || wm->type != JSON_OBJECT) {
            rc = err_set(e, ERR_FORMAT, path, "weight_map at byte 0: missing or not an object");
            goto fail;
        }
        // each distinct shard once, in order of first mention
        for (size_t i = 0; i < json_len(wm); i++) {
            const struct json *f = json_at(wm, i);
            const char *fn = json_str(f);
            if (!safe_name(fn)) {
                rc = err_set(e, ERR_FORMAT, path, "weight_map at byte %" PRIu64 ": shard name must be a plain "
                             "file name", f->off);
                goto fail;
            }
            bool seen = false;
            for (size_t j = 0; j < i && !seen; j++) seen = !strcmp(json_str(json_at(wm, j)), fn);
            if (seen) continue;
            char sp[1100];
            snprintf(sp, sizeof sp, "%s/%s", dir, fn);
            if ((rc = load_shard(mf, sp, &tl, e))) goto fail;
        }
    }
    if (tl.n == 0) { rc = err_set(e, ERR_FORMAT, dir, "no Llama tensors found in the safetensors files"); goto fail; }
    mf->tensors = loader_own(mf, (size_t)tl.n * sizeof *mf->tensors);
    if (!mf->tensors) { rc = err_set(e, ERR_OOM, dir, "out of memory"); goto fail; }
    memcpy(mf->tensors, tl.v, (size_t)tl.n * sizeof *tl.v);
    mf->n_tensors = tl.n;
    mf->has_weights = true;
    if (!model_file_find(mf, "output.weight")) {
        if (!mf->cfg.tied_output) {
            rc = err_set(e, ERR_FORMAT, dir, "lm_head.weight missing and config.json tie_word_embeddings is false");
            goto fail;
        }
    } else {
        mf->cfg.tied_output = false;   // an explicit head wins
    }

    // tokenizer
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    if (file_exists_(path)) {
        rc = hf_tokenizer_json_load(&mf->vocab, path, e);
    } else {
        snprintf(path, sizeof path, "%s/tokenizer.model", dir);
        if (file_exists_(path)) rc = spm_model_load(&mf->vocab, path, e);
        else rc = err_set(e, ERR_IO, dir, "no tokenizer.json or tokenizer.model in this folder");
    }
    if (rc) goto fail;
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    if (file_exists_(path) && (rc = load_tokenizer_config(&mf->vocab, path, e))) goto fail;
    free(tl.v);
    json_free(&idx);
    return ERR_OK;
fail:
    free(tl.v);
    json_free(&idx);
    model_file_close(mf);
    return rc;
}
