/* tests/test_loader_gguf.c: GGUF reader + writer. Real files (stories260K, the vocab-only Llama-2
 * tokenizer), a write -> read round trip with every metadata kind, and a hostile-input corpus
 * (truncations, bit flips, absurd counts) that must give an error naming the file, never a crash.
 * Run: make build/tests/test_loader_gguf && build/tests/test_loader_gguf (also under SAN=1). */
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "loaders/gguf_write.h"
#include "loaders/loader.h"
#include "tests/test.h"

static char tmpdir[256];

static const char *tmp_path(const char *name) {
    static char buf[4][512];
    static int k;
    char *b = buf[k++ & 3];
    snprintf(b, 512, "%s/%s", tmpdir, name);
    return b;
}

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(p, 1, n, f) != n) || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(2);
    }
}

// ------------------------------------------------------------------------------------------------
// Real files

static void test_stories260k(void) {
    const char *path = test_data("models/stories260K/stories260K.gguf");
    if (!file_exists(path)) {
        printf("note: %s missing, skipping that part\n", path);
        return;
    }
    struct model_file mf;
    struct err e = {0};
    int rc = model_file_open(&mf, path, NULL, &e);
    CHECK(rc == ERR_OK, "open stories260K: %s", e.msg);
    if (rc) return;
    const struct model_config *c = &mf.cfg;
    CHECK(mf.format == MF_GGUF, "format %d", mf.format);
    CHECK(mf.has_weights, "has_weights");
    CHECK(c->dim == 64 && c->hidden_dim == 172 && c->n_layers == 5, "dims %d %d %d", c->dim,
          c->hidden_dim, c->n_layers);
    CHECK(c->n_heads == 8 && c->n_kv_heads == 4 && c->head_dim == 8, "heads %d %d %d", c->n_heads,
          c->n_kv_heads, c->head_dim);
    CHECK(c->vocab_size == 512, "vocab_size %d", c->vocab_size);
    CHECK(c->seq_len == 2048, "seq_len %d (the file says 2048)", c->seq_len);
    CHECK(c->rope_theta == 10000.0f && c->norm_eps == 1e-5f, "theta %g eps %g", c->rope_theta,
          c->norm_eps);
    CHECK(c->rope == ROPE_INTERLEAVED && c->tied_output, "rope %d tied %d", c->rope, c->tied_output);
    CHECK(strcmp(c->arch, "llama") == 0, "arch %s", c->arch);
    CHECK(mf.n_tensors == 48, "n_tensors %d", mf.n_tensors);
    int n_f32 = 0;
    for (int i = 0; i < mf.n_tensors; i++) n_f32 += mf.tensors[i].type == QT_F32;
    CHECK(n_f32 == 48, "%d f32 tensors", n_f32);
    const struct tensor_view *q = model_file_find(&mf, "blk.4.attn_q.weight");
    CHECK(q && q->ne[0] == 64 && q->ne[1] == 64 && q->nbytes == 64 * 64 * 4, "blk.4.attn_q");
    const struct tensor_view *emb = model_file_find(&mf, "token_embd.weight");
    CHECK(emb && emb->ne[0] == 64 && emb->ne[1] == 512, "token_embd");
    CHECK(emb && emb->offset % 32 == 0 && emb->offset + emb->nbytes <= 1185376, "offset %llu",
          emb ? (unsigned long long)emb->offset : 0ULL);
    // the file stores output.weight as a byte-identical copy of token_embd.weight: detected as tied
    const struct tensor_view *out = model_file_find(&mf, "output.weight");
    CHECK(out && emb && memcmp(out->data, emb->data, emb->nbytes) == 0, "output.weight is a copy");
    const struct vocab *v = &mf.vocab;
    CHECK(v->kind == VOCAB_SPM && v->n_tokens == 512, "vocab kind %d n %d", v->kind, v->n_tokens);
    CHECK(v->bos == 1 && v->eos == 2 && v->unk == 0, "bos %d eos %d unk %d", v->bos, v->eos, v->unk);
    CHECK(v->add_bos && v->add_space_prefix, "add_bos %d add_space_prefix %d", v->add_bos,
          v->add_space_prefix);
    CHECK(strcmp(v->tokens[1], "<s>") == 0 && strcmp(v->tokens[2], "</s>") == 0, "tokens 1,2 %s %s",
          v->tokens[1], v->tokens[2]);
    CHECK(v->types[1] == TOK_CONTROL && v->types[3] == TOK_BYTE, "types %d %d", v->types[1], v->types[3]);
    CHECK(model_file_validate(&mf, &e) == ERR_OK, "validate: %s", e.msg);
    model_file_close(&mf);
    CHECK(mf.n_maps == 0 && mf.tensors == NULL, "close resets");
}

