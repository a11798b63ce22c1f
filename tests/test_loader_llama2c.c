/* tests/test_loader_llama2c.c: llama2.c checkpoints and tokenizers, SentencePiece tokenizer.model.
 * stories260K.bin + tok512.bin against stories260K.gguf (the .bin was rebuilt from it, so every
 * weight is bit-identical), Llama-2 tokenizer.bin vs tokenizer.model, write -> read round trips of
 * v0/v1/v2 files, and hostile inputs (truncations, corrupt headers) that must fail naming the file.
 * Run: make build/tests/test_loader_llama2c && build/tests/test_loader_llama2c (also under SAN=1). */
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* An error from a hostile file: must be an error code and the message must name the file. */
static void check_rejected(int rc, const struct err *e, const char *path, const char *what) {
    CHECK(rc != ERR_OK, "%s: accepted", what);
    if (rc != ERR_OK) CHECK(strstr(e->msg, path) != NULL, "%s: message does not name the file: %s", what, e->msg);
}

static bool same_tensor(const struct tensor_view *a, const struct tensor_view *b) {
    if (!a || !b || a->type != b->type || a->nbytes != b->nbytes) return false;
    for (int d = 0; d < 2; d++)
        if ((a->n_dims > d ? a->ne[d] : 1) != (b->n_dims > d ? b->ne[d] : 1)) return false;
    return memcmp(a->data, b->data, a->nbytes) == 0;
}

// ------------------------------------------------------------------------------------------------

