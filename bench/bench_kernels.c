/* bench/bench_kernels.c: cpu_matmul microbenchmarks (STYLE.md section 6) for every weight type the CPU
 * supports at TinyLlama shapes, t = 1 (matvec) and t = 128 (matmul). Each row is first checked
 * against the CPU_ISA_REF result, then timed: 3 warm-ups, >= 0.5 s of reps, median and min, matvec
 * weights rotated among copies totalling >= 128 MB so every rep reads from DRAM.
 * Run: ./llm-bench --kernels [--filter matvec] [-t N]; docs/BENCH.md */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/matmul_kernels.h"
#include "quant/repack.h"

// the X8 layouts are what the engine runs on AVX-512 VNNI CPUs (quant/repack.h); the natural ones
// elsewhere, and on AVX-512 for tensors whose row is not a multiple of 512
static const enum qtype kernel_types[] = {QT_F32,    QT_F16,    QT_Q8_G64, QT_Q4_G64, QT_Q3_G64,
                                          QT_Q2_G64, QT_Q8_X8,  QT_Q4_X8,  QT_Q3_X8,  QT_Q2_X8};
static const int64_t kernel_shapes[][2] = {   // {n, d}: out(t, d) = x(t, n) @ W(d, n)^T
    {2048, 2048},   // wq, wo
    {2048, 256},    // wk, wv (4 kv heads x 64)
    {2048, 5632},   // w1, w3
    {5632, 2048},   // w2
    {2048, 32000},  // output head
};
static const int kernel_tokens[] = {1, 128};

// matvec rotation: max(128 MB, 3 x LLC), so a copy was last touched > 2 LLC sizes ago (the dev VM
// reports a 480 MiB L3)
static size_t rotate_bytes(void) {
    size_t b = 3 * bench_llc_bytes();
    return b > ((size_t)128 << 20) ? b : (size_t)128 << 20;
}
#define MAX_COPIES 16384   // 2048x256 q2_g64 (164 KB) needs ~9000 for a 1.4 GB rotation
#define REF_MAX_ROWS 256                   // rows checked against the scalar reference for t > 1

struct kernel_row {
    const char *op;
    enum qtype wt;
    int64_t n, d, t;
    int threads;
    double err_rel;     // max |got - ref| / S over checked outputs, S = sum_k |x_k w_k|
    double err_ratio;   // max |got - ref| / tol (must be <= 1)
    struct bench_stats st;
    int reps;
    double gbs, gflops, pct;
    bool mem_bound, ok;
};

// ------------------------------------------------------------------------------------------------
// Verification against the scalar reference

/* Compares got (t x d) with the reference on the first d_ref rows and all t tokens.
 * Reduction rule (STYLE.md 5): tol = atol + 8 sqrt(K) eps S with S = sum_k |x_k w_k| using the
 * dequantized weights; K = n. The reference runs the same int8 activation quantization as the fast
 * path, so only the summation order differs. */
static bool verify(struct threadpool *tp, struct kernel_row *r, const float *x, const void *w,
                   const float *got) {
    int64_t n = r->n, d = r->d, t = r->t;
    int64_t d_ref = t > 1 && d > REF_MAX_ROWS ? REF_MAX_ROWS : d;
    float *ref = malloc((size_t)(d_ref * t) * sizeof *ref);
    float *row = malloc((size_t)n * sizeof *row);
    if (!ref || !row) {
        free(ref);
        free(row);
        return false;
    }
    cpu_matmul(tp, CPU_ISA_REF, r->wt, ref, x, w, n, d_ref, t);
    size_t rb = qtype_row_bytes(r->wt, n);
    double worst_rel = 0, worst_ratio = 0;
    bool ok = true;
    for (int64_t i = 0; i < d_ref; i++) {
        qtype_traits[r->wt].dequantize_row(row, (const char *)w + (size_t)i * rb, n);
        for (int64_t j = 0; j < t; j++) {
            double s = 0;
            for (int64_t k = 0; k < n; k++) s += fabs((double)x[j * n + k] * row[k]);
            double tol = 1e-30 + 8.0 * sqrt((double)n) * FLT_EPSILON * s;
            double g = got[j * d + i], rf = ref[j * d_ref + i], err = fabs(g - rf);
            if (!(err <= tol)) ok = false;   // NaN fails
            if (!(err / tol <= worst_ratio)) worst_ratio = err / tol;
            if (s > 0 && !(err / s <= worst_rel)) worst_rel = err / s;
        }
    }
    r->err_rel = worst_rel;
    r->err_ratio = worst_ratio;
    free(ref);
    free(row);
    return ok;
}