static void test_vocab_only(void) {
    const char *path = test_data("models/llama2-tokenizer/ggml-vocab-llama-spm.gguf");
    if (!file_exists(path)) {
        printf("note: %s missing, skipping that part\n", path);
        return;
    }
    struct model_file mf;
    struct err e = {0};
    int rc = model_file_open(&mf, path, NULL, &e);
    CHECK(rc == ERR_OK, "open vocab-only: %s", e.msg);
    if (rc) return;
    CHECK(!mf.has_weights && mf.n_tensors == 0, "has_weights %d n_tensors %d", mf.has_weights,
          mf.n_tensors);
    const struct vocab *v = &mf.vocab;
    CHECK(v->kind == VOCAB_SPM && v->n_tokens == 32000, "kind %d n %d", v->kind, v->n_tokens);
    CHECK(mf.cfg.vocab_size == 32000, "vocab_size %d", mf.cfg.vocab_size);
    CHECK(v->n_tokens > 29900 && strcmp(v->tokens[260], "\xe2\x96\x81t") == 0 &&
              strcmp(v->tokens[29871], "\xe2\x96\x81") == 0 && strcmp(v->tokens[29900], "0") == 0,
          "token strings");
    CHECK(v->bos == 1 && v->eos == 2 && v->unk == 0, "ids %d %d %d", v->bos, v->eos, v->unk);
    CHECK(v->types[0] == TOK_UNKNOWN && v->types[1] == TOK_CONTROL && v->types[3] == TOK_BYTE,
          "types %d %d %d", v->types[0], v->types[1], v->types[3]);
    CHECK(model_file_validate(&mf, &e) != ERR_OK, "validate must refuse a vocab-only file");
    model_file_close(&mf);
}

/* SmolLM2-135M (fetched by `make models`, not in git): a real BPE vocabulary, Q4_1/Q8_0 tensors. */
static void test_smollm2(void) {
    const char *path = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
    if (!file_exists(path)) {
        printf("note: %s missing (make models), skipping that part\n", path);
        return;
    }
    struct model_file mf;
    struct err e = {0};
    int rc = model_file_open(&mf, path, NULL, &e);
    CHECK(rc == ERR_OK, "open SmolLM2: %s", e.msg);
    if (rc) return;
    const struct model_config *c = &mf.cfg;
    CHECK(c->dim == 576 && c->hidden_dim == 1536 && c->n_layers == 30 && c->n_heads == 9 &&
              c->n_kv_heads == 3 && c->head_dim == 64 && c->vocab_size == 49152,
          "SmolLM2 config");
    CHECK(c->tied_output && mf.n_tensors == 272 && c->rope_theta == 100000.0f, "SmolLM2 tensors/theta");
    const struct vocab *v = &mf.vocab;
    CHECK(v->kind == VOCAB_BPE && v->n_tokens == 49152 && v->n_merges == 48900 && !v->add_bos &&
              strcmp(v->pre, "smollm") == 0 && v->chat_template != NULL,
          "SmolLM2 vocab kind %d n %d merges %d pre %s", v->kind, v->n_tokens, v->n_merges, v->pre);
    CHECK(v->eot == 2 && strcmp(v->tokens[2], "<|im_end|>") == 0, "SmolLM2 eot %d", v->eot);
    const struct tensor_view *q = model_file_find(&mf, "blk.0.attn_q.weight");
    CHECK(q && q->type == QT_GGML_Q4_1, "SmolLM2 attn_q type");
    model_file_close(&mf);
}

// ------------------------------------------------------------------------------------------------
// A small synthetic model

struct small_model {
    struct model_config cfg;
    struct vocab v;
    struct tensor_view t[3 + 9 * 4];
    int n;
    void *bufs[3 + 9 * 4];
};

static void add_t(struct small_model *m, struct rng *g, const char *name, enum qtype type,
                  int64_t ne0, int64_t ne1) {
    struct tensor_view *t = &m->t[m->n];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->type = type;
    t->n_dims = ne1 == 1 ? 1 : 2;
    t->ne[0] = ne0;
    t->ne[1] = ne1;
    t->ne[2] = t->ne[3] = 1;
    t->nbytes = (uint64_t)ne0 * ne1 * (type == QT_F32 ? 4 : 2);
    unsigned char *p = malloc(t->nbytes);
    for (uint64_t i = 0; i < t->nbytes; i++) p[i] = (unsigned char)rng_u64(g);
    if (type == QT_F16)  // random bits, but keep them finite-looking: clear the top exponent bit
        for (uint64_t i = 1; i < t->nbytes; i += 2) p[i] &= 0xbf;
    if (type == QT_F32)
        for (uint64_t i = 3; i < t->nbytes; i += 4) p[i] &= 0xbf;
    t->data = p;
    m->bufs[m->n++] = p;
}

