/* tests/test_generation.c: the generation features of engine/generate.c and the engine additions
 * they need, on stories260K (and SmolLM2 when models/ has it):
 *  - context shift: logits after a shift equal a from-scratch recomputation over the kept tokens,
 *    both RoPE styles, f32 and f16/q8_0 caches (see test_shift for why one layer);
 *  - -np: N sequences decoded in one batch give the same text as N single runs (temp 0);
 *  - speculative decoding gives the same text as plain greedy (stories260K drafting for itself,
 *    SmolLM2 with a 2-bit quantized draft of itself);
 *  - KV cache types: bytes per row as the traits table says; grid line splitting. */
#include "engine/grid.h"
#include "engine/kv_cache.h"
#include "engine/model.h"
#include "tests/test.h"

static struct engine *load(const char *path, int n_ctx, int n_seq, int quant, enum qtype ck, enum qtype cv) {
    struct engine_opts o = {.model_path = path, .n_ctx = n_ctx, .n_threads = 1, .quiet = true, .n_seq = n_seq,
                            .quant_bits = quant, .cache_type_k = ck, .cache_type_v = cv};
    struct err e = {0};
    struct engine *en = NULL;
    if (engine_load(&en, &o, &e)) {
        CHECK(0, "load %s: %s", path, e.msg);
        return NULL;
    }
    return en;
}

/* Context shift. With more than one layer, the cached keys/values of the kept tokens after the
 * discarded span were computed while attending to the discarded tokens, so no recomputation over
 * the kept tokens reproduces them (llama.cpp's shift is the same approximation). With the model cut
 * to one layer every cache row depends only on its own token and position, so the shifted cache must
 * equal the recomputed one up to rounding: that isolates the shift's own work (moving rows,
 * re-rotating keys by -n_discard).
 * Tolerance: a key rotated by R(p) then R(-d) instead of R(p - d) differs by the error of the
 * angles: pos * freq is rounded to float (relative 2^-24, |angle| <= n_ctx) and cos/sin add ~1 ulp,
 * so per element |dk| <= (n_ctx + 2) * 2^-24 * |k|: <= 8e-6 |k| here (n_ctx <= 128). Through q.k
 * (scores, one softmax) and the 1-layer output that is a relative error of the same order on
 * the logits; with a factor 10 for the head_dim-long and dim-long sums we allow 1e-4 * max|logit|
 * (measured: 8e-7). Other cache types re-round the rotated key: f16 by 2^-11 relative (tolerance
 * 10x: 5e-3; measured 6e-4), q8_0 by up to 1/127 of the block's max (2.5x: 2e-2; measured 2.4e-4). */
static void test_shift(const char *path, int rope_style, enum qtype ct, double rel_tol, const char *label) {
    const int n_ctx = 96, keep = 5, n_discard = 40, n_fill = 90;
    struct engine *en = load(path, n_ctx, 1, 0, ct, ct), *ref = load(path, n_ctx, 1, 0, ct, ct);
    if (!en || !ref) { engine_free(en); engine_free(ref); return; }
    en->cfg.n_layers = ref->cfg.n_layers = 1;   // see above
    en->cfg.rope = ref->cfg.rope = (enum rope_style)rope_style;
    const int V = en->cfg.vocab_size;
    struct rng g;
    rng_init(&g, 7);
    int32_t toks[128], kept[128];
    for (int i = 0; i < n_fill + 1; i++) toks[i] = 3 + (int32_t)(rng_u64(&g) % (uint64_t)(V - 3));
    float *a = malloc(sizeof(float) * V), *b = malloc(sizeof(float) * V);
    struct err e = {0};
    CHECK(engine_forward(en, toks, n_fill, 0, a, false, &e) == 0, "%s: fill: %s", label, e.msg);
    CHECK(engine_kv_shift(en, 0, keep, n_discard, n_fill, &e) == 0, "%s: shift: %s", label, e.msg);
    const int pos = n_fill - n_discard;
    CHECK(engine_forward(en, &toks[n_fill], 1, pos, a, false, &e) == 0, "%s: decode after shift", label);
    int nk = 0;
    for (int i = 0; i < keep; i++) kept[nk++] = toks[i];
    for (int i = keep + n_discard; i <= n_fill; i++) kept[nk++] = toks[i];
    CHECK(nk == pos + 1, "kept count");
    CHECK(engine_forward(ref, kept, nk, 0, b, false, &e) == 0, "%s: recompute", label);
    double mx = 0, worst = 0;
    int am = 0, bm = 0;
    for (int i = 0; i < V; i++) {
        mx = fmax(mx, fabs(b[i]));
        worst = fmax(worst, fabs(a[i] - b[i]));
        if (a[i] > a[am]) am = i;
        if (b[i] > b[bm]) bm = i;
    }
    CHECK(worst <= rel_tol * mx, "%s: max |shifted - recomputed| = %.3g > %.3g", label, worst, rel_tol * mx);
    CHECK(am == bm, "%s: argmax %d vs %d", label, am, bm);
    fprintf(stderr, "shift %-28s max|diff| %.3g (max|logit| %.3g, tol %.3g)\n", label, worst, mx, rel_tol * mx);
    free(a);
    free(b);
    engine_free(en);
    engine_free(ref);
}

