/* eval/sensitivity.c: ./llm-eval sensitivity, per-layer quantization sensitivity. Quantizes one layer
 * (every matrix of blk.L) at a time to --bits with the rest at source precision, measures PPL on a
 * fixed slice (llama.cpp protocol), writes DIR/sensitivity.csv + .svg, then proposes and evaluates a
 * mixed plan: the --top most sensitive layers at 8 bits. Also eval_config_ppl (shared with report). */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "eval/report.h"
#include "eval/svg.h"

// ------------------------------------------------------------------------------------------------
// Shared helpers

int eval_config_ppl(struct engine *en, const struct ppl_plan *plan, const int32_t *tokens,
                    int batch, bool quiet, const char *kld_base_out, const char *kld_in,
                    struct ppl_result *r, struct kld_summary *ks) {
    const struct model_config *cfg = engine_config(en);
    struct err e = {0};
    struct kld_writer kw;
    struct kld_reader kr;
    ppl_row_fn row = NULL;
    void *row_u = NULL;
    uint64_t hash = ppl_plan_hash(plan, tokens);
    int rc = ERR_OK;
    if (kld_base_out) {
        struct kld_header h = {.vocab = (uint32_t)cfg->vocab_size, .n_ctx = (uint32_t)plan->n_ctx,
                               .n_chunks = (uint32_t)plan->n_segments,
                               .protocol = (uint32_t)plan->protocol, .token_hash = hash};
        snprintf(h.model, sizeof h.model, "%s", cfg->name);
        snprintf(h.protocol_name, sizeof h.protocol_name, "%s", ppl_protocol_name(plan->protocol));
        rc = kld_writer_open(&kw, kld_base_out, &h, &e);
        row = kld_writer_row, row_u = &kw;
    } else if (kld_in) {
        rc = kld_reader_open(&kr, kld_in, cfg->vocab_size, hash, &e);
        row = kld_reader_row, row_u = &kr;
    }
    if (rc == ERR_OK) {
        struct eval_progress prog;
        eval_progress_start(&prog, "chunks", plan->n_segments, !quiet);
        rc = ppl_run(plan, tokens, cfg->vocab_size, batch, ppl_engine_eval, en, row, row_u, &prog,
                     r, &e);
        eval_progress_end(&prog);
        if (kld_base_out) {
            int rc2 = kld_writer_close(&kw, &e);
            if (rc == ERR_OK) rc = rc2;
        } else if (kld_in) {
            if (ks) kld_reader_summary(&kr, ks);
            kld_reader_close(&kr);
        }
    }
    if (rc != ERR_OK) {
        fprintf(stderr, "error: %s\n", e.msg);
        return 1;
    }
    return 0;
}

int64_t eval_model_params(const struct engine *en) {
    const struct model_file *mf = engine_model_file(en);
    int64_t n = 0;
    for (int i = 0; i < mf->n_tensors; i++) {
        int64_t k = 1;
        for (int d = 0; d < mf->tensors[i].n_dims; d++) k *= mf->tensors[i].ne[d];
        n += k;
    }
    return n;
}

// ------------------------------------------------------------------------------------------------
// ./llm-eval sensitivity

struct sens_cfg {
    struct eval_model_args ma;
    const char *file, *out_dir;
    int bits, chunks, n_ctx, top, batch;
    bool quiet;
};

/* Loads with the given plan, runs the slice, returns PPL (NAN on failure); size/bpw optional. */
static double run_plan(const struct sens_cfg *c, const char *plan_spec, const struct ppl_plan *plan,
                       const int32_t *tok, double *mib, double *bpw) {
    struct eval_model_args a = c->ma;
    a.quant_bits = 0;
    a.bits_plan = plan_spec;
    struct engine *en = eval_load(&a, c->n_ctx, true);
    if (!en) return NAN;
    struct ppl_result r;
    int rc = eval_config_ppl(en, plan, tok, c->batch, true, NULL, NULL, &r, NULL);
    double w = (double)engine_weight_bytes(en);
    if (mib) *mib = w / 1048576.0;
    if (bpw) *bpw = 8.0 * w / (double)eval_model_params(en);
    engine_free(en);
    return rc == 0 ? nll_stats_ppl(&r.st) : NAN;
}

