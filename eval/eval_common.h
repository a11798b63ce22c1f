/* eval/eval_common.h: shared code for ./ppl and ./llm-eval: model flags and loading, a progress bar,
 * log-softmax in double, running NLL statistics (llama.cpp's PPL +/- stderr), the Wilson interval,
 * token hashing, timing and peak RSS. Docs: docs/EVAL.md. Tests: tests/test_eval_ppl.c, test_eval_arc.c */
#ifndef EVAL_EVAL_COMMON_H
#define EVAL_EVAL_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "engine/engine.h"

// ------------------------------------------------------------------------------------------------
// Model flags shared by every tool

struct eval_model_args {
    const char *model;       // -m
    const char *tokenizer;   // --tokenizer (llama2.c .bin models)
    int quant_bits;          // -q N (0 = as stored)
    const char *bits_plan;   // --bits PLAN
    const char *method;      // --method rtn|opt|gptq
    const char *imatrix;     // --imatrix FILE (calibration statistics for -q/--bits)
    float gptq_damp;         // --gptq-damp F
    bool no_act_order;       // --no-act-order
    const char *calib_text;  // --calib-text FILE (--bits auto:B)
    const char *alloc_table; // --alloc-table FILE (--bits auto:B)
    int n_threads;           // -t N (0 = all cores)
    const char *device;      // --device cpu|cuda
    int n_gpu_layers;        // -ngl N
};

/* If argv[*i] is a model flag, consumes it (and its value), advances *i past it and returns 1;
 * returns 0 when it is not a model flag, -1 (message on stderr) when its value is missing/bad. */
int eval_parse_model_flag(struct eval_model_args *a, int argc, char **argv, int *i);
/* Help text for the flags above (for usage messages). */
extern const char eval_model_flags_help[];

/* Loads the model with a KV cache of n_ctx positions (0 = engine default). Prints the error and
 * returns NULL on failure. quiet: no loader output. */
struct engine *eval_load(const struct eval_model_args *a, int n_ctx, bool quiet);

/* Parses a positive int flag value; exits with a message on garbage (tools only). */
int eval_atoi(const char *flag, const char *s);

// ------------------------------------------------------------------------------------------------
// Numerics

/* log(sum_i exp(x[i])) over n floats, in double, max-shifted. */
double eval_logsumexp(const float *x, int n);
/* -log softmax(x)[target] = logsumexp(x) - x[target], in double. */
double eval_nll(const float *x, int n, int target);

/* Running mean of per-token NLL with llama.cpp's statistics. */
struct nll_stats {
    double sum, sum2;   // sum of nll and of nll^2
    int64_t n;          // tokens scored
};
static inline void nll_stats_add(struct nll_stats *s, double nll) {
    s->sum += nll;
    s->sum2 += nll * nll;
    s->n++;
}
double nll_stats_mean(const struct nll_stats *s);
double nll_stats_ppl(const struct nll_stats *s);
/* Standard error of the mean NLL: sqrt((E[x^2] - E[x]^2) / (n - 1)), as llama.cpp. */
double nll_stats_stderr(const struct nll_stats *s);
/* Standard error of PPL by the delta method: ppl * stderr(mean NLL) (llama.cpp's "+/-"). */
double nll_stats_ppl_stderr(const struct nll_stats *s);

/* 95% Wilson score interval for k successes in n trials (z = 1.959964). n = 0 gives [0, 1]. */
void eval_wilson(int64_t k, int64_t n, double *lo, double *hi);

/* FNV-1a 64 over the token ids (as little-endian int32), chained from h (start with 0). */
uint64_t eval_hash_tokens(uint64_t h, const int32_t *tok, int64_t n);

// ------------------------------------------------------------------------------------------------
// Progress bar on stderr: [#####.....] 42/100 chunks  PPL 12.3456  ETA 1m05s

struct eval_progress {
    const char *what;       // "chunks", "questions", ...
    int64_t total;
    double t0;              // start time (eval_now)
    double last_print;
    bool enabled;           // false: prints nothing (quiet, or stderr is not wanted)
    bool tty;               // stderr is a terminal: redraw one line; else a line every 10 s
};
void eval_progress_start(struct eval_progress *p, const char *what, int64_t total, bool enabled);
/* done of total finished; metric_name/metric shown when metric_name != NULL. Rate-limited to
 * 10 Hz on a terminal (0.1 Hz otherwise), except for the final step. */
void eval_progress_update(struct eval_progress *p, int64_t done, const char *metric_name,
                          double metric);
void eval_progress_end(struct eval_progress *p);   // ends the line

// ------------------------------------------------------------------------------------------------
// Misc

double eval_now(void);                 // CLOCK_MONOTONIC seconds
double eval_peak_rss_mib(void);        // this process's peak RSS (MiB = 2^20 bytes)
/* Reads a whole file, NUL-terminated (malloc'd). NULL with a message on stderr on failure. */
char *eval_read_file(const char *path, size_t *len);
/* Tokenizes a whole text into a malloc'd array (*n tokens). add_bos as given. NULL on error. */
int32_t *eval_tokenize_all(struct engine *en, const char *text, bool add_bos, int *n);
/* Writes s as a JSON string literal (quotes and escapes) to f. */
void eval_json_str(FILE *f, const char *s);
/* Base name without directories ("models/x.gguf" -> "x.gguf"). */
const char *eval_basename(const char *path);

#endif
