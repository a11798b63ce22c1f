/* eval/report.c: ./llm-eval report, the quantization ladder (source, 8, 4, 3, 2 bits x RTN/opt) as a
 * Markdown table (size, bits/weight, PPL llama.cpp and GPTQ protocols, KLD vs source, ARC, prefill
 * and decode tok/s, peak RSS) plus an SVG of PPL vs size. Each configuration runs in a forked child,
 * so that its peak RSS (wait4 rusage) is its own. docs/EVAL.md */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "eval/arc.h"
#include "eval/report.h"
#include "eval/svg.h"

struct rep_cfg {
    struct eval_model_args ma;
    const char *file, *out, *arc;
    int chunks, gptq_chunks, n_ctx, gptq_ctx, arc_limit, batch;
    bool quiet, no_rtn;
};

struct rep_row {   // sent from the child through a pipe: plain data only
    int ok, bits;
    char name[32], method[8];
    double mib, bpw, load_s;
    double ppl, ppl_se, gptq, gptq_se;
    double kld, kld_se, top1;
    int arc_n, arc_k;
    double prefill_tps, decode_tps, rss_mib;
};

struct rep_data {   // tokenized once in the parent, inherited by the children
    int32_t *tok_l, *tok_g;
    struct ppl_plan plan_l, plan_g;
    char kld_path[4200];
};

/* Prefill: best of 2 forward passes of 128 tokens at position 0; decode: 32 single-token steps
 * after a 16-token prompt. Both ask for the last logits only, as generation does. */
static void measure_speed(struct engine *en, const int32_t *tok, int n_avail, struct rep_row *row) {
    const int vocab = engine_config(en)->vocab_size;
    int n = n_avail < 128 ? n_avail : 128, n_dec = 32;
    if (n > engine_n_ctx(en)) n = engine_n_ctx(en);
    if (16 + n_dec > engine_n_ctx(en)) n_dec = engine_n_ctx(en) - 16;
    float *logits = malloc((size_t)vocab * sizeof *logits);
    struct err e = {0};
    if (!logits || n < 16 || n_dec < 1) {
        free(logits);
        return;
    }
    double best = INFINITY;
    for (int rep = 0; rep < 2; rep++) {
        double t0 = eval_now();
        if (engine_forward(en, tok, n, 0, logits, false, &e) != ERR_OK) break;
        double dt = eval_now() - t0;
        if (dt < best) best = dt;
    }
    row->prefill_tps = isfinite(best) ? n / best : 0;
    if (engine_forward(en, tok, 16, 0, logits, false, &e) == ERR_OK) {
        double t0 = eval_now();
        int k = 0;
        for (; k < n_dec; k++)
            if (engine_forward(en, tok + 16 + (k % (n_avail - 16)), 1, 16 + k, logits, false, &e))
                break;
        double dt = eval_now() - t0;
        row->decode_tps = k > 0 && dt > 0 ? k / dt : 0;
    }
    free(logits);
}

