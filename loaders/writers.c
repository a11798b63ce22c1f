/* loaders/writers.c: writers for Hugging Face folders and llama2.c checkpoints/tokenizers (see
 * writers.h). Used to build test fixtures and by tools; the readers are safetensors.c,
 * hf_tokenizer.c and llama2c.c. Test: tests/test_loader_safetensors.c, tests/test_loader_llama2c.c */
#include "loaders/writers.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

// ------------------------------------------------------------------------------------------------
// Helpers

static const struct tensor_view *find(const struct tensor_view *t, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (!strcmp(t[i].name, name)) return &t[i];
    return NULL;
}

static uint64_t numel(const struct tensor_view *t) {
    uint64_t k = 1;
    for (int d = 0; d < t->n_dims; d++) k *= (uint64_t)t->ne[d];
    return k;
}

/* malloc'd f32 copy of a tensor (F32/F16/BF16, or any type with a dequantize_row). */
static float *to_f32(const struct tensor_view *t) {
    uint64_t k = numel(t);
    float *out = malloc((size_t)(k ? k : 1) * sizeof *out);
    if (!out) return NULL;
    if (t->type == QT_F32) {
        memcpy(out, t->data, (size_t)k * 4);
    } else if (t->type == QT_F16) {
        for (uint64_t i = 0; i < k; i++) out[i] = f16_to_f32(((const f16_t *)t->data)[i]);
    } else if (t->type == QT_BF16) {
        for (uint64_t i = 0; i < k; i++) out[i] = bf16_to_f32(((const bf16_t *)t->data)[i]);
    } else if ((unsigned)t->type < QT_COUNT && qtype_traits[t->type].dequantize_row) {
        uint64_t rows = k / (uint64_t)t->ne[0];
        size_t rb = qtype_row_bytes(t->type, t->ne[0]);
        for (uint64_t r = 0; r < rows; r++)
            qtype_traits[t->type].dequantize_row(out + r * (uint64_t)t->ne[0], (const char *)t->data + r * rb, t->ne[0]);
    } else {
        free(out);
        return NULL;
    }
    return out;
}

void writers_permute_qk(float *dst, const float *src, int n_heads, int head_dim, int64_t row_len,
                        bool inverse) {
    int half = head_dim / 2;
    for (int h = 0; h < n_heads; h++)
        for (int j = 0; j < 2; j++)
            for (int i = 0; i < half; i++) {
                int64_t hf = (int64_t)h * head_dim + (int64_t)j * half + i;
                int64_t gg = (int64_t)h * head_dim + 2 * i + j;
                const float *s = src + (inverse ? hf : gg) * row_len;
                memcpy(dst + (inverse ? gg : hf) * row_len, s, (size_t)row_len * sizeof *dst);
            }
}

/* JSON string literal with escapes; the bytes are UTF-8 and go out as they are. */
static void json_put_str(FILE *f, const char *s, size_t n) {
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c == '\n') fputs("\\n", f);
        else if (c == '\t') fputs("\\t", f);
        else if (c == '\r') fputs("\\r", f);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

static int close_checked(FILE *f, bool ok, const char *path, struct err *e) {
    if (ferror(f)) ok = false;
    if (fclose(f) != 0) ok = false;
    return ok ? ERR_OK : err_set(e, ERR_IO, path, "write failed: %s", strerror(errno));
}

// ------------------------------------------------------------------------------------------------
// tokenizer.json

struct hmap { uint32_t *slot; uint32_t mask; char **keys; uint32_t *lens; };

static uint32_t hstr(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return (uint32_t)(h ^ h >> 32);
}
static int hget(const struct hmap *m, const char *s, size_t n) {
    for (uint32_t h = hstr(s, n) & m->mask; m->slot[h] != UINT32_MAX; h = (h + 1) & m->mask)
        if (m->lens[m->slot[h]] == n && !memcmp(m->keys[m->slot[h]], s, n)) return (int)m->slot[h];
    return -1;
}

