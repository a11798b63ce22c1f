/* bench/bench_e2e.c: end-to-end speed through the public engine API, modelled on llama-bench.
 * pp: one engine_forward over a random prompt; tg: tokens one at a time after a 4-token prompt;
 * --no-kv-cache adds the naive decode that re-runs the whole prefix from position 0 every step.
 * Reports tok/s (mean +- sd over reps), GB/s of weights read and % of the measured roofline.
 * Run: ./llm-bench -m model.gguf -p 128 -n 32 -t 1,2 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <stdatomic.h>

#include "bench/bench.h"
#include "engine/engine.h"
#include "kernels/backend.h"
#include "kernels/cpu/matmul_kernels.h"
#include "kernels/cpu/threadpool.h"

#define TG_PROMPT 4   // tokens in the KV cache before a tg test starts timing

struct e2e_row {
    char model[128];
    double size_gib;          // engine_weight_bytes / 2^30
    double params;            // elements of every tensor in the file
    char type[24];
    int threads;
    char test[24];            // "pp512", "tg128"
    bool is_tg;
    struct bench_stats tps;   // tokens per second over reps
    struct bench_stats naive; // --no-kv-cache decode, tokens per second (n = 0 if not run)
    double gbs, pct;          // weight GB/s at the mean t/s; % of the roof (mem for tg, fma for pp)
    double roof_gbs, roof_gflops;   // the roof used (fresh: the higher of the probes before and after)
    double roof_before, roof_after; // fresh read probes around this engine's tests (0: cached roof)
    double pct_best;                // % of the roof of the fastest rep (fresh tg: the best rep ratio)
    double roof_lo, roof_hi;        // fresh / paired tg: the lowest and highest per-rep roof
    bool paired;                    // tg rated against paired read passes between the tokens
    const char *roof_kind;          // "mem" (tg), "fma" (pp, float weights) or "int8" (pp, int8 activations)
    double roof_gops;               // pp on int8 kernels: the int8 dot peak used
    size_t bytes_per_token, weight_bytes, kv_bytes, peak_rss;
    double load_s;
};

// ------------------------------------------------------------------------------------------------
// Model facts from the public API

/* Elements in every tensor of the file (llama-bench's "params"), and in the matrices a token
 * multiplies with (for the flop count: 2 flops per weight per token). */
static void count_params(struct engine *en, double *all, double *matmul) {
    const struct model_file *mf = engine_model_file(en);
    bool tied = engine_config(en)->tied_output;
    *all = *matmul = 0;
    for (int i = 0; i < mf->n_tensors; i++) {
        const struct tensor_view *v = &mf->tensors[i];
        double ne = 1;
        for (int k = 0; k < v->n_dims; k++) ne *= (double)v->ne[k];
        *all += ne;
        if (v->n_dims >= 2 && (strcmp(v->name, "token_embd.weight") != 0 || tied)) *matmul += ne;
    }
}

/* "q4_g64" for -q 4; else the file's type of a layer matrix (norms are f32 in every format), with
 * "->f32" appended when the engine stores it wider for compute (ggml q8_0/q4_0 are dequantized at
 * load), judged from the engine's bits per weight. */
static void type_name(struct engine *en, int quant_bits, double params, char *buf, size_t cap) {
    if (quant_bits > 0) {
        int qt = qtype_for_bits(quant_bits);
        snprintf(buf, cap, "%s", qt >= 0 ? qtype_traits[qt].name : "?");
        return;
    }
    const struct tensor_view *v = model_file_find(engine_model_file(en), "blk.0.ffn_down.weight");
    if (!v) {
        snprintf(buf, cap, "?");
        return;
    }
    double bpw = 8.0 * (double)engine_weight_bytes(en) / params, file_bpw = qtype_traits[v->type].bpw;
    const char *as = "";
    if (bpw > 1.5 * file_bpw) as = bpw > 24 ? "->f32" : "->f16";
    snprintf(buf, cap, "%s%s", qtype_traits[v->type].name, as);
}