static void test_stories(void) {
    char bin[600], gguf[600];
    snprintf(bin, sizeof bin, "%s", test_data("models/stories260K/stories260K.bin"));
    snprintf(gguf, sizeof gguf, "%s", test_data("models/stories260K/stories260K.gguf"));
    if (!file_exists(bin) || !file_exists(gguf)) test_skip("stories260K files missing");
    struct model_file mf, mg;
    struct err e = {0};
    int rc = llama2c_open(&mf, bin, NULL, &e);   // finds tok512.bin next to it
    CHECK(rc == ERR_OK, "llama2c_open: %s", e.msg);
    if (rc) return;
    const struct model_config *c = &mf.cfg;
    CHECK(c->dim == 64 && c->hidden_dim == 172 && c->n_layers == 5 && c->n_heads == 8 &&
          c->n_kv_heads == 4 && c->vocab_size == 512 && c->seq_len == 512 && c->head_dim == 8,
          "config %d %d %d %d %d %d %d", c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads,
          c->vocab_size, c->seq_len);
    CHECK(c->tied_output && c->rope == ROPE_INTERLEAVED, "tied %d rope %d", c->tied_output, c->rope);
    CHECK(mf.n_tensors == 2 + 9 * 5, "n_tensors %d", mf.n_tensors);
    CHECK(model_file_validate(&mf, &e) == ERR_OK, "validate: %s", e.msg);
    const struct vocab *v = &mf.vocab;
    CHECK(v->n_tokens == 512 && v->kind == VOCAB_SPM && v->llama2c_style, "vocab %d", v->n_tokens);
    CHECK(v->bos == 1 && v->eos == 2 && v->unk == 0 && v->add_bos, "special ids");
    CHECK(!strcmp(v->tokens[1], "\n<s>\n") && v->types[1] == TOK_CONTROL, "token 1");
    CHECK(!strcmp(v->tokens[3 + 10], "<0x0A>") && v->types[13] == TOK_BYTE, "byte token 13: %s", v->tokens[13]);

    rc = model_file_open(&mg, gguf, NULL, &e);
    CHECK(rc == ERR_OK, "gguf open: %s", e.msg);
    if (rc == ERR_OK) {
        int same = 0;
        for (int i = 0; i < mf.n_tensors; i++) {
            const struct tensor_view *a = &mf.tensors[i], *b = model_file_find(&mg, a->name);
            CHECK(same_tensor(a, b), "tensor %s differs from the GGUF's", a->name);
            same += same_tensor(a, b);
        }
        CHECK(same == 47, "%d tensors bit-identical", same);
        // the tokenizer: same scores, tokens equal after ' ' <-> '▁'
        int bad = 0;
        for (int i = 3; i < 512 && i < mg.vocab.n_tokens; i++) {
            const char *g = mg.vocab.tokens[i], *l = v->tokens[i];
            char buf[256];
            size_t o = 0;
            for (size_t k = 0; g[k] && o < 250; k++) {
                if (!strncmp(g + k, "\xe2\x96\x81", 3)) { buf[o++] = ' '; k += 2; }
                else buf[o++] = g[k];
            }
            buf[o] = 0;
            bad += strcmp(buf, l) != 0 || v->scores[i] != mg.vocab.scores[i];
        }
        CHECK(bad == 0, "%d tokens differ between tok512.bin and the GGUF vocab", bad);
    }

    // ---- round trips: v0 (legacy), v1, v2, tied and untied
    const char *tok = test_data("models/stories260K/tok512.bin");
    char tokp[600];
    snprintf(tokp, sizeof tokp, "%s", tok);
    for (int version = 0; version <= 2; version++) {
        for (int untied = 0; untied < 2; untied++) {
            struct model_config cfg = mf.cfg;
            cfg.tied_output = !untied;
            struct tensor_view tv[64];
            int n = mf.n_tensors;
            memcpy(tv, mf.tensors, (size_t)n * sizeof *tv);
            if (untied) {   // a distinct head: the embedding read backwards
                tv[n] = *model_file_find(&mf, "token_embd.weight");
                snprintf(tv[n].name, sizeof tv[n].name, "output.weight");
                float *d = malloc(tv[n].nbytes);
                const float *s = tv[n].data;
                size_t k = tv[n].nbytes / 4;
                for (size_t i = 0; i < k; i++) d[i] = s[k - 1 - i];
                tv[n].data = d;
                n++;
            }
            char name[64];
            snprintf(name, sizeof name, "rt_v%d_%d.bin", version, untied);
            const char *p = tmp_path(name);
            rc = llama2c_write(p, &cfg, tv, n, version, &e);
            CHECK(rc == ERR_OK, "llama2c_write v%d: %s", version, e.msg);
            struct model_file mr;
            rc = rc ? rc : llama2c_open(&mr, p, tokp, &e);
            CHECK(rc == ERR_OK, "reopen v%d untied %d: %s", version, untied, e.msg);
            if (rc == ERR_OK) {
                CHECK(mr.cfg.tied_output == !untied && mr.n_tensors == n, "v%d tied/n_tensors", version);
                for (int i = 0; i < n; i++) {
                    const struct tensor_view *b = model_file_find(&mr, tv[i].name);
                    if (version < 2 || tv[i].n_dims == 1) {
                        CHECK(same_tensor(&tv[i], b), "v%d %s not bit-identical", version, tv[i].name);
                        continue;
                    }
                    CHECK(b && b->nbytes == tv[i].nbytes, "v2 %s missing", tv[i].name);
                    if (!b || b->nbytes != tv[i].nbytes) continue;
                    const float *x = tv[i].data, *y = b->data;
                    int64_t k = (int64_t)(tv[i].nbytes / 4);
                    for (int64_t g = 0; g < k; g += 64) {   // int8 groups of 64 (dim 64)
                        float amax = 0;
                        for (int j = 0; j < 64; j++) amax = fmaxf(amax, fabsf(x[g + j]));
                        for (int j = 0; j < 64; j++)   // rounding error <= scale/2 = amax/254
                            CHECK_NEAR(y[g + j], x[g + j], amax / 254.0f * 1.0001f + 1e-12f, "v2 %s[%lld]",
                                       tv[i].name, (long long)(g + j));
                    }
                }
                CHECK(model_file_validate(&mr, &e) == ERR_OK, "validate v%d: %s", version, e.msg);
                model_file_close(&mr);
            }
            if (untied) free((void *)tv[n - 1].data);
        }
    }
    // tokenizer round trip
    const char *tp = tmp_path("tok_rt.bin");
    rc = llama2c_tokenizer_write(tp, v, &e);
    CHECK(rc == ERR_OK, "tokenizer write: %s", e.msg);
    size_t l1, l2;
    char *b1 = read_file_all(tp, &l1), *b2 = read_file_all(tokp, &l2);
    CHECK(b1 && b2 && l1 == l2 && !memcmp(b1, b2, l1), "tok512.bin round trip not byte-identical");
    free(b1);
    free(b2);
    if (rc == ERR_OK) model_file_close(&mg);
    model_file_close(&mf);
}

