/* eval/arc.c: ARC-Easy/Challenge multiple choice by log-likelihood (see arc.h): JSON loading,
 * scoring through a callback, the engine scorer with a reused context prefix, and ./llm-eval arc. */
#include "eval/arc.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "loaders/json_min.h"

// ------------------------------------------------------------------------------------------------
// Loading

static char *dup_str(const char *s) {
    size_t n = strlen(s);
    char *d = malloc(n + 1);
    if (d) memcpy(d, s, n + 1);
    return d;
}

void arc_free(struct arc_item *items, int n_items) {
    for (int i = 0; items && i < n_items; i++) {
        struct arc_item *it = &items[i];
        free(it->id);
        free(it->question);
        free(it->answer_key);
        for (int c = 0; c < it->n_choices; c++) {
            if (it->choices) free(it->choices[c]);
            if (it->labels) free(it->labels[c]);
        }
        free(it->choices);
        free(it->labels);
    }
    free(items);
}

int arc_gold_index(char *const *labels, int n, const char *key) {
    for (int i = 0; key && i < n; i++)
        if (labels[i] && strcmp(labels[i], key) == 0) return i;
    return -1;
}

int arc_load(const char *path, struct arc_item **items, int *n_items, struct err *e) {
    *items = NULL;
    *n_items = 0;
    size_t len = 0;
    char *text = eval_read_file(path, &len);
    if (!text) return ERR(e, ERR_IO, "cannot read %s", path);
    struct json_doc doc = {0};
    int rc = json_parse(&doc, text, len, path, e);
    free(text);
    if (rc != ERR_OK) return rc;
    const struct json *root = doc.root;
    size_t n = json_len(root);
    if (!root || root->type != JSON_ARRAY || n == 0) {
        json_free(&doc);
        return ERR(e, ERR_FORMAT, "%s: expected a non-empty JSON array of rows", path);
    }
    struct arc_item *v = calloc(n, sizeof *v);
    if (!v) {
        json_free(&doc);
        return ERR(e, ERR_OOM, "out of memory");
    }
    for (size_t i = 0; i < n && rc == ERR_OK; i++) {
        const struct json *row = json_at(root, i);
        const struct json *ch = json_get(row, "choices");
        const struct json *texts = json_get(ch, "text"), *labels = json_get(ch, "label");
        const char *id = json_get_str(row, "id"), *q = json_get_str(row, "question");
        const char *key = json_get_str(row, "answerKey");
        size_t nc = json_len(texts);
        if (!q || !key || !texts || !labels || nc == 0 || nc != json_len(labels) || nc > 16) {
            rc = ERR(e, ERR_FORMAT, "%s: row %zu: needs question, answerKey, choices.text/label "
                     "of equal length (1..16)", path, i);
            break;
        }
        struct arc_item *it = &v[i];
        it->id = dup_str(id ? id : "");
        it->question = dup_str(q);
        it->answer_key = dup_str(key);
        it->choices = calloc(nc, sizeof *it->choices);
        it->labels = calloc(nc, sizeof *it->labels);
        it->n_choices = (int)nc;
        if (!it->id || !it->question || !it->answer_key || !it->choices || !it->labels) {
            rc = ERR(e, ERR_OOM, "out of memory");
            break;
        }
        for (size_t c = 0; c < nc; c++) {
            const char *t = json_str(json_at(texts, c)), *l = json_str(json_at(labels, c));
            if (!t || !l) {
                rc = ERR(e, ERR_FORMAT, "%s: row %zu choice %zu: not a string", path, i, c);
                break;
            }
            if (!(it->choices[c] = dup_str(t)) || !(it->labels[c] = dup_str(l))) {
                rc = ERR(e, ERR_OOM, "out of memory");
                break;
            }
        }
        it->gold = arc_gold_index(it->labels, it->n_choices, key);
    }
    json_free(&doc);
    if (rc != ERR_OK) {
        arc_free(v, (int)n);
        return rc;
    }
    *items = v;
    *n_items = (int)n;
    return ERR_OK;
}

// ------------------------------------------------------------------------------------------------
// Scoring

void arc_context(const struct arc_item *it, char *buf, size_t n) {
    snprintf(buf, n, "Question: %s\nAnswer:", it->question);
}

