/* tests/test_tokenizer_spm.c: the SentencePiece BPE encoder and the streaming decoder.
 * A hand-built vocabulary first (merge order, byte fallback, special tokens, errors), then
 * llama.cpp's test vectors (ggml-vocab-llama-spm.gguf.inp/.out) from the vocab-only GGUF, the same
 * ids from tokenizer.bin (llama2.c) and tokenizer.model (SentencePiece protobuf), llama2.c's tok512
 * on "Once upon a time", round trips (fixed and random UTF-8) and wikitext-2 speed. */
#include <time.h>

#include "engine/tokenizer.h"
#include "tests/test.h"

#define SEP "\n__ggml_vocab_test__\n"

// Speed bound for 1.3 MB of text: about 0.2-0.6 s at -O3; sanitizers slow it ~5x.
#if defined(__SANITIZE_ADDRESS__)
#define ENCODE_LIMIT_S 20.0
#else
#define ENCODE_LIMIT_S 3.0
#endif

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void ids_str(const int32_t *ids, int n, char *buf, size_t cap) {
    size_t k = 0;
    buf[0] = 0;
    for (int i = 0; i < n && k + 16 < cap; i++) k += (size_t)snprintf(buf + k, cap - k, " %d", ids[i]);
}

// Decodes ids token by token with a fresh stream; returns a malloc'd NUL-terminated string.
static char *decode_all(const struct tokenizer *t, const int32_t *ids, int n, size_t *out_len) {
    size_t cap = 64 + (size_t)n * 64, len = 0;
    char *s = malloc(cap);
    struct detok d;
    detok_init(&d);
    for (int i = 0; i < n; i++) len += tokenizer_decode_token(t, &d, ids[i], s + len, cap - len);
    len += detok_flush(&d, s + len, cap - len);
    if (out_len) *out_len = len;
    return s;
}

// ------------------------------------------------------------------------------------------------
// A tiny hand-built vocabulary