static void run_child(const struct rep_cfg *c, const struct rep_data *d, struct rep_row *row) {
    struct eval_model_args a = c->ma;
    a.quant_bits = row->bits;
    a.method = row->method[0] ? row->method : NULL;
    int n_ctx = c->n_ctx > c->gptq_ctx ? c->n_ctx : c->gptq_ctx;
    if (c->arc && n_ctx < 1024) n_ctx = 1024;
    double t0 = eval_now();
    struct engine *en = eval_load(&a, n_ctx, true);
    if (!en) return;
    row->load_s = eval_now() - t0;
    double w = (double)engine_weight_bytes(en);
    row->mib = w / 1048576.0;
    row->bpw = 8.0 * w / (double)eval_model_params(en);
    struct ppl_result r;
    struct kld_summary ks = {0};
    bool src = row->bits == 0;
    if (!c->quiet) fprintf(stderr, "[%s] llama.cpp protocol\n", row->name);
    if (eval_config_ppl(en, &d->plan_l, d->tok_l, c->batch, c->quiet, src ? d->kld_path : NULL,
                        src ? NULL : d->kld_path, &r, &ks))
        goto done;
    row->ppl = nll_stats_ppl(&r.st);
    row->ppl_se = nll_stats_ppl_stderr(&r.st);
    row->kld = src ? 0 : ks.mean;
    row->kld_se = src ? 0 : ks.stderr_mean;
    row->top1 = src ? 100 : ks.top1_pct;
    if (d->tok_g) {
        if (!c->quiet) fprintf(stderr, "[%s] GPTQ protocol\n", row->name);
        if (eval_config_ppl(en, &d->plan_g, d->tok_g, c->batch, c->quiet, NULL, NULL, &r, NULL))
            goto done;
        row->gptq = nll_stats_ppl(&r.st);
        row->gptq_se = nll_stats_ppl_stderr(&r.st);
    }
    if (c->arc) {
        struct arc_result ar;
        if (arc_run_file(en, c->arc, c->arc_limit, c->quiet, &ar) != 0) goto done;
        row->arc_n = ar.n;
        row->arc_k = ar.correct;
    }
    measure_speed(en, d->tok_l, (int)(d->plan_l.seg[0].n), row);
    row->ok = 1;
done:
    engine_free(en);
}

/* Runs one configuration in a child process; fills row (row->ok = 0 on failure). */
static void run_config(const struct rep_cfg *c, const struct rep_data *d, struct rep_row *row) {
    int fd[2];
    if (pipe(fd) != 0) return;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        close(fd[0]);
        close(fd[1]);
        return;
    }
    if (pid == 0) {   // child
        close(fd[0]);
        run_child(c, d, row);
        ssize_t w = write(fd[1], row, sizeof *row);
        _exit(w == (ssize_t)sizeof *row ? 0 : 1);
    }
    close(fd[1]);
    struct rep_row got;
    size_t have = 0;
    while (have < sizeof got) {
        ssize_t k = read(fd[0], (char *)&got + have, sizeof got - have);
        if (k <= 0) break;
        have += (size_t)k;
    }
    close(fd[0]);
    int status = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    wait4(pid, &status, 0, &ru);
    if (have == sizeof got) *row = got;
    row->rss_mib = (double)ru.ru_maxrss / 1024.0;   // KiB on Linux
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) row->ok = 0;
}

static int prepare(const struct rep_cfg *c, struct rep_data *d) {
    char *text = eval_read_file(c->file, NULL);
    if (!text) return 1;
    struct engine_opts o = {.model_path = c->ma.model, .tokenizer_path = c->ma.tokenizer,
                            .vocab_only = true, .quiet = true};
    struct engine *en = NULL;
    struct err e = {0};
    if (engine_load(&en, &o, &e) != ERR_OK) {
        fprintf(stderr, "error: %s\n", e.msg);
        free(text);
        return 1;
    }
    int64_t n = 0;
    d->tok_l = ppl_prepare(en, PPL_LLAMACPP, text, c->n_ctx, c->chunks, false, &d->plan_l, &n);
    if (d->tok_l && c->gptq_chunks > 0)
        d->tok_g = ppl_prepare(en, PPL_GPTQ, text, c->gptq_ctx, c->gptq_chunks, false, &d->plan_g, &n);
    engine_free(en);   // no engine threads alive when forking
    free(text);
    return d->tok_l ? 0 : 1;
}