/* Whether the engine's layer matrices run int8-activation kernels (the native q8/q4/q3/q2 types and
 * their X8 layouts): their prefill is rated against the int8 dot peak, not the fp32 FMA peak. */
static bool int8_compute(struct engine *en) {
    struct tensor_view *v = NULL;
    int n = 0;
    struct err e = {0};
    if (engine_compute_views(en, &v, &n, &e) != 0) return false;
    bool r = false;
    for (int i = 0; i < n; i++)
        if (!strcmp(v[i].name, "blk.0.ffn_down.weight")) r = mm_uses_xq8(v[i].type);
    free(v);
    return r;
}

static void fmt_params(double p, char *buf, size_t cap) {
    if (p >= 1e9) snprintf(buf, cap, "%.2f B", p / 1e9);
    else snprintf(buf, cap, "%.1f M", p / 1e6);
}

// ------------------------------------------------------------------------------------------------
// Paired read probe (--roof paired, the default on the CPU backend): after every decoded token, one
// read pass over the engine's own weight buffers (the very pages the kernels read), the bytes a token streams, on the engine's own
// thread pool. The shared host's bandwidth swings by 2x within seconds (a 545 MB read pass timed
// back to back gave 24-58 GB/s in 20 s on 2026-12-03), so a probe even one second away measures
// another machine; a pass ~20 ms after the token sees the same one. The pass cycles through the
// stream probe's plain, L2-prefetched and L2+L1-prefetched loops (the kernels' patterns); the roof
// of a rep is the fastest loop's bytes / time over that rep's passes.

#define PAIR_SEG_BYTES ((size_t)1 << 20)   // guided unit: 1 MiB (~40 us), the tail wait stays < 0.5%

struct pair_probe {
    struct threadpool *tp;
    const uint8_t **seg;   // the weights in forward order, cut into segments of <= PAIR_SEG_BYTES
    size_t *seg_bytes;
    int n_seg;
    size_t bytes;          // sum of seg_bytes
    int loop;              // 0 plain, 1 L2 prefetch, 2 L2 + L1 prefetch
    _Atomic int next;
    uint64_t sink[BENCH_MAX_THREADS * 8];
    double sec[3];         // this rep: time in each loop
    int passes[3];
};

static void pair_worker(void *arg, int ith, int nth) {
    struct pair_probe *pp = arg;
    const bool avx2 = __builtin_cpu_supports("avx2");
    uint64_t s = 0;
    (void)nth;
    for (int i; (i = atomic_fetch_add_explicit(&pp->next, 1, memory_order_relaxed)) < pp->n_seg;) {
        const uint64_t *w = (const uint64_t *)pp->seg[i];
        const size_t words = pp->seg_bytes[i] / 8;
        if (!avx2)
            for (size_t k = 0; k < words; k++) s += w[k];
        else
            s += pp->loop == 0 ? read_sum_avx2(w, words) : pp->loop == 1 ? read_sum_pf_l2_avx2(w, words)
                                                                        : read_sum_pf_l2l1_avx2(w, words);
    }
    pp->sink[ith * 8] += s;
}

static void pair_pass(struct pair_probe *pp) {
    atomic_store_explicit(&pp->next, 0, memory_order_relaxed);
    const double t0 = bench_now();
    threadpool_run(pp->tp, pair_worker, pp);
    pp->sec[pp->loop] += bench_now() - t0;
    pp->passes[pp->loop]++;
    pp->loop = (pp->loop + 1) % 3;
}

// this rep's roof, GB/s: the fastest loop (0 if a loop never ran)
static double pair_roof(const struct pair_probe *pp) {
    double best = 0;
    for (int k = 0; k < 3; k++)
        if (pp->passes[k] && pp->sec[k] > 0 && (double)pp->bytes * pp->passes[k] / pp->sec[k] / 1e9 > best)
            best = (double)pp->bytes * pp->passes[k] / pp->sec[k] / 1e9;
    return best;
}