struct merge { float score; int32_t tok, a, b; };
static int merge_cmp(const void *x, const void *y) {
    const struct merge *p = x, *q = y;
    if (p->score != q->score) return p->score > q->score ? -1 : 1;
    if (p->tok != q->tok) return p->tok < q->tok ? -1 : 1;
    return p->a < q->a ? -1 : p->a > q->a;
}

/* Token i as stored in tokenizer.json: llama2.c-style vocabularies get "▁" back and plain <s>. */
static char *hf_token(const struct vocab *v, int i, uint32_t *len) {
    const char *s = v->tokens[i];
    uint32_t n = v->lens[i];
    if (v->llama2c_style && i == v->bos) s = "<s>", n = 3;
    if (v->llama2c_style && i == v->eos) s = "</s>", n = 4;
    char *out = malloc((size_t)n * 3 + 1), *o = out;
    if (!out) return NULL;
    for (uint32_t k = 0; k < n; k++) {
        if (v->llama2c_style && s[k] == ' ' && v->types[i] == TOK_NORMAL) { memcpy(o, "\xe2\x96\x81", 3); o += 3; }
        else *o++ = s[k];
    }
    *o = 0;
    *len = (uint32_t)(o - out);
    return out;
}

static int write_tokenizer_json(const char *dir, const struct vocab *v, struct err *e) {
    char path[1100];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    int n = v->n_tokens, rc = ERR_OK;
    bool spm = v->kind == VOCAB_SPM;
    struct hmap m = {0};
    struct merge *mg = NULL;
    size_t n_mg = 0;
    m.keys = calloc((size_t)n, sizeof *m.keys);
    m.lens = calloc((size_t)n, sizeof *m.lens);
    uint32_t cap = 16;
    while (cap < 2u * (uint32_t)n) cap *= 2;
    m.slot = malloc(cap * sizeof *m.slot);
    m.mask = cap - 1;
    FILE *f = NULL;
    if (!m.keys || !m.lens || !m.slot) { rc = err_set(e, ERR_OOM, path, "out of memory"); goto done; }
    memset(m.slot, 0xff, cap * sizeof *m.slot);
    for (int i = 0; i < n; i++) {
        if (!(m.keys[i] = hf_token(v, i, &m.lens[i]))) { rc = err_set(e, ERR_OOM, path, "out of memory"); goto done; }
        if (hget(&m, m.keys[i], m.lens[i]) >= 0) continue;   // keep the first id of a duplicate
        uint32_t h = hstr(m.keys[i], m.lens[i]) & m.mask;
        while (m.slot[h] != UINT32_MAX) h = (h + 1) & m.mask;
        m.slot[h] = (uint32_t)i;
    }
    if (spm) {   // merges recovered from the scores: every split of a normal piece into two pieces
        size_t cap_mg = 0;
        for (int i = 0; i < n; i++) {
            if (v->types[i] != TOK_NORMAL) continue;
            const char *s = m.keys[i];
            for (uint32_t k = 1; k < m.lens[i]; k++) {
                if (((unsigned char)s[k] & 0xC0) == 0x80) continue;   // split on character boundaries
                int a = hget(&m, s, k), b = hget(&m, s + k, m.lens[i] - k);
                if (a < 0 || b < 0 || v->types[a] != TOK_NORMAL || v->types[b] != TOK_NORMAL) continue;
                if (n_mg == cap_mg) {
                    cap_mg = cap_mg ? cap_mg * 2 : 1024;
                    struct merge *nm = realloc(mg, cap_mg * sizeof *nm);
                    if (!nm) { rc = err_set(e, ERR_OOM, path, "out of memory"); goto done; }
                    mg = nm;
                }
                mg[n_mg++] = (struct merge){v->scores ? v->scores[i] : 0.0f, i, a, b};
            }
        }
        if (n_mg) qsort(mg, n_mg, sizeof *mg, merge_cmp);
    }
    f = fopen(path, "wb");
    if (!f) { rc = err_set(e, ERR_IO, path, "cannot create: %s", strerror(errno)); goto done; }
    fputs("{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n  \"added_tokens\": [", f);
    bool first = true;
    for (int i = 0; i < n; i++) {
        int ty = v->types[i];
        if (ty != TOK_CONTROL && ty != TOK_UNKNOWN && ty != TOK_USER_DEFINED) continue;
        fprintf(f, "%s\n    {\"id\": %d, \"content\": ", first ? "" : ",", i);
        json_put_str(f, m.keys[i], m.lens[i]);
        fprintf(f, ", \"single_word\": false, \"lstrip\": false, \"rstrip\": false, \"normalized\": false, "
                   "\"special\": %s}", ty == TOK_USER_DEFINED ? "false" : "true");
        first = false;
    }
    fputs("\n  ],\n", f);
    if (spm) {
        fputs("  \"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [", f);
        if (v->add_space_prefix) fputs("{\"type\": \"Prepend\", \"prepend\": \"\\u2581\"}, ", f);
        fputs("{\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": \"\\u2581\"}]},\n", f);
        fputs("  \"pre_tokenizer\": null,\n", f);
    } else {
        fputs("  \"normalizer\": null,\n  \"pre_tokenizer\": ", f);
        if (!strcmp(v->pre, "smollm"))
            fputs("{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Digits\", \"individual_digits\": true}, "
                  "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": true, \"use_regex\": true}]},\n", f);
        else if (!strcmp(v->pre, "llama-bpe"))
            fputs("{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\": "
                  "\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}{1,3}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*"
                  "|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"}, \"behavior\": \"Isolated\", \"invert\": false}, "
                  "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": true, \"use_regex\": false}]},\n", f);
        else
            fputs("{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": true, \"use_regex\": true},\n", f);
    }
    if (v->add_bos && v->bos >= 0) {
        fputs("  \"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": ", f);
        json_put_str(f, m.keys[v->bos], m.lens[v->bos]);
        fputs(", \"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}]},\n", f);
    } else {
        fputs("  \"post_processor\": null,\n", f);
    }
    fputs(spm ? "  \"decoder\": {\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Replace\", \"pattern\": {\"String\": \"\\u2581\"}, "
                "\"content\": \" \"}, {\"type\": \"ByteFallback\"}, {\"type\": \"Fuse\"}]},\n"
              : "  \"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true, \"trim_offsets\": true, \"use_regex\": true},\n", f);
    fputs("  \"model\": {\"type\": \"BPE\", \"dropout\": null, \"unk_token\": ", f);
    if (v->unk >= 0 && v->types[v->unk] == TOK_UNKNOWN) json_put_str(f, m.keys[v->unk], m.lens[v->unk]);
    else fputs("null", f);
    fprintf(f, ", \"continuing_subword_prefix\": null, \"end_of_word_suffix\": null, \"fuse_unk\": %s, "
               "\"byte_fallback\": %s,\n    \"vocab\": {", spm ? "true" : "false", spm ? "true" : "false");
    for (int i = 0; i < n; i++) {
        if (hget(&m, m.keys[i], m.lens[i]) != i) continue;   // duplicate strings cannot be keys twice
        fputs(i ? ",\n      " : "\n      ", f);
        json_put_str(f, m.keys[i], m.lens[i]);
        fprintf(f, ": %d", i);
    }
    fputs("\n    },\n    \"merges\": [", f);
    if (spm) {
        for (size_t k = 0; k < n_mg; k++) {
            fputs(k ? ",\n      " : "\n      ", f);
            size_t la = m.lens[mg[k].a], lb = m.lens[mg[k].b];
            char *buf = malloc(la + lb + 1);
            if (!buf) { rc = err_set(e, ERR_OOM, path, "out of memory"); break; }
            memcpy(buf, m.keys[mg[k].a], la);
            buf[la] = ' ';
            memcpy(buf + la + 1, m.keys[mg[k].b], lb);
            json_put_str(f, buf, la + lb + 1);
            free(buf);
        }
    } else {
        for (int k = 0; k < v->n_merges; k++) {
            fputs(k ? ",\n      " : "\n      ", f);
            json_put_str(f, v->merges[k], strlen(v->merges[k]));
        }
    }
    fputs("\n    ]\n  }\n}\n", f);
    if (!rc) rc = close_checked(f, true, path, e);
    else fclose(f);
    if (rc) goto done;

    // tokenizer_config.json: bos/eos and the chat template
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    if (!(f = fopen(path, "wb"))) { rc = err_set(e, ERR_IO, path, "cannot create: %s", strerror(errno)); goto done; }
    fprintf(f, "{\n  \"add_bos_token\": %s", v->add_bos ? "true" : "false");
    if (v->bos >= 0) { fputs(",\n  \"bos_token\": ", f); json_put_str(f, m.keys[v->bos], m.lens[v->bos]); }
    if (v->eos >= 0) { fputs(",\n  \"eos_token\": ", f); json_put_str(f, m.keys[v->eos], m.lens[v->eos]); }
    if (v->chat_template) { fputs(",\n  \"chat_template\": ", f); json_put_str(f, v->chat_template, strlen(v->chat_template)); }
    fputs("\n}\n", f);
    rc = close_checked(f, true, path, e);
done:
    if (m.keys)
        for (int i = 0; i < n; i++) free(m.keys[i]);
    free(m.keys);
    free(m.lens);
    free(m.slot);
    free(mg);
    return rc;
}

