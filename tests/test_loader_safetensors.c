/* tests/test_loader_safetensors.c: the JSON parser (valid and hostile texts), Hugging Face folders
 * written by safetensors_write_folder (f32 and f16) and read back by safetensors_open (tensors equal
 * after undoing the q/k permutation, config equal, tokenizer.json round trip for SPM and byte-level
 * BPE vocabularies), and hostile folders: truncations, absurd headers, wrong dtype, missing keys.
 * Run: make build/tests/test_loader_safetensors && build/tests/test_loader_safetensors */
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "loaders/json_min.h"
#include "loaders/loader.h"
#include "loaders/writers.h"
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

static void write_text(const char *path, const char *s) { write_bytes(path, s, strlen(s)); }

// ------------------------------------------------------------------------------------------------
// JSON

static void test_json(void) {
    struct json_doc d;
    struct err e = {0};
    const char *ok = " {\"a\": [1, -0.5, 2e3, 1E-2, true, false, null], \"s\": \"x\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9"
                     "\\ud83d\\ude00\\u0000z\", \"o\": {\"k\": {}}, \"e\": [], \"u\": \"\xe2\x96\x81t\"} ";
    int rc = json_parse(&d, ok, strlen(ok), "t.json", &e);
    CHECK(rc == ERR_OK, "valid json rejected: %s", e.msg);
    if (rc == ERR_OK) {
        const struct json *a = json_get(d.root, "a");
        double x;
        int64_t i;
        bool b;
        CHECK(json_len(a) == 7 && json_int(json_at(a, 0), &i) && i == 1, "a[0]");
        CHECK(json_num(json_at(a, 1), &x) && x == -0.5, "a[1]");
        CHECK(json_num(json_at(a, 2), &x) && x == 2000, "a[2]");
        CHECK(json_num(json_at(a, 3), &x) && x == 0.01, "a[3]");
        CHECK(!json_int(json_at(a, 1), &i), "-0.5 is not an int");
        CHECK(json_bool(json_at(a, 4), &b) && b && json_bool(json_at(a, 5), &b) && !b, "bools");
        CHECK(json_is_null(json_at(a, 6)) && !json_at(a, 7), "null / out of range");
        const struct json *s = json_get(d.root, "s");
        const char want[] = "x\"\\/\b\f\n\r\t\xc3\xa9\xf0\x9f\x98\x80\0z";
        CHECK(s && s->len == sizeof want - 1 && !memcmp(s->str, want, sizeof want - 1), "escapes decode (len %u)", s ? s->len : 0);
        CHECK(json_len(json_get(json_get(d.root, "o"), "k")) == 0 && json_get(d.root, "o")->type == JSON_OBJECT, "nested");
        CHECK(!strcmp(json_get_str(d.root, "u"), "\xe2\x96\x81t"), "raw utf-8");
        CHECK(!json_get(d.root, "missing") && !json_get(a, "a") && !json_str(a), "wrong-type lookups");
        json_free(&d);
    }
    static const char *bad[] = {
        "", "  ", "[1,]", "{\"a\":1,}", "[01]", "[1.]", "[-]", "[.5]", "[1e]", "tru", "nul", "[1] x",
        "{\"a\" 1}", "{a:1}", "\"abc", "\"a\x01\"", "\"\\x\"", "\"\\u12\"", "\"\\ud800\"", "\"\\udc00\"",
        "\"\\ud800\\u0041\"", "\"\xff\"", "\"\xc0\xaf\"", "\"\xed\xa0\x80\"", "\"\xe2\x96\"", "[NaN]",
        "[Infinity]", "{\"a\":[}", "[\"a\":1]", "{,}", "[,1]", "'a'", "{\"a\":1 \"b\":2}",
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        memset(&e, 0, sizeof e);
        rc = json_parse(&d, bad[k], strlen(bad[k]), "bad.json", &e);
        CHECK(rc == ERR_FORMAT && strstr(e.msg, "bad.json") && strstr(e.msg, "byte"), "bad json %zu '%s' -> %d %s",
              k, bad[k], rc, e.msg);
        json_free(&d);
    }
    // depth limit, and a deep-but-legal document
    char deep[600];
    memset(deep, '[', 300);
    memset(deep + 300, ']', 300);
    rc = json_parse(&d, deep, 600, "deep.json", &e);
    CHECK(rc == ERR_FORMAT && strstr(e.msg, "nesting"), "depth 300 -> %s", e.msg);
    rc = json_parse(&d, deep + 200, 200, "deep.json", &e);
    CHECK(rc == ERR_OK, "depth 100 rejected: %s", e.msg);
    json_free(&d);
    // not NUL-terminated input: the parser must not read past len
    char *nt = malloc(5);
    memcpy(nt, "[123", 4);
    nt[4] = '4';
    rc = json_parse(&d, nt, 4, "nt.json", &e);
    CHECK(rc == ERR_FORMAT, "unterminated array accepted");
    rc = json_parse(&d, nt + 1, 3, "nt.json", &e);
    CHECK(rc == ERR_OK && d.root->num == 123, "number at end of buffer");
    json_free(&d);
    free(nt);
    // every prefix of the valid document must fail cleanly
    size_t L = strlen(ok);
    for (size_t cut = 0; cut + 1 < L; cut++) {
        char *p = malloc(cut ? cut : 1);
        memcpy(p, ok, cut);
        rc = json_parse(&d, p, cut, "cut.json", &e);
        if (cut < L - 1) CHECK(rc != ERR_OK || cut >= L - 1, "prefix %zu accepted", cut);
        json_free(&d);
        free(p);
    }
}