static void pair_free(struct pair_probe *pp) {
    if (!pp) return;
    free(pp->seg);
    free(pp->seg_bytes);
    free(pp);
}

/* NULL (and a note on stderr) when the engine is not on the CPU backend or its weights are not in
 * host memory: --roof paired then falls back to fresh probes */
static struct pair_probe *pair_make(struct engine *en) {
    struct threadpool *tp = backend_cpu_pool(engine_backend(en));
    struct tensor_view *v = NULL;
    int n = 0;
    struct err e = {0};
    if (!tp || engine_compute_views(en, &v, &n, &e) != 0) {
        fprintf(stderr, "bench: paired read probe needs the CPU backend; using fresh probes\n");
        return NULL;
    }
    const bool tied = engine_config(en)->tied_output;
    struct pair_probe *pp = calloc(1, sizeof *pp);
    size_t cap = 0;
    for (int i = 0; i < n; i++) cap += v[i].nbytes / PAIR_SEG_BYTES + 1;
    if (pp) {
        pp->seg = malloc(cap * sizeof *pp->seg);
        pp->seg_bytes = malloc(cap * sizeof *pp->seg_bytes);
    }
    if (!pp || !pp->seg || !pp->seg_bytes) {
        free(v);
        pair_free(pp);
        return NULL;
    }
    pp->tp = tp;
    // forward order: the layers, then the final norm and the head (views list the embedding, the
    // final norm and an untied head first); the embedding table is read only as a tied head, as in
    // engine_weight_bytes_per_token
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < n; i++) {
            const bool global = strncmp(v[i].name, "blk.", 4) != 0;
            if (global != (pass == 1)) continue;
            if (!strcmp(v[i].name, "token_embd.weight") && !tied) continue;
            for (size_t off = 0; off < v[i].nbytes; off += PAIR_SEG_BYTES) {
                const size_t b = v[i].nbytes - off < PAIR_SEG_BYTES ? v[i].nbytes - off : PAIR_SEG_BYTES;
                pp->seg[pp->n_seg] = (const uint8_t *)v[i].data + off;
                pp->seg_bytes[pp->n_seg++] = b & ~(size_t)7;
                pp->bytes += b & ~(size_t)7;
            }
        }
    free(v);
    return pp;
}

// ------------------------------------------------------------------------------------------------
// Tests

static int run_pp(struct engine *en, int n, struct bench_rng *g, float *logits, double *sec,
                  struct err *e) {
    int vocab = engine_config(en)->vocab_size;
    int32_t *tok = malloc((size_t)n * sizeof *tok);
    if (!tok) return ERR(e, ERR_OOM, "prompt");
    for (int i = 0; i < n; i++) tok[i] = (int32_t)(bench_rng_u64(g) % (uint64_t)vocab);
    double t0 = bench_now();
    int rc = engine_forward(en, tok, n, 0, logits, false, e);
    *sec = bench_now() - t0;
    free(tok);
    return rc;
}

/* Decode n tokens after TG_PROMPT + depth (prefilled in one untimed forward). naive: every step runs the whole sequence from position 0 (the
 * KV cache is simply overwritten), i.e. what generation costs without a cache. */