/* dim, hidden, layers, heads, kv heads, vocab; F16 matrices when f16. */
static void small_model_init(struct small_model *m, struct rng *g, int dim, int hid, int n_layers,
                             int n_heads, int n_kv, int n_vocab, bool f16, bool bpe) {
    memset(m, 0, sizeof *m);
    struct model_config *c = &m->cfg;
    c->dim = dim, c->hidden_dim = hid, c->n_layers = n_layers, c->n_heads = n_heads;
    c->n_kv_heads = n_kv, c->vocab_size = n_vocab, c->seq_len = 256, c->head_dim = dim / n_heads;
    c->rope_theta = 500000.0f, c->norm_eps = 1e-6f, c->rope = ROPE_INTERLEAVED, c->tied_output = false;
    snprintf(c->arch, sizeof c->arch, "llama");
    snprintf(c->name, sizeof c->name, "tiny test model");
    enum qtype mt = f16 ? QT_F16 : QT_F32;
    int hd = c->head_dim;
    add_t(m, g, "token_embd.weight", QT_F32, dim, n_vocab);
    add_t(m, g, "output_norm.weight", QT_F32, dim, 1);
    add_t(m, g, "output.weight", mt, dim, n_vocab);
    for (int l = 0; l < n_layers; l++) {
        char nm[96];
#define L(s, type, a, b) (snprintf(nm, sizeof nm, "blk.%d." s ".weight", l), add_t(m, g, nm, type, a, b))
        L("attn_norm", QT_F32, dim, 1);
        L("attn_q", mt, dim, n_heads * hd);
        L("attn_k", mt, dim, n_kv * hd);
        L("attn_v", mt, dim, n_kv * hd);
        L("attn_output", mt, n_heads * hd, dim);
        L("ffn_norm", QT_F32, dim, 1);
        L("ffn_gate", mt, dim, hid);
        L("ffn_up", mt, dim, hid);
        L("ffn_down", mt, hid, dim);
#undef L
    }
    // vocabulary: token 4 holds a NUL byte in the middle (lens must carry it through)
    struct vocab *v = &m->v;
    v->bos = v->eos = v->unk = v->pad = v->eot = -1;
    v->kind = bpe ? VOCAB_BPE : VOCAB_SPM;
    v->n_tokens = n_vocab;
    v->tokens = vocab_alloc(v, (size_t)n_vocab * sizeof *v->tokens);
    v->lens = vocab_alloc(v, (size_t)n_vocab * sizeof *v->lens);
    v->scores = vocab_alloc(v, (size_t)n_vocab * sizeof *v->scores);
    v->types = vocab_alloc(v, (size_t)n_vocab * sizeof *v->types);
    for (int i = 0; i < n_vocab; i++) {
        char s[32];
        int len = snprintf(s, sizeof s, "%s%d", bpe ? "\xc4\xa0t" : "\xe2\x96\x81t", i);
        if (i == 4) s[1] = 0;
        if (i == 5) len = snprintf(s, sizeof s, "<|im_end|>");
        v->tokens[i] = vocab_strdup(v, s, (size_t)len);
        v->lens[i] = (uint32_t)len;
        v->scores[i] = -0.25f * (float)i;
        v->types[i] = i < 3 ? TOK_CONTROL : TOK_NORMAL;
    }
    v->bos = 1, v->eos = 2, v->unk = 0, v->pad = 3;
    v->add_bos = bpe, v->add_space_prefix = false;
    snprintf(v->pre, sizeof v->pre, "%s", bpe ? "smollm" : "");
    const char *tmpl = "{% for m in messages %}<|im_start|>{{ m.role }}\n{% endfor %}";
    v->chat_template = vocab_strdup(v, tmpl, strlen(tmpl));
    if (bpe) {
        v->n_merges = 3;
        v->merges = vocab_alloc(v, 3 * sizeof *v->merges);
        v->merges[0] = vocab_strdup(v, "\xc4\xa0 t", 4);
        v->merges[1] = vocab_strdup(v, "t 1", 3);
        v->merges[2] = vocab_strdup(v, "\xc4\xa0t 1", 5);
    }
}

static void small_model_free(struct small_model *m) {
    for (int i = 0; i < m->n; i++) free(m->bufs[i]);
    vocab_free(&m->v);
}