static void test_tiny(void) {
    // ids: 0 <unk>, 1 <s>, 2 </s>, 3..258 <0x00>..<0xFF>, then pieces with scores.
    static const char *pieces[] = {"▁", "a", "b", "c", "▁a", "ab", "▁ab", "bc", "▁abc", "<|x|>"};
    static const float pscore[] = {-1, -2, -2, -2, -3, -1, -4, -0.5f, -5, 0};
    enum { NP = sizeof pieces / sizeof *pieces, N = 259 + NP };
    static char bytes[256][8];
    char *tokens[N];
    uint32_t lens[N];
    float scores[N];
    int32_t types[N];
    tokens[0] = "<unk>"; tokens[1] = "<s>"; tokens[2] = "</s>";
    types[0] = TOK_UNKNOWN; types[1] = types[2] = TOK_CONTROL;
    for (int b = 0; b < 256; b++) {
        snprintf(bytes[b], sizeof bytes[b], "<0x%02X>", b);
        tokens[3 + b] = bytes[b];
        types[3 + b] = TOK_BYTE;
    }
    for (int i = 0; i < NP; i++) {
        tokens[259 + i] = (char *)pieces[i];
        types[259 + i] = i == NP - 1 ? TOK_USER_DEFINED : TOK_NORMAL;
    }
    for (int i = 0; i < N; i++) {
        lens[i] = (uint32_t)strlen(tokens[i]);
        scores[i] = i >= 259 ? pscore[i - 259] : 0;
    }
    struct vocab v = {.kind = VOCAB_SPM, .n_tokens = N, .tokens = tokens, .lens = lens,
                      .scores = scores, .types = types, .bos = 1, .eos = 2, .unk = 0, .pad = -1,
                      .eot = -1, .add_bos = true, .add_space_prefix = true};
    struct err e = {0};
    struct tokenizer *t = tokenizer_create(&v, &e);
    CHECK(t != NULL, "tokenizer_create: %s", e.msg);
    if (!t) return;
    int32_t ids[64];
    // "abc" -> ▁ a b c: "bc" (-0.5) merges first, then "▁a" (-3), then "▁a"+"bc" = "▁abc" (-5).
    int n = tokenizer_encode(t, "abc", 3, true, false, ids, 64, &e);
    CHECK(n == 2 && ids[0] == 1 && ids[1] == 259 + 8, "abc -> n=%d ids %d %d", n, ids[0], ids[1]);
    // "ab": ▁ a b -> "ab" (-1) beats "▁a" (-3); then "▁ab" (-4).
    n = tokenizer_encode(t, "ab", 2, false, false, ids, 64, &e);
    CHECK(n == 1 && ids[0] == 259 + 6, "ab -> n=%d id %d", n, ids[0]);
    // "é" is not a piece: byte fallback C3 A9 after the "▁".
    n = tokenizer_encode(t, "\xC3\xA9", 2, false, false, ids, 64, &e);
    CHECK(n == 3 && ids[0] == 259 && ids[1] == 3 + 0xC3 && ids[2] == 3 + 0xA9, "é -> n=%d", n);
    // Special tokens only with parse_special; the dummy prefix follows a special token.
    n = tokenizer_encode(t, "<s>a</s>", 8, false, true, ids, 64, &e);
    CHECK(n == 3 && ids[0] == 1 && ids[1] == 259 + 4 && ids[2] == 2, "<s>a</s> -> n=%d", n);
    n = tokenizer_encode(t, "a<|x|>", 6, false, true, ids, 64, &e);
    CHECK(n == 2 && ids[0] == 259 + 4 && ids[1] == 259 + 9, "a<|x|> -> n=%d", n);
    n = tokenizer_encode(t, "<s>", 3, false, false, ids, 64, &e);
    CHECK(n > 1 && ids[0] != 1, "<s> as text must not be BOS (n=%d id %d)", n, ids[0]);
    // Errors: invalid UTF-8 names the offset; too many tokens.
    static const char *bad[] = {"ab\xFF", "ab\xC3", "ab\xC0\xAF", "ab\xED\xA0\x80", "ab\xF4\x90\x80\x80",
                                "ab\xE2\x82"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        e = (struct err){0};
        n = tokenizer_encode(t, bad[i], strlen(bad[i]), true, false, ids, 64, &e);
        CHECK(n == -1 && e.code == ERR_ARG && strstr(e.msg, "byte 2"), "bad[%zu]: n=%d %s", i, n, e.msg);
    }
    e = (struct err){0};
    n = tokenizer_encode(t, "a a a a", 7, true, false, ids, 3, &e);
    CHECK(n == -1 && e.code == ERR_ARG, "overflow: n=%d %s", n, e.msg);
    n = tokenizer_encode(t, "", 0, true, false, ids, 64, &e);
    CHECK(n == 1 && ids[0] == 1, "empty + BOS -> n=%d", n);
    n = tokenizer_encode(t, "", 0, false, false, ids, 64, &e);
    CHECK(n == 0, "empty -> n=%d", n);
    // Decoding: split byte fallback is held until complete; BOS drops the leading space.
    struct detok d;
    char buf[64];
    detok_init(&d);
    CHECK(tokenizer_decode_token(t, &d, 1, buf, sizeof buf) == 0, "BOS emits nothing");
    CHECK(tokenizer_decode_token(t, &d, 259 + 4, buf, sizeof buf) == 1 && !strcmp(buf, "a"), "%s", buf);
    CHECK(tokenizer_decode_token(t, &d, 259 + 4, buf, sizeof buf) == 2 && !strcmp(buf, " a"), "%s", buf);
    CHECK(tokenizer_decode_token(t, &d, 3 + 0xE2, buf, sizeof buf) == 0, "partial byte held");
    CHECK(tokenizer_decode_token(t, &d, 3 + 0x82, buf, sizeof buf) == 0, "partial byte held");
    CHECK(tokenizer_decode_token(t, &d, 3 + 0xAC, buf, sizeof buf) == 3 && !strcmp(buf, "\xE2\x82\xAC"),
          "euro sign completes");
    CHECK(tokenizer_decode_token(t, &d, 3 + 0xC3, buf, sizeof buf) == 0, "held");
    CHECK(tokenizer_decode_token(t, &d, 259 + 1, buf, sizeof buf) == 4 && !strcmp(buf, "\xEF\xBF\xBD" "a"),
          "broken sequence -> U+FFFD then a");
    CHECK(tokenizer_decode_token(t, &d, 3 + 0xF0, buf, sizeof buf) == 0, "held");
    CHECK(detok_flush(&d, buf, sizeof buf) == 3 && !strcmp(buf, "\xEF\xBF\xBD"), "flush -> U+FFFD");
    CHECK(tokenizer_decode_token(t, &d, 2, buf, sizeof buf) == 0, "EOS emits nothing");
    CHECK(tokenizer_decode_token(t, &d, 259 + 8, buf, 3) == 2 && !strcmp(buf, " a"), "truncated: %s", buf);
    CHECK(tokenizer_find(t, "▁ab") == 259 + 6 && tokenizer_find(t, "zz") == -1, "find");
    CHECK(tokenizer_piece(t, 3 + 0x0A) && !strcmp(tokenizer_piece(t, 3 + 0x0A), "<0x0A>"), "piece");
    CHECK(tokenizer_piece(t, N) == NULL && tokenizer_piece(t, -1) == NULL, "piece out of range");
    tokenizer_free(t);
}

