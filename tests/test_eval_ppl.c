/* tests/test_eval_ppl.c: perplexity protocols. (a) llama.cpp / GPTQ chunking and scored-token counts
 * on synthetic tokens with a fake model, against hand-computed expectations; text helpers; KLD math.
 * (b) stories260K (.gguf and .bin) on the TinyStories excerpt: 3631 scored tokens, PPL 3.1127. */
#include <math.h>

#include "eval/kld.h"
#include "eval/ppl.h"
#include "tests/test.h"

// ------------------------------------------------------------------------------------------------
// A fake model: the logits of a position depend only on the token fed there

#define FV 16   // fake vocabulary

static float fake_logit(int32_t x, int j) { return (float)((x * 7 + j * 3) % 11) * 0.25f; }

struct fake {
    int calls;
    int32_t first_token_seen[64];   // token fed at position 0, per segment
    int n_first;
    int n_starts;                   // segments started (pos == 0 calls)
    int max_n;                      // largest n in one call
};

static int fake_eval(void *u, const int32_t *tok, int n, int pos, float *logits, struct err *e) {
    struct fake *f = u;
    f->calls++;
    if (n > f->max_n) f->max_n = n;
    if (pos == 0) f->n_starts++;
    if (pos == 0 && f->n_first < 64) f->first_token_seen[f->n_first++] = tok[0];
    for (int t = 0; t < n; t++)
        for (int j = 0; j < FV; j++) logits[(size_t)t * FV + j] = fake_logit(tok[t], j);
    return ERR_OK;
}

static double fake_nll(int32_t x, int32_t target) {   // independent: plain softmax in double
    double s = 0;
    for (int j = 0; j < FV; j++) s += exp((double)fake_logit(x, j));
    return log(s) - (double)fake_logit(x, target);
}

static int32_t *synth_tokens(int n) {
    int32_t *t = malloc((size_t)n * sizeof *t);
    struct rng g;
    rng_init(&g, 0);
    for (int i = 0; i < n; i++) t[i] = (int32_t)(rng_u64(&g) % FV);
    return t;
}

static void test_llamacpp_plan(void) {
    // 1000 tokens at -c 128: 1000/128 = 7 chunks (104-token tail dropped), first = 64,
    // scored per chunk 128 - 1 - 64 = 63, total 441 (as llama.cpp's count += n_ctx - first - 1)
    struct ppl_plan p;
    CHECK(ppl_plan_llamacpp(&p, 1000, 128, 0, 1) == 0, "plan");
    CHECK(p.n_segments == 7, "chunks %d", p.n_segments);
    CHECK(p.n_scored == 441, "scored %lld", (long long)p.n_scored);
    CHECK(p.seg[3].start == 384 && p.seg[3].first == 64 && p.seg[3].n == 128, "seg 3");
    ppl_plan_free(&p);
    // -c 512 (llama.cpp default): 255 per chunk; --chunks 3 limits
    CHECK(ppl_plan_llamacpp(&p, 100000, 512, 3, 1) == 0 && p.n_segments == 3 && p.n_scored == 765,
          "c512: %d chunks %lld scored", p.n_segments, (long long)p.n_scored);
    ppl_plan_free(&p);
    // odd context: first = 7/2 = 3, scored = 7 - 1 - 3 = 3 per chunk
    CHECK(ppl_plan_llamacpp(&p, 20, 7, 0, 1) == 0 && p.n_segments == 2 && p.n_scored == 6, "c7");
    ppl_plan_free(&p);
    CHECK(ppl_plan_llamacpp(&p, 100, 128, 0, 1) != 0, "fewer tokens than one chunk must fail");
    // GPTQ: 1000 / 128 = 7 chunks, 127 scored each
    CHECK(ppl_plan_gptq(&p, 1000, 128, 0) == 0 && p.n_segments == 7 && p.n_scored == 889, "gptq");
    ppl_plan_free(&p);
}