static int by_delta_desc(const void *a, const void *b, void *d) {
    const double *delta = d;
    int i = *(const int *)a, j = *(const int *)b;
    return delta[i] < delta[j] ? 1 : delta[i] > delta[j] ? -1 : i - j;
}

static void sort_idx(int *idx, int n, const double *delta) {   // insertion sort: n <= 1024
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && by_delta_desc(&idx[j - 1], &idx[j], (void *)delta) > 0; j--) {
            int t = idx[j];
            idx[j] = idx[j - 1];
            idx[j - 1] = t;
        }
}

int sensitivity_main(int argc, char **argv) {
    struct sens_cfg c = {.bits = 2, .chunks = 4, .n_ctx = 256, .top = -1, .batch = 512};
    for (int i = 1; i < argc;) {
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(f, "--bits") && v) c.bits = eval_atoi(f, v), i += 2;   // not a plan here
        else if (!strcmp(f, "-f") && v) c.file = v, i += 2;
        else if (!strcmp(f, "-o") && v) c.out_dir = v, i += 2;
        else if (!strcmp(f, "--chunks") && v) c.chunks = eval_atoi(f, v), i += 2;
        else if (!strcmp(f, "-c") && v) c.n_ctx = eval_atoi(f, v), i += 2;
        else if (!strcmp(f, "--top") && v) c.top = eval_atoi(f, v), i += 2;
        else if (!strcmp(f, "-b") && v) c.batch = eval_atoi(f, v), i += 2;
        else if (!strcmp(f, "--quiet")) c.quiet = true, i++;
        else {
            int r = eval_parse_model_flag(&c.ma, argc, argv, &i);
            if (r > 0) continue;
            fprintf(stderr, "usage: eval sensitivity -m MODEL -f TEXT [--bits 2] [--chunks 4] "
                            "[-c 256] [--top K] [--method rtn|opt] -o DIR\n");
            return 2;
        }
    }
    if (!c.ma.model || !c.file || !c.out_dir) {
        fprintf(stderr, "error: eval sensitivity needs -m, -f and -o\n");
        return 2;
    }
    if (mkdir(c.out_dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "error: cannot create %s\n", c.out_dir);
        return 1;
    }
    char *text = eval_read_file(c.file, NULL);
    if (!text) return 1;
    struct eval_model_args src = c.ma;
    src.quant_bits = 0;
    src.bits_plan = NULL;
    struct engine *en = eval_load(&src, c.n_ctx, c.quiet);
    if (!en) return 1;
    const int n_layers = engine_config(en)->n_layers;
    struct ppl_plan plan;
    int64_t n_tok = 0;
    int32_t *tok = ppl_prepare(en, PPL_LLAMACPP, text, c.n_ctx, c.chunks, false, &plan, &n_tok);
    free(text);
    if (!tok) return 1;
    struct ppl_result r0;
    if (eval_config_ppl(en, &plan, tok, c.batch, true, NULL, NULL, &r0, NULL)) return 1;
    double base = nll_stats_ppl(&r0.st);
    double base_mib = (double)engine_weight_bytes(en) / 1048576.0;
    engine_free(en);
    printf("sensitivity: %s, %d layers, %d-bit %s, slice %d chunks x %d (%lld scored tokens)\n",
           eval_basename(c.ma.model), n_layers, c.bits, c.ma.method ? c.ma.method : "opt",
           plan.n_segments, c.n_ctx, (long long)plan.n_scored);
    printf("source: PPL %.4f +/- %.4f\n", base, nll_stats_ppl_stderr(&r0.st));

    double *ppl = calloc((size_t)n_layers, sizeof *ppl), *delta = calloc((size_t)n_layers, sizeof *delta);
    int *idx = calloc((size_t)n_layers, sizeof *idx);
    char **labels = calloc((size_t)n_layers, sizeof *labels);
    bool *hi = calloc((size_t)n_layers, sizeof *hi);
    if (!ppl || !delta || !idx || !labels || !hi) return 1;
    struct eval_progress prog;
    eval_progress_start(&prog, "layers", n_layers, !c.quiet);
    for (int l = 0; l < n_layers; l++) {
        char spec[64];
        snprintf(spec, sizeof spec, "default=32,blk.%d=%d", l, c.bits);   // plan.h grammar
        ppl[l] = run_plan(&c, spec, &plan, tok, NULL, NULL);
        delta[l] = ppl[l] - base;
        idx[l] = l;
        labels[l] = malloc(16);
        if (labels[l]) snprintf(labels[l], 16, "%d", l);
        eval_progress_update(&prog, l + 1, "dPPL", delta[l]);
    }
    eval_progress_end(&prog);

    char path[4096];
    snprintf(path, sizeof path, "%s/sensitivity.csv", c.out_dir);
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "error: cannot write %s\n", path);
        return 1;
    }
    fprintf(f, "layer,ppl,delta\n");
    for (int l = 0; l < n_layers; l++) fprintf(f, "%d,%.6f,%.6f\n", l, ppl[l], delta[l]);
    fclose(f);
    printf("wrote %s\n", path);

    sort_idx(idx, n_layers, delta);
    int top = c.top >= 0 ? c.top : (n_layers + 3) / 4;   // default: a quarter of the layers
    if (top > n_layers) top = n_layers;
    for (int k = 0; k < top; k++) hi[idx[k]] = true;
    char title[256], legend[64];
    snprintf(title, sizeof title, "%s: PPL increase when one layer is quantized to %d bits "
             "(source PPL %.3f)", eval_basename(c.ma.model), c.bits, base);
    snprintf(legend, sizeof legend, "top %d: kept at 8 bits", top);
    snprintf(path, sizeof path, "%s/sensitivity.svg", c.out_dir);
    if (svg_bar_chart(path, title, "layer (blk.L)", "delta PPL vs source", (const char *const *)labels,
                      delta, n_layers, hi, legend) == 0)
        printf("wrote %s\n", path);

    // proposed plans: embeddings/output at 8 bits (the per-layer sweep did not measure them)
    size_t cap = 64 + 16 * (size_t)n_layers;
    char *uniform = malloc(cap), *uniform8 = malloc(cap), *mixed = malloc(cap);
    if (!uniform || !uniform8 || !mixed) return 1;
    snprintf(uniform, cap, "default=%d", c.bits);
    snprintf(uniform8, cap, "default=%d,token_embd=8,output=8", c.bits);
    int o = snprintf(mixed, cap, "default=%d,token_embd=8,output=8", c.bits);
    for (int k = 0; k < top; k++) o += snprintf(mixed + o, cap - (size_t)o, ",blk.%d=8", idx[k]);
    printf("\nmost sensitive layers:");
    for (int k = 0; k < n_layers && k < 8; k++) printf(" %d (%+.3f)", idx[k], delta[idx[k]]);
    printf("\n\n| plan | weights MiB | bits/weight | PPL | delta |\n|---|---:|---:|---:|---:|\n");
    printf("| source | %.2f | - | %.4f | 0 |\n", base_mib, base);
    const char *specs[3] = {uniform, uniform8, mixed};
    snprintf(path, sizeof path, "%s/plans.md", c.out_dir);
    FILE *pm = fopen(path, "w");
    if (pm) fprintf(pm, "| plan | weights MiB | bits/weight | PPL | delta |\n|---|---:|---:|---:|---:|\n"
                        "| source | %.2f | - | %.4f | 0 |\n", base_mib, base);
    for (int k = 0; k < 3; k++) {
        double mib = 0, bpw = 0, p = run_plan(&c, specs[k], &plan, tok, &mib, &bpw);
        printf("| `%s` | %.2f | %.3f | %.4f | %+.4f |\n", specs[k], mib, bpw, p, p - base);
        if (pm) fprintf(pm, "| `%s` | %.2f | %.3f | %.4f | %+.4f |\n", specs[k], mib, bpw, p, p - base);
    }
    if (pm) fclose(pm);
    printf("\nproposed plan: --bits \"%s\"\n", mixed);
    for (int l = 0; l < n_layers; l++) free(labels[l]);
    free(labels), free(ppl), free(delta), free(idx), free(hi);
    free(uniform), free(uniform8), free(mixed);
    ppl_plan_free(&plan);
    free(tok);
    return 0;
}
