/* tests/test_eval_arc.c: ARC scoring. A fake scorer with known log-probs checks acc vs acc_norm and
 * digit answer keys; the Wilson interval against hand-computed values; JSON loading of the shared
 * validation file; and the engine scorer's context reuse against a full evaluation (stories260K). */
#include <math.h>

#include "eval/arc.h"
#include "tests/test.h"

// ------------------------------------------------------------------------------------------------
// Fake scorer: log-likelihood = -(sum of the choice's letters' values) looked up by continuation

struct fake_ll {
    const char *cont[8];
    double lp[8];
    int n;
    int calls;
    char last_ctx[256];
};

static int fake_score(void *u, const char *context, const char *continuation, double *logprob,
                      int *n_tokens, struct err *e) {
    struct fake_ll *f = u;
    f->calls++;
    snprintf(f->last_ctx, sizeof f->last_ctx, "%s", context);
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->cont[i], continuation)) {
            *logprob = f->lp[i];
            if (n_tokens) *n_tokens = 1;
            return ERR_OK;
        }
    return ERR(e, ERR_ARG, "unexpected continuation '%s'", continuation);
}

static void test_fake(void) {
    // choice 0 " cat" (4 bytes) lp -4.0 -> -1.0/byte; choice 1 " elephant" (9 bytes) lp -4.5 -> -0.5/byte
    // choice 2 " dog" (4 bytes) lp -3.0 -> -0.75/byte. acc picks 2 (-3.0), acc_norm picks 1 (-0.5).
    char *choices[3] = {"cat", "elephant", "dog"}, *labels[3] = {"1", "2", "3"};
    struct arc_item it = {.id = "t1", .question = "Which animal is largest?", .n_choices = 3,
                          .choices = choices, .labels = labels, .answer_key = "2"};
    it.gold = arc_gold_index(labels, 3, it.answer_key);
    CHECK(it.gold == 1, "digit key '2' maps through labels to index 1, got %d", it.gold);
    CHECK(arc_gold_index(labels, 3, "B") == -1, "letter key absent from digit labels");
    struct fake_ll f = {.cont = {" cat", " elephant", " dog"}, .lp = {-4.0, -4.5, -3.0}, .n = 3};
    int pred, pred_norm;
    double ll[3];
    struct err e = {0};
    CHECK(arc_score_item(&it, fake_score, &f, &pred, &pred_norm, ll, &e) == ERR_OK, "%s", e.msg);
    CHECK(pred == 2 && pred_norm == 1, "pred %d pred_norm %d", pred, pred_norm);
    CHECK(!strcmp(f.last_ctx, "Question: Which animal is largest?\nAnswer:"), "context '%s'", f.last_ctx);
    CHECK(ll[0] == -4.0 && ll[1] == -4.5 && ll[2] == -3.0, "ll passthrough");

    // arc_eval: item 1 is right only under acc_norm; item 2 (letters) right under both
    char *ch2[4] = {"red", "blue", "green", "yellow"}, *lb2[4] = {"A", "B", "C", "D"};
    struct arc_item items[2] = {it, {.id = "t2", .question = "Sky colour?", .n_choices = 4,
                                     .choices = ch2, .labels = lb2, .answer_key = "B"}};
    items[1].gold = arc_gold_index(lb2, 4, "B");
    struct fake_ll f2 = {.cont = {" cat", " elephant", " dog", " red", " blue", " green", " yellow"},
                         .lp = {-4.0, -4.5, -3.0, -9, -1, -9, -9}, .n = 7};
    struct arc_result r;
    CHECK(arc_eval(items, 2, fake_score, &f2, NULL, &r, &e) == ERR_OK, "%s", e.msg);
    CHECK(r.n == 2 && r.correct == 1 && r.correct_norm == 2, "n %d acc %d acc_norm %d", r.n,
          r.correct, r.correct_norm);
    CHECK(f2.calls == 7, "one call per choice, got %d", f2.calls);
}