static void check_same_model(const struct small_model *m, const struct model_file *mf, const char *what) {
    const struct model_config *a = &m->cfg, *b = &mf->cfg;
    CHECK(a->dim == b->dim && a->hidden_dim == b->hidden_dim && a->n_layers == b->n_layers &&
              a->n_heads == b->n_heads && a->n_kv_heads == b->n_kv_heads &&
              a->vocab_size == b->vocab_size && a->seq_len == b->seq_len && a->head_dim == b->head_dim,
          "%s: config ints", what);
    CHECK(a->rope_theta == b->rope_theta && a->norm_eps == b->norm_eps, "%s: theta %g eps %g", what,
          b->rope_theta, b->norm_eps);
    CHECK(b->rope == ROPE_INTERLEAVED && !b->tied_output && strcmp(b->arch, "llama") == 0, "%s: rope/tied/arch",
          what);
    CHECK(strcmp(a->name, b->name) == 0, "%s: name '%s'", what, b->name);
    CHECK(mf->n_tensors == m->n, "%s: n_tensors %d", what, mf->n_tensors);
    for (int i = 0; i < m->n; i++) {
        const struct tensor_view *x = &m->t[i], *y = model_file_find(mf, x->name);
        CHECK(y != NULL, "%s: %s missing", what, x->name);
        if (!y) continue;
        CHECK(y->type == x->type && y->n_dims == x->n_dims && y->ne[0] == x->ne[0] && y->ne[1] == x->ne[1] &&
                  y->nbytes == x->nbytes,
              "%s: %s header", what, x->name);
        CHECK(y->nbytes == x->nbytes && memcmp(y->data, x->data, x->nbytes) == 0, "%s: %s data not bit-exact",
              what, x->name);
        CHECK(((uintptr_t)y->data - (uintptr_t)mf->maps[0].addr) % 32 == 0, "%s: %s alignment", what, x->name);
    }
    const struct vocab *u = &m->v, *w = &mf->vocab;
    CHECK(u->kind == w->kind && u->n_tokens == w->n_tokens, "%s: vocab kind %d n %d", what, w->kind, w->n_tokens);
    if (u->n_tokens != w->n_tokens) return;
    for (int i = 0; i < u->n_tokens; i++) {
        CHECK(u->lens[i] == w->lens[i] && memcmp(u->tokens[i], w->tokens[i], u->lens[i]) == 0 &&
                  w->tokens[i][w->lens[i]] == 0,
              "%s: token %d", what, i);
        CHECK(u->scores[i] == w->scores[i] && u->types[i] == w->types[i], "%s: score/type %d", what, i);
    }
    CHECK(u->n_merges == w->n_merges, "%s: merges %d", what, w->n_merges);
    for (int i = 0; i < u->n_merges && i < w->n_merges; i++)
        CHECK(strcmp(u->merges[i], w->merges[i]) == 0, "%s: merge %d", what, i);
    CHECK(w->bos == 1 && w->eos == 2 && w->unk == 0 && w->pad == 3 && w->eot == 5, "%s: ids %d %d %d %d %d",
          what, w->bos, w->eos, w->unk, w->pad, w->eot);
    CHECK(w->add_bos == u->add_bos && w->add_space_prefix == u->add_space_prefix, "%s: add_bos/space", what);
    CHECK(strcmp(w->pre, u->pre) == 0, "%s: pre '%s'", what, w->pre);
    CHECK(w->chat_template && strcmp(w->chat_template, u->chat_template) == 0, "%s: chat template", what);
}

static void test_round_trip(struct rng *g) {
    for (int variant = 0; variant < 2; variant++) {
        struct small_model m;
        small_model_init(&m, g, 64, 96, 2, 4, 2, 40, variant == 0, variant == 1);
        const char *path = tmp_path(variant ? "rt_bpe.gguf" : "rt_spm.gguf");
        struct err e = {0};
        int rc = gguf_write_model(path, &m.cfg, &m.v, m.t, m.n, &e);
        CHECK(rc == ERR_OK, "gguf_write_model: %s", e.msg);
        struct model_file mf;
        rc = model_file_open(&mf, path, NULL, &e);
        CHECK(rc == ERR_OK, "reopen: %s", e.msg);
        if (rc == ERR_OK) check_same_model(&m, &mf, variant ? "bpe" : "spm");
        model_file_close(&mf);
        small_model_free(&m);
    }
}

/* Every metadata kind: the llama.* integers spread over all integer widths, floats as f64, plus
 * extra keys of every other kind (nested arrays too) that the reader must step over exactly. */
