/* loaders/hf_tokenizer.c: Hugging Face tokenizer.json (model.type "BPE") -> struct vocab.
 * Two families: GPT-2 style byte-level BPE (ByteLevel pre-tokenizer; SmolLM2, Llama-3) becomes
 * VOCAB_BPE with its merges; Llama-2 style BPE (byte_fallback, "▁" pieces, normalizer prepending
 * "▁") becomes VOCAB_SPM with score = -rank of the merge that creates the token, so SentencePiece
 * score-ordered merging reproduces the merge ranks. Test: tests/test_loader_safetensors.c */
#include "loaders/json_min.h"
#include "loaders/loader.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

// ------------------------------------------------------------------------------------------------
// A small string -> id hash (open addressing, FNV-1a)

struct strmap { uint32_t *slot; uint32_t mask; char **keys; const uint32_t *lens; };

static uint64_t fnv(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static bool strmap_init(struct strmap *m, struct vocab *v) {
    uint32_t cap = 16;
    while (cap < (uint32_t)v->n_tokens * 2u) cap *= 2;
    m->slot = malloc((size_t)cap * sizeof *m->slot);
    if (!m->slot) return false;
    memset(m->slot, 0xff, (size_t)cap * sizeof *m->slot);
    m->mask = cap - 1;
    m->keys = v->tokens;
    m->lens = v->lens;
    for (int32_t i = 0; i < v->n_tokens; i++) {
        if (!v->tokens[i]) continue;
        uint32_t h = (uint32_t)fnv(v->tokens[i], v->lens[i]) & m->mask;
        while (m->slot[h] != UINT32_MAX) h = (h + 1) & m->mask;
        m->slot[h] = (uint32_t)i;
    }
    return true;
}

static int strmap_get(const struct strmap *m, const char *s, size_t n) {
    uint32_t h = (uint32_t)fnv(s, n) & m->mask;
    for (; m->slot[h] != UINT32_MAX; h = (h + 1) & m->mask) {
        uint32_t id = m->slot[h];
        if (m->lens[id] == n && !memcmp(m->keys[id], s, n)) return (int)id;
    }
    return -1;
}

// ------------------------------------------------------------------------------------------------
// Structure probes

/* True if node (or, for a "Sequence", any of its members under `list`) has type `type`. */
static const struct json *find_type(const struct json *node, const char *list, const char *type) {
    if (!node) return NULL;
    const char *t = json_get_str(node, "type");
    if (t && !strcmp(t, type)) return node;
    if (t && !strcmp(t, "Sequence")) {
        const struct json *arr = json_get(node, list);
        for (size_t i = 0; i < json_len(arr); i++) {
            const struct json *f = find_type(json_at(arr, i), list, type);
            if (f) return f;
        }
    }
    return NULL;
}

static bool contains(const char *s, const char *sub) { return s && strstr(s, sub); }

/* A name for the pre-tokenizer regex family, as llama.cpp's tokenizer.ggml.pre spells it. */
static void pre_name(const struct json *pre, char *out, size_t cap) {
    const struct json *split = find_type(pre, "pretokenizers", "Split");
    const char *rx = split ? json_get_str(json_get(split, "pattern"), "Regex") : NULL;
    const struct json *digits = find_type(pre, "pretokenizers", "Digits");
    bool indiv = false;
    if (digits) json_bool(json_get(digits, "individual_digits"), &indiv);
    if (contains(rx, "\\p{N}{1,3}")) snprintf(out, cap, "llama-bpe");
    else if (digits && indiv) snprintf(out, cap, "smollm");
    else snprintf(out, cap, "gpt2");
}

/* Does the post-processor put a special token first in single sequences (i.e. add BOS)? */
static bool adds_bos(const struct json *pp, bool dflt) {
    if (!pp || json_is_null(pp)) return dflt;
    const struct json *tp = find_type(pp, "processors", "TemplateProcessing");
    if (!tp) return false;
    const struct json *first = json_at(json_get(tp, "single"), 0);
    return json_get(first, "SpecialToken") != NULL;
}

static int hf_fail(struct err *e, const char *path, const char *field, const struct json *at, const char *what) {
    return err_set(e, ERR_FORMAT, path, "%s at byte %" PRIu64 ": %s", field, at ? at->off : 0, what);
}

static int first_of(const struct strmap *m, const char *const *names) {
    for (; *names; names++) {
        int id = strmap_get(m, *names, strlen(*names));
        if (id >= 0) return id;
    }
    return -1;
}

static bool one_char(const char *s, uint32_t len) {
    if (!len) return false;
    unsigned char c = (unsigned char)s[0];
    uint32_t k = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : 4;
    return len == k;
}

// ------------------------------------------------------------------------------------------------

int hf_tokenizer_json_load(struct vocab *v, const char *path, struct err *e) {
    vocab_free(v);
    struct json_doc doc = {0};
    struct strmap map = {0};
    char *text = NULL;
    int rc;
    // ---- read and parse
    {
        FILE *f = fopen(path, "rb");
        if (!f) return err_set(e, ERR_IO, path, "cannot open");
        struct stat st;
        if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size > JSON_MAX_BYTES) {
            fclose(f);
            return err_set(e, ERR_IO, path, "not a regular file or larger than 1 GiB");
        }
        size_t n = (size_t)st.st_size;
        text = malloc(n + 1);
        if (!text || fread(text, 1, n, f) != n) {
            fclose(f);
            free(text);
            return err_set(e, ERR_IO, path, "read error or out of memory");
        }
        fclose(f);
        rc = json_parse(&doc, text, n, path, e);
        free(text);
        if (rc) return rc;
    }
    const struct json *r = doc.root;
    const struct json *model = json_get(r, "model");
    const char *mtype = json_get_str(model, "type");
    const struct json *vj = json_get(model, "vocab"), *mj = json_get(model, "merges");
    const struct json *added = json_get(r, "added_tokens");
    if (!model || model->type != JSON_OBJECT) { rc = hf_fail(e, path, "model", r, "missing or not an object"); goto done; }
    if (mtype && strcmp(mtype, "BPE")) {
        rc = err_set(e, ERR_UNSUPPORTED, path, "model.type at byte %" PRIu64 ": '%s' (only BPE is supported)",
                     model->off, mtype);
        goto done;
    }
    if (!vj || vj->type != JSON_OBJECT || json_len(vj) == 0) { rc = hf_fail(e, path, "model.vocab", model, "missing or empty"); goto done; }
    if (mj && mj->type != JSON_ARRAY) { rc = hf_fail(e, path, "model.merges", mj, "not an array"); goto done; }
    if (added && added->type != JSON_ARRAY) { rc = hf_fail(e, path, "added_tokens", added, "not an array"); goto done; }

    const struct json *pre = json_get(r, "pre_tokenizer"), *norm = json_get(r, "normalizer");
    bool byte_level = find_type(pre, "pretokenizers", "ByteLevel") != NULL ||
                      find_type(json_get(r, "decoder"), "decoders", "ByteLevel") != NULL;
    bool fallback = false;
    json_bool(json_get(model, "byte_fallback"), &fallback);
    const struct json *prepend = find_type(norm, "normalizers", "Prepend");
    const struct json *meta = find_type(pre, "pretokenizers", "Metaspace");
    bool spm = !byte_level && (fallback || prepend || meta);
    if (!byte_level && !spm) {
        rc = err_set(e, ERR_UNSUPPORTED, path, "pre_tokenizer at byte %" PRIu64 ": neither byte-level BPE nor "
                     "SentencePiece-style BPE (byte_fallback / Metaspace)", pre ? pre->off : 0);
        goto done;
    }

    // ---- vocabulary size: max id + 1 over vocab and added_tokens
    size_t n_entries = json_len(vj) + json_len(added);
    int64_t max_id = -1;
    for (size_t pass = 0; pass < 2; pass++) {
        const struct json *src = pass ? added : vj;
        for (size_t i = 0; i < json_len(src); i++) {
            const struct json *t = json_at(src, i), *idj = pass ? json_get(t, "id") : t;
            int64_t id;
            if (!json_int(idj, &id) || id < 0 || id >= LOADER_MAX_VOCAB) {
                rc = hf_fail(e, path, pass ? "added_tokens.id" : "model.vocab", idj ? idj : t, "id missing or out of range");
                goto done;
            }
            if (pass && !json_str(json_get(t, "content"))) { rc = hf_fail(e, path, "added_tokens.content", t, "missing"); goto done; }
            if (id > max_id) max_id = id;
        }
    }
    if ((uint64_t)max_id + 1 > 2 * n_entries + 16) {
        rc = hf_fail(e, path, "model.vocab", vj, "token ids are far sparser than the entries (corrupt ids?)");
        goto done;
    }
    int32_t n = (int32_t)(max_id + 1);
    v->kind = spm ? VOCAB_SPM : VOCAB_BPE;
    v->n_tokens = n;
    v->tokens = vocab_alloc(v, (size_t)n * sizeof *v->tokens);
    v->lens = vocab_alloc(v, (size_t)n * sizeof *v->lens);
    v->scores = vocab_alloc(v, (size_t)n * sizeof *v->scores);
    v->types = vocab_alloc(v, (size_t)n * sizeof *v->types);
    if (!v->tokens || !v->lens || !v->scores || !v->types) { rc = err_set(e, ERR_OOM, path, "out of memory"); goto done; }
    for (size_t pass = 0; pass < 2; pass++) {
        const struct json *src = pass ? added : vj;
        for (size_t i = 0; i < json_len(src); i++) {
            const struct json *t = json_at(src, i);
            int64_t id;
            json_int(pass ? json_get(t, "id") : t, &id);
            const char *s = pass ? json_get_str(t, "content") : t->key;
            uint32_t len = pass ? json_get(t, "content")->len : t->key_len;
            if (v->tokens[id]) {
                if (v->lens[id] != len || memcmp(v->tokens[id], s, len)) {
                    rc = hf_fail(e, path, "token id", t, "two different tokens share one id");
                    goto done;
                }
            } else if (!(v->tokens[id] = vocab_strdup(v, s, len))) {
                rc = err_set(e, ERR_OOM, path, "out of memory");
                goto done;
            }
            v->lens[id] = len;
            if (pass) {
                bool special = false;
                json_bool(json_get(t, "special"), &special);
                v->types[id] = special ? TOK_CONTROL : TOK_USER_DEFINED;
            } else if (!v->types[id]) {
                v->types[id] = TOK_NORMAL;
            }
        }
    }
    for (int32_t i = 0; i < n; i++) {   // holes in the id space
        if (v->tokens[i]) continue;
        char buf[32];
        int k = snprintf(buf, sizeof buf, "<unused_%d>", i);
        if (!(v->tokens[i] = vocab_strdup(v, buf, (size_t)k))) { rc = err_set(e, ERR_OOM, path, "out of memory"); goto done; }
        v->lens[i] = (uint32_t)k;
        v->types[i] = TOK_UNUSED;
    }
    if (!strmap_init(&map, v)) { rc = err_set(e, ERR_OOM, path, "out of memory"); goto done; }

    // ---- merges
    size_t nm = json_len(mj);
    if (nm > LOADER_MAX_ARRAY) { rc = hf_fail(e, path, "model.merges", mj, "too many merges"); goto done; }
    if (!spm) {
        v->merges = vocab_alloc(v, (nm ? nm : 1) * sizeof *v->merges);
        if (!v->merges) { rc = err_set(e, ERR_OOM, path, "out of memory"); goto done; }
    }
    float unmerged = -(float)nm - 1.0f;   // multi-char SPM tokens no merge creates: lowest priority
    if (spm)
        for (int32_t i = 0; i < n; i++) v->scores[i] = one_char(v->tokens[i], v->lens[i]) ? 0.0f : unmerged;
    for (size_t i = 0; i < nm; i++) {
        const struct json *m = json_at(mj, i);
        const char *a, *b;
        size_t la, lb;
        if (m->type == JSON_STRING) {
            const char *sp = memchr(m->str, ' ', m->len);
            if (!sp) { rc = hf_fail(e, path, "model.merges", m, "merge without a space"); goto done; }
            a = m->str, la = (size_t)(sp - m->str), b = sp + 1, lb = m->len - la - 1;
        } else if (m->type == JSON_ARRAY && json_len(m) == 2 && json_str(json_at(m, 0)) && json_str(json_at(m, 1))) {
            a = json_at(m, 0)->str, la = json_at(m, 0)->len, b = json_at(m, 1)->str, lb = json_at(m, 1)->len;
        } else {
            rc = hf_fail(e, path, "model.merges", m, "merge is neither \"a b\" nor [a, b]");
            goto done;
        }
        if (la + lb + 2 > LOADER_MAX_STRING) { rc = hf_fail(e, path, "model.merges", m, "too long"); goto done; }
        char *joined = vocab_alloc(v, la + lb + 2);
        if (!joined) { rc = err_set(e, ERR_OOM, path, "out of memory"); goto done; }
        memcpy(joined, a, la);
        joined[la] = ' ';
        memcpy(joined + la + 1, b, lb);
        if (!spm) {
            v->merges[i] = joined;
            continue;
        }
        memmove(joined + la, joined + la + 1, lb);   // a+b without the space
        joined[la + lb] = 0;
        int id = strmap_get(&map, joined, la + lb);
        if (id >= 0 && v->scores[id] == unmerged) v->scores[id] = -(float)i;   // the first (lowest-rank) merge
    }
    v->n_merges = spm ? 0 : (int32_t)nm;

    // ---- token types and special ids
    const char *unk_s = json_get_str(model, "unk_token");
    v->unk = unk_s ? strmap_get(&map, unk_s, strlen(unk_s)) : -1;
    if (v->unk >= 0) v->types[v->unk] = TOK_UNKNOWN;
    for (int32_t i = 0; i < n; i++) {
        const char *s = v->tokens[i];
        if (spm && v->types[i] == TOK_NORMAL && v->lens[i] == 6 && !memcmp(s, "<0x", 3) && s[5] == '>') {
            v->types[i] = TOK_BYTE;
            v->scores[i] = 0.0f;
        }
        if (v->types[i] == TOK_CONTROL || v->types[i] == TOK_USER_DEFINED) v->scores[i] = 0.0f;
    }
    static const char *const bos_names[] = {"<s>", "<|begin_of_text|>", "<|endoftext|>", NULL};
    static const char *const eos_names[] = {"</s>", "<|end_of_text|>", "<|endoftext|>", NULL};
    static const char *const eot_names[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", NULL};
    static const char *const pad_names[] = {"<pad>", "<|finetune_right_pad_id|>", NULL};
    v->bos = first_of(&map, bos_names);
    v->eos = first_of(&map, eos_names);
    v->eot = first_of(&map, eot_names);
    v->pad = first_of(&map, pad_names);
    v->add_bos = adds_bos(json_get(r, "post_processor"), spm);
    if (spm) {
        bool pfx = prepend != NULL;
        if (meta) {
            const char *scheme = json_get_str(meta, "prepend_scheme");
            bool aps = false;
            json_bool(json_get(meta, "add_prefix_space"), &aps);
            pfx = pfx || aps || (scheme && strcmp(scheme, "never"));
        }
        v->add_space_prefix = pfx;
    } else {
        pre_name(pre, v->pre, sizeof v->pre);
    }
    v->llama2c_style = false;
    rc = ERR_OK;
done:
    free(map.slot);
    json_free(&doc);
    if (rc) vocab_free(v);
    return rc;
}