// ------------------------------------------------------------------------------------------------
// llama.cpp's vectors

struct vectors {
    char *inp, *out;
    const char *text[128];
    size_t len[128];
    int32_t ids[128][512];
    int n_ids[128];
    int n;
};

static bool load_vectors(struct vectors *vc) {
    size_t ni, no;
    vc->inp = read_file_all(test_data("models/llama2-tokenizer/ggml-vocab-llama-spm.gguf.inp"), &ni);
    vc->out = read_file_all(test_data("models/llama2-tokenizer/ggml-vocab-llama-spm.gguf.out"), &no);
    if (!vc->inp || !vc->out) return false;
    // Each input ends with "\n__ggml_vocab_test__\n" (the newline before the separator is not text).
    char *p = vc->inp, *end = vc->inp + ni;
    vc->n = 0;
    while (p < end && vc->n < 128) {
        char *s = strstr(p, SEP);
        if (!s) break;
        vc->text[vc->n] = p;
        vc->len[vc->n] = (size_t)(s - p);
        vc->n++;
        p = s + strlen(SEP);
    }
    char *q = vc->out;
    for (int i = 0; i < vc->n; i++) {
        char *nl = strchr(q, '\n');
        if (!nl) return false;
        *nl = 0;
        int k = 0;
        char *r = q;
        for (;;) {
            char *e2;
            long x = strtol(r, &e2, 10);
            if (e2 == r || k >= 512) break;
            vc->ids[i][k++] = (int32_t)x;
            r = e2;
        }
        vc->n_ids[i] = k;
        q = nl + 1;
    }
    return true;
}

// Encodes every vector without BOS and compares; returns the number of mismatching inputs.
static int run_vectors(const struct tokenizer *t, const struct vectors *vc, const char *what) {
    int bad = 0;
    int32_t ids[1024];
    for (int i = 0; i < vc->n; i++) {
        struct err e = {0};
        int n = tokenizer_encode(t, vc->text[i], vc->len[i], false, false, ids, 1024, &e);
        bool ok = n == vc->n_ids[i] && memcmp(ids, vc->ids[i], (size_t)n * sizeof *ids) == 0;
        if (!ok) {
            char got[2048], want[2048];
            ids_str(ids, n, got, sizeof got);
            ids_str(vc->ids[i], vc->n_ids[i], want, sizeof want);
            CHECK(ok, "%s: vector %d [%.*s]\n  got %s\n want %s", what, i, (int)vc->len[i],
                  vc->text[i], got, want);
            bad++;
        } else {
            test_checks++;
        }
        // Round trip with BOS: SentencePiece decoding gives the text back exactly.
        n = tokenizer_encode(t, vc->text[i], vc->len[i], true, false, ids, 1024, &e);
        size_t dl;
        char *dec = decode_all(t, ids, n, &dl);
        CHECK(dl == vc->len[i] && memcmp(dec, vc->text[i], dl) == 0, "%s: round trip %d [%s]", what,
              i, dec);
        free(dec);
    }
    return bad;
}