static void test_every_kind(struct rng *g) {
    struct small_model m;
    small_model_init(&m, g, 32, 48, 1, 4, 4, 12, true, false);
    struct gguf_writer *w = gguf_writer_create();
    uint8_t u8 = 1;       // block_count
    int8_t i8 = 4;        // head_count
    uint16_t u16 = 32;    // embedding_length
    int16_t i16 = 48;     // feed_forward_length
    uint64_t u64 = 256;   // context_length
    int64_t i64 = 4;      // head_count_kv
    double f64 = 500000.0;
    gguf_writer_set_str(w, "general.architecture", "llama");
    gguf_writer_set_str(w, "general.name", m.cfg.name);
    gguf_writer_set_scalar(w, "llama.block_count", GGUF_U8, &u8);
    gguf_writer_set_scalar(w, "llama.attention.head_count", GGUF_I8, &i8);
    gguf_writer_set_scalar(w, "llama.embedding_length", GGUF_U16, &u16);
    gguf_writer_set_scalar(w, "llama.feed_forward_length", GGUF_I16, &i16);
    gguf_writer_set_scalar(w, "llama.context_length", GGUF_U64, &u64);
    gguf_writer_set_scalar(w, "llama.attention.head_count_kv", GGUF_I64, &i64);
    gguf_writer_set_scalar(w, "llama.rope.freq_base", GGUF_F64, &f64);
    gguf_writer_set_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-6f);
    gguf_writer_set_i32(w, "llama.vocab_size", 12);
    gguf_writer_set_u32(w, "general.file_type", 1);
    gguf_writer_set_bool(w, "x.bool", true);
    static const uint8_t a8[5] = {1, 2, 3, 4, 5};
    static const int16_t a16[3] = {-1, 2, -3};
    static const double af64[2] = {1.5, -2.5};
    static const uint8_t abool[4] = {1, 0, 1, 1};
    static const int64_t ai64[2] = {INT64_MIN, INT64_MAX};
    gguf_writer_set_arr(w, "x.arr_u8", GGUF_U8, a8, 5);
    gguf_writer_set_arr(w, "x.arr_i16", GGUF_I16, a16, 3);
    gguf_writer_set_arr(w, "x.arr_f64", GGUF_F64, af64, 2);
    gguf_writer_set_arr(w, "x.arr_bool", GGUF_BOOL, abool, 4);
    gguf_writer_set_arr(w, "x.arr_i64", GGUF_I64, ai64, 2);
    gguf_writer_set_arr(w, "x.arr_empty", GGUF_U32, NULL, 0);
    const char *strs[3] = {"a", "", "ccc"};
    gguf_writer_set_arr_str(w, "x.arr_str", strs, NULL, 3);
    // [[1, 2], ["x"], []]: array of 3 arrays (u32, string, i8)
    unsigned char nested[256], *p = nested;
    uint32_t t32;
    uint64_t n64;
#define PUT(v) (memcpy(p, &(v), sizeof(v)), p += sizeof(v))
    t32 = GGUF_ARRAY, n64 = 3; PUT(t32); PUT(n64);
    t32 = GGUF_U32, n64 = 2; PUT(t32); PUT(n64);
    t32 = 1; PUT(t32); t32 = 2; PUT(t32);
    t32 = GGUF_STRING, n64 = 1; PUT(t32); PUT(n64);
    n64 = 1; PUT(n64); *p++ = 'x';
    t32 = GGUF_I8, n64 = 0; PUT(t32); PUT(n64);