// ------------------------------------------------------------------------------------------------
// Timing

static void time_row(struct threadpool *tp, enum cpu_isa isa, struct kernel_row *r, float *out,
                     const float *x, void **copies, int n_copies, double min_seconds) {
    for (int i = 0; i < 3; i++)   // warm-up: page faults, thread wake-up, frequency ramp
        cpu_matmul(tp, isa, r->wt, out, x, copies[i % n_copies], r->n, r->d, r->t);
    int cap = 1 << 16, n = 0;
    double *times = malloc((size_t)cap * sizeof *times), total = 0;
    if (!times) return;
    while ((total < min_seconds || n < 5) && n < cap) {
        const void *w = copies[(n + 3) % n_copies];   // rotate: never the copy used last
        double t0 = bench_now();
        cpu_matmul(tp, isa, r->wt, out, x, w, r->n, r->d, r->t);
        double dt = bench_now() - t0;
        times[n++] = dt;
        total += dt;
    }
    r->st = bench_stats_of(times, n);
    r->reps = n;
    free(times);
}

static void fill_roofline(struct kernel_row *r, struct roofline rf) {
    double bytes = (double)matmul_bytes(r->wt, r->n, r->d, r->t);
    double flops = matmul_flops(r->wt, r->n, r->d, r->t);
    double sec = r->st.median;
    r->gbs = bytes / sec / 1e9;
    r->gflops = flops / sec / 1e9;
    double ridge = rf.peak_gflops / rf.peak_gbs;   // flops per byte at the knee
    r->mem_bound = flops / bytes < ridge;
    r->pct = r->mem_bound ? 100.0 * r->gbs / rf.peak_gbs : 100.0 * r->gflops / rf.peak_gflops;
}

// ------------------------------------------------------------------------------------------------
// Output

static void print_header(enum bench_fmt fmt, enum cpu_isa isa, const struct stream_result *sr) {
    if (fmt == FMT_MD) {
        printf("cpu: %s, isa: %s; roofs from the stream cache (read GB/s, FMA GFLOP/s per thread "
               "count)\n\n", sr->cpu, cpu_isa_name(isa));
        printf("| op     | type   |     n |     d |   t | th | err/S    | median us |    min us |"
               "    GB/s | GFLOP/s |  %%roof | bound |\n");
        printf("| ------ | ------ | ----: | ----: | --: | -: | -------- | --------: | --------: |"
               " ------: | ------: | -----: | ----- |\n");
    } else if (fmt == FMT_CSV) {
        printf("op,type,n,d,t,threads,isa,err_rel,err_ratio,reps,median_us,min_us,gbs,gflops,"
               "pct_roof,bound,ok\n");
    } else {
        printf("[\n");
    }
}