static void test_llama2_tokenizers(void) {
    char bin[600], model[600];
    snprintf(bin, sizeof bin, "%s", test_data("models/llama2-tokenizer/tokenizer.bin"));
    snprintf(model, sizeof model, "%s", test_data("models/llama2-tokenizer/tokenizer.model"));
    if (!file_exists(bin) || !file_exists(model)) {
        printf("note: Llama-2 tokenizer files missing, skipping that part\n");
        return;
    }
    struct vocab a = {0}, b = {0};
    struct err e = {0};
    int rc = llama2c_tokenizer_load(&a, bin, 32000, &e);
    CHECK(rc == ERR_OK, "tokenizer.bin: %s", e.msg);
    int rc2 = spm_model_load(&b, model, &e);
    CHECK(rc2 == ERR_OK, "tokenizer.model: %s", e.msg);
    if (rc || rc2) return;
    CHECK(b.n_tokens == 32000 && a.n_tokens == 32000, "counts %d %d", a.n_tokens, b.n_tokens);
    CHECK(!strcmp(b.tokens[260], "\xe2\x96\x81t") && !strcmp(b.tokens[29871], "\xe2\x96\x81") &&
          !strcmp(b.tokens[29900], "0"), "pieces 260/29871/29900: '%s' '%s' '%s'", b.tokens[260],
          b.tokens[29871], b.tokens[29900]);
    CHECK(b.unk == 0 && b.bos == 1 && b.eos == 2 && b.add_space_prefix && b.add_bos, "spm specials");
    CHECK(b.types[0] == TOK_UNKNOWN && b.types[1] == TOK_CONTROL && b.types[3] == TOK_BYTE &&
          b.types[300] == TOK_NORMAL, "spm types");
    int bad = 0;
    for (int i = 0; i < 32000; i++) {
        const char *m = b.tokens[i];
        char buf[512];
        size_t o = 0;
        if (i == 1) m = "\n<s>\n";
        if (i == 2) m = "\n</s>\n";
        for (size_t k = 0; m[k] && o < 500; k++) {
            if (!strncmp(m + k, "\xe2\x96\x81", 3)) { buf[o++] = ' '; k += 2; }
            else buf[o++] = m[k];
        }
        buf[o] = 0;
        if (strcmp(buf, a.tokens[i]) || a.scores[i] != b.scores[i] || a.types[i] != b.types[i]) {
            if (bad < 3) fprintf(stderr, "token %d: bin '%s' %g %d, model '%s' %g %d\n", i, a.tokens[i],
                                 a.scores[i], a.types[i], buf, b.scores[i], b.types[i]);
            bad++;
        }
    }
    CHECK(bad == 0, "%d of 32000 tokens differ between tokenizer.bin and tokenizer.model", bad);

    // hostile tokenizer.model: every truncation point in the first 4 KiB and some later ones,
    // and byte flips; must never crash, and errors must name the file
    size_t n;
    unsigned char *buf = (unsigned char *)read_file_all(model, &n);
    const char *p = tmp_path("bad.model");
    int n_err = 0;
    for (size_t cut = 0; cut < n; cut += cut < 4096 ? 7 : 9973) {
        write_bytes(p, buf, cut);
        struct vocab t = {0};
        rc = spm_model_load(&t, p, &e);
        if (rc) {
            n_err++;
            CHECK(strstr(e.msg, p) != NULL, "spm truncation %zu: %s", cut, e.msg);
        }
        vocab_free(&t);
    }
    CHECK(n_err > 100, "only %d truncations rejected", n_err);
    struct rng g;
    rng_init(&g, 0);
    for (int it = 0; it < 200; it++) {
        unsigned char *c = malloc(n);
        memcpy(c, buf, n);
        for (int k = 0; k < 4; k++) c[rng_u64(&g) % 8192] ^= (unsigned char)(1 + rng_u64(&g) % 255);
        write_bytes(p, c, n);
        struct vocab t = {0};
        rc = spm_model_load(&t, p, &e);
        if (rc) CHECK(strstr(e.msg, p) != NULL, "spm flip: %s", e.msg);
        vocab_free(&t);
        free(c);
    }
    free(buf);
    vocab_free(&a);
    vocab_free(&b);
}

// ------------------------------------------------------------------------------------------------
// Hostile checkpoints and tokenizer.bin files