// Random valid UTF-8 from a mix of scripts, spaces and newlines.
static size_t random_utf8(struct rng *g, char *buf, size_t max_chars) {
    static const uint32_t ranges[][2] = {
        {0x20, 0x7E}, {0x20, 0x20}, {0x0A, 0x0A}, {0x09, 0x09}, {0xA0, 0x17F}, {0x300, 0x36F},
        {0x391, 0x3C9}, {0x410, 0x44F}, {0x5D0, 0x5EA}, {0x621, 0x64A}, {0x900, 0x97F},
        {0x3040, 0x30FF}, {0x4E00, 0x9FFF}, {0xAC00, 0xD7A3}, {0x1F300, 0x1F6FF}, {0x1, 0x10FFFF}};
    size_t n = 0, k = rng_u64(g) % (max_chars + 1);
    for (size_t i = 0; i < k; i++) {
        const uint32_t *r = ranges[rng_u64(g) % (sizeof ranges / sizeof *ranges)];
        uint32_t cp = r[0] + (uint32_t)(rng_u64(g) % (r[1] - r[0] + 1));
        if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD;
        if (cp < 0x80) buf[n++] = (char)cp;
        else if (cp < 0x800) { buf[n++] = (char)(0xC0 | cp >> 6); buf[n++] = (char)(0x80 | (cp & 63)); }
        else if (cp < 0x10000) {
            buf[n++] = (char)(0xE0 | cp >> 12); buf[n++] = (char)(0x80 | ((cp >> 6) & 63));
            buf[n++] = (char)(0x80 | (cp & 63));
        } else {
            buf[n++] = (char)(0xF0 | cp >> 18); buf[n++] = (char)(0x80 | ((cp >> 12) & 63));
            buf[n++] = (char)(0x80 | ((cp >> 6) & 63)); buf[n++] = (char)(0x80 | (cp & 63));
        }
    }
    buf[n] = 0;
    return n;
}

// wikitext-2 ids from the GGUF vocabulary, to compare the other two sources against.
static char *g_wiki;
static size_t g_wiki_len;
static int32_t *g_wiki_ids;
static int g_wiki_n;

static void compare_wiki(const struct tokenizer *t, const char *what) {
    if (!g_wiki_ids) return;
    int32_t *ids = malloc((g_wiki_len + 2) * sizeof *ids);
    struct err e = {0};
    int n = tokenizer_encode(t, g_wiki, g_wiki_len, true, false, ids, (int)g_wiki_len + 2, &e);
    CHECK(n == g_wiki_n && !memcmp(ids, g_wiki_ids, (size_t)n * sizeof *ids),
          "%s: wikitext ids differ from the GGUF's (%d vs %d tokens)", what, n, g_wiki_n);
    free(ids);
}

static void test_round_trips(const struct tokenizer *t, const char *what) {
    static const char *fixed[] = {
        "Hello world", "  leading and trailing  ", "\n\nnew\nlines\n", "tab\there",
        "emoji 🦙🚀👨‍👩‍👧 ok", "CJK 你好，世界。日本語のテキスト", "한국어", "combining: e\xCC\x81 a\xCC\x8A",
        "Ελληνικά и русский", "עברית العربية", "mixed 123 4.5e-6 $%^&*()", "\xEF\xBF\xBD replacement",
        "<s> and </s> as text", "a\x01\x02\x7F control bytes", "\xF4\x8F\xBF\xBF max code point"};
    int32_t ids[4096];
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++) {
        struct err e = {0};
        int n = tokenizer_encode(t, fixed[i], strlen(fixed[i]), true, false, ids, 4096, &e);
        size_t dl;
        char *dec = decode_all(t, ids, n, &dl);
        CHECK(n > 0 && dl == strlen(fixed[i]) && memcmp(dec, fixed[i], dl) == 0,
              "%s: round trip [%s] -> [%s] (%s)", what, fixed[i], dec, e.msg);
        free(dec);
    }
    struct rng g;
    rng_init(&g, 0);
    char buf[4 * 200 + 1];
    for (int it = 0; it < 300; it++) {
        size_t len = random_utf8(&g, buf, 200);
        struct err e = {0};
        int n = tokenizer_encode(t, buf, len, true, false, ids, 4096, &e);
        size_t dl;
        char *dec = decode_all(t, ids, n, &dl);
        CHECK(n > 0 && dl == len && memcmp(dec, buf, len) == 0, "%s: random round trip %d (%s)",
              what, it, e.msg);
        free(dec);
    }
}

