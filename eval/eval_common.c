/* eval/eval_common.c: model flags and loading, log-softmax in double, NLL statistics, the Wilson
 * interval, token hashing, the stderr progress bar, timing, peak RSS. See eval_common.h. */
#include "eval/eval_common.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

// ------------------------------------------------------------------------------------------------
// Flags and loading

const char eval_model_flags_help[] =
    "  -m FILE            model (.gguf, llama2.c .bin, HF folder, model.bin)\n"
    "  --tokenizer FILE   tokenizer.bin for llama2.c models\n"
    "  -q N               quantize weights at load to N bits (8, 4, 3, 2)\n"
    "  --bits PLAN        per-tensor bit plan, e.g. \"default=4,blk.0-1=8,output=8\"\n"
    "  --method M         quantizer for -q/--bits: rtn, opt (default) or gptq (needs --imatrix)\n"
    "  --imatrix FILE     calibration statistics from ./imatrix (or llama-imatrix): opt weights the\n"
    "                     error by E[x^2], gptq uses the Gram matrices\n"
    "  --gptq-damp F      GPTQ damping, fraction of the mean Hessian diagonal (default 0.1)\n"
    "  --no-act-order     GPTQ: columns in file order (default: decreasing E[x^2])\n"
    "  --calib-text FILE  --bits auto:B (per-tensor widths for B bits/weight): KL measured on FILE\n"
    "  --alloc-table F    --bits auto:B: keep (or reuse) the measurements in F\n"
    "  -t N               threads (default: all cores)\n"
    "  --device cpu|cuda  backend; -ngl N offloads to CUDA\n";

int eval_atoi(const char *flag, const char *s) {
    char *end = NULL;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || *s == '\0' || *end != '\0' || v < 0 || v > 1000000000L) {
        fprintf(stderr, "error: %s needs a non-negative integer, got '%s'\n", flag, s ? s : "");
        exit(2);
    }
    return (int)v;
}

int eval_parse_model_flag(struct eval_model_args *a, int argc, char **argv, int *i) {
    const char *f = argv[*i];
    static const char *const with_value[] = {"-m", "--model", "--tokenizer", "-q", "--bits",
                                             "--method", "-t", "--threads", "--device", "-ngl",
                                             "--n-gpu-layers", "--imatrix", "--gptq-damp", "--calib-text", "--alloc-table"};
    if (strcmp(f, "--act-order") == 0 || strcmp(f, "--no-act-order") == 0) {
        a->no_act_order = f[2] == 'n';
        (*i)++;
        return 1;
    }
    bool known = false;
    for (size_t k = 0; k < sizeof with_value / sizeof *with_value; k++)
        if (strcmp(f, with_value[k]) == 0) known = true;
    if (!known) return 0;
    if (*i + 1 >= argc) {
        fprintf(stderr, "error: %s needs a value\n", f);
        return -1;
    }
    const char *v = argv[++*i];
    if (!strcmp(f, "-m") || !strcmp(f, "--model")) a->model = v;
    else if (!strcmp(f, "--tokenizer")) a->tokenizer = v;
    else if (!strcmp(f, "-q")) a->quant_bits = eval_atoi(f, v);
    else if (!strcmp(f, "--bits")) a->bits_plan = v;
    else if (!strcmp(f, "--method")) {
        if (strcmp(v, "rtn") && strcmp(v, "opt") && strcmp(v, "gptq")) {
            fprintf(stderr, "error: --method must be rtn, opt or gptq, got '%s'\n", v);
            return -1;
        }
        a->method = v;
    } else if (!strcmp(f, "--imatrix")) a->imatrix = v;
    else if (!strcmp(f, "--calib-text")) a->calib_text = v;
    else if (!strcmp(f, "--alloc-table")) a->alloc_table = v;
    else if (!strcmp(f, "--gptq-damp")) {
        char *end = NULL;
        double d = strtod(v, &end);
        if (*v == 0 || *end != 0 || !(d > 0) || !(d <= 10)) {
            fprintf(stderr, "error: --gptq-damp must be a number in (0, 10], got '%s'\n", v);
            return -1;
        }
        a->gptq_damp = (float)d;
    } else if (!strcmp(f, "-t") || !strcmp(f, "--threads")) a->n_threads = eval_atoi(f, v);
    else if (!strcmp(f, "--device")) a->device = v;
    else a->n_gpu_layers = eval_atoi(f, v);
    (*i)++;
    return 1;
}

struct engine *eval_load(const struct eval_model_args *a, int n_ctx, bool quiet) {
    if (!a->model) {
        fprintf(stderr, "error: no model (-m FILE)\n");
        return NULL;
    }
    struct engine_opts o = {
        .model_path = a->model,
        .tokenizer_path = a->tokenizer,
        .n_ctx = n_ctx,
        .n_threads = a->n_threads,
        .quant_bits = a->quant_bits,
        .bits_plan = a->bits_plan,
        .quant_method = a->method,
        .imatrix_path = a->imatrix,
        .gptq_damp = a->gptq_damp,
        .gptq_no_act_order = a->no_act_order,
        .calib_text = a->calib_text,
        .alloc_table = a->alloc_table,
        .device = a->device,
        .n_gpu_layers = a->n_gpu_layers,
        .quiet = quiet,
    };
    struct err e = {0};
    struct engine *en = NULL;
    if (engine_load(&en, &o, &e) != ERR_OK) {
        fprintf(stderr, "error: %s\n", e.msg[0] ? e.msg : "engine_load failed");
        return NULL;
    }
    return en;
}

// ------------------------------------------------------------------------------------------------
// Numerics

