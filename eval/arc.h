/* eval/arc.h: ARC (AI2 Reasoning Challenge) multiple choice by log-likelihood, lm-eval-harness
 * style: each choice is scored by log P(" " + choice | "Question: {q}\nAnswer:"); acc takes the
 * argmax of the sum, acc_norm the argmax of the sum per byte of the continuation.
 * ./llm-eval arc -m MODEL -f arc_easy_validation.json; docs/EVAL.md. Test: tests/test_eval_arc.c */
#ifndef EVAL_ARC_H
#define EVAL_ARC_H

#include "eval/eval_common.h"

struct arc_item {
    char *id;
    char *question;
    int n_choices;
    char **choices;   // n_choices texts
    char **labels;    // n_choices labels ("A".."E" or "1".."5")
    char *answer_key;
    int gold;         // index of answer_key in labels, -1 if absent
};

/* Loads HF ai2_arc rows: [{"id","question","choices":{"text":[...],"label":[...]},"answerKey"}].
 * Returns ERR_OK with a malloc'd array, or an error naming the row. */
int arc_load(const char *path, struct arc_item **items, int *n_items, struct err *e);
void arc_free(struct arc_item *items, int n_items);
/* Index of key in labels[0..n) or -1 (keys may be digits: map through the labels, not 'A' + i). */
int arc_gold_index(char *const *labels, int n, const char *key);

/* Log-likelihood of continuation given context (natural log, summed over the continuation's
 * tokens). *n_tokens (may be NULL) gets the number of continuation tokens. */
typedef int (*arc_score_fn)(void *u, const char *context, const char *continuation,
                            double *logprob, int *n_tokens, struct err *e);

/* "Question: {q}\nAnswer:" into buf. */
void arc_context(const struct arc_item *it, char *buf, size_t n);

/* Scores one item: *pred = argmax of the log-likelihood, *pred_norm = argmax of the
 * log-likelihood per byte of " " + choice (first index wins ties). ll may be NULL. */
int arc_score_item(const struct arc_item *it, arc_score_fn fn, void *u, int *pred, int *pred_norm,
                   double *ll, struct err *e);

struct arc_result {
    int n;              // questions scored
    int correct;        // acc
    int correct_norm;   // acc_norm
    double seconds;
};
int arc_eval(const struct arc_item *items, int n_items, arc_score_fn fn, void *u,
             struct eval_progress *progress, struct arc_result *r, struct err *e);

/* arc_score_fn over an engine. Keeps the last context's KV cache and reuses it when the next
 * context is the same and tokenizes as a prefix of context + continuation. */
struct arc_engine {
    struct engine *en;
    float *logits;        // cap x vocab
    int cap;
    int32_t *ctx_tok;     // cached context tokens (and their last-position logits)
    int n_ctx_tok;
    float *ctx_last;      // vocab logits after the cached context
    char *ctx_text;
};
int arc_engine_init(struct arc_engine *a, struct engine *en);
void arc_engine_free(struct arc_engine *a);
int arc_engine_score(void *u, const char *context, const char *continuation, double *logprob,
                     int *n_tokens, struct err *e);

/* ./llm-eval arc ... (argv[0] = "arc"). Returns the exit code. */
int arc_main(int argc, char **argv);
/* Accuracy on the first `limit` items of path (0 = all) for a loaded engine (used by the report). */
int arc_run_file(struct engine *en, const char *path, int limit, bool quiet, struct arc_result *r);

#endif