static void write_markdown(FILE *f, const struct rep_cfg *c, const struct rep_data *d,
                           const struct rep_row *rows, int n_rows, const char *svg_name) {
    fprintf(f, "# Quantization report: %s\n\n", eval_basename(c->ma.model));
    fprintf(f, "Text `%s`. PPL llama.cpp: -c %d, %d chunks, %lld scored tokens. ", eval_basename(c->file),
            d->plan_l.n_ctx, d->plan_l.n_segments, (long long)d->plan_l.n_scored);
    if (d->tok_g)
        fprintf(f, "PPL GPTQ: -c %d, %d chunks, %lld scored tokens. ", d->plan_g.n_ctx,
                d->plan_g.n_segments, (long long)d->plan_g.n_scored);
    fprintf(f, "KLD: mean over the llama.cpp scored positions, top-%d + rest partition (a lower "
               "bound of the full KLD). Speed: prefill = one 128-token forward pass (best of 2), "
               "decode = 32 single-token steps, threads %s. Peak RSS = the configuration's own "
               "process (load + every measurement).\n\n",
            KLD_TOPK, c->ma.n_threads ? "-t" : "all cores");
    fprintf(f, "| config | size MiB | bits/weight | PPL llama.cpp | PPL GPTQ | KLD vs source | same top-1 |%s"
               " prefill tok/s | decode tok/s | peak RSS MiB | load s |\n",
            c->arc ? " ARC-Easy acc |" : "");
    fprintf(f, "|---|---:|---:|---:|---:|---:|---:|%s---:|---:|---:|---:|\n", c->arc ? "---:|" : "");
    for (int i = 0; i < n_rows; i++) {
        const struct rep_row *r = &rows[i];
        if (!r->ok) {
            fprintf(f, "| %s | failed |\n", r->name);
            continue;
        }
        fprintf(f, "| %s | %.2f | %.3f | %.4f ± %.4f | ", r->name, r->mib, r->bpw, r->ppl, r->ppl_se);
        if (d->tok_g) fprintf(f, "%.4f ± %.4f | ", r->gptq, r->gptq_se);
        else fprintf(f, "- | ");
        if (r->bits == 0) fprintf(f, "0 | 100%% |");
        else fprintf(f, "%.5f ± %.5f | %.2f%% |", r->kld, r->kld_se, r->top1);
        if (c->arc) {
            double lo, hi;
            eval_wilson(r->arc_k, r->arc_n, &lo, &hi);
            fprintf(f, " %.3f [%.3f, %.3f] (%d/%d) |", r->arc_n ? (double)r->arc_k / r->arc_n : 0, lo,
                    hi, r->arc_k, r->arc_n);
        }
        fprintf(f, " %.1f | %.1f | %.0f | %.1f |\n", r->prefill_tps, r->decode_tps, r->rss_mib,
                r->load_s);
    }
    fprintf(f, "\n![PPL vs size](%s)\n", svg_name);
}