static int run_tg(struct engine *en, int n, int depth, bool naive, struct bench_rng *g, float *logits,
                  double *sec, struct pair_probe *pp, struct err *e) {
    const int pre = TG_PROMPT + depth;
    int vocab = engine_config(en)->vocab_size, len = pre + n;
    int32_t *tok = malloc((size_t)len * sizeof *tok);
    if (!tok) return ERR(e, ERR_OOM, "tokens");
    for (int i = 0; i < len; i++) tok[i] = (int32_t)(bench_rng_u64(g) % (uint64_t)vocab);
    int rc = naive ? 0 : engine_forward(en, tok, pre, 0, logits, false, e);
    if (pp) {   // paired: a probe pass before the first token and after every token; tokens timed alone
        memset(pp->sec, 0, sizeof pp->sec);
        memset(pp->passes, 0, sizeof pp->passes);
        pair_pass(pp);
    }
    *sec = 0;
    double t0 = bench_now();
    for (int i = 0; !rc && i < n; i++) {
        int pos = pre + i;
        rc = naive ? engine_forward(en, tok, pos + 1, 0, logits, false, e)
                   : engine_forward(en, tok + pos, 1, pos, logits, false, e);
        if (pp) {
            *sec += bench_now() - t0;
            pair_pass(pp);
            t0 = bench_now();
        }
    }
    if (!pp) *sec = bench_now() - t0;
    free(tok);
    return rc;
}

// the process's peak RSS outside the probes' buffers: the high-water mark is read before each probe
// and reset after it
static size_t g_peak_model;
static double probe_read(int threads) {
    size_t p = bench_peak_rss();
    if (p > g_peak_model) g_peak_model = p;
    double gbs = stream_read_roof(threads);
    bench_reset_peak_rss();
    return gbs;
}

/* roof (NULL: none): a read probe before the first rep and after every rep, roof[0 .. reps], so
 * each rep has the probes on either side of it. pp (tg only, NULL: none): paired probe passes
 * between the tokens, and pair_roof[r] = rep r's roof (GB/s) */
static int measure(struct engine *en, bool is_tg, bool naive, int n, int depth, int reps, struct bench_rng *g,
                   float *logits, struct bench_stats *out, double *tps, double *roof, int threads,
                   struct pair_probe *pp, double *pair_roof_out, struct err *e) {
    if (roof && (roof[0] = probe_read(threads)) < 0) return ERR(e, ERR_OOM, "bandwidth probe buffer");
    for (int r = 0; r < reps; r++) {
        double sec = 0;
        int rc = is_tg ? run_tg(en, n, depth, naive, g, logits, &sec, pp, e) : run_pp(en, n, g, logits, &sec, e);
        if (rc) return rc;
        tps[r] = n / sec;
        if (pp) {
            pair_roof_out[r] = pair_roof(pp);
            fprintf(stderr, "  tg%d rep %d/%d: %.2f t/s, paired read probe %.1f GB/s\n", n, r + 1, reps, tps[r],
                    pair_roof_out[r]);
        } else {
            fprintf(stderr, "  %s%d%s rep %d/%d: %.2f t/s\n", is_tg ? "tg" : "pp", n, naive ? " (no KV cache)" : "",
                    r + 1, reps, tps[r]);
        }
        if (roof && (roof[r + 1] = probe_read(threads)) < 0) return ERR(e, ERR_OOM, "bandwidth probe buffer");
    }
    *out = bench_stats_of(tps, reps);
    return 0;
}

// ------------------------------------------------------------------------------------------------
// Output