static void print_row(enum bench_fmt fmt, enum cpu_isa isa, const struct kernel_row *r, bool first) {
    const char *tn = qtype_traits[r->wt].name, *bound = r->mem_bound ? "mem" : "fma";
    if (fmt == FMT_MD) {
        if (!r->ok) {
            printf("| %-6s | %-6s | %5lld | %5lld | %3lld | %2d | %.2e | FAILED verification "
                   "(err/tol %.2f) |||||\n", r->op, tn, (long long)r->n, (long long)r->d,
                   (long long)r->t, r->threads, r->err_rel, r->err_ratio);
            return;
        }
        printf("| %-6s | %-6s | %5lld | %5lld | %3lld | %2d | %.2e | %9.1f | %9.1f | %7.1f | %7.1f |"
               " %5.1f%% | %-5s |\n", r->op, tn, (long long)r->n, (long long)r->d, (long long)r->t,
               r->threads, r->err_rel, r->st.median * 1e6, r->st.min * 1e6, r->gbs, r->gflops,
               r->pct, bound);
    } else if (fmt == FMT_CSV) {
        printf("%s,%s,%lld,%lld,%lld,%d,%s,%.3e,%.3f,%d,%.3f,%.3f,%.3f,%.3f,%.2f,%s,%d\n", r->op, tn,
               (long long)r->n, (long long)r->d, (long long)r->t, r->threads, cpu_isa_name(isa),
               r->err_rel, r->err_ratio, r->reps, r->st.median * 1e6, r->st.min * 1e6, r->gbs,
               r->gflops, r->pct, bound, r->ok);
    } else {
        printf("%s  {\"op\": \"%s\", \"type\": \"%s\", \"n\": %lld, \"d\": %lld, \"t\": %lld, "
               "\"threads\": %d, \"isa\": \"%s\", \"err_rel\": %.3e, \"err_ratio\": %.3f, "
               "\"reps\": %d, \"median_us\": %.3f, \"min_us\": %.3f, \"gbs\": %.3f, "
               "\"gflops\": %.3f, \"pct_roof\": %.2f, \"bound\": \"%s\", \"ok\": %s}",
               first ? "" : ",\n", r->op, tn, (long long)r->n, (long long)r->d, (long long)r->t,
               r->threads, cpu_isa_name(isa), r->err_rel, r->err_ratio, r->reps,
               r->st.median * 1e6, r->st.min * 1e6, r->gbs, r->gflops, r->pct, bound,
               r->ok ? "true" : "false");
    }
    fflush(stdout);
}

static bool matches(const char *filter, const char *op, enum qtype wt, int64_t n, int64_t d) {
    if (!filter || !*filter) return true;
    char shape[64];
    snprintf(shape, sizeof shape, "%lldx%lld", (long long)n, (long long)d);
    return strstr(op, filter) || strstr(qtype_traits[wt].name, filter) || strstr(shape, filter) ||
           strcmp(filter, qtype_traits[wt].name) == 0;
}

// ------------------------------------------------------------------------------------------------
// Driver