static void test_hostile(void) {
    char bin[600], tok[600];
    snprintf(bin, sizeof bin, "%s", test_data("models/stories260K/stories260K.bin"));
    snprintf(tok, sizeof tok, "%s", test_data("models/stories260K/tok512.bin"));
    size_t n, nt;
    unsigned char *buf = (unsigned char *)read_file_all(bin, &n);
    unsigned char *tb = (unsigned char *)read_file_all(tok, &nt);
    if (!buf || !tb) test_skip("stories260K files missing");
    struct err e;
    struct model_file mf;
    const char *p = tmp_path("bad.bin");

    // truncations and one appended byte
    size_t cuts[] = {0, 1, 3, 4, 27, 28, 29, 100, 4096, n / 2, n - 2 * 512 * 4, n - 2 * 512 * 4 + 4, n - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        write_bytes(p, buf, cuts[i]);
        memset(&e, 0, sizeof e);
        check_rejected(llama2c_open(&mf, p, tok, &e), &e, p, "truncated checkpoint");
    }
    unsigned char *big = malloc(n + 1);
    memcpy(big, buf, n);
    big[n] = 7;
    write_bytes(p, big, n + 1);
    check_rejected(llama2c_open(&mf, p, tok, &e), &e, p, "appended byte");
    free(big);

    // corrupt header fields
    int32_t vals[][2] = {{0, 0}, {0, -64}, {0, 1 << 30}, {2, 100000}, {3, 7}, {3, 0}, {4, 3}, {4, -1},
                         {5, INT32_MIN}, {5, 1 << 30}, {6, 0}, {6, -512}, {1, 0}};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        unsigned char *c = malloc(n);
        memcpy(c, buf, n);
        memcpy(c + 4 * vals[i][0], &vals[i][1], 4);
        write_bytes(p, c, n);
        check_rejected(llama2c_open(&mf, p, tok, &e), &e, p, "corrupt header");
        free(c);
    }
    // v1 headers: bad version, bad shared flag, truncated header
    unsigned char h1[300] = {0};
    uint32_t magic = 0x616b3432u;
    int32_t ver = 3, hh[7] = {64, 172, 5, 8, 4, 512, 512};
    memcpy(h1, &magic, 4);
    memcpy(h1 + 4, &ver, 4);
    memcpy(h1 + 8, hh, 28);
    write_bytes(p, h1, 300);
    check_rejected(llama2c_open(&mf, p, tok, &e), &e, p, "version 3");
    CHECK(strstr(e.msg, "version") != NULL, "version message: %s", e.msg);
    ver = 1;
    memcpy(h1 + 4, &ver, 4);
    h1[36] = 5;
    write_bytes(p, h1, 300);
    check_rejected(llama2c_open(&mf, p, tok, &e), &e, p, "shared byte 5");
    write_bytes(p, h1, 100);
    check_rejected(llama2c_open(&mf, p, tok, &e), &e, p, "short v1 header");
    ver = 2;
    memcpy(h1 + 4, &ver, 4);
    h1[36] = 1;
    int32_t grp = 0;
    memcpy(h1 + 37, &grp, 4);
    write_bytes(p, h1, 300);
    check_rejected(llama2c_open(&mf, p, tok, &e), &e, p, "group 0");

    // no tokenizer next to the model
    write_bytes(p, buf, n);
    int rc = llama2c_open(&mf, p, NULL, &e);
    CHECK(rc != ERR_OK && strstr(e.msg, "tokenizer"), "missing tokenizer: %s", e.msg);
    // tokenizer with a different vocab size
    rc = llama2c_open(&mf, p, test_data("models/llama2-tokenizer/tokenizer.bin"), &e);
    if (rc == ERR_OK) {   // 32000 tokens file read as 512: fine to load (first 512), but check sanity
        CHECK(mf.vocab.n_tokens == 512, "vocab %d", mf.vocab.n_tokens);
        model_file_close(&mf);
    }

    // hostile tokenizer.bin
    struct vocab v = {0};
    const char *tp = tmp_path("bad_tok.bin");
    for (size_t cut = 0; cut < nt; cut += 13) {
        write_bytes(tp, tb, cut);
        check_rejected(llama2c_tokenizer_load(&v, tp, 512, &e), &e, tp, "truncated tokenizer");
    }
    int32_t bad_len[] = {-1, 1 << 30, 8};
    for (size_t i = 0; i < 3; i++) {
        unsigned char *c = malloc(nt);
        memcpy(c, tb, nt);
        memcpy(c + 4 + 4, &bad_len[i], 4);   // token 0's length
        write_bytes(tp, c, nt);
        check_rejected(llama2c_tokenizer_load(&v, tp, 512, &e), &e, tp, "bad token length");
        memcpy(c, &bad_len[i], 4);           // max_token_length
        memcpy(c + 8, tb + 8, 4);
        write_bytes(tp, c, nt);
        if (bad_len[i] != 8) check_rejected(llama2c_tokenizer_load(&v, tp, 512, &e), &e, tp, "bad max_token_length");
        else vocab_free(&v);
        free(c);
    }
    check_rejected(llama2c_tokenizer_load(&v, tmp_path("nonexistent.bin"), 512, &e), &e, "nonexistent.bin", "missing file");
    vocab_free(&v);
    free(buf);
    free(tb);
}

int main(void) {
    test_begin("loader_llama2c");
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_llama2c_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_stories();
    test_llama2_tokenizers();
    test_hostile();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "note: could not remove %s\n", tmpdir);
    return test_end();
}