int report_main(int argc, char **argv) {
    struct rep_cfg c = {.chunks = 8, .gptq_chunks = 2, .n_ctx = 512, .gptq_ctx = 2048,
                        .arc_limit = 100, .batch = 512};
    for (int i = 1; i < argc;) {
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(f, "-f") && v) c.file = v, i += 2;
        else if (!strcmp(f, "-o") && v) c.out = v, i += 2;
        else if (!strcmp(f, "--chunks") && v) c.chunks = eval_atoi(f, v), i += 2;
        else if (!strcmp(f, "--gptq-chunks") && v) c.gptq_chunks = eval_atoi(f, v), i += 2;
        else if (!strcmp(f, "--gptq-ctx") && v) c.gptq_ctx = eval_atoi(f, v), i += 2;
        else if (!strcmp(f, "-c") && v) c.n_ctx = eval_atoi(f, v), i += 2;
        else if (!strcmp(f, "--arc") && v) c.arc = v, i += 2;
        else if (!strcmp(f, "--arc-limit") && v) c.arc_limit = eval_atoi(f, v), i += 2;
        else if (!strcmp(f, "-b") && v) c.batch = eval_atoi(f, v), i += 2;
        else if (!strcmp(f, "--no-rtn")) c.no_rtn = true, i++;
        else if (!strcmp(f, "--quiet")) c.quiet = true, i++;
        else {
            int r = eval_parse_model_flag(&c.ma, argc, argv, &i);
            if (r > 0) continue;
            fprintf(stderr, "usage: eval report -m MODEL -f wiki.test.raw [--chunks 8] [-c 512] "
                            "[--gptq-chunks 2] [--gptq-ctx 2048] [--arc FILE] [--arc-limit 100] "
                            "[--no-rtn] [-t N] -o REPORT.md\n");
            return 2;
        }
    }
    if (!c.ma.model || !c.file || !c.out) {
        fprintf(stderr, "error: eval report needs -m, -f and -o\n");
        return 2;
    }
    struct rep_data d;
    memset(&d, 0, sizeof d);
    snprintf(d.kld_path, sizeof d.kld_path, "%s.kld", c.out);
    if (prepare(&c, &d)) return 1;

    static const int ladder[4] = {8, 4, 3, 2};
    struct rep_row rows[9];
    int n_rows = 0;
    memset(rows, 0, sizeof rows);
    snprintf(rows[n_rows++].name, sizeof rows[0].name, "source");
    for (int k = 0; k < 4; k++)
        for (int m = c.no_rtn ? 1 : 0; m < 2; m++) {
            struct rep_row *r = &rows[n_rows++];
            r->bits = ladder[k];
            snprintf(r->method, sizeof r->method, "%s", m ? "opt" : "rtn");
            snprintf(r->name, sizeof r->name, "q%d %s", ladder[k], r->method);
        }
    for (int i = 0; i < n_rows; i++) {
        double t0 = eval_now();
        run_config(&c, &d, &rows[i]);
        const struct rep_row *r = &rows[i];
        fprintf(stderr, "%-8s %s  %.2f MiB  PPL %.4f  gptq %.4f  KLD %.5f  top1 %.1f%%  "
                        "%.0f/%.1f tok/s  RSS %.0f MiB  (%.0f s)\n",
                r->name, r->ok ? "ok" : "FAILED", r->mib, r->ppl, r->gptq, r->kld, r->top1,
                r->prefill_tps, r->decode_tps, r->rss_mib, eval_now() - t0);
        if (i == 0 && !r->ok) return 1;   // no base: nothing to compare with
    }

    // PPL vs size: one series per method, the source as its own point
    double xs[2][4], ys[2][4], x0 = rows[0].mib, y0 = rows[0].ppl;
    const char *lab[2][4];
    int ns[2] = {0, 0};
    for (int i = 1; i < n_rows; i++) {
        if (!rows[i].ok) continue;
        int m = strcmp(rows[i].method, "opt") == 0;
        xs[m][ns[m]] = rows[i].mib, ys[m][ns[m]] = rows[i].ppl, lab[m][ns[m]] = rows[i].name;
        ns[m]++;
    }
    const char *src_lab[1] = {"source"};
    struct svg_series ser[3] = {
        {.name = "source", .n = 1, .x = &x0, .y = &y0, .point_labels = src_lab},
        {.name = "RTN", .n = ns[0], .x = xs[0], .y = ys[0], .point_labels = lab[0]},
        {.name = "opt", .n = ns[1], .x = xs[1], .y = ys[1], .point_labels = lab[1]},
    };
    char svg[4200], title[256];
    snprintf(svg, sizeof svg, "%s.svg", c.out);
    snprintf(title, sizeof title, "%s: wikitext-2 PPL (llama.cpp protocol, -c %d, %d chunks) vs weight size",
             eval_basename(c.ma.model), d.plan_l.n_ctx, d.plan_l.n_segments);
    svg_line_plot(svg, title, "weights (MiB)", "perplexity (log scale)", ser, 3, true);
    FILE *f = fopen(c.out, "w");
    if (!f) {
        fprintf(stderr, "error: cannot write %s\n", c.out);
        return 1;
    }
    write_markdown(f, &c, &d, rows, n_rows, eval_basename(svg));
    fclose(f);
    write_markdown(stdout, &c, &d, rows, n_rows, eval_basename(svg));
    fprintf(stderr, "wrote %s and %s\n", c.out, svg);
    remove(d.kld_path);
    free(d.tok_l);
    free(d.tok_g);
    ppl_plan_free(&d.plan_l);
    if (d.tok_g) ppl_plan_free(&d.plan_g);
    return 0;
}