#undef PUT
    gguf_writer_set_raw(w, "x.nested", GGUF_ARRAY, nested, (size_t)(p - nested));
    gguf_writer_set_str(w, "x.after_nested", "still in sync");
    gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
    gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)m.v.tokens, m.v.lens, 12);
    gguf_writer_set_arr_f32(w, "tokenizer.ggml.scores", m.v.scores, 12);
    gguf_writer_set_arr_i32(w, "tokenizer.ggml.token_type", m.v.types, 12);
    gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1);
    gguf_writer_set_i32(w, "tokenizer.ggml.eos_token_id", 2);
    gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", 0);
    gguf_writer_set_u32(w, "tokenizer.ggml.padding_token_id", 3);  // eot found by name: token 5
    gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", false);
    gguf_writer_set_bool(w, "tokenizer.ggml.add_space_prefix", false);
    gguf_writer_set_str(w, "tokenizer.chat_template", m.v.chat_template);
    for (int i = 0; i < m.n; i++)
        gguf_writer_add_tensor(w, m.t[i].name, m.t[i].type, m.t[i].n_dims, m.t[i].ne, m.t[i].data, m.t[i].nbytes);
    const char *path = tmp_path("kinds.gguf");
    struct err e = {0};
    int rc = gguf_writer_write(w, path, &e);
    CHECK(rc == ERR_OK, "write kinds: %s", e.msg);
    struct model_file mf;
    rc = model_file_open(&mf, path, NULL, &e);
    CHECK(rc == ERR_OK, "open kinds: %s", e.msg);
    if (rc == ERR_OK) {
        check_same_model(&m, &mf, "kinds");
        CHECK(mf.file_type == 1, "file_type %d", mf.file_type);
    }
    model_file_close(&mf);

    // a wrong type for a known key is a format error naming the key
    gguf_writer_set_str(w, "llama.block_count", "five");
    rc = gguf_writer_write(w, path, &e);
    rc = model_file_open(&mf, path, NULL, &e);
    CHECK(rc == ERR_FORMAT && strstr(e.msg, "llama.block_count") && strstr(e.msg, path), "%s", e.msg);
    gguf_writer_set_scalar(w, "llama.block_count", GGUF_U8, &u8);
    // other architectures are refused by name
    gguf_writer_set_str(w, "general.architecture", "mamba");
    gguf_writer_write(w, path, &e);
    rc = model_file_open(&mf, path, NULL, &e);
    CHECK(rc == ERR_UNSUPPORTED && strstr(e.msg, "mamba"), "arch: %s", e.msg);
    gguf_writer_set_str(w, "general.architecture", "llama");
    // arrays nested 9 deep are refused (bounded recursion)
    p = nested;
    for (int d = 0; d < 9; d++) {
        t32 = GGUF_ARRAY, n64 = 1;
        memcpy(p, &t32, 4), memcpy(p + 4, &n64, 8), p += 12;
    }
    t32 = GGUF_U8, n64 = 0;
    memcpy(p, &t32, 4), memcpy(p + 4, &n64, 8), p += 12;
    gguf_writer_set_raw(w, "x.nested", GGUF_ARRAY, nested, (size_t)(p - nested));
    gguf_writer_write(w, path, &e);
    rc = model_file_open(&mf, path, NULL, &e);
    CHECK(rc == ERR_FORMAT && strstr(e.msg, "x.nested"), "deep nesting: %s", e.msg);
    // the writer refuses a tensor whose nbytes does not match
    int64_t ne[2] = {32, 2};
    rc = gguf_writer_add_tensor(w, "bad", QT_F32, 2, ne, m.t[0].data, 100);
    CHECK(rc == ERR_ARG, "writer accepted bad nbytes");
    CHECK(gguf_writer_write(w, path, &e) == ERR_ARG, "sticky writer error");
    gguf_writer_free(w);
    small_model_free(&m);
}

static void test_io_errors(void) {
    struct model_file mf;
    struct err e = {0};
    const char *missing = tmp_path("does_not_exist.gguf");
    CHECK(model_file_open(&mf, missing, NULL, &e) == ERR_IO && strstr(e.msg, missing), "missing: %s", e.msg);
    CHECK(gguf_open(&mf, tmpdir, &e) == ERR_IO && strstr(e.msg, "directory"), "dir: %s", e.msg);
    const char *empty = tmp_path("empty.gguf");
    write_bytes(empty, "", 0);
    CHECK(model_file_open(&mf, empty, NULL, &e) == ERR_FORMAT && strstr(e.msg, "empty"), "empty: %s", e.msg);
    CHECK(gguf_open(&mf, empty, &e) == ERR_FORMAT && strstr(e.msg, "empty"), "empty: %s", e.msg);
    if (access("/dev/full", W_OK) == 0) {  // disk full is an I/O error, not a crash or silence
        struct small_model m;
        struct rng g;
        rng_init(&g, 7);
        small_model_init(&m, &g, 32, 48, 1, 4, 4, 12, false, false);
        int rc = gguf_write_model("/dev/full", &m.cfg, &m.v, m.t, m.n, &e);
        CHECK(rc == ERR_IO, "write to /dev/full: rc %d %s", rc, e.msg);
        small_model_free(&m);
    }
}

// ------------------------------------------------------------------------------------------------
// Hostile inputs

static unsigned char *base_file;
static size_t base_size, base_data_start, base_data_end;
static int n_hostile, n_hostile_err;