int arc_score_item(const struct arc_item *it, arc_score_fn fn, void *u, int *pred, int *pred_norm,
                   double *ll, struct err *e) {
    size_t qn = strlen(it->question) + 32;
    char *ctx = malloc(qn);
    if (!ctx) return ERR(e, ERR_OOM, "out of memory");
    arc_context(it, ctx, qn);
    double best = -INFINITY, best_norm = -INFINITY;
    *pred = *pred_norm = -1;
    int rc = ERR_OK;
    for (int c = 0; c < it->n_choices && rc == ERR_OK; c++) {
        size_t cn = strlen(it->choices[c]);
        char *cont = malloc(cn + 2);
        if (!cont) {
            rc = ERR(e, ERR_OOM, "out of memory");
            break;
        }
        cont[0] = ' ';   // lm-eval target_delimiter
        memcpy(cont + 1, it->choices[c], cn + 1);
        double lp = 0;
        rc = fn(u, ctx, cont, &lp, NULL, e);
        // acc_norm: lm-eval divides by the continuation's length; we use bytes of " " + choice
        double norm = lp / (double)(cn + 1);
        free(cont);
        if (rc != ERR_OK) break;
        if (ll) ll[c] = lp;
        if (lp > best) best = lp, *pred = c;
        if (norm > best_norm) best_norm = norm, *pred_norm = c;
    }
    free(ctx);
    return rc;
}

int arc_eval(const struct arc_item *items, int n_items, arc_score_fn fn, void *u,
             struct eval_progress *progress, struct arc_result *r, struct err *e) {
    memset(r, 0, sizeof *r);
    double t0 = eval_now();
    for (int i = 0; i < n_items; i++) {
        int pred, pred_norm;
        int rc = arc_score_item(&items[i], fn, u, &pred, &pred_norm, NULL, e);
        if (rc != ERR_OK) return rc;
        r->n++;
        r->correct += items[i].gold >= 0 && pred == items[i].gold;
        r->correct_norm += items[i].gold >= 0 && pred_norm == items[i].gold;
        if (progress) eval_progress_update(progress, i + 1, "acc", (double)r->correct / r->n);
    }
    r->seconds = eval_now() - t0;
    return ERR_OK;
}

// ------------------------------------------------------------------------------------------------
// Engine scorer

int arc_engine_init(struct arc_engine *a, struct engine *en) {
    memset(a, 0, sizeof *a);
    a->en = en;
    int vocab = engine_config(en)->vocab_size;
    a->ctx_last = malloc((size_t)vocab * sizeof *a->ctx_last);
    return a->ctx_last ? 0 : -1;
}

void arc_engine_free(struct arc_engine *a) {
    free(a->logits);
    free(a->ctx_tok);
    free(a->ctx_last);
    free(a->ctx_text);
    memset(a, 0, sizeof *a);
}

static int32_t *tokenize(struct engine *en, const char *s, int *n, struct err *e) {
    const struct vocab *v = engine_vocab(en);
    int cap = (int)strlen(s) + 8;
    int32_t *t = malloc((size_t)cap * sizeof *t);
    if (!t) return NULL;
    *n = engine_tokenize(en, s, v->add_bos && v->bos >= 0, false, t, cap, e);
    if (*n < 0) {
        free(t);
        return NULL;
    }
    return t;
}

int arc_engine_score(void *u, const char *context, const char *continuation, double *logprob,
                     int *n_tokens, struct err *e) {
    struct arc_engine *a = u;
    struct engine *en = a->en;
    const int vocab = engine_config(en)->vocab_size;
    // lm-eval: whole = tok(context + continuation); continuation tokens = whole[len(tok(context)):]
    size_t lc = strlen(context), lk = strlen(continuation);
    char *both = malloc(lc + lk + 1);
    if (!both) return ERR(e, ERR_OOM, "out of memory");
    memcpy(both, context, lc);
    memcpy(both + lc, continuation, lk + 1);
    int n_whole = 0;
    int32_t *whole = tokenize(en, both, &n_whole, e);
    free(both);
    if (!whole) return e->code ? (int)e->code : ERR(e, ERR_OOM, "out of memory");
    int rc = ERR_OK;
    if (!a->ctx_text || strcmp(a->ctx_text, context) != 0) {   // new context: tokenize and prefill
        free(a->ctx_text);
        free(a->ctx_tok);
        a->ctx_text = dup_str(context);
        a->ctx_tok = tokenize(en, context, &a->n_ctx_tok, e);
        if (!a->ctx_text || !a->ctx_tok) {
            free(whole);
            free(a->ctx_text);
            a->ctx_text = NULL;
            return e->code ? (int)e->code : ERR(e, ERR_OOM, "out of memory");
        }
        if (a->n_ctx_tok > 0 && a->n_ctx_tok < engine_n_ctx(en))
            rc = engine_forward(en, a->ctx_tok, a->n_ctx_tok, 0, a->ctx_last, false, e);
    }
    int nc = a->n_ctx_tok, n_cont = n_whole - nc;
    if (rc == ERR_OK && (nc < 1 || n_cont < 1 || n_whole > engine_n_ctx(en)))
        rc = ERR(e, ERR_ARG, "context %d + continuation %d tokens (n_ctx %d)", nc, n_cont,
                 engine_n_ctx(en));
    bool prefix = rc == ERR_OK && memcmp(whole, a->ctx_tok, (size_t)nc * sizeof *whole) == 0;
    // rows needed: the logits after whole[nc-1 .. n_whole-2]
    int rows = prefix ? n_cont - 1 : n_whole - 1;
    if (rc == ERR_OK && rows > a->cap) {
        free(a->logits);
        a->cap = rows + 64;
        a->logits = malloc((size_t)a->cap * (size_t)vocab * sizeof *a->logits);
        if (!a->logits) {
            a->cap = 0;
            rc = ERR(e, ERR_OOM, "logits");
        }
    }
    double lp = 0;
    if (rc == ERR_OK && prefix) {
        // the KV cache holds the context: run the continuation (minus its last token) after it
        lp -= eval_nll(a->ctx_last, vocab, whole[nc]);
        if (rows > 0) rc = engine_forward(en, whole + nc, rows, nc, a->logits, true, e);
        for (int t = 0; rc == ERR_OK && t < rows; t++)
            lp -= eval_nll(a->logits + (size_t)t * vocab, vocab, whole[nc + 1 + t]);
    } else if (rc == ERR_OK) {
        // the context does not tokenize as a prefix: evaluate the whole sequence afresh
        rc = engine_forward(en, whole, rows, 0, a->logits, true, e);
        for (int t = nc - 1; rc == ERR_OK && t < rows; t++)
            lp -= eval_nll(a->logits + (size_t)t * vocab, vocab, whole[t + 1]);
        free(a->ctx_text);   // the KV cache no longer holds the context alone
        a->ctx_text = NULL;
    }
    free(whole);
    if (rc != ERR_OK) return rc;
    *logprob = lp;
    if (n_tokens) *n_tokens = n_cont;
    return ERR_OK;
}

