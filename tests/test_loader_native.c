/* tests/test_loader_native.c: our "LLMQ" model file: native_write -> native_open round trip with
 * tensors of several qtypes (F32, F16 and raw blocks of quantized types) and a full vocabulary,
 * then hostile files: truncations, flipped header bytes (checksum), a newer version, patched
 * counts and qtype names with a fixed-up checksum. Errors must name the file; nothing may crash.
 * Run: make build/tests/test_loader_native && build/tests/test_loader_native (also under SAN=1). */
#include <stdint.h>
#include <unistd.h>

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

static uint64_t fnv(const unsigned char *p, size_t n) {   // the format's header checksum
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static void fix_checksum(unsigned char *b) {
    uint64_t hs;
    memcpy(&hs, b + 16, 8);
    uint64_t s = fnv(b, hs - 8);
    memcpy(b + hs - 8, &s, 8);
}

static void expect_fail(const char *p, const char *needle, const char *what) {
    struct model_file mf;
    struct err e = {0};
    int rc = native_open(&mf, p, &e);
    CHECK(rc != ERR_OK, "%s: accepted", what);
    if (rc != ERR_OK) {
        CHECK(strstr(e.msg, p) != NULL, "%s: message does not name the file: %s", what, e.msg);
        if (needle) CHECK(strstr(e.msg, needle) != NULL, "%s: message lacks '%s': %s", what, needle, e.msg);
    }
}

int main(void) {
    test_begin("loader_native");
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_native_XXXXXX");
    if (!mkdtemp(tmpdir)) return 1;
    struct rng g;
    rng_init(&g, 0);
    struct err e = {0};

    // ---- a vocabulary: tok512 if present, else a tiny synthetic one
    struct vocab v = {0};
    char tok[600];
    snprintf(tok, sizeof tok, "%s", test_data("models/stories260K/tok512.bin"));
    if (llama2c_tokenizer_load(&v, tok, 512, &e) != ERR_OK) {
        v.kind = VOCAB_BPE;
        v.n_tokens = 3;
        v.tokens = vocab_alloc(&v, 3 * sizeof *v.tokens);
        v.lens = vocab_alloc(&v, 3 * sizeof *v.lens);
        v.scores = vocab_alloc(&v, 3 * sizeof *v.scores);
        v.types = vocab_alloc(&v, 3 * sizeof *v.types);
        const char *t3[] = {"a", "b", "ab"};
        for (int i = 0; i < 3; i++) v.tokens[i] = vocab_strdup(&v, t3[i], strlen(t3[i])), v.lens[i] = (uint32_t)strlen(t3[i]), v.types[i] = 1;
        v.bos = v.eos = v.unk = v.pad = v.eot = -1;
    }
    v.n_merges = 2;
    v.merges = vocab_alloc(&v, 2 * sizeof *v.merges);
    v.merges[0] = vocab_strdup(&v, "a b", 3);
    v.merges[1] = vocab_strdup(&v, "\xc4\xa0 t", 4);
    v.chat_template = vocab_strdup(&v, "{% for m in messages %}{{ m.content }}{% endfor %}", 51);
    snprintf(v.pre, sizeof v.pre, "smollm");
    v.eot = 2;

    struct model_config cfg = {64, 172, 5, 8, 4, 512, 512, 8, 10000.0f, 1e-5f, ROPE_NEOX, true, "llama", "toy native"};
    // ---- tensors of several types, random bytes of the right size
    const enum qtype types[] = {QT_F32, QT_F16, QT_BF16, QT_Q8_G64, QT_Q4_G64, QT_Q3_G64, QT_Q2_G64, QT_GGML_Q8_0, QT_GGML_Q4_K, QT_GGML_Q6_K};
    const int nt = (int)(sizeof types / sizeof types[0]);
    struct tensor_view tv[16];
    for (int i = 0; i < nt; i++) {
        struct tensor_view *t = &tv[i];
        memset(t, 0, sizeof *t);
        snprintf(t->name, sizeof t->name, "blk.%d.test_%s.weight", i, qtype_traits[types[i]].name);
        t->type = types[i];
        t->n_dims = i % 3 == 0 ? 1 : 2;
        t->ne[0] = 256 * (1 + i % 2);
        t->ne[1] = t->n_dims == 2 ? 3 + i : 1;
        t->ne[2] = t->ne[3] = 1;
        t->nbytes = qtype_row_bytes(t->type, t->ne[0]) * (uint64_t)t->ne[1];
        unsigned char *d = malloc(t->nbytes);
        for (uint64_t k = 0; k < t->nbytes; k++) d[k] = (unsigned char)rng_u64(&g);
        t->data = d;
    }
    const char *p = tmp_path("model.bin");
    int rc = native_write(p, &cfg, &v, tv, nt, &e);
    CHECK(rc == ERR_OK, "native_write: %s", e.msg);
    struct model_file mf;
    if (rc == ERR_OK) {   // dispatch by magic reaches native_open, then validation (no Llama tensors here)
        int rc2 = model_file_open(&mf, p, NULL, &e);
        CHECK(rc2 != ERR_OK && strstr(e.msg, "token_embd.weight"), "dispatch: %s", e.msg);
        rc = native_open(&mf, p, &e);
    }
    CHECK(rc == ERR_OK, "native_open: %s", e.msg);
    if (rc == ERR_OK) {
        CHECK(!memcmp(&mf.cfg, &cfg, offsetof(struct model_config, arch)) && !strcmp(mf.cfg.arch, "llama") &&
              !strcmp(mf.cfg.name, "toy native"), "config differs");
        CHECK(mf.format == MF_NATIVE && mf.n_tensors == nt, "n_tensors %d", mf.n_tensors);
        for (int i = 0; i < nt && i < mf.n_tensors; i++) {
            const struct tensor_view *a = &tv[i], *b = &mf.tensors[i];
            CHECK(!strcmp(a->name, b->name) && a->type == b->type && a->n_dims == b->n_dims && a->ne[0] == b->ne[0] &&
                  a->ne[1] == b->ne[1] && a->nbytes == b->nbytes && !memcmp(a->data, b->data, a->nbytes),
                  "tensor %d (%s) differs", i, a->name);
            CHECK(((uintptr_t)b->data % 64) == 0, "tensor %d not 64-byte aligned", i);
        }
        const struct vocab *w = &mf.vocab;
        int bad = w->n_tokens != v.n_tokens || w->kind != v.kind || w->n_merges != 2;
        for (int i = 0; !bad && i < v.n_tokens; i++)
            bad += w->lens[i] != v.lens[i] || memcmp(w->tokens[i], v.tokens[i], v.lens[i]) || w->scores[i] != v.scores[i] ||
                   w->types[i] != v.types[i];
        CHECK(bad == 0, "vocab differs");
        CHECK(w->n_merges == 2 && !strcmp(w->merges[1], "\xc4\xa0 t"), "merges");
        CHECK(w->bos == v.bos && w->eos == v.eos && w->unk == v.unk && w->pad == v.pad && w->eot == 2, "special ids");
        CHECK(w->add_bos == v.add_bos && w->add_space_prefix == v.add_space_prefix && w->llama2c_style == v.llama2c_style &&
              !strcmp(w->pre, "smollm") && w->chat_template && !strcmp(w->chat_template, v.chat_template), "flags/pre/template");
        model_file_close(&mf);
    }
    // a writer refuses inconsistent views
    struct tensor_view badv = tv[3];
    badv.nbytes -= 1;
    CHECK(native_write(tmp_path("x.bin"), &cfg, &v, &badv, 1, &e) != ERR_OK, "writer accepted a wrong nbytes");

    // ---- hostile
    size_t n;
    unsigned char *buf = (unsigned char *)read_file_all(p, &n);
    unsigned char *c = malloc(n + 8);
    const char *q = tmp_path("bad.bin");
    for (size_t cut = 0; buf && cut < n; cut += cut < 8192 ? 5 : 3001) {
        write_bytes(q, buf, cut);
        expect_fail(q, NULL, "truncated");
    }
    uint64_t hs;
    memcpy(&hs, buf + 16, 8);
    for (int it = 0; it < 300; it++) {   // header flips: caught by the checksum or the field checks
        memcpy(c, buf, n);
        size_t at = rng_u64(&g) % hs;
        c[at] ^= (unsigned char)(1 + rng_u64(&g) % 255);
        write_bytes(q, c, n);
        expect_fail(q, NULL, "header flip");
    }
    for (int it = 0; it < 300; it++) {   // flips with the checksum fixed: field checks must hold
        memcpy(c, buf, n);
        size_t at = 40 + rng_u64(&g) % (hs - 48);
        c[at] ^= (unsigned char)(1 + rng_u64(&g) % 255);
        fix_checksum(c);
        write_bytes(q, c, n);
        struct model_file m2;
        if (native_open(&m2, q, &e) == ERR_OK) model_file_close(&m2);
        else CHECK(strstr(e.msg, q) != NULL, "flip: %s", e.msg);
    }
    memcpy(c, buf, n);
    uint32_t ver = 2;
    memcpy(c + 4, &ver, 4);
    write_bytes(q, c, n);
    expect_fail(q, "newer version", "version 2");
    memcpy(c, buf, n);
    memcpy(c, "LLMX", 4);
    write_bytes(q, c, n);
    expect_fail(q, "magic", "bad magic");
    memcpy(c, buf, n);
    int32_t huge = 1 << 21;
    memcpy(c + 40 + 8 * 4 + 4 + 4 + 4 + 1 + 4 + 5 + 4 + 10 + 4, &huge, 4);   // vocab.n_tokens (after config)
    fix_checksum(c);
    write_bytes(q, c, n);
    expect_fail(q, "n_tokens", "absurd n_tokens");
    memcpy(c, buf, n);
    unsigned char *qn = memmem(c, hs, "\x06\0\0\0q4_g64", 10);   // the length-prefixed qtype string
    CHECK(qn != NULL, "qtype string not found");
    if (qn) {
        memcpy(qn + 4, "q9_g64", 6);
        fix_checksum(c);
        write_bytes(q, c, n);
        expect_fail(q, "q9_g64", "unknown qtype");
    }
    memcpy(c, buf, n);
    memset(c + n, 0, 8);
    write_bytes(q, c, n + 8);
    expect_fail(q, "file_size", "appended bytes");

    free(buf);
    free(c);
    for (int i = 0; i < nt; i++) free((void *)tv[i].data);
    vocab_free(&v);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "note: could not remove %s\n", tmpdir);
    return test_end();
}