// ------------------------------------------------------------------------------------------------
// Hugging Face folder

/* GGUF name -> HF name; false for tensors HF Llama does not have. */
static bool hf_name(const char *gg, char *out, size_t cap) {
    static const char *const glob[][2] = {{"token_embd.weight", "model.embed_tokens.weight"},
                                          {"output_norm.weight", "model.norm.weight"},
                                          {"output.weight", "lm_head.weight"}};
    for (int i = 0; i < 3; i++)
        if (!strcmp(gg, glob[i][0])) { snprintf(out, cap, "%s", glob[i][1]); return true; }
    static const char *const layer[][2] = {
        {"attn_q", "self_attn.q_proj"}, {"attn_k", "self_attn.k_proj"}, {"attn_v", "self_attn.v_proj"},
        {"attn_output", "self_attn.o_proj"}, {"ffn_gate", "mlp.gate_proj"}, {"ffn_up", "mlp.up_proj"},
        {"ffn_down", "mlp.down_proj"}, {"attn_norm", "input_layernorm"}, {"ffn_norm", "post_attention_layernorm"}};
    int l, used = 0;
    char part[64];
    if (sscanf(gg, "blk.%d.%63[a-z_].weight%n", &l, part, &used) != 2 || gg[used] != 0) return false;
    for (int i = 0; i < 9; i++)
        if (!strcmp(part, layer[i][0])) { snprintf(out, cap, "model.layers.%d.%s.weight", l, layer[i][1]); return true; }
    return false;
}