/* With all layers the shift is an approximation; it must still run, keep positions consistent and
 * let generation continue (gen_run through several shifts with a tiny context). */
static void test_shift_generate(const char *path) {
    struct engine *en = load(path, 48, 1, 0, QT_F32, QT_F32);
    if (!en) return;
    struct gen_params gp;
    gen_params_default(&gp);
    gp.sp.temp = 0;
    gp.n_predict = 200;
    gp.n_keep = -1;
    struct gen g;
    struct err e = {0};
    struct gen_stats st = {.hash = GEN_HASH_INIT};
    int32_t toks[16];
    int n = engine_tokenize(en, "Once upon a time", true, false, toks, 16, &e);
    CHECK(gen_init(&g, en, 0, &gp, NULL, NULL, &e) == 0, "gen_init");
    CHECK(gen_feed(&g, toks, n, &st, &e) == 0, "feed");
    CHECK(gen_run(&g, NULL, &st, &e) == 0, "run: %s", e.msg);
    CHECK(st.n_shift >= 4, "%d shifts over 200 tokens in a 48-token context", st.n_shift);
    CHECK(st.n_gen == 200 || st.eog, "generated %d", st.n_gen);
    for (int i = 0; i < n; i++) CHECK(g.tokens[i] == toks[i], "--keep -1 keeps the prompt (token %d)", i);
    gen_free(&g);
    engine_free(en);
}

struct text { char buf[8192]; size_t len; };
static void emit_text(void *user, const char *s, size_t len) {
    struct text *t = user;
    if (t->len + len < sizeof t->buf) { memcpy(t->buf + t->len, s, len); t->len += len; t->buf[t->len] = 0; }
}

static void single_run(struct engine *en, const char *prompt, int n_predict, struct text *out) {
    struct gen_params gp;
    gen_params_default(&gp);
    gp.sp.temp = 0;
    gp.n_predict = n_predict;
    struct gen g;
    struct err e = {0};
    struct gen_stats st = {.hash = GEN_HASH_INIT};
    int32_t *toks;
    int n = run_tokenize_prompt(en, prompt, false, NULL, &toks, &e);
    CHECK(n > 0, "tokenize");
    memset(out, 0, sizeof *out);
    CHECK(gen_init(&g, en, 0, &gp, emit_text, out, &e) == 0, "init");
    CHECK(gen_feed(&g, toks, n, &st, &e) == 0, "feed");
    CHECK(gen_run(&g, NULL, &st, &e) == 0, "run");
    gen_free(&g);
    free(toks);
}

static void test_parallel(const char *path) {
    const char *prompts[4] = {"Once upon a time", "The cat sat", "Lily and Tom", "A big red ball"};
    const int n_predict = 60;
    struct engine *one = load(path, 256, 1, 0, QT_F32, QT_F32), *par = load(path, 256, 4, 0, QT_F32, QT_F32);
    if (!one || !par) { engine_free(one); engine_free(par); return; }
    static struct text want[4], got[4];
    for (int i = 0; i < 4; i++) single_run(one, prompts[i], n_predict, &want[i]);
    struct gen gens[4];
    struct gen_params gp;
    gen_params_default(&gp);
    gp.sp.temp = 0;
    gp.n_predict = n_predict;
    struct err e = {0};
    struct gen_stats st = {.hash = GEN_HASH_INIT};
    for (int i = 0; i < 4; i++) {
        int32_t *toks;
        int n = run_tokenize_prompt(par, prompts[i], false, NULL, &toks, &e);
        memset(&got[i], 0, sizeof got[i]);
        CHECK(gen_init(&gens[i], par, i, &gp, emit_text, &got[i], &e) == 0, "init %d", i);
        CHECK(gen_feed(&gens[i], toks, n, &st, &e) == 0, "feed %d", i);
        free(toks);
    }
    CHECK(gen_run_parallel(gens, 4, NULL, &st, &e) == 0, "parallel: %s", e.msg);
    for (int i = 0; i < 4; i++) {
        CHECK(strcmp(got[i].buf, want[i].buf) == 0, "-np 4 sequence %d:\n  got  '%s'\n  want '%s'", i, got[i].buf,
              want[i].buf);
        gen_free(&gens[i]);
    }
    CHECK(st.n_gen > 4 * 10, "parallel generated %d tokens", st.n_gen);
    engine_free(one);
    engine_free(par);
}

