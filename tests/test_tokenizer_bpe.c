/* tests/test_tokenizer_bpe.c: GPT-2 byte-level BPE. A hand-built vocabulary (merge ranks, special
 * tokens, byte characters, round trips), the pre-tokenizer splits for gpt2 / smollm / llama-bpe
 * (expected ends computed with Python's `regex` module on the published patterns), then, when
 * models/SmolLM2-135M-Instruct.Q4_1.gguf exists (`make models`), ids checked by hand against its
 * vocabulary and round trips of random UTF-8 and wikitext-2. */
#include <time.h>

#include "engine/tokenizer.h"
#include "engine/tokenizer_int.h"
#include "tests/test.h"

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

// GPT-2's byte -> character table, written independently of tokenizer_bpe.c: the printable bytes
// keep their code point, the rest are numbered from U+0100 in byte order.
static uint32_t gpt2_char(int b) {
    bool keep = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    if (keep) return (uint32_t)b;
    int k = 0;
    for (int x = 0; x < b; x++)
        if (!((x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE)) k++;
    return 0x100 + (uint32_t)k;
}

// SmolLM2's vocabulary lacks the byte characters of 0x04 0x06 0x13 0x14 0x16 0x1D and of the lead
// bytes F1/F2 (U+40000..U+BFFFF); those encode to <unk>, so smol=true avoids them.
static bool smol_missing(uint32_t cp) {
    return cp == 0x04 || cp == 0x06 || cp == 0x13 || cp == 0x14 || cp == 0x16 || cp == 0x1D ||
           (cp >= 0x40000 && cp < 0xC0000);
}

static size_t random_utf8(struct rng *g, char *buf, size_t max_chars, bool smol) {
    size_t n = 0, k = rng_u64(g) % (max_chars + 1);
    for (size_t i = 0; i < k; i++) {
        uint32_t cp;
        switch (rng_u64(g) % 4) {
        case 0: cp = 0x20 + (uint32_t)(rng_u64(g) % 95); break;
        case 1: cp = (uint32_t)(rng_u64(g) % 0x20); break;
        case 2: cp = 0x80 + (uint32_t)(rng_u64(g) % 0x3000); break;
        default: cp = 1 + (uint32_t)(rng_u64(g) % 0x10FFFF); break;
        }
        if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xE000;
        if (smol && smol_missing(cp)) cp = 'x';
        n += (size_t)utf8_encode(cp, buf + n);
    }
    buf[n] = 0;
    return n;
}

// ------------------------------------------------------------------------------------------------
// Hand-built vocabulary

static void test_tiny(void) {
    static const char *extra[] = {"Ġt", "he", "Ġthe", "Ġw", "or", "Ġwor", "ld", "Ġworld", "ab", "bc",
                                  "aa", "<|im_start|>", "<|im_end|>", "<tool>"};
    static const char *merges_s[] = {"Ġ t", "h e", "Ġt he", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld",
                                     "b c", "a b", "a a", "x y" /* unknown pieces: ignored */};
    enum { NE = sizeof extra / sizeof *extra, N = 256 + NE, NM = sizeof merges_s / sizeof *merges_s };
    static char chars[256][4];
    char *tokens[N], *merges[NM];
    uint32_t lens[N];
    int32_t types[N];
    float scores[N] = {0};
    for (int b = 0; b < 256; b++) {
        int k = utf8_encode(gpt2_char(b), chars[b]);
        chars[b][k] = 0;
        tokens[b] = chars[b];
        types[b] = TOK_NORMAL;
    }
    for (int i = 0; i < NE; i++) {
        tokens[256 + i] = (char *)extra[i];
        types[256 + i] = i == NE - 1 ? TOK_USER_DEFINED : i >= NE - 3 ? TOK_CONTROL : TOK_NORMAL;
    }
    for (int i = 0; i < N; i++) lens[i] = (uint32_t)strlen(tokens[i]);
    for (int i = 0; i < NM; i++) merges[i] = (char *)merges_s[i];
    struct vocab v = {.kind = VOCAB_BPE, .n_tokens = N, .tokens = tokens, .lens = lens,
                      .scores = scores, .types = types, .n_merges = NM, .merges = merges,
                      .bos = 256 + 11, .eos = 256 + 12, .unk = -1, .pad = -1, .eot = 256 + 12};
    snprintf(v.pre, sizeof v.pre, "gpt2");
    struct err e = {0};
    struct tokenizer *t = tokenizer_create(&v, &e);
    CHECK(t != NULL, "tokenizer_create: %s", e.msg);
    if (!t) return;
    int32_t ids[256];
    int n = tokenizer_encode(t, " the world", 10, false, false, ids, 256, &e);
    CHECK(n == 2 && ids[0] == 256 + 2 && ids[1] == 256 + 7, "' the world' -> n=%d %d %d", n, ids[0], ids[1]);
    n = tokenizer_encode(t, "the", 3, false, false, ids, 256, &e);
    CHECK(n == 2 && ids[0] == 't' && ids[1] == 256 + 1, "the -> n=%d", n);
    // "abc": "b c" has the lower rank (8) than "a b" (9), so a + bc.
    n = tokenizer_encode(t, "abc", 3, false, false, ids, 256, &e);
    CHECK(n == 2 && ids[0] == 'a' && ids[1] == 256 + 9, "abc -> n=%d %d %d", n, ids[0], ids[1]);
    // "aaa": equal ranks merge leftmost first: aa + a.
    n = tokenizer_encode(t, "aaa", 3, false, false, ids, 256, &e);
    CHECK(n == 2 && ids[0] == 256 + 10 && ids[1] == 'a', "aaa -> n=%d %d %d", n, ids[0], ids[1]);
    // "ab\nc": three words; byte b's character token has id b in this vocabulary.
    n = tokenizer_encode(t, "ab\nc", 4, false, false, ids, 256, &e);
    CHECK(n == 3 && ids[0] == 256 + 8 && ids[1] == '\n' && ids[2] == 'c', "ab\\nc -> n=%d", n);
    // Special tokens.
    const char *chat = "<|im_start|>the<tool><|im_end|>";
    n = tokenizer_encode(t, chat, strlen(chat), true, true, ids, 256, &e);
    CHECK(n == 6 && ids[0] == 256 + 11 && ids[1] == 256 + 11 && ids[2] == 't' && ids[3] == 256 + 1 &&
              ids[4] == 256 + 13 && ids[5] == 256 + 12,
          "chat with specials: n=%d", n);
    n = tokenizer_encode(t, chat, strlen(chat), false, false, ids, 256, &e);
    CHECK(n > 6, "specials as text: n=%d", n);
    size_t dl;
    char *dec = decode_all(t, ids, n, &dl);
    CHECK(dl == strlen(chat) && !memcmp(dec, chat, dl), "specials as text round trip: %s", dec);
    free(dec);
    int32_t seq[] = {256 + 11, 256 + 2, 256 + 13, 256 + 12};
    dec = decode_all(t, seq, 4, &dl);
    CHECK(!strcmp(dec, " the<tool>"), "control tokens emit nothing, user-defined their text: [%s]", dec);
    free(dec);
    // Split UTF-8 over byte tokens: "€" = E2 82 AC as three byte characters.
    int32_t euro[] = {0xE2, 0x82, 0xAC};
    struct detok d;
    char buf[16];
    detok_init(&d);
    CHECK(tokenizer_decode_token(t, &d, euro[0], buf, sizeof buf) == 0, "held");
    CHECK(tokenizer_decode_token(t, &d, euro[1], buf, sizeof buf) == 0, "held");
    CHECK(tokenizer_decode_token(t, &d, euro[2], buf, sizeof buf) == 3 && !strcmp(buf, "€"), "euro");
    // Random valid UTF-8 round-trips exactly (every byte has a character token).
    struct rng g;
    rng_init(&g, 0);
    char text[4 * 300 + 1];
    int32_t big[1300];
    for (int it = 0; it < 500; it++) {
        size_t len = random_utf8(&g, text, 300, false);
        n = tokenizer_encode(t, text, len, false, false, big, 1300, &e);
        dec = decode_all(t, big, n, &dl);
        CHECK(n >= 0 && dl == len && !memcmp(dec, text, len), "random round trip %d (%s)", it, e.msg);
        free(dec);
    }
    n = tokenizer_encode(t, "a\xC0\x80", 3, false, false, ids, 256, &e);
    CHECK(n == -1 && e.code == ERR_ARG && strstr(e.msg, "byte 1"), "invalid UTF-8: %s", e.msg);
    tokenizer_free(t);
}

// ------------------------------------------------------------------------------------------------
// Pre-tokenizer splits (word end offsets)

struct pre_case {
    const char *pre, *text;
    size_t ends[32];
    int n;
};
static const struct pre_case PRE_CASES[] = {
    // gpt2
    {"gpt2", "Hello world", {5, 11}, 2},
    {"gpt2", "I've been 'told he's there, 'RE you sure?", {1, 4, 9, 11, 15, 18, 20, 26, 27, 29, 31, 35, 40, 41}, 14},
    {"gpt2", "3.14159 and 12345678 \xC2\xBD\xC2\xB2", {1, 2, 7, 11, 20, 25}, 6},
    {"gpt2", "   leading\n\n  trailing   ", {2, 10, 13, 22, 25}, 5},
    {"gpt2", "a\r\n\r\nb  \n", {1, 4, 5, 6, 9}, 5},
    {"gpt2", "x \n\n y", {1, 4, 6}, 3},
    {"gpt2", "na\xC3\xAFve caf\xC3\xA9 e\xCC\x81 \xE4\xB8\xAD\xE6\x96\x87\xF0\x9F\xA6\x99!!", {6, 12, 14, 16, 23, 29}, 6},
    // smollm: every digit alone
    {"smollm", "3.14159 and 12345678 \xC2\xBD\xC2\xB2", {1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 23, 25}, 20},
    {"smollm", "   leading\n\n  trailing   ", {2, 10, 13, 22, 25}, 5},
    {"smollm", "a\r\n\r\nb  \n", {1, 4, 5, 6, 9}, 5},
    // llama-bpe (Llama-3)
    {"llama-bpe", "I've been 'told he's there, 'RE you sure?", {1, 4, 9, 11, 15, 18, 20, 26, 27, 29, 31, 35, 40, 41}, 14},
    {"llama-bpe", "3.14159 and 12345678 \xC2\xBD\xC2\xB2", {1, 2, 5, 7, 11, 12, 15, 18, 20, 21, 25}, 11},
    {"llama-bpe", "   leading\n\n  trailing   ", {2, 10, 12, 13, 22, 25}, 6},
    {"llama-bpe", "a\r\n\r\nb  \n", {1, 5, 6, 9}, 4},
    {"llama-bpe", "x \n\n y", {1, 4, 6}, 3},
    {"llama-bpe", "na\xC3\xAFve caf\xC3\xA9 e\xCC\x81 \xE4\xB8\xAD\xE6\x96\x87\xF0\x9F\xA6\x99!!", {6, 12, 14, 16, 23, 29}, 6},
};

static void test_pretokenizers(void) {
    for (size_t c = 0; c < sizeof PRE_CASES / sizeof *PRE_CASES; c++) {
        const struct pre_case *pc = &PRE_CASES[c];
        size_t ends[64];
        int n = bpe_pretokenize(pc->pre, pc->text, strlen(pc->text), ends, 64);
        bool ok = n == pc->n;
        for (int i = 0; ok && i < n; i++) ok = ends[i] == pc->ends[i];
        CHECK(ok, "%s split of [%s]: %d words (want %d)", pc->pre, pc->text, n, pc->n);
    }
}

// ------------------------------------------------------------------------------------------------
// SmolLM2-135M-Instruct vocabulary

struct id_case {
    const char *text;
    int32_t ids[40];
    int n;
};
// "Hello" = 19556, "Ġworld" = 905, digits "0".."9" = 32..41; the rest computed by a reference
// BPE over the same GGUF merges (Python, regex-module pre-tokenizer).
static const struct id_case SMOL_CASES[] = {
    {"Hello", {19556}, 1},
    {" world", {905}, 1},
    {"Hello world", {19556, 905}, 2},
    {"2024", {34, 32, 34, 36}, 4},
    {"Hello, y'all! How are you \xF0\x9F\x98\x81 ?\xE6\x88\x91\xE6\x83\xB3\xE5\x9C\xA8" "apple"
     "\xE5\xB7\xA5\xE4\xBD\x9C" "1314151\xE5\xA4\xA9\xEF\xBD\x9E",
     {19556, 28, 329, 23, 449, 17, 1073, 359, 346, 40303, 219, 9148, 19805, 235, 177, 221, 128,
      32632, 21949, 36149, 115, 40994, 33, 35, 33, 36, 33, 37, 33, 18614, 119, 186, 138, 248}, 34},
    {"   \n\n\t tabs and  spaces\n", {333, 14436, 29416, 284, 216, 5600, 198}, 7},
    {"The quick brown fox jumps over the lazy dog.", {504, 2365, 6354, 16438, 27003, 690, 260, 23790, 2767, 30}, 10},
};

static void test_smollm2(void) {
    const char *path = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
    if (!file_exists(path)) {
        printf("SmolLM2 checks skipped: %s not found (make models)\n", path);
        return;
    }
    struct model_file mf;
    struct err e = {0};
    int rc = model_file_open(&mf, path, NULL, &e);
    CHECK(rc == ERR_OK, "model_file_open: %s", e.msg);
    if (rc) return;
    struct tokenizer *t = tokenizer_create(&mf.vocab, &e);
    CHECK(t != NULL, "tokenizer_create: %s", e.msg);
    if (!t) { model_file_close(&mf); return; }
    CHECK(tokenizer_find(t, "Hello") == 19556 && tokenizer_find(t, "Ġworld") == 905, "find");
    int32_t ids[4096];
    for (size_t c = 0; c < sizeof SMOL_CASES / sizeof *SMOL_CASES; c++) {
        const struct id_case *ic = &SMOL_CASES[c];
        int n = tokenizer_encode(t, ic->text, strlen(ic->text), false, false, ids, 4096, &e);
        bool ok = n == ic->n && !memcmp(ids, ic->ids, (size_t)n * sizeof *ids);
        CHECK(ok, "SmolLM2 [%s]: n=%d want %d (first %d want %d)", ic->text, n, ic->n, n > 0 ? ids[0] : -1,
              ic->ids[0]);
    }
    // ChatML with special tokens: <|im_start|>=1, <|im_end|>=2, "user"=4093, "\n"=198.
    const char *chat = "<|im_start|>user\nHi<|im_end|>\n";
    int n = tokenizer_encode(t, chat, strlen(chat), false, true, ids, 4096, &e);
    CHECK(n == 6 && ids[0] == 1 && ids[1] == 4093 && ids[2] == 198 && ids[3] == 26843 && ids[4] == 2 &&
              ids[5] == 198, "ChatML: n=%d", n);
    size_t dl;
    char *dec = decode_all(t, ids, n, &dl);
    CHECK(!strcmp(dec, "user\nHi\n"), "control tokens are silent: [%s]", dec);
    free(dec);
    n = tokenizer_encode(t, "a\x04", 2, false, false, ids, 4096, &e);
    CHECK(n == 2 && ids[0] == 81 && ids[1] == mf.vocab.unk, "missing byte character -> unk: n=%d", n);
    // Round trips.
    struct rng g;
    rng_init(&g, 0);
    char text[4 * 300 + 1];
    for (int it = 0; it < 300; it++) {
        size_t len = random_utf8(&g, text, 300, true);
        n = tokenizer_encode(t, text, len, false, false, ids, 4096, &e);
        dec = decode_all(t, ids, n, &dl);
        CHECK(n >= 0 && dl == len && !memcmp(dec, text, len), "SmolLM2 random round trip %d", it);
        free(dec);
    }
    size_t wl;
    char *wiki = read_file_all(test_data("text/wikitext-2-raw/wiki.test.raw"), &wl);
    if (wiki) {
        int32_t *w = malloc((wl + 1) * sizeof *w);
        double t0 = now_s();
        n = tokenizer_encode(t, wiki, wl, false, false, w, (int)wl + 1, &e);
        double dt = now_s() - t0;
        printf("SmolLM2 wikitext-2 test: %zu bytes -> %d tokens in %.3f s\n", wl, n, dt);
        // 303415 tokens with the reference BPE named above.
        CHECK(n == 303415 && dt < ENCODE_LIMIT_S, "wikitext: %d tokens in %.2f s (%s)", n, dt, e.msg);
        dec = decode_all(t, w, n, &dl);
        CHECK(dl == wl && !memcmp(dec, wiki, wl), "wikitext round trip");
        free(dec);
        free(w);
        free(wiki);
    }
    tokenizer_free(t);
    model_file_close(&mf);
}

int main(void) {
    test_begin("test_tokenizer_bpe");
    test_tiny();
    test_pretokenizers();
    test_smollm2();
    return test_end();
}