// ------------------------------------------------------------------------------------------------
// ./llm-eval arc

int arc_run_file(struct engine *en, const char *path, int limit, bool quiet, struct arc_result *r) {
    struct arc_item *items = NULL;
    int n = 0;
    struct err e = {0};
    if (arc_load(path, &items, &n, &e) != ERR_OK) {
        fprintf(stderr, "error: %s\n", e.msg);
        return 1;
    }
    if (limit > 0 && limit < n) n = limit;
    struct arc_engine ae;
    if (arc_engine_init(&ae, en) != 0) {
        arc_free(items, n);
        return 1;
    }
    struct eval_progress prog;
    eval_progress_start(&prog, "questions", n, !quiet);
    int rc = arc_eval(items, n, arc_engine_score, &ae, &prog, r, &e);
    eval_progress_end(&prog);
    arc_engine_free(&ae);
    arc_free(items, n);
    if (rc != ERR_OK) {
        fprintf(stderr, "error: %s\n", e.msg);
        return 1;
    }
    return 0;
}

int arc_main(int argc, char **argv) {
    struct eval_model_args ma = {0};
    const char *file = NULL;
    int limit = 0;
    bool json = false, quiet = false;
    for (int i = 1; i < argc;) {
        int r = eval_parse_model_flag(&ma, argc, argv, &i);
        if (r < 0) return 2;
        if (r > 0) continue;
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(f, "-f") && v) file = v, i += 2;
        else if (!strcmp(f, "--limit") && v) limit = eval_atoi(f, v), i += 2;
        else if (!strcmp(f, "--json")) json = true, i++;
        else if (!strcmp(f, "--quiet")) quiet = true, i++;
        else {
            fprintf(stderr,
                    "usage: eval arc -m MODEL -f arc_easy_validation.json [--limit N] [--json] "
                    "[--quiet]\n%s", eval_model_flags_help);
            return 2;
        }
    }
    if (!file || !ma.model) {
        fprintf(stderr, "error: eval arc needs -m MODEL and -f FILE\n");
        return 2;
    }
    struct engine *en = eval_load(&ma, 1024, quiet);
    if (!en) return 1;
    struct arc_result r;
    int rc = arc_run_file(en, file, limit, quiet, &r);
    if (rc == 0) {
        double lo, hi, lon, hin;
        eval_wilson(r.correct, r.n, &lo, &hi);
        eval_wilson(r.correct_norm, r.n, &lon, &hin);
        printf("ARC %s: acc %.4f [%.4f, %.4f] (%d/%d), acc_norm %.4f [%.4f, %.4f] (%d/%d), %.1f s\n",
               eval_basename(file), (double)r.correct / r.n, lo, hi, r.correct, r.n,
               (double)r.correct_norm / r.n, lon, hin, r.correct_norm, r.n, r.seconds);
        if (json)
            printf("{\"task\":\"arc\",\"n\":%d,\"correct\":%d,\"acc\":%.6f,\"acc_lo\":%.6f,"
                   "\"acc_hi\":%.6f,\"correct_norm\":%d,\"acc_norm\":%.6f,\"acc_norm_lo\":%.6f,"
                   "\"acc_norm_hi\":%.6f,\"seconds\":%.3f}\n",
                   r.n, r.correct, (double)r.correct / r.n, lo, hi, r.correct_norm,
                   (double)r.correct_norm / r.n, lon, hin, r.seconds);
    }
    engine_free(en);
    return rc;
}