static void test_speculative(const char *path, int draft_quant, int n_draft, int n_predict, const char *label) {
    struct engine *tgt = load(path, 256, 1, 0, QT_F32, QT_F32), *dr = load(path, 256, 1, draft_quant, QT_F32, QT_F32);
    if (!tgt || !dr) { engine_free(tgt); engine_free(dr); return; }
    static struct text want, got;
    single_run(tgt, "Once upon a time", n_predict, &want);
    struct gen_params gp;
    gen_params_default(&gp);
    gp.sp.temp = 0;
    gp.n_predict = n_predict;
    struct gen g;
    struct err e = {0};
    struct gen_stats st = {.hash = GEN_HASH_INIT};
    int32_t *toks;
    int n = run_tokenize_prompt(tgt, "Once upon a time", false, NULL, &toks, &e);
    memset(&got, 0, sizeof got);
    CHECK(gen_init(&g, tgt, 0, &gp, emit_text, &got, &e) == 0, "init");
    CHECK(gen_feed(&g, toks, n, &st, &e) == 0, "feed");
    CHECK(gen_run_speculative(&g, dr, n_draft, NULL, &st, &e) == 0, "%s: speculative: %s", label, e.msg);
    CHECK(strcmp(got.buf, want.buf) == 0, "%s: speculative differs from greedy:\n  got  '%s'\n  want '%s'", label,
          got.buf, want.buf);
    fprintf(stderr, "speculative %-26s %d drafted, %d accepted (%.1f%%), %d target passes for %d tokens\n", label,
            st.n_drafted, st.n_accepted, st.n_drafted ? 100.0 * st.n_accepted / st.n_drafted : 0.0, st.n_eval, st.n_gen);
    if (!draft_quant) CHECK(st.n_accepted == st.n_drafted, "%s: a model drafting for itself is always accepted", label);
    gen_free(&g);
    free(toks);
    engine_free(tgt);
    engine_free(dr);
}

static void test_kv_types(const char *path) {
    // bytes: SmolLM2 kv_dim = 3 x 64 = 192 per layer row: f32 768 B, f16 384, q8_0 6 x 34 = 204, q4_0 6 x 18 = 108
    const enum qtype types[4] = {QT_F32, QT_F16, QT_GGML_Q8_0, QT_GGML_Q4_0};
    size_t bytes[4];
    for (int i = 0; i < 4; i++) {
        struct engine *en = load(path, 64, 1, 0, types[i], types[i]);
        if (!en) return;
        const int kv_dim = en->cfg.n_kv_heads * en->cfg.head_dim;
        bytes[i] = engine_kv_bytes(en);
        CHECK(bytes[i] == 2 * (size_t)en->cfg.n_layers * 64 * qtype_row_bytes(types[i], kv_dim), "kv bytes %s",
              qtype_traits[types[i]].name);
        engine_free(en);
    }
    CHECK(bytes[2] * 128 == bytes[0] * 34, "q8_0 is 34/128 of f32");
    CHECK(bytes[3] * 128 == bytes[0] * 18, "q4_0 is 18/128 of f32");
    enum qtype t;
    CHECK(kv_cache_type_parse("q8_0", &t) && t == QT_GGML_Q8_0, "parse q8_0");
    CHECK(!kv_cache_type_parse("q5_1", &t), "q5_1 is not a cache type");
}

static void test_grid_split(void) {
    char buf[256];
    const char *av[16];
    int n = grid_split_line("--temp 0.7 top-k=40,c=256 ctk=q8_0", buf, sizeof buf, av, 16);
    CHECK(n == 8, "split count %d", n);
    if (n == 8) {
        CHECK(!strcmp(av[0], "--temp") && !strcmp(av[1], "0.7"), "flag form");
        CHECK(!strcmp(av[2], "--top-k") && !strcmp(av[3], "40"), "key=value");
        CHECK(!strcmp(av[4], "-c") && !strcmp(av[5], "256"), "short flag");
        CHECK(!strcmp(av[6], "-ctk") && !strcmp(av[7], "q8_0"), "ctk");
    }
}

int main(void) {
    test_begin("generation");
    const char *stories = test_data("models/stories260K/stories260K.gguf");
    if (!file_exists(stories)) test_skip("no %s", stories);
    static char stories_path[1024];
    snprintf(stories_path, sizeof stories_path, "%s", stories);
    const char *smol = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
    test_grid_split();
    test_shift(stories_path, 0, QT_F32, 1e-4, "stories260K interleaved f32");
    test_shift(stories_path, 1, QT_F32, 1e-4, "stories260K neox f32");
    test_shift(stories_path, 0, QT_F16, 5e-3, "stories260K f16 cache");
    test_shift_generate(stories_path);
    test_parallel(stories_path);
    test_speculative(stories_path, 0, 4, 120, "stories260K self-draft");
    test_speculative(stories_path, 2, 3, 120, "stories260K q2 draft");
    if (file_exists(smol)) {
        test_kv_types(smol);
        test_shift(smol, 0, QT_F32, 1e-4, "SmolLM2 f32");
        test_shift(smol, 1, QT_GGML_Q8_0, 2e-2, "SmolLM2 neox q8_0 cache");
        test_speculative(smol, 2, 4, 24, "SmolLM2 q2 draft of itself");
    } else {
        fprintf(stderr, "note: %s missing (make models): SmolLM2 checks skipped\n", smol);
    }
    return test_end();
}