static void print_md(const struct e2e_row *rows, int n, bool naive, const struct stream_result *sr) {
    // best = the fastest rep: on a shared host the mean includes other tenants' memory traffic
    printf("| model | size | params | type | threads | test | t/s | GB/s | %%roof | best t/s | %%roof best |%s\n",
           naive ? " t/s (no KV cache) | KV speedup |" : "");
    printf("| ----- | ---: | -----: | ---- | ------: | ---- | --: | ---: | ----: | -------: | ---------: |%s\n",
           naive ? " ---------------: | ---------: |" : "");
    for (int i = 0; i < n; i++) {
        const struct e2e_row *r = &rows[i];
        char params[32];
        fmt_params(r->params, params, sizeof params);
        printf("| %s | %.2f GiB | %s | %s | %d | %s | %.2f ± %.2f | %.2f | %.1f%% %s | %.2f | %.1f%% |", r->model,
               r->size_gib, params, r->type, r->threads, r->test, r->tps.mean,
               r->tps.stddev, r->gbs, r->pct, r->roof_kind, r->tps.max, r->pct_best);
        if (naive) {
            if (r->naive.n) printf(" %.2f ± %.2f | %.2fx |", r->naive.mean, r->naive.stddev,
                                   r->tps.mean / r->naive.mean);
            else printf(" - | - |");
        }
        printf("\n");
    }
    printf("\n");
    for (int i = 0; i < n; i++) {
        if (i > 0 && rows[i].threads == rows[i - 1].threads && !strcmp(rows[i].type, rows[i - 1].type))
            continue;
        const struct e2e_row *r = &rows[i];
        printf("- %s, %s, %d thread(s): weights %.3f GB, read per token %.3f GB, KV cache %.2f MiB, "
               "peak RSS %.2f GiB, load %.1f s\n", r->model, r->type, r->threads, r->weight_bytes / 1e9,
               r->bytes_per_token / 1e9, r->kv_bytes / 1048576.0, r->peak_rss / 1073741824.0, r->load_s);
    }
    if (n && rows[0].roof_before > 0) {
        bool any_paired = false, any_fresh = false;
        for (int i = 0; i < n; i++) any_paired |= rows[i].paired, any_fresh |= rows[i].is_tg && !rows[i].paired;
        printf("- roofline: %s;", sr->cpu);
        if (any_paired)
            printf(" tg (paired) = the mean over reps of each rep's GB/s / the read rate of its paired passes "
                   "(after every token, one read pass over the engine's weights on its threads; plain, L2- and "
                   "L2+L1-prefetched loops in turn, the fastest counts);");
        if (any_fresh)
            printf(" tg (fresh) = the mean over reps of each rep's GB/s / the higher of the read probes "
                   "(./llm-bench --stream's read loops, best of four) just before and after it;");
        printf(" pp = vs the higher FMA probe (as --stream) before / after the model's tests:");
        for (int i = 0; i < n; i++) {
            const struct e2e_row *r = &rows[i];
            if (r->is_tg && r->roof_hi > 0)
                printf(" %s %d thr %s: read %.1f-%.1f GB/s%s;", r->type, r->threads, r->test, r->roof_lo, r->roof_hi,
                       r->paired ? " (paired)" : "");
            else if (!r->is_tg)
                printf(" %s %d thr %s: %.0f %s;", r->type, r->threads, r->test, r->roof_gops > 0 ? r->roof_gops : r->roof_gflops,
                       r->roof_gops > 0 ? "int8 GOP/s" : "GFLOP/s");
        }
    } else {
        printf("- roofline (cached, --roof cached): %s; read roof per thread count:", sr->cpu);
        for (int i = 0; i < sr->n; i++)
            printf(" %d: %.1f GB/s / %.0f GFLOP/s;", sr->threads[i], sr->read_gbs[i], sr->fma_gflops[i]);
    }
    printf("\n- %%roof: tg = GB/s / read roof (mem); pp = 2 x matmul params x t/s / the fp32 FMA peak (fma) or, for "
           "int8-activation kernels, the int8 dot peak (int8: VPDPBUSD, else VPMADDUBSW + VPMADDWD; AMX is faster still)\n");
}

static void print_csv(const struct e2e_row *rows, int n) {
    printf("model,size_bytes,params,type,threads,test,tps_mean,tps_sd,tps_median,reps,gbs,pct_roof,"
           "roof,naive_tps_mean,naive_tps_sd,bytes_per_token,kv_bytes,peak_rss,load_s,roof_gbs,roof_gflops,roof_gops\n");
    for (int i = 0; i < n; i++) {
        const struct e2e_row *r = &rows[i];
        printf("%s,%zu,%.0f,%s,%d,%s,%.4f,%.4f,%.4f,%d,%.3f,%.2f,%s,%.4f,%.4f,%zu,%zu,%zu,%.2f,%.3f,%.1f,%.1f\n",
               r->model, r->weight_bytes, r->params, r->type, r->threads, r->test, r->tps.mean,
               r->tps.stddev, r->tps.median, r->tps.n, r->gbs, r->pct, r->roof_kind,
               r->naive.mean, r->naive.stddev, r->bytes_per_token, r->kv_bytes, r->peak_rss, r->load_s,
               r->roof_gbs, r->roof_gflops, r->roof_gops);
    }
}

