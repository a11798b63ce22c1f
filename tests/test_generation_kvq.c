/* tests/test_generation_kvq.c: perplexity of SmolLM2-135M with quantized KV caches (-ctk/-ctv) against
 * the f32 cache, llama.cpp's protocol on wikitext-2 test: chunks of n_ctx = 256 tokens, the first
 * token of each chunk replaced by BOS, the second half of each chunk scored. The bound:
 * q8_0 within +0.5% of f32. q4_0 and f16 are reported (recorded in docs/GENERATION.md).
 * KVQ_CHUNKS=n overrides the chunk count (default 4 = 508 scored tokens). */
#include "engine/engine.h"
#include "engine/kv_cache.h"
#include "tests/test.h"

static double ppl(const char *model, enum qtype tk, enum qtype tv, const int32_t *toks, int n_chunks, int n_ctx) {
    struct engine_opts o = {.model_path = model, .n_ctx = n_ctx, .n_threads = 2, .quiet = true,
                            .cache_type_k = tk, .cache_type_v = tv};
    struct err e = {0};
    struct engine *en;
    if (engine_load(&en, &o, &e)) { CHECK(0, "load: %s", e.msg); return NAN; }
    const int V = engine_config(en)->vocab_size;
    const int32_t bos = engine_vocab(en)->bos;
    float *logits = malloc(sizeof(float) * (size_t)V * n_ctx);
    int32_t *chunk = malloc(sizeof(int32_t) * n_ctx);
    double nll = 0;
    int count = 0;
    for (int c = 0; c < n_chunks; c++) {
        memcpy(chunk, toks + (size_t)c * n_ctx, sizeof(int32_t) * n_ctx);
        if (bos >= 0) chunk[0] = bos;
        CHECK(engine_forward(en, chunk, n_ctx, 0, logits, true, &e) == 0, "forward: %s", e.msg);
        for (int i = n_ctx / 2; i < n_ctx - 1; i++) {
            const float *l = logits + (size_t)i * V;
            double mx = l[0], s = 0;
            for (int j = 1; j < V; j++) mx = l[j] > mx ? l[j] : mx;
            for (int j = 0; j < V; j++) s += exp(l[j] - mx);
            nll += mx + log(s) - l[toks[(size_t)c * n_ctx + i + 1]];
            count++;
        }
    }
    free(logits);
    free(chunk);
    engine_free(en);
    return exp(nll / count);
}

int main(void) {
    test_begin("generation_kvq");
    const char *model = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
    if (!file_exists(model)) test_skip("%s missing (make models)", model);
    char *text = read_file_all(test_data("text/wikitext-2-raw/wiki.test.raw"), NULL);
    if (!text) test_skip("wikitext-2 test text missing");
    const int n_ctx = 256;
    int n_chunks = getenv("KVQ_CHUNKS") ? atoi(getenv("KVQ_CHUNKS")) : 4;
    size_t want_chars = (size_t)n_chunks * n_ctx * 8;   // ~4 chars a token; twice that to be safe
    if (strlen(text) > want_chars) text[want_chars] = 0;
    struct engine_opts vo = {.model_path = model, .vocab_only = true, .quiet = true};
    struct err e = {0};
    struct engine *voc;
    if (engine_load(&voc, &vo, &e)) test_skip("%s", e.msg);
    int32_t *toks = malloc(sizeof(int32_t) * (strlen(text) + 8));
    int n = engine_tokenize(voc, text, false, false, toks, (int)strlen(text) + 8, &e);
    engine_free(voc);
    CHECK(n >= n_chunks * n_ctx, "tokens: %d", n);
    if (n < n_chunks * n_ctx) n_chunks = n / n_ctx;
    const struct { enum qtype k, v; const char *name; } cfg[] = {
        {QT_F32, QT_F32, "f32/f32"}, {QT_F16, QT_F16, "f16/f16"}, {QT_GGML_Q8_0, QT_GGML_Q8_0, "q8_0/q8_0"},
        {QT_GGML_Q8_0, QT_GGML_Q4_0, "q8_0/q4_0"}, {QT_GGML_Q4_0, QT_GGML_Q4_0, "q4_0/q4_0"}};
    double base = 0;
    for (size_t i = 0; i < sizeof cfg / sizeof cfg[0]; i++) {
        double p = ppl(model, cfg[i].k, cfg[i].v, toks, n_chunks, n_ctx);
        if (i == 0) base = p;
        fprintf(stderr, "kv cache K/V %-10s ppl %.4f (%+.3f%% vs f32), %d chunks x %d, %d scored tokens\n", cfg[i].name, p,
                100.0 * (p / base - 1), n_chunks, n_ctx, n_chunks * (n_ctx / 2 - 1));
        if (cfg[i].k == QT_GGML_Q8_0 && cfg[i].v == QT_GGML_Q8_0)
            CHECK(p <= base * 1.005, "q8_0 cache ppl %.4f exceeds f32 %.4f by more than 0.5%%", p, base);
        if (cfg[i].k == QT_F16) CHECK(fabs(p / base - 1) < 0.005, "f16 cache ppl %.4f vs %.4f", p, base);
    }
    free(toks);
    free(text);
    return test_end();
}