/* Runs a plan on the fake model and compares with a direct loop over the protocol's definition. */
static void check_run(enum ppl_protocol proto, int n_tok, int n_ctx, int batch, int32_t bos) {
    int32_t *tok = synth_tokens(n_tok);
    struct ppl_plan p;
    int rc = proto == PPL_LLAMACPP ? ppl_plan_llamacpp(&p, n_tok, n_ctx, 0, bos)
                                   : ppl_plan_gptq(&p, n_tok, n_ctx, 0);
    CHECK(rc == 0, "plan");
    struct fake f = {0};
    struct ppl_result r;
    struct err e = {0};
    rc = ppl_run(&p, tok, FV, batch, fake_eval, &f, NULL, NULL, NULL, &r, &e);
    CHECK(rc == ERR_OK, "run: %s", e.msg);
    // expectation: chunk i = tokens[i*c, (i+1)*c); first = c/2 (llama.cpp) or 0 (gptq);
    // the row at position j predicts token j+1 of the chunk
    double sum = 0;
    int64_t cnt = 0;
    int n_chunks = n_tok / n_ctx;
    for (int i = 0; i < n_chunks; i++) {
        int first = proto == PPL_LLAMACPP ? n_ctx / 2 : 0;
        for (int j = first; j < n_ctx - 1; j++) {
            int32_t x = tok[i * n_ctx + j];
            if (j == 0 && bos >= 0 && proto == PPL_LLAMACPP) x = bos;
            sum += fake_nll(x, tok[i * n_ctx + j + 1]);
            cnt++;
        }
    }
    CHECK(r.st.n == cnt, "%s c=%d b=%d: scored %lld, expected %lld", ppl_protocol_name(proto),
          n_ctx, batch, (long long)r.st.n, (long long)cnt);
    CHECK_NEAR(r.st.sum, sum, 1e-9 * (double)cnt, "%s sum nll", ppl_protocol_name(proto));
    CHECK(r.n_eval == (int64_t)n_chunks * n_ctx, "evaluated %lld", (long long)r.n_eval);
    CHECK(f.max_n <= (batch > 0 ? batch : n_ctx), "batch %d exceeded: %d", batch, f.max_n);
    for (int i = 0; i < f.n_first && i < n_chunks; i++) {
        int32_t want = proto == PPL_LLAMACPP && bos >= 0 ? bos : tok[i * n_ctx];
        CHECK(f.first_token_seen[i] == want, "chunk %d starts with %d, want %d", i,
              f.first_token_seen[i], want);
    }
    CHECK(f.n_starts == n_chunks, "segments started %d", f.n_starts);
    ppl_plan_free(&p);
    free(tok);
}

static void test_stats(void) {
    // NLL values 1,2,3,4: mean 2.5, population var 1.25, stderr sqrt(1.25/3)
    struct nll_stats s = {0};
    for (int i = 1; i <= 4; i++) nll_stats_add(&s, i);
    CHECK_NEAR(nll_stats_mean(&s), 2.5, 1e-15, "mean");
    CHECK_NEAR(nll_stats_stderr(&s), sqrt(1.25 / 3), 1e-15, "stderr");
    CHECK_NEAR(nll_stats_ppl_stderr(&s), exp(2.5) * sqrt(1.25 / 3), 1e-12, "ppl stderr");
    // log-softmax in double survives huge logits
    float x[3] = {1000.f, 1000.f, -1000.f};
    CHECK_NEAR(eval_nll(x, 3, 0), log(2.0), 1e-12, "nll with large logits");
}

static void test_text(void) {
    char **s = NULL;
    int n = ppl_split_stories("\nOne.\nTwo\n<|endoftext|>\nThree\n\n<|endoftext|>\n<|endoftext|>\nFour",
                              &s);
    CHECK(n == 3, "stories %d", n);
    if (n == 3) {
        CHECK(!strcmp(s[0], "One.\nTwo"), "s0 '%s'", s[0]);
        CHECK(!strcmp(s[1], "Three"), "s1 '%s'", s[1]);
        CHECK(!strcmp(s[2], "Four"), "s2 '%s'", s[2]);
    }
    ppl_free_strings(s, n);
    // rows " \n", " = A = \n", "x\n" -> "", " = A = \n", "x\n"; joined with "\n\n"
    char *j = ppl_gptq_join(" \n = A = \nx\n");
    CHECK(j && !strcmp(j, "\n\n = A = \n\n\nx\n"), "join '%s'", j ? j : "(null)");
    free(j);
}