/* Opens bytes as a file; the result must be an error (when must_fail) whose message names it. */
static int try_bytes(const unsigned char *p, size_t n, bool must_fail, const char *what) {
    const char *path = tmp_path("hostile.gguf");
    write_bytes(path, p, n);
    struct model_file mf;
    struct err e = {0};
    int rc = gguf_open(&mf, path, &e);  // gguf_open + validate: what model_file_open does for GGUF
    if (rc == ERR_OK && mf.has_weights && (rc = model_file_validate(&mf, &e)) != ERR_OK)
        model_file_close(&mf);
    n_hostile++;
    if (rc != ERR_OK) {
        n_hostile_err++;
        CHECK(strstr(e.msg, "hostile.gguf") != NULL, "%s: message lacks the file name: %s", what, e.msg);
        CHECK(strchr(e.msg, '\n') == NULL, "%s: message is not one line", what);
        CHECK(mf.n_maps == 0 && mf.tensors == NULL && mf.vocab.arena == NULL, "%s: not cleaned up", what);
    } else {
        if (must_fail) CHECK(0, "%s: accepted", what);
        model_file_close(&mf);
    }
    return rc;
}

static size_t find_str(const char *s) {  // offset just after the GGUF string s (u64 length + bytes)
    uint64_t len = strlen(s);
    for (size_t i = 0; i + 8 + len <= base_size; i++)
        if (memcmp(base_file + i, &len, 8) == 0 && memcmp(base_file + i + 8, s, len) == 0) return i + 8 + len;
    fprintf(stderr, "find_str: %s not in the base file\n", s);
    exit(2);
}

static void patch_u64(const char *what, size_t at, uint64_t v, int want_code) {
    unsigned char *c = malloc(base_size);
    memcpy(c, base_file, base_size);
    memcpy(c + at, &v, 8);
    int rc = try_bytes(c, base_size, true, what);
    if (want_code) CHECK(rc == want_code, "%s: rc %d, want %d", what, rc, want_code);
    free(c);
}
static void patch_u32(const char *what, size_t at, uint32_t v, int want_code) {
    unsigned char *c = malloc(base_size);
    memcpy(c, base_file, base_size);
    memcpy(c + at, &v, 4);
    int rc = try_bytes(c, base_size, true, what);
    if (want_code) CHECK(rc == want_code, "%s: rc %d, want %d", what, rc, want_code);
    free(c);
}