double eval_logsumexp(const float *x, int n) {
    float mx = x[0];
    for (int i = 1; i < n; i++)
        if (x[i] > mx) mx = x[i];
    double s = 0.0;   // each term <= 1, n terms: no overflow, relative error ~ n * 2^-53
    for (int i = 0; i < n; i++) s += exp((double)x[i] - (double)mx);
    return (double)mx + log(s);
}

double eval_nll(const float *x, int n, int target) {
    return eval_logsumexp(x, n) - (double)x[target];
}

double nll_stats_mean(const struct nll_stats *s) { return s->n > 0 ? s->sum / (double)s->n : 0.0; }
double nll_stats_ppl(const struct nll_stats *s) { return exp(nll_stats_mean(s)); }

double nll_stats_stderr(const struct nll_stats *s) {
    if (s->n < 2) return 0.0;
    double m = s->sum / (double)s->n;
    double var = s->sum2 / (double)s->n - m * m;   // population variance, as llama.cpp
    return var > 0 ? sqrt(var / (double)(s->n - 1)) : 0.0;
}

double nll_stats_ppl_stderr(const struct nll_stats *s) {
    return nll_stats_ppl(s) * nll_stats_stderr(s);   // d exp(m) = exp(m) dm
}

void eval_wilson(int64_t k, int64_t n, double *lo, double *hi) {
    if (n <= 0) {
        *lo = 0.0;
        *hi = 1.0;
        return;
    }
    const double z = 1.959963984540054;   // two-sided 95% normal quantile
    double p = (double)k / (double)n, z2n = z * z / (double)n;
    double center = (p + z2n / 2.0) / (1.0 + z2n);
    double half = z * sqrt(p * (1.0 - p) / (double)n + z2n / (4.0 * (double)n)) / (1.0 + z2n);
    *lo = center - half < 0 ? 0 : center - half;
    *hi = center + half > 1 ? 1 : center + half;
}

uint64_t eval_hash_tokens(uint64_t h, const int32_t *tok, int64_t n) {
    if (h == 0) h = 0xcbf29ce484222325ull;   // FNV-1a offset basis
    for (int64_t i = 0; i < n; i++) {
        uint32_t v = (uint32_t)tok[i];
        for (int b = 0; b < 4; b++) {
            h ^= (v >> (8 * b)) & 0xff;
            h *= 0x100000001b3ull;   // FNV prime
        }
    }
    return h;
}

// ------------------------------------------------------------------------------------------------
// Progress bar

double eval_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void eval_progress_start(struct eval_progress *p, const char *what, int64_t total, bool enabled) {
    p->what = what;
    p->total = total;
    p->t0 = eval_now();
    p->last_print = 0;
    p->enabled = enabled;
    p->tty = isatty(2);
}

static void fmt_dur(char *buf, size_t n, double s) {
    if (!(s >= 0) || s > 1e7) snprintf(buf, n, "?");
    else if (s < 60) snprintf(buf, n, "%.0fs", s);
    else if (s < 3600) snprintf(buf, n, "%dm%02ds", (int)s / 60, (int)s % 60);
    else snprintf(buf, n, "%dh%02dm", (int)s / 3600, ((int)s % 3600) / 60);
}

void eval_progress_update(struct eval_progress *p, int64_t done, const char *metric_name,
                          double metric) {
    if (!p->enabled) return;
    double t = eval_now();
    if (done < p->total && t - p->last_print < (p->tty ? 0.1 : 10.0)) return;
    p->last_print = t;
    const int width = 30;
    int fill = p->total > 0 ? (int)(width * done / p->total) : width;
    char bar[64];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
    bar[width] = '\0';
    double el = t - p->t0;
    char eta[32], elapsed[32];
    fmt_dur(eta, sizeof eta, done > 0 ? el * (double)(p->total - done) / (double)done : -1);
    fmt_dur(elapsed, sizeof elapsed, el);
    fprintf(stderr, "%s[%s] %lld/%lld %s", p->tty ? "\r" : "", bar, (long long)done, (long long)p->total, p->what);
    if (metric_name) fprintf(stderr, "  %s %.4f", metric_name, metric);
    fprintf(stderr, "  %s  ETA %s   %s", elapsed, eta, p->tty ? "" : "\n");
    fflush(stderr);
}

void eval_progress_end(struct eval_progress *p) {
    if (p->enabled && p->tty) fprintf(stderr, "\n");
}

// ------------------------------------------------------------------------------------------------
// Misc

double eval_peak_rss_mib(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
    return (double)ru.ru_maxrss / 1024.0;   // Linux reports KiB
}

char *eval_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "error: cannot open %s\n", path);
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (n < cap) break;
        cap *= 2;
        char *nb = realloc(buf, cap + 1);
        if (!nb) free(buf);
        buf = nb;
    }
    bool bad = ferror(f);
    fclose(f);
    if (!buf || bad) {
        fprintf(stderr, "error: cannot read %s\n", path);
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    if (len) *len = n;
    return buf;
}

int32_t *eval_tokenize_all(struct engine *en, const char *text, bool add_bos, int *n) {
    size_t len = strlen(text);
    if (len > (size_t)1 << 30) {
        fprintf(stderr, "error: text too long (%zu bytes)\n", len);
        return NULL;
    }
    // every token covers >= 1 byte, plus BOS and an SPM space prefix
    int cap = (int)len + 8;
    int32_t *tok = malloc((size_t)cap * sizeof *tok);
    if (!tok) return NULL;
    struct err e = {0};
    int got = engine_tokenize(en, text, add_bos, false, tok, cap, &e);
    if (got < 0) {
        fprintf(stderr, "error: tokenize: %s\n", e.msg);
        free(tok);
        return NULL;
    }
    *n = got;
    return tok;
}

void eval_json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p == '\n') fputs("\\n", f);
        else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}

const char *eval_basename(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}