static void test_kld_math(void) {
    // vocab 40 > K = 32: KLD over {top-32, rest}; identical logits give 0
    struct rng g;
    rng_init(&g, 0);
    float a[40], b[40];
    for (int i = 0; i < 40; i++) a[i] = rng_uniform(&g, -3, 3), b[i] = a[i] + rng_uniform(&g, -.3f, .3f);
    uint8_t mask[40];
    struct kld_row row;
    double lse = kld_topk(a, 40, KLD_TOPK, row.logp, row.idx, &row.logp_rest, mask);
    for (int k = 1; k < KLD_TOPK; k++) CHECK(row.logp[k - 1] >= row.logp[k], "descending at %d", k);
    double mass = exp(row.logp_rest);
    for (int k = 0; k < KLD_TOPK; k++) mass += exp(row.logp[k]);
    CHECK_NEAR(mass, 1.0, 1e-6, "top-K + rest mass");
    CHECK_NEAR(row.logp[0], a[row.idx[0]] - lse, 1e-6, "logp[0]");
    CHECK_NEAR(kld_row_divergence(&row, a, 40, mask), 0.0, 1e-6, "KLD(p||p)");
    // partition bound: full-vocabulary KLD >= coarse KLD >= 0
    double lb = eval_logsumexp(b, 40), full = 0;
    for (int i = 0; i < 40; i++) full += exp(a[i] - lse) * ((a[i] - lse) - (b[i] - lb));
    double coarse = kld_row_divergence(&row, b, 40, mask);
    CHECK(coarse >= 0 && coarse <= full + 1e-6, "coarse %g full %g", coarse, full);
    // vocab 16 <= K: the coarse KLD is the exact KLD
    double lsa = kld_topk(a, 16, KLD_TOPK, row.logp, row.idx, &row.logp_rest, mask);
    lb = eval_logsumexp(b, 16);
    full = 0;
    for (int i = 0; i < 16; i++) full += exp(a[i] - lsa) * ((a[i] - lsa) - (b[i] - lb));
    CHECK_NEAR(kld_row_divergence(&row, b, 16, mask), full, 1e-6, "exact KLD for small vocab");
}

// ------------------------------------------------------------------------------------------------
// stories260K on the TinyStories excerpt (reference: run.c, tinystories_excerpt_nll.json)

static const int ref_scored[11] = {511, 233, 387, 245, 375, 282, 281, 272, 437, 355, 253};

static void test_stories(const char *model_path, const char *tokenizer) {
    char model[1024];   // test_data() returns a static buffer: keep a copy
    snprintf(model, sizeof model, "%s", model_path);
    if (!file_exists(model)) {
        fprintf(stderr, "SKIP part: %s missing\n", model);
        return;
    }
    char *text = read_file_all(test_data("text/tinystories/TinyStories-valid-excerpt.txt"), NULL);
    CHECK(text != NULL, "excerpt missing");
    if (!text) return;
    struct eval_model_args a = {.model = model, .tokenizer = tokenizer, .n_threads = 2};
    struct engine *en = eval_load(&a, 512, true);
    CHECK(en != NULL, "load %s", model);
    if (!en) {
        free(text);
        return;
    }
    struct ppl_plan p;
    int64_t n_tok = 0;
    int32_t *tok = ppl_prepare(en, PPL_STORIES, text, 512, 0, false, &p, &n_tok);
    CHECK(tok != NULL, "prepare");
    if (tok) {
        CHECK(p.n_segments == 11, "%s: %d stories", model, p.n_segments);
        for (int i = 0; i < p.n_segments && i < 11; i++)
            CHECK(p.seg[i].n - 1 == ref_scored[i], "%s story %d: %d scored, run.c %d", model, i,
                  p.seg[i].n - 1, ref_scored[i]);
        struct ppl_result r;
        struct err e = {0};
        int rc = ppl_run(&p, tok, engine_config(en)->vocab_size, 512, ppl_engine_eval, en, NULL,
                         NULL, NULL, &r, &e);
        CHECK(rc == ERR_OK, "run: %s", e.msg);
        CHECK(r.st.n == 3631, "%s: %lld scored tokens, expected 3631", model, (long long)r.st.n);
        // reference PPL 3.112708 (run.c, fp32); 4 decimals -> |diff| < 5e-5 leaves fp32 summation
        // order differences (~1e-6 relative on the mean NLL) far inside
        CHECK_NEAR(nll_stats_ppl(&r.st), 3.112708346834329, 5e-5, "%s PPL", model);
        CHECK_NEAR(nll_stats_mean(&r.st), 1.1354931982924814, 2e-5, "%s mean NLL", model);
        fprintf(stderr, "%s: PPL %.6f, %lld tokens\n", model, nll_stats_ppl(&r.st), (long long)r.st.n);
        ppl_plan_free(&p);
        free(tok);
    }
    engine_free(en);
    free(text);
}

int main(void) {
    test_begin("eval_ppl");
    test_llamacpp_plan();
    check_run(PPL_LLAMACPP, 1000, 128, 0, 1);
    check_run(PPL_LLAMACPP, 1000, 128, 50, 1);   // batches split inside the scored half
    check_run(PPL_LLAMACPP, 999, 7, 3, -1);      // no BOS substitution (add_bos false)
    check_run(PPL_GPTQ, 1000, 128, 0, -1);
    check_run(PPL_GPTQ, 1000, 128, 33, -1);
    test_stats();
    test_text();
    test_kld_math();
    test_stories(test_data("models/stories260K/stories260K.gguf"), NULL);
    char tokp[1024];
    snprintf(tokp, sizeof tokp, "%s", test_data("models/stories260K/tok512.bin"));
    test_stories(test_data("models/stories260K/stories260K.bin"), tokp);
    return test_end();
}