int bench_kernels_run(const struct bench_kernel_opts *o) {
    enum cpu_isa isa = cpu_isa_detect();
    int max_t = 1;
    for (int i = 0; i < o->n_threads; i++) max_t = o->threads[i] > max_t ? o->threads[i] : max_t;
    struct stream_result sr;
    if (stream_get(&sr, max_t) != 0) return 1;
    struct bench_rng g;
    bench_rng_seed(&g, o->seed);
    int n_fail = 0, n_rows = 0;
    print_header(o->fmt, isa, &sr);
    for (int ti = 0; ti < o->n_threads; ti++) {
        int nth = o->threads[ti];
        struct threadpool *tp = threadpool_create(nth);
        if (!tp) return 1;
        struct roofline rf = stream_roofline(&sr, nth);
        for (size_t si = 0; si < sizeof kernel_shapes / sizeof kernel_shapes[0]; si++) {
            int64_t n = kernel_shapes[si][0], d = kernel_shapes[si][1];
            float *wf = NULL, *x = NULL, *out = NULL;
            for (size_t ki = 0; ki < sizeof kernel_types / sizeof kernel_types[0]; ki++) {
                enum qtype wt = kernel_types[ki];
                if (!cpu_matmul_supports(wt)) continue;
                if (qtype_is_x8(wt) && (isa < CPU_ISA_AVX512 || n % X8_WEIGHTS)) continue;   // ref only there
                for (size_t tk = 0; tk < sizeof kernel_tokens / sizeof kernel_tokens[0]; tk++) {
                    int64_t t = kernel_tokens[tk];
                    const char *op = t == 1 ? "matvec" : "matmul";
                    if (!matches(o->filter, op, wt, n, d)) continue;
                    // inputs for this shape, made once: W ~ U(-1, 1), x ~ U(-1, 1)
                    if (!wf) {
                        wf = malloc((size_t)(n * d) * sizeof *wf);
                        x = malloc((size_t)(n * 128) * sizeof *x);
                        out = malloc((size_t)(d * 128) * sizeof *out);
                        if (!wf || !x || !out) {
                            fprintf(stderr, "bench --kernels: out of memory\n");
                            return 1;
                        }
                        for (int64_t i = 0; i < n * d; i++) wf[i] = bench_rng_uniform(&g, -1, 1);
                        for (int64_t i = 0; i < n * 128; i++) x[i] = bench_rng_uniform(&g, -1, 1);
                    }
                    fprintf(stderr, "kernels: %s %s %lldx%lld t=%lld threads=%d\n", op,
                            qtype_traits[wt].name, (long long)n, (long long)d, (long long)t, nth);
                    size_t rb = qtype_row_bytes(wt, n), wbytes = rb * (size_t)d;
                    // matvec reads each weight once: rotate copies so no rep finds them in cache
                    int n_copies = 1;
                    if (t == 1) {
                        n_copies = (int)((rotate_bytes() + wbytes - 1) / wbytes);
                        if (n_copies < 2) n_copies = 2;
                        if (n_copies > MAX_COPIES) n_copies = MAX_COPIES;
                    }
                    void **copies = calloc((size_t)n_copies, sizeof *copies);
                    if (!copies) return 1;
                    copies[0] = aligned_alloc(64, (wbytes + 63) & ~(size_t)63);
                    if (!copies[0]) return 1;
                    for (int64_t i = 0; i < d; i++)
                        qtype_traits[wt].quantize_row((char *)copies[0] + (size_t)i * rb,
                                                      wf + i * n, n);
                    for (int c = 1; c < n_copies; c++) {
                        copies[c] = aligned_alloc(64, (wbytes + 63) & ~(size_t)63);
                        if (!copies[c]) return 1;
                        memcpy(copies[c], copies[0], wbytes);
                    }
                    struct kernel_row r = {.op = op, .wt = wt, .n = n, .d = d, .t = t,
                                           .threads = nth};
                    cpu_matmul(tp, isa, wt, out, x, copies[0], n, d, t);
                    r.ok = verify(tp, &r, x, copies[0], out);
                    if (r.ok) {
                        time_row(tp, isa, &r, out, x, copies, n_copies, o->min_seconds);
                        fill_roofline(&r, rf);
                    } else {
                        n_fail++;
                        fprintf(stderr, "kernels: %s %s %lldx%lld t=%lld FAILED verification: max "
                                "|got-ref|/tol = %.3g (seed %llu)\n", op, qtype_traits[wt].name,
                                (long long)n, (long long)d, (long long)t, r.err_ratio,
                                (unsigned long long)o->seed);
                    }
                    print_row(o->fmt, isa, &r, n_rows == 0);
                    n_rows++;
                    for (int c = 0; c < n_copies; c++) free(copies[c]);
                    free(copies);
                }
            }
            free(wf);
            free(x);
            free(out);
        }
        threadpool_destroy(tp);
    }
    if (o->fmt == FMT_JSON) printf("\n]\n");
    if (o->fmt == FMT_MD)
        printf("\nerr/S: max |fast - ref| / sum_k |x_k w_k|; the row fails above 8 sqrt(n) FLT_EPSILON."
               "\n%%roof: GB/s / read roof when flops/byte is below the ridge (bound=mem), else "
               "GFLOP/s / FMA roof.\n");
    return n_fail ? 1 : 0;
}