int safetensors_write_folder(const char *dir, const struct model_config *cfg, const struct vocab *v,
                             const struct tensor_view *t, int n, bool f16, struct err *e) {
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) return err_set(e, ERR_IO, dir, "cannot create: %s", strerror(errno));
    char path[1100];
    int rc = ERR_OK;
    // ---- config.json
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "wb");
    if (!f) return err_set(e, ERR_IO, path, "cannot create: %s", strerror(errno));
    fprintf(f, "{\n  \"architectures\": [\"LlamaForCausalLM\"],\n  \"model_type\": \"llama\",\n"
               "  \"hidden_size\": %d,\n  \"intermediate_size\": %d,\n  \"num_hidden_layers\": %d,\n"
               "  \"num_attention_heads\": %d,\n  \"num_key_value_heads\": %d,\n  \"vocab_size\": %d,\n"
               "  \"max_position_embeddings\": %d,\n  \"head_dim\": %d,\n  \"rope_theta\": %.9g,\n"
               "  \"rms_norm_eps\": %.9g,\n  \"tie_word_embeddings\": %s,\n  \"rope_scaling\": null,\n"
               "  \"hidden_act\": \"silu\",\n  \"torch_dtype\": \"%s\"\n}\n",
            cfg->dim, cfg->hidden_dim, cfg->n_layers, cfg->n_heads, cfg->n_kv_heads, cfg->vocab_size,
            cfg->seq_len, cfg->head_dim, (double)cfg->rope_theta, (double)cfg->norm_eps,
            cfg->tied_output ? "true" : "false", f16 ? "float16" : "float32");
    if ((rc = close_checked(f, true, path, e))) return rc;

    // ---- model.safetensors: header JSON padded with spaces to a multiple of 8, then the data
    size_t hcap = 256 + (size_t)n * 256, hlen = 0;
    char *hdr = malloc(hcap);
    if (!hdr) return err_set(e, ERR_OOM, dir, "out of memory");
    hlen += (size_t)snprintf(hdr, hcap, "{\"__metadata__\":{\"format\":\"pt\"}");
    uint64_t off = 0, esize = f16 ? 2 : 4;
    for (int i = 0; i < n; i++) {
        char name[128];
        if (!hf_name(t[i].name, name, sizeof name)) continue;
        if (cfg->tied_output && !strcmp(t[i].name, "output.weight")) continue;
        uint64_t nb = numel(&t[i]) * esize;
        hlen += (size_t)snprintf(hdr + hlen, hcap - hlen, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", name, f16 ? "F16" : "F32");
        for (int d = t[i].n_dims - 1; d >= 0; d--)
            hlen += (size_t)snprintf(hdr + hlen, hcap - hlen, "%" PRId64 "%s", t[i].ne[d], d ? "," : "");
        hlen += (size_t)snprintf(hdr + hlen, hcap - hlen, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", off, off + nb);
        off += nb;
    }
    hlen += (size_t)snprintf(hdr + hlen, hcap - hlen, "}");
    while (hlen % 8) hdr[hlen++] = ' ';
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (!(f = fopen(path, "wb"))) { free(hdr); return err_set(e, ERR_IO, path, "cannot create: %s", strerror(errno)); }
    uint64_t h64 = hlen;
    bool ok = fwrite(&h64, 8, 1, f) == 1 && fwrite(hdr, 1, hlen, f) == hlen;
    free(hdr);
    for (int i = 0; ok && i < n; i++) {
        char name[128];
        if (!hf_name(t[i].name, name, sizeof name)) continue;
        if (cfg->tied_output && !strcmp(t[i].name, "output.weight")) continue;
        float *x = to_f32(&t[i]);
        uint64_t k = numel(&t[i]);
        if (!x) { fclose(f); return err_set(e, ERR_UNSUPPORTED, path, "%s: cannot convert its type to f32", t[i].name); }
        // GGUF q/k rows are permuted for interleaved RoPE; undo it so NeoX RoPE on HF rows matches
        bool q = strstr(t[i].name, ".attn_q.") != NULL, kk = strstr(t[i].name, ".attn_k.") != NULL;
        if (q || kk) {
            float *p = malloc((size_t)k * sizeof *p);
            if (!p) { free(x); fclose(f); return err_set(e, ERR_OOM, path, "out of memory"); }
            writers_permute_qk(p, x, q ? cfg->n_heads : cfg->n_kv_heads, cfg->head_dim, t[i].ne[0], false);
            free(x);
            x = p;
        }
        if (f16) {
            for (uint64_t j = 0; ok && j < k; j++) {
                f16_t h = f32_to_f16(x[j]);
                ok = fwrite(&h, 2, 1, f) == 1;
            }
        } else {
            ok = fwrite(x, 4, (size_t)k, f) == (size_t)k;
        }
        free(x);
    }
    if ((rc = close_checked(f, ok, path, e))) return rc;
    if (v && v->n_tokens > 0) rc = write_tokenizer_json(dir, v, e);
    return rc;
}

// ------------------------------------------------------------------------------------------------
// llama2.c

int llama2c_tokenizer_write(const char *path, const struct vocab *v, struct err *e) {
    FILE *f = fopen(path, "wb");
    if (!f) return err_set(e, ERR_IO, path, "cannot create: %s", strerror(errno));
    char **tok = calloc((size_t)v->n_tokens, sizeof *tok);
    uint32_t *len = calloc((size_t)v->n_tokens, sizeof *len);
    int32_t max_len = 0;
    bool ok = tok && len;
    for (int i = 0; ok && i < v->n_tokens; i++) {
        const char *s = v->tokens[i];
        uint32_t n = v->lens[i], o = 0;
        if (!v->llama2c_style && i == v->bos) s = "\n<s>\n", n = 5;
        if (!v->llama2c_style && i == v->eos) s = "\n</s>\n", n = 6;
        if (!(tok[i] = malloc(n + 1))) { ok = false; break; }
        for (uint32_t k = 0; k < n; k++) {   // "▁" (e2 96 81) -> ' '
            if (!v->llama2c_style && k + 2 < n && !memcmp(s + k, "\xe2\x96\x81", 3)) { tok[i][o++] = ' '; k += 2; }
            else tok[i][o++] = s[k];
        }
        len[i] = o;
        if ((int32_t)o > max_len) max_len = (int32_t)o;
    }
    ok = ok && fwrite(&max_len, 4, 1, f) == 1;
    for (int i = 0; ok && i < v->n_tokens; i++) {
        float sc = v->scores ? v->scores[i] : 0.0f;
        ok = fwrite(&sc, 4, 1, f) == 1 && fwrite(&len[i], 4, 1, f) == 1 && fwrite(tok[i], 1, len[i], f) == len[i];
    }
    if (tok)
        for (int i = 0; i < v->n_tokens; i++) free(tok[i]);
    free(tok);
    free(len);
    return close_checked(f, ok, path, e);
}

int llama2c_write(const char *path, const struct model_config *cfg, const struct tensor_view *t, int n,
                  int version, struct err *e) {
    if (version < 0 || version > 2) return err_set(e, ERR_ARG, path, "llama2.c version %d (0, 1 or 2)", version);
    if (cfg->head_dim * cfg->n_heads != cfg->dim)
        return err_set(e, ERR_UNSUPPORTED, path, "llama2.c needs head_dim * n_heads == dim");
    // weights in file order; names are "blk.%d." prefixes when per layer
    static const char *const v0[] = {"token_embd", "*attn_norm", "*attn_q", "*attn_k", "*attn_v", "*attn_output",
                                     "*ffn_norm", "*ffn_gate", "*ffn_down", "*ffn_up", "output_norm", NULL};
    static const char *const v1[] = {"*attn_norm", "*ffn_norm", "output_norm", "token_embd", "*attn_q", "*attn_k",
                                     "*attn_v", "*attn_output", "*ffn_gate", "*ffn_down", "*ffn_up", NULL};
    static const char *const v2q[] = {"token_embd", "*attn_q", "*attn_k", "*attn_v", "*attn_output",
                                      "*ffn_gate", "*ffn_down", "*ffn_up", NULL};
    static const char *const v2n[] = {"*attn_norm", "*ffn_norm", "output_norm", NULL};
    FILE *f = fopen(path, "wb");
    if (!f) return err_set(e, ERR_IO, path, "cannot create: %s", strerror(errno));
    bool ok = true;
    int32_t h[7] = {cfg->dim, cfg->hidden_dim, cfg->n_layers, cfg->n_heads, cfg->n_kv_heads, cfg->vocab_size, cfg->seq_len};
    int group = 64;
    while (cfg->dim % group) group /= 2;
    if (version == 0) {
        if (!cfg->tied_output) h[5] = -h[5];
        ok = fwrite(h, 4, 7, f) == 7;
    } else {
        unsigned char hdr[256] = {0};
        uint32_t magic = 0x616b3432u;
        int32_t ver = version;
        memcpy(hdr, &magic, 4);
        memcpy(hdr + 4, &ver, 4);
        memcpy(hdr + 8, h, 28);
        hdr[36] = cfg->tied_output;
        if (version == 2) memcpy(hdr + 37, &group, 4);
        ok = fwrite(hdr, 1, 256, f) == 256;
    }
    // the list of tensors to write, as pointers
    const char *const *lists[2] = {version == 0 ? v0 : version == 1 ? v1 : v2n, version == 2 ? v2q : NULL};
    int rc = ERR_OK;
    int8_t *qbuf = NULL;
    float *scales = NULL;
    size_t n_scales = 0, cap_scales = 0;
    for (int li = 0; li < 2 && ok && !rc; li++) {
        const char *const *list = lists[li];
        if (!list) continue;
        bool quant = version == 2 && li == 1;
        // the untied output head ends the list (v2: the quantized one)
        int count = 0;
        while (list[count]) count++;
        bool add_cls = !cfg->tied_output && (quant || version < 2);
        for (int w = 0; w < count + (add_cls ? 1 : 0) && ok && !rc; w++) {
            const char *nm = w < count ? list[w] : "output";
            bool per_layer = nm[0] == '*';
            int nl = per_layer ? cfg->n_layers : 1;
            for (int l = 0; l < nl && ok && !rc; l++) {
                char full[96];
                if (per_layer) snprintf(full, sizeof full, "blk.%d.%s.weight", l, nm + 1);
                else snprintf(full, sizeof full, "%s.weight", nm);
                const struct tensor_view *tv = find(t, n, full);
                if (!tv) { rc = err_set(e, ERR_ARG, path, "tensor %s missing", full); break; }
                float *x = to_f32(tv);
                uint64_t k = numel(tv);
                if (!x) { rc = err_set(e, ERR_UNSUPPORTED, path, "%s: cannot convert to f32", full); break; }
                if (!quant) {
                    ok = fwrite(x, 4, (size_t)k, f) == (size_t)k;
                } else {
                    // symmetric int8 per group of `group`, scale = max|w| / 127 (export.py's Q8_0)
                    int8_t *q = realloc(qbuf, (size_t)k);
                    if (!q) { free(x); rc = err_set(e, ERR_OOM, path, "out of memory"); break; }
                    qbuf = q;
                    if (k % (uint64_t)group) { free(x); rc = err_set(e, ERR_ARG, path, "%s: size not a multiple of group %d", full, group); break; }
                    if (n_scales + k / (uint64_t)group > cap_scales) {
                        cap_scales = (n_scales + k / (uint64_t)group) * 2;
                        float *ns = realloc(scales, cap_scales * sizeof *ns);
                        if (!ns) { free(x); rc = err_set(e, ERR_OOM, path, "out of memory"); break; }
                        scales = ns;
                    }
                    for (uint64_t g = 0; g < k / (uint64_t)group; g++) {
                        float amax = 0.0f;
                        for (int i = 0; i < group; i++) amax = fmaxf(amax, fabsf(x[g * group + i]));
                        float s = amax / 127.0f;
                        for (int i = 0; i < group; i++)
                            q[g * group + i] = (int8_t)(s > 0 ? lrintf(x[g * group + i] / s) : 0);
                        scales[n_scales++] = s;
                    }
                    ok = fwrite(q, 1, (size_t)k, f) == (size_t)k;
                }
                free(x);
            }
            // legacy: the freq_cis tail (cos, then sin, seq_len x head_dim/2) follows rms_final
            if (version == 0 && w < count && !strcmp(nm, "output_norm")) {
                int half = cfg->head_dim / 2;
                for (int part = 0; part < 2 && ok; part++)
                    for (int p = 0; p < cfg->seq_len && ok; p++)
                        for (int i = 0; i < half && ok; i++) {
                            double fr = 1.0 / pow(cfg->rope_theta, (2.0 * i) / cfg->head_dim);
                            float val = (float)(part ? sin(p * fr) : cos(p * fr));
                            ok = fwrite(&val, 4, 1, f) == 1;
                        }
            }
        }
    }
    if (ok && !rc && version == 2) ok = fwrite(scales, 4, n_scales, f) == n_scales;
    free(qbuf);
    free(scales);
    if (rc) {
        fclose(f);
        return rc;
    }
    return close_checked(f, ok, path, e);
}