static void test_wilson(void) {
    double lo, hi;
    // k=5, n=10, z=1.959964: center 0.5, half = z*sqrt(0.025 + z^2/400)/(1 + z^2/10) = 0.2632...
    eval_wilson(5, 10, &lo, &hi);
    CHECK_NEAR(lo, 0.236593090, 1e-6, "wilson lo 5/10");
    CHECK_NEAR(hi, 0.763406910, 1e-6, "wilson hi 5/10");
    // k=0, n=10: lo = 0, hi = z^2/n / (1 + z^2/n) = 0.277533...
    eval_wilson(0, 10, &lo, &hi);
    CHECK_NEAR(lo, 0.0, 1e-12, "wilson lo 0/10");
    CHECK_NEAR(hi, 0.277532799, 1e-6, "wilson hi 0/10");
    eval_wilson(0, 0, &lo, &hi);
    CHECK(lo == 0 && hi == 1, "n=0");
}

static void test_load(void) {
    const char *p = test_data("text/eval/arc_easy_validation.json");
    if (!file_exists(p)) {
        fprintf(stderr, "SKIP part: %s missing\n", p);
        return;
    }
    struct arc_item *items = NULL;
    int n = 0;
    struct err e = {0};
    CHECK(arc_load(p, &items, &n, &e) == ERR_OK, "%s", e.msg);
    CHECK(n == 570, "570 questions, got %d", n);
    int digits = 0, unresolved = 0, five = 0, three = 0;
    for (int i = 0; i < n; i++) {
        if (items[i].answer_key[0] >= '0' && items[i].answer_key[0] <= '9') digits++;
        if (items[i].gold < 0) unresolved++;
        five += items[i].n_choices == 5;
        three += items[i].n_choices == 3;
    }
    // SOURCES.md: 21 digit keys, 2 questions with 5 choices and 1 with 3; every key resolves
    CHECK(digits == 21 && five == 2 && three == 1 && unresolved == 0,
          "digits %d five %d three %d unresolved %d", digits, five, three, unresolved);
    arc_free(items, n);
}

/* The engine scorer reuses the context's KV cache; it must equal a fresh full evaluation. */
static void test_engine_scorer(void) {
    const char *model = test_data("models/stories260K/stories260K.gguf");
    if (!file_exists(model)) {
        fprintf(stderr, "SKIP part: stories260K missing\n");
        return;
    }
    struct eval_model_args a = {.model = model, .n_threads = 2};
    struct engine *en = eval_load(&a, 256, true);
    CHECK(en != NULL, "load");
    if (!en) return;
    struct arc_engine ae;
    CHECK(arc_engine_init(&ae, en) == 0, "init");
    const char *ctx = "Question: What did Lily see in the park?\nAnswer:";
    const char *conts[3] = {" a big red ball", " a dog", " the sun"};
    double lp[3];
    struct err e = {0};
    for (int k = 0; k < 3; k++)
        CHECK(arc_engine_score(&ae, ctx, conts[k], &lp[k], NULL, &e) == ERR_OK, "%s", e.msg);
    // reference: tokenize context+continuation, one fresh forward pass, sum over continuation
    const int vocab = engine_config(en)->vocab_size;
    for (int k = 0; k < 3; k++) {
        char both[256];
        snprintf(both, sizeof both, "%s%s", ctx, conts[k]);
        int32_t tc[256], tw[256];
        bool bos = engine_vocab(en)->add_bos;
        int nc = engine_tokenize(en, ctx, bos, false, tc, 256, &e);
        int nw = engine_tokenize(en, both, bos, false, tw, 256, &e);
        float *lg = malloc((size_t)nw * vocab * sizeof *lg);
        CHECK(engine_forward(en, tw, nw, 0, lg, true, &e) == ERR_OK, "%s", e.msg);
        double ref = 0;
        for (int t = nc - 1; t < nw - 1; t++) ref -= eval_nll(lg + (size_t)t * vocab, vocab, tw[t + 1]);
        free(lg);
        // same fp32 logits up to batch-shape summation order: 1e-4 absolute on a sum of ~5 terms
        CHECK_NEAR(lp[k], ref, 1e-4, "continuation %d", k);
        CHECK(lp[k] < 0, "log-likelihood must be negative");
    }
    arc_engine_free(&ae);
    engine_free(en);
}

int main(void) {
    test_begin("eval_arc");
    test_fake();
    test_wilson();
    test_load();
    test_engine_scorer();
    return test_end();
}