static void print_json(const struct e2e_row *rows, int n) {
    printf("[\n");
    for (int i = 0; i < n; i++) {
        const struct e2e_row *r = &rows[i];
        printf("  {\"model\": \"%s\", \"size_bytes\": %zu, \"params\": %.0f, \"type\": \"%s\", "
               "\"threads\": %d, \"test\": \"%s\", \"tps_mean\": %.4f, \"tps_sd\": %.4f, "
               "\"tps_median\": %.4f, \"reps\": %d, \"gbs\": %.3f, \"pct_roof\": %.2f, "
               "\"roof\": \"%s\", \"naive_tps_mean\": %.4f, \"naive_tps_sd\": %.4f, "
               "\"bytes_per_token\": %zu, \"kv_bytes\": %zu, \"peak_rss\": %zu, \"load_s\": %.2f, "
               "\"roof_gbs\": %.3f, \"roof_gflops\": %.1f, \"roof_gops\": %.1f}%s\n",
               r->model, r->weight_bytes, r->params, r->type, r->threads, r->test, r->tps.mean,
               r->tps.stddev, r->tps.median, r->tps.n, r->gbs, r->pct, r->roof_kind,
               r->naive.mean, r->naive.stddev, r->bytes_per_token, r->kv_bytes, r->peak_rss,
               r->load_s, r->roof_gbs, r->roof_gflops, r->roof_gops, i + 1 < n ? "," : "");
    }
    printf("]\n");
}

// ------------------------------------------------------------------------------------------------
// Driver

static void model_label(const char *path, const struct model_config *c, char *buf, size_t cap) {
    if (c->name[0]) {
        snprintf(buf, cap, "%s", c->name);
        return;
    }
    const char *s = strrchr(path, '/');
    snprintf(buf, cap, "%s", s ? s + 1 : path);
}

/* The label goes into csv and json unquoted/unescaped: keep it to characters that need neither. */
static void sanitize(char *s) {
    for (; *s; s++)
        if (*s == '"' || *s == '\\' || *s == ',' || (unsigned char)*s < 0x20) *s = '_';
}

// A read/FMA probe now, for nt threads (stream_measure, 2 passes over its buffer): the machine's
// bandwidth drifts by 10-20% within an hour on a shared host, so a ratio against a roof measured
// at another time says as much about the neighbours as about the kernels
static int fresh_roof(int nt, struct roofline *rf) {
    struct stream_result s;
    fprintf(stderr, "bench: read-bandwidth probe (%d thread(s))\n", nt);
    if (stream_measure(&s, &nt, 1, 0, 2, false) != 0) return -1;
    *rf = stream_roofline(&s, nt);
    return 0;
}