// ------------------------------------------------------------------------------------------------
// A small random model

struct toy {
    struct model_config cfg;
    struct tensor_view t[64];
    int n;
};

static void toy_add(struct toy *m, struct rng *g, const char *name, int64_t ne0, int64_t ne1) {
    struct tensor_view *t = &m->t[m->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->type = QT_F32;
    t->n_dims = ne1 > 1 ? 2 : 1;
    t->ne[0] = ne0;
    t->ne[1] = ne1;
    t->ne[2] = t->ne[3] = 1;
    t->nbytes = (uint64_t)(ne0 * ne1) * 4;
    t->data = rng_f32(g, (size_t)(ne0 * ne1), -1.0f, 1.0f);
}

static void toy_make(struct toy *m, struct rng *g, int vocab, bool tied) {
    memset(m, 0, sizeof *m);
    struct model_config *c = &m->cfg;
    c->dim = 64; c->hidden_dim = 96; c->n_layers = 2; c->n_heads = 4; c->n_kv_heads = 2;
    c->head_dim = 16; c->vocab_size = vocab; c->seq_len = 256; c->rope_theta = 10000.0f;
    c->norm_eps = 1e-5f; c->rope = ROPE_INTERLEAVED; c->tied_output = tied;
    snprintf(c->arch, sizeof c->arch, "llama");
    toy_add(m, g, "token_embd.weight", 64, vocab);
    toy_add(m, g, "output_norm.weight", 64, 1);
    if (!tied) toy_add(m, g, "output.weight", 64, vocab);
    for (int l = 0; l < 2; l++) {
        char nm[96];
        static const char *const names[] = {"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                                            "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"};
        const int64_t shp[][2] = {{64, 1}, {64, 64}, {64, 32}, {64, 32}, {64, 64}, {64, 1}, {64, 96}, {64, 96}, {96, 64}};
        for (int k = 0; k < 9; k++) {
            snprintf(nm, sizeof nm, "blk.%d.%s.weight", l, names[k]);
            toy_add(m, g, nm, shp[k][0], shp[k][1]);
        }
    }
}

static void toy_free(struct toy *m) {
    for (int i = 0; i < m->n; i++) free((void *)m->t[i].data);
}

static float elem(const struct tensor_view *t, int64_t i) {
    if (t->type == QT_F16) return f16_to_f32(((const f16_t *)t->data)[i]);
    if (t->type == QT_BF16) return bf16_to_f32(((const bf16_t *)t->data)[i]);
    return ((const float *)t->data)[i];
}

static void test_roundtrip(void) {
    struct vocab v = {0};
    struct err e = {0};
    char tok[600];
    snprintf(tok, sizeof tok, "%s", test_data("models/stories260K/tok512.bin"));
    if (llama2c_tokenizer_load(&v, tok, 512, &e)) test_skip("tok512.bin: %s", e.msg);
    struct rng g;
    rng_init(&g, 0);
    for (int f16 = 0; f16 < 2; f16++) {
        struct toy m;
        toy_make(&m, &g, 512, f16 == 1);
        const char *dir = tmp_path(f16 ? "hf16" : "hf32");
        int rc = safetensors_write_folder(dir, &m.cfg, &v, m.t, m.n, f16, &e);
        CHECK(rc == ERR_OK, "write folder: %s", e.msg);
        struct model_file mf;
        rc = rc ? rc : model_file_open(&mf, dir, NULL, &e);
        CHECK(rc == ERR_OK, "open folder (f16=%d): %s", f16, e.msg);
        if (rc) { toy_free(&m); continue; }
        const struct model_config *a = &m.cfg, *b = &mf.cfg;
        CHECK(a->dim == b->dim && a->hidden_dim == b->hidden_dim && a->n_layers == b->n_layers &&
              a->n_heads == b->n_heads && a->n_kv_heads == b->n_kv_heads && a->vocab_size == b->vocab_size &&
              a->seq_len == b->seq_len && a->head_dim == b->head_dim && a->rope_theta == b->rope_theta &&
              a->norm_eps == b->norm_eps && a->tied_output == b->tied_output && b->rope == ROPE_NEOX,
              "config differs (f16=%d)", f16);
        CHECK(mf.n_tensors == m.n, "n_tensors %d vs %d", mf.n_tensors, m.n);
        for (int i = 0; i < m.n; i++) {
            const struct tensor_view *w = &m.t[i], *r = model_file_find(&mf, w->name);
            CHECK(r && r->type == (f16 ? QT_F16 : QT_F32) && r->ne[0] == w->ne[0] && r->ne[1] == w->ne[1] &&
                  r->n_dims == w->n_dims, "%s type/shape", w->name);
            if (!r || r->ne[0] != w->ne[0] || r->ne[1] != w->ne[1]) continue;
            int64_t k = w->ne[0] * w->ne[1];
            float *got = malloc((size_t)k * 4), *un = malloc((size_t)k * 4);
            for (int64_t j = 0; j < k; j++) got[j] = elem(r, j);
            bool q = strstr(w->name, "attn_q") != NULL, kk = strstr(w->name, "attn_k") != NULL;
            if (q || kk) writers_permute_qk(un, got, q ? 4 : 2, 16, w->ne[0], true);
            else memcpy(un, got, (size_t)k * 4);
            int bad = 0;
            for (int64_t j = 0; j < k; j++) {
                float x = ((const float *)w->data)[j], want = f16 ? f16_to_f32(f32_to_f16(x)) : x;
                bad += un[j] != want;
            }
            CHECK(bad == 0, "%s: %d elements differ (f16=%d)", w->name, bad, f16);
            if (q || kk) {   // and it really was permuted
                int same = 0;
                for (int64_t j = 0; j < k; j++) same += got[j] == un[j];
                CHECK(same < k, "%s not permuted", w->name);
            }
            free(got);
            free(un);
        }
        // tokenizer: SPM via tokenizer.json
        const struct vocab *lv = &mf.vocab;
        CHECK(lv->kind == VOCAB_SPM && lv->n_tokens == 512 && lv->bos == 1 && lv->eos == 2 && lv->unk == 0 &&
              lv->add_bos && lv->add_space_prefix && !lv->llama2c_style, "spm vocab flags");
        int bad = 0, order_bad = 0;
        float floor_score = 0;   // tokens no merge creates share the lowest score
        for (int i = 0; i < lv->n_tokens; i++) floor_score = fminf(floor_score, lv->scores[i]);
        for (int i = 0; i < 512 && lv->n_tokens == 512; i++) {
            char buf[64];
            size_t o = 0;
            const char *s = i == 1 ? "<s>" : i == 2 ? "</s>" : v.tokens[i];
            for (size_t k = 0; s[k] && o < 60; k++) {
                if (s[k] == ' ' && v.types[i] == TOK_NORMAL) { memcpy(buf + o, "\xe2\x96\x81", 3); o += 3; }
                else buf[o++] = s[k];
            }
            buf[o] = 0;
            bad += strcmp(buf, lv->tokens[i]) != 0 || lv->types[i] != v.types[i];
            for (int j = 0; j < i; j++)   // merged tokens keep their relative priority
                if (lv->scores[i] < 0 && lv->scores[j] < 0 && lv->scores[i] > floor_score &&
                    lv->scores[j] > floor_score && v.scores[i] != v.scores[j] &&
                    (v.scores[i] > v.scores[j]) != (lv->scores[i] > lv->scores[j]))
                    order_bad++;
        }
        CHECK(bad == 0, "%d tokens differ after tokenizer.json round trip", bad);
        CHECK(order_bad == 0, "%d score orderings differ", order_bad);
        model_file_close(&mf);
        toy_free(&m);
    }
    vocab_free(&v);
}

/* A byte-level BPE vocabulary (SmolLM2's, from its GGUF) through tokenizer.json and back. */
static void test_bpe_tokenizer(void) {
    const char *gg = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
    if (!file_exists(gg)) {
        printf("note: %s missing, skipping the BPE tokenizer.json round trip\n", gg);
        return;
    }
    struct model_file mf;
    struct err e = {0};
    if (model_file_open(&mf, gg, NULL, &e)) {
        printf("note: cannot open %s (%s), skipping\n", gg, e.msg);
        return;
    }
    const char *dir = tmp_path("bpe");
    struct model_config cfg = mf.cfg;
    int rc = safetensors_write_folder(dir, &cfg, &mf.vocab, NULL, 0, false, &e);
    CHECK(rc == ERR_OK, "write: %s", e.msg);
    struct vocab v = {0};
    char p[600];
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    rc = hf_tokenizer_json_load(&v, p, &e);
    CHECK(rc == ERR_OK, "bpe tokenizer.json: %s", e.msg);
    if (rc == ERR_OK) {
        const struct vocab *o = &mf.vocab;
        CHECK(v.kind == VOCAB_BPE && v.n_tokens == o->n_tokens && v.n_merges == o->n_merges, "bpe counts %d/%d %d/%d",
              v.n_tokens, o->n_tokens, v.n_merges, o->n_merges);
        int bad = 0;
        for (int i = 0; i < v.n_tokens && v.n_tokens == o->n_tokens; i++) {
            bool diff = strcmp(v.tokens[i], o->tokens[i]) != 0 ||
                        ((o->types[i] == TOK_CONTROL) != (v.types[i] == TOK_CONTROL));
            if (diff && bad < 3) fprintf(stderr, "bpe token %d: '%s' type %d vs '%s' type %d\n", i, v.tokens[i],
                                         v.types[i], o->tokens[i], o->types[i]);
            bad += diff;
        }
        for (int i = 0; i < v.n_merges && v.n_merges == o->n_merges; i++) bad += strcmp(v.merges[i], o->merges[i]) != 0;
        CHECK(bad == 0, "%d bpe tokens/merges/types differ", bad);
        printf("bpe: %d tokens, %d merges, pre '%s' (gguf '%s'), bos %d eos %d eot %d\n", v.n_tokens, v.n_merges,
               v.pre, o->pre, v.bos, v.eos, v.eot);
    }
    vocab_free(&v);
    model_file_close(&mf);
}

// ------------------------------------------------------------------------------------------------
// Hostile folders

static void make_dir(const char *d) { mkdir(d, 0755); }

static const char *CONFIG =
    "{\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 96, \"num_hidden_layers\": 2,"
    " \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"vocab_size\": 512, \"tie_word_embeddings\": true}";

static void expect_fail(const char *dir, const char *needle, const char *what) {
    struct model_file mf;
    struct err e = {0};
    int rc = safetensors_open(&mf, dir, &e);
    CHECK(rc != ERR_OK, "%s: accepted", what);
    if (rc != ERR_OK) CHECK(strstr(e.msg, needle) != NULL, "%s: message lacks '%s': %s", what, needle, e.msg);
}

/* Writes dir/model.safetensors with the given header and `data` bytes of zeros. */
static void write_st(const char *dir, const char *hdr, size_t data) {
    char p[600];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    size_t h = strlen(hdr);
    unsigned char *b = calloc(1, 8 + h + data);
    uint64_t h64 = h;
    memcpy(b, &h64, 8);
    memcpy(b + 8, hdr, h);
    write_bytes(p, b, 8 + h + data);
    free(b);
}

static void test_hostile(void) {
    char d[600], p[700];
    snprintf(d, sizeof d, "%s", tmp_path("hostile"));
    make_dir(d);
    expect_fail(d, "config.json", "no config.json");
    snprintf(p, sizeof p, "%s/config.json", d);
    write_text(p, "{\"model_type\": \"llama\", \"intermediate_size\": 96}");
    expect_fail(d, "hidden_size", "missing hidden_size");
    write_text(p, "{\"model_type\": \"gpt2\", \"hidden_size\": 64}");
    expect_fail(d, "config.json", "gpt2 model type");
    write_text(p, "{\"model_type\": \"llama\", \"hidden_size\": -64, \"intermediate_size\": 96}");
    expect_fail(d, "hidden_size", "negative hidden_size");
    write_text(p, "{\"model_type\": \"llama\", \"hidden_size\": 64,");
    expect_fail(d, "config.json", "truncated config");
    write_text(p, "{\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 96, \"num_hidden_layers\": 2,"
                  " \"num_attention_heads\": 4, \"vocab_size\": 512, \"rope_scaling\": {\"rope_type\": \"llama3\"}}");
    expect_fail(d, "rope_scaling", "rope scaling");
    write_text(p, CONFIG);
    expect_fail(d, "model.safetensors", "no weights");

    // headers
    write_st(d, "{", 0);
    expect_fail(d, "model.safetensors", "truncated json");
    write_st(d, "{\"model.norm.weight\": {\"dtype\": \"I8\", \"shape\": [64], \"data_offsets\": [0, 64]}}", 64);
    expect_fail(d, "I8", "int8 dtype");
    expect_fail(d, "model.norm.weight", "dtype error names the tensor");
    write_st(d, "{\"model.norm.weight\": {\"dtype\": \"F32\", \"shape\": [64], \"data_offsets\": [0, 256]}}", 100);
    expect_fail(d, "data_offsets", "offsets past the end");
    write_st(d, "{\"model.norm.weight\": {\"dtype\": \"F32\", \"shape\": [64], \"data_offsets\": [0, 200]}}", 256);
    expect_fail(d, "model.norm.weight", "size mismatch");
    write_st(d, "{\"model.norm.weight\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296], \"data_offsets\": [0, 0]}}", 0);
    expect_fail(d, "model.norm.weight", "absurd shape");
    write_st(d, "{\"model.norm.weight\": {\"dtype\": \"F32\", \"shape\": [64], \"data_offsets\": [-4, 252]}}", 256);
    expect_fail(d, "model.norm.weight", "negative offset");
    write_st(d, "{\"model.norm.weight\": {\"dtype\": \"F32\", \"shape\": [64], \"data_offsets\": [0, 256]},"
                " \"model.norm.weight\": {\"dtype\": \"F32\", \"shape\": [64], \"data_offsets\": [0, 256]}}", 256);
    expect_fail(d, "duplicate", "duplicate tensor");
    write_st(d, "[]", 0);
    expect_fail(d, "model.safetensors", "header not an object");
    snprintf(p, sizeof p, "%s/model.safetensors", d);
    uint64_t huge = 1ull << 62;
    write_bytes(p, &huge, 8);
    expect_fail(d, "model.safetensors", "absurd header length");
    write_bytes(p, "abc", 3);
    expect_fail(d, "model.safetensors", "3-byte file");

    // truncations of a real written folder's model.safetensors
    struct rng g;
    rng_init(&g, 0);
    struct toy m;
    toy_make(&m, &g, 512, true);
    struct vocab v = {0};
    struct err e = {0};
    char tok[600];
    snprintf(tok, sizeof tok, "%s", test_data("models/stories260K/tok512.bin"));
    if (llama2c_tokenizer_load(&v, tok, 512, &e) == ERR_OK) {
        char good[600];
        snprintf(good, sizeof good, "%s", tmp_path("good"));
        if (safetensors_write_folder(good, &m.cfg, &v, m.t, m.n, false, &e) == ERR_OK) {
            size_t n;
            snprintf(p, sizeof p, "%s/model.safetensors", good);
            char *buf = read_file_all(p, &n);
            char *save = malloc(n);
            memcpy(save, buf, n);
            for (size_t cut = 0; cut < n; cut += cut < 3000 ? 7 : 4099) {
                write_bytes(p, save, cut);
                expect_fail(good, "model.safetensors", "truncated safetensors");
            }
            for (int it = 0; it < 300; it++) {   // flips in the header must not crash
                memcpy(buf, save, n);
                for (int k = 0; k < 3; k++) buf[8 + rng_u64(&g) % 2000] ^= (char)(1 + rng_u64(&g) % 255);
                write_bytes(p, buf, n);
                struct model_file mf;
                if (model_file_open(&mf, good, NULL, &e) == ERR_OK) model_file_close(&mf);
                else CHECK(strstr(e.msg, "good") != NULL, "flip: message lacks the folder: %s", e.msg);
            }
            write_bytes(p, save, n);
            // tokenizer.json truncations
            snprintf(p, sizeof p, "%s/tokenizer.json", good);
            char *tj = read_file_all(p, &n);
            for (size_t cut = 0; cut < n; cut += 97) {
                write_bytes(p, tj, cut);
                expect_fail(good, "tokenizer.json", "truncated tokenizer.json");
            }
            free(tj);
            free(buf);
            free(save);
        }
        // sharded: unsafe names and missing shards
        char sh[600];
        snprintf(sh, sizeof sh, "%s", tmp_path("sharded"));
        make_dir(sh);
        snprintf(p, sizeof p, "%s/config.json", sh);
        write_text(p, CONFIG);
        snprintf(p, sizeof p, "%s/model.safetensors.index.json", sh);
        write_text(p, "{\"weight_map\": {\"model.norm.weight\": \"../../etc/passwd\"}}");
        expect_fail(sh, "index.json", "path traversal");
        write_text(p, "{\"weight_map\": {\"model.norm.weight\": \"model-00001-of-00002.safetensors\"}}");
        expect_fail(sh, "model-00001-of-00002.safetensors", "missing shard");
        write_text(p, "{\"weight_map\": [1, 2]}");
        expect_fail(sh, "weight_map", "weight_map not an object");
    }
    vocab_free(&v);
    toy_free(&m);
}

int main(void) {
    test_begin("loader_safetensors");
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_st_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_json();
    test_roundtrip();
    test_bpe_tokenizer();
    test_hostile();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "note: could not remove %s\n", tmpdir);
    return test_end();
}