int main(void) {
    test_begin("test_tokenizer_spm");
    test_tiny();

    struct model_file mf;
    struct err e = {0};
    const char *gguf = test_data("models/llama2-tokenizer/ggml-vocab-llama-spm.gguf");
    if (!file_exists(gguf)) test_skip("%s not found", gguf);
    int rc = model_file_open(&mf, gguf, NULL, &e);
    CHECK(rc == ERR_OK, "model_file_open: %s", e.msg);
    if (rc) return test_end();
    struct tokenizer *t = tokenizer_create(&mf.vocab, &e);
    CHECK(t != NULL, "tokenizer_create: %s", e.msg);
    if (!t) return test_end();

    static struct vectors vc;
    CHECK(load_vectors(&vc) && vc.n == 46, "expected 46 vectors, got %d", vc.n);
    int bad = run_vectors(t, &vc, "gguf");
    printf("llama.cpp vectors (vocab-only GGUF): %d/%d match\n", vc.n - bad, vc.n);

    // wikitext-2 test (1.3 MB): speed and an exact round trip.
    g_wiki = read_file_all(test_data("text/wikitext-2-raw/wiki.test.raw"), &g_wiki_len);
    if (g_wiki) {
        size_t wl = g_wiki_len;
        g_wiki_ids = malloc((wl + 2) * sizeof *g_wiki_ids);
        double t0 = now_s();
        g_wiki_n = tokenizer_encode(t, g_wiki, wl, true, false, g_wiki_ids, (int)wl + 2, &e);
        double dt = now_s() - t0;
        printf("wikitext-2 test: %zu bytes -> %d tokens in %.3f s\n", wl, g_wiki_n, dt);
        CHECK(g_wiki_n > 250000 && dt < ENCODE_LIMIT_S, "wikitext encode: n=%d in %.2f s (%s)",
              g_wiki_n, dt, e.msg);
        size_t dl;
        char *dec = decode_all(t, g_wiki_ids, g_wiki_n, &dl);
        CHECK(dl == wl && memcmp(dec, g_wiki, wl) == 0, "wikitext round trip (%zu vs %zu bytes)", dl, wl);
        free(dec);
    }

    // tokenizer.bin (llama2.c format, ' ' instead of '▁') and tokenizer.model give the same ids.
    struct vocab vb = {0}, vm = {0};
    rc = llama2c_tokenizer_load(&vb, test_data("models/llama2-tokenizer/tokenizer.bin"), 32000, &e);
    CHECK(rc == ERR_OK, "tokenizer.bin: %s", e.msg);
    if (!rc) {
        struct tokenizer *tb = tokenizer_create(&vb, &e);
        CHECK(tb && run_vectors(tb, &vc, "tokenizer.bin") == 0, "tokenizer.bin vectors");
        if (tb) test_round_trips(tb, "tokenizer.bin");
        if (tb) compare_wiki(tb, "tokenizer.bin");
        tokenizer_free(tb);
        vocab_free(&vb);
    }
    rc = spm_model_load(&vm, test_data("models/llama2-tokenizer/tokenizer.model"), &e);
    CHECK(rc == ERR_OK, "tokenizer.model: %s", e.msg);
    if (!rc) {
        struct tokenizer *tm = tokenizer_create(&vm, &e);
        CHECK(tm && run_vectors(tm, &vc, "tokenizer.model") == 0, "tokenizer.model vectors");
        if (tm) compare_wiki(tm, "tokenizer.model");
        tokenizer_free(tm);
        vocab_free(&vm);
    }

    // llama2.c's tok512 (stories260K): BOS + "Once upon a time".
    struct vocab v5 = {0};
    rc = llama2c_tokenizer_load(&v5, test_data("models/stories260K/tok512.bin"), 512, &e);
    CHECK(rc == ERR_OK, "tok512.bin: %s", e.msg);
    if (!rc) {
        struct tokenizer *t5 = tokenizer_create(&v5, &e);
        int32_t ids[16];
        int n = t5 ? tokenizer_encode(t5, "Once upon a time", 16, true, false, ids, 16, &e) : -1;
        CHECK(n == 5 && ids[0] == 1 && ids[1] == 403 && ids[2] == 407 && ids[3] == 261 && ids[4] == 378,
              "tok512 Once upon a time: n=%d %d %d %d %d", n, ids[0], ids[1], ids[2], ids[3]);
        if (t5) test_round_trips(t5, "tok512");
        tokenizer_free(t5);
        vocab_free(&v5);
    }

    test_round_trips(t, "gguf");

    // Special tokens in the Llama-2 vocabulary.
    int32_t ids[64];
    int n = tokenizer_encode(t, "<s>Hi</s>", 9, false, true, ids, 64, &e);
    CHECK(n >= 3 && ids[0] == 1 && ids[n - 1] == 2, "parse_special <s>Hi</s>: n=%d", n);

    tokenizer_free(t);
    model_file_close(&mf);
    free(vc.inp);
    free(vc.out);
    free(g_wiki);
    free(g_wiki_ids);
    return test_end();
}