int bench_e2e_run(const struct bench_e2e_opts *o) {
    int max_t = 1, max_len = TG_PROMPT;
    for (int i = 0; i < o->n_threads; i++) max_t = o->threads[i] > max_t ? o->threads[i] : max_t;
    for (int i = 0; i < o->n_pp; i++) max_len = o->pp[i] > max_len ? o->pp[i] : max_len;
    for (int i = 0; i < o->n_tg; i++)
        max_len = TG_PROMPT + o->depth + o->tg[i] > max_len ? TG_PROMPT + o->depth + o->tg[i] : max_len;
    struct stream_result sr;
    if (stream_get(&sr, max_t) != 0) return 1;
    int cap = o->n_quant * o->n_threads * (o->n_pp + o->n_tg), n_rows = 0;
    struct e2e_row *rows = calloc((size_t)(cap > 0 ? cap : 1), sizeof *rows);
    if (!rows) return 1;
    struct bench_rng g;
    bench_rng_seed(&g, o->seed);
    int rc = 0;
    for (int qi = 0; qi < o->n_quant && !rc; qi++) {
        for (int ti = 0; ti < o->n_threads && !rc; ti++) {
            struct engine_opts eo = {.model_path = o->model_path, .n_ctx = max_len,
                                     .n_threads = o->threads[ti], .quant_bits = o->quant_bits[qi],
                                     .n_gpu_layers = o->n_gpu_layers, .quiet = true,
                                     .quant_method = o->quant_method};
            struct engine *en = NULL;
            struct err e = {0};
            // the first probe runs before the load, and the peak-RSS mark is reset after it, so
            // its 1 GiB buffer is not counted as the model's memory
            struct roofline before = stream_roofline(&sr, o->threads[ti]);
            if (!o->roof_cached) {
                if (fresh_roof(o->threads[ti], &before) != 0) { rc = 1; break; }
                bench_reset_peak_rss();
            }
            fprintf(stderr, "bench: loading %s (threads %d, -q %d)\n", o->model_path, o->threads[ti],
                    o->quant_bits[qi]);
            if ((rc = engine_load(&en, &eo, &e))) {
                fprintf(stderr, "bench: %s\n", e.msg);
                break;
            }
            const struct model_config *c = engine_config(en);
            float *logits = malloc((size_t)c->vocab_size * sizeof *logits);
            struct e2e_row base = {.threads = o->threads[ti],
                                   .size_gib = engine_weight_bytes(en) / 1073741824.0,
                                   .bytes_per_token = engine_weight_bytes_per_token(en),
                                   .weight_bytes = engine_weight_bytes(en),
                                   .kv_bytes = engine_kv_bytes(en), .load_s = engine_load_seconds(en)};
            double mm_params;
            count_params(en, &base.params, &mm_params);
            model_label(o->model_path, c, base.model, sizeof base.model);
            sanitize(base.model);
            type_name(en, o->quant_bits[qi], base.params, base.type, sizeof base.type);
            struct roofline rf = stream_roofline(&sr, o->threads[ti]);
            struct pair_probe *pp = o->roof_paired && !o->roof_cached && o->n_tg ? pair_make(en) : NULL;
            const int row0 = n_rows;
            const bool int8 = int8_compute(en);
            double warm;   // one short untimed pass: page faults, thread wake-up (llama-bench does too)
            if (!logits || (rc = run_pp(en, TG_PROMPT, &g, logits, &warm, &e))) {
                fprintf(stderr, "bench: %s\n", logits ? e.msg : "out of memory");
                pair_free(pp);
                free(logits);
                engine_free(en);
                rc = rc ? rc : 1;
                break;
            }
            for (int k = 0; k < o->n_pp + o->n_tg && !rc; k++) {
                struct e2e_row *r = &rows[n_rows];
                *r = base;
                r->is_tg = k >= o->n_pp;
                int n = r->is_tg ? o->tg[k - o->n_pp] : o->pp[k];
                if (r->is_tg && o->depth > 0) snprintf(r->test, sizeof r->test, "tg%d @ d%d", n, o->depth);
                else snprintf(r->test, sizeof r->test, "%s%d", r->is_tg ? "tg" : "pp", n);
                double tps[BENCH_MAX_REPS], roof[BENCH_MAX_REPS + 1], tps_naive[BENCH_MAX_REPS];
                const bool paired = r->is_tg && pp, per_rep = r->is_tg && !o->roof_cached && !pp;
                rc = measure(en, r->is_tg, false, n, r->is_tg ? o->depth : 0, o->reps, &g, logits, &r->tps, tps, per_rep ? roof : NULL,
                             o->threads[ti], paired ? pp : NULL, roof, &e);
                if (!rc && r->is_tg && o->no_kv_cache)
                    rc = measure(en, true, true, n, o->depth, o->reps, &g, logits, &r->naive, tps_naive, NULL, o->threads[ti],
                                 NULL, NULL, &e);
                if (!rc && (per_rep || paired)) {   // each rep against its paired passes / the higher probe beside it
                    double sum = 0, best = 0, lo = 1e30, hi = 0;
                    for (int k = 0; k < o->reps; k++) {
                        const double rr = paired ? roof[k] : roof[k] > roof[k + 1] ? roof[k] : roof[k + 1];
                        const double pct = 100.0 * (double)r->bytes_per_token * tps[k] / 1e9 / rr;
                        sum += pct;
                        best = pct > best ? pct : best;
                    }
                    for (int k = 0; k < o->reps + !paired; k++) {
                        lo = roof[k] < lo ? roof[k] : lo;
                        hi = roof[k] > hi ? roof[k] : hi;
                    }
                    r->paired = paired;
                    r->pct = sum / o->reps;
                    r->pct_best = best;
                    r->roof_lo = lo;
                    r->roof_hi = hi;
                }
                if (rc) {
                    fprintf(stderr, "bench: %s\n", e.msg);
                    break;
                }
                r->peak_rss = bench_peak_rss() > g_peak_model ? bench_peak_rss() : g_peak_model;
                n_rows++;
            }
            struct roofline after = rf;
            if (!rc && !o->roof_cached && fresh_roof(o->threads[ti], &after) != 0) rc = 1;
            if (!o->roof_cached) {   // the higher probe of the two: the lower, conservative ratio
                rf.peak_gbs = before.peak_gbs > after.peak_gbs ? before.peak_gbs : after.peak_gbs;
                rf.peak_gflops = before.peak_gflops > after.peak_gflops ? before.peak_gflops : after.peak_gflops;
                rf.peak_gops = before.peak_gops > after.peak_gops ? before.peak_gops : after.peak_gops;
            }
            for (int k = row0; k < n_rows; k++) {
                struct e2e_row *r = &rows[k];
                const int n = atoi(r->test + 2);
                r->roof_gbs = rf.peak_gbs;
                r->roof_gflops = rf.peak_gflops;
                if (!o->roof_cached) r->roof_before = before.peak_gbs, r->roof_after = after.peak_gbs;
                if (r->is_tg) {   // every token streams all weights once: a bandwidth roof
                    r->gbs = (double)r->bytes_per_token * r->tps.mean / 1e9;
                    r->roof_kind = "mem";
                    if (r->roof_hi > 0) {   // per-rep probes (set above): the mean of the rep ratios
                        r->roof_gbs = (double)r->bytes_per_token * r->tps.mean / 1e9 / (r->pct / 100.0);
                        continue;
                    }
                    r->pct = 100.0 * r->gbs / rf.peak_gbs;
                    r->pct_best = r->tps.mean > 0 ? r->pct * r->tps.max / r->tps.mean : 0;
                } else {          // one pass reads the weights once for n tokens: a compute roof
                    r->gbs = (double)r->bytes_per_token * r->tps.mean / n / 1e9;
                    const bool i8 = int8 && rf.peak_gops > 0;
                    r->pct = 100.0 * 2.0 * mm_params * r->tps.mean / 1e9 / (i8 ? rf.peak_gops : rf.peak_gflops);
                    r->pct_best = r->tps.mean > 0 ? r->pct * r->tps.max / r->tps.mean : 0;
                    r->roof_kind = i8 ? "int8" : "fma";
                    r->roof_gops = i8 ? rf.peak_gops : 0;
                }
            }
            pair_free(pp);
            free(logits);
            engine_free(en);
        }
    }
    if (n_rows) {
        if (o->fmt == FMT_MD) print_md(rows, n_rows, o->no_kv_cache, &sr);
        else if (o->fmt == FMT_CSV) print_csv(rows, n_rows);
        else print_json(rows, n_rows);
    }
    free(rows);
    return rc ? 1 : 0;
}