static void test_hostile(struct rng *g) {
    struct small_model m;
    small_model_init(&m, g, 8, 16, 1, 2, 1, 8, true, true);
    const char *path = tmp_path("base.gguf");
    struct err e = {0};
    CHECK(gguf_write_model(path, &m.cfg, &m.v, m.t, m.n, &e) == ERR_OK, "%s", e.msg);
    base_file = (unsigned char *)read_file_all(path, &base_size);
    struct model_file mf;
    CHECK(model_file_open(&mf, path, NULL, &e) == ERR_OK, "base: %s", e.msg);
    base_data_start = SIZE_MAX;
    for (int i = 0; i < mf.n_tensors; i++) {
        const struct tensor_view *t = &mf.tensors[i];
        if (t->offset < base_data_start) base_data_start = (size_t)t->offset;
        if (t->offset + t->nbytes > base_data_end) base_data_end = (size_t)(t->offset + t->nbytes);
    }
    model_file_close(&mf);
    CHECK(try_bytes(base_file, base_size, false, "unmodified") == ERR_OK, "base must load");

    // truncation: every length for the first 1 KB, then a stride, up to the end of the last tensor
    for (size_t n = 1; n < base_data_end; n += n < 1024 ? 1 : 7) {
        char what[64];
        snprintf(what, sizeof what, "truncated to %zu bytes", n);
        try_bytes(base_file, n, true, what);
    }
    // bit flips and random overwrites in the header (metadata + tensor infos): no crash, clear errors
    unsigned char *c = malloc(base_size);
    for (int trial = 0; trial < 3000; trial++) {
        memcpy(c, base_file, base_size);
        int n_edits = 1 + (int)(rng_u64(g) % 3);
        for (int k = 0; k < n_edits; k++) {
            size_t at = (size_t)(rng_u64(g) % base_data_start);
            if (trial % 2) c[at] ^= (unsigned char)(1u << (rng_u64(g) % 8));
            else c[at] = (unsigned char)rng_u64(g);
        }
        try_bytes(c, base_size, false, "bit flip");
    }
    free(c);

    // absurd counts and fields
    patch_u32("version 1", 4, 1, ERR_UNSUPPORTED);
    patch_u32("version 4", 4, 4, ERR_UNSUPPORTED);
    patch_u32("bad magic", 0, 0x46554746, 0);
    patch_u64("n_tensors 2^60", 8, 1ULL << 60, ERR_FORMAT);
    patch_u64("n_tensors + 1", 8, (uint64_t)m.n + 1, ERR_FORMAT);
    patch_u64("n_kv 2^62", 16, 1ULL << 62, ERR_FORMAT);
    patch_u64("key length 2^63", 24, 1ULL << 63, ERR_FORMAT);
    patch_u64("key length 2^64-1", 24, UINT64_MAX, ERR_FORMAT);
    size_t tok = find_str("tokenizer.ggml.tokens");  // then u32 type, u32 elem type, u64 n
    patch_u64("array length 2^62", tok + 8, 1ULL << 62, ERR_FORMAT);
    patch_u64("array length 2^24+1", tok + 8, (1ULL << 24) + 1, ERR_FORMAT);
    patch_u64("array length + 1", tok + 8, 9, ERR_FORMAT);
    patch_u64("token string length 2^63", tok + 16, 1ULL << 63, ERR_FORMAT);
    patch_u32("array elem type 13", tok + 4, 13, ERR_FORMAT);
    patch_u32("value type 99", tok, 99, ERR_FORMAT);
    size_t name = find_str("general.name");  // then u32 type 8, u64 len
    patch_u64("string length 2^63", name + 4, 1ULL << 63, ERR_FORMAT);
    size_t al = find_str("general.alignment");  // then u32 type 4, u32 value
    patch_u32("alignment 3", al + 4, 3, ERR_FORMAT);
    patch_u32("alignment 0", al + 4, 0, ERR_FORMAT);
    patch_u32("alignment 48", al + 4, 48, ERR_FORMAT);
    size_t emb = find_str("token_embd.weight");  // u32 n_dims, u64 ne[2], u32 type, u64 offset
    patch_u32("n_dims 0", emb, 0, ERR_FORMAT);
    patch_u32("n_dims 9", emb, 9, ERR_FORMAT);
    patch_u64("ne 0", emb + 4, 0, ERR_FORMAT);
    patch_u64("ne 2^62", emb + 4, 1ULL << 62, ERR_FORMAT);
    patch_u64("ne[1] 2^62", emb + 12, 1ULL << 62, ERR_FORMAT);
    patch_u64("ne[1] 2^32 (size past EOF)", emb + 12, 1ULL << 32, ERR_FORMAT);
    patch_u32("type 999", emb + 20, 999, ERR_UNSUPPORTED);
    patch_u32("type q4_0 (ne0 8 not a multiple of 32)", emb + 20, 2, ERR_FORMAT);
    patch_u64("offset past EOF", emb + 24, 1ULL << 40, ERR_FORMAT);
    patch_u64("offset 2^64-32", emb + 24, UINT64_MAX - 31, ERR_FORMAT);
    patch_u64("offset misaligned", emb + 24, 4, ERR_FORMAT);
    patch_u64("offset at EOF", emb + 24, (base_size - base_data_start + 31) / 32 * 32, ERR_FORMAT);
    size_t q = find_str("blk.0.attn_q.weight");
    patch_u64("attn_q ne[1] wrong (validate)", q + 12, 4, ERR_FORMAT);
    {   // a duplicate metadata key: tokenizer.ggml.eos_token_id -> tokenizer.ggml.bos_token_id
        unsigned char *d = malloc(base_size);
        memcpy(d, base_file, base_size);
        size_t k = find_str("tokenizer.ggml.eos_token_id") - strlen("tokenizer.ggml.eos_token_id");
        d[k + strlen("tokenizer.ggml.")] = 'b';
        int rc = try_bytes(d, base_size, true, "duplicate key");
        CHECK(rc == ERR_FORMAT, "duplicate key: rc %d", rc);
        free(d);
    }
    {   // a duplicate tensor name: rename blk.0.attn_k.weight to blk.0.attn_q.weight
        unsigned char *d = malloc(base_size);
        memcpy(d, base_file, base_size);
        size_t k = find_str("blk.0.attn_k.weight");
        d[k - 8] = 'q';
        int rc = try_bytes(d, base_size, true, "duplicate tensor");
        CHECK(rc == ERR_FORMAT, "duplicate tensor: rc %d", rc);
        free(d);
    }
    printf("hostile: %d inputs, %d rejected with a clear error, none crashed\n", n_hostile, n_hostile_err);
    free(base_file);
    small_model_free(&m);
}

int main(void) {
    test_begin("test_loader_gguf");
    struct stat st;  // RAM-backed when possible: the hostile corpus writes thousands of small files
    bool shm = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) && access("/dev/shm", W_OK) == 0;
    snprintf(tmpdir, sizeof tmpdir, "%s/test_loader_gguf_XXXXXX", shm ? "/dev/shm" : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 2;
    }
    struct rng g;
    rng_init(&g, 0);
    test_stories260k();
    test_vocab_only();
    test_smollm2();
    test_round_trip(&g);
    test_every_kind(&g);
    test_io_errors();
    test_hostile(&g);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return test_end();
}
