/* bench/bench_sweep.c: ./llm-bench --sweep, the decode matmuls of a preset's layers (q/k/v and
 * gate/up fused as in engine/forward.c, o and down alone) with random weights, alternating pass by
 * pass with read-only passes over the very same buffers (plain loads, loads with the stream probe's
 * 8 KiB L2 prefetch, and with that plus the kernels' 3 KiB L1 prefetch), in one process.
 *
 * Why: the dev VM's memory bandwidth drifts by 10-30% within minutes (other tenants), so a kernel
 * timed now against a probe timed a minute earlier measures the neighbours as much as the kernel.
 * Interleaved passes see the same machine state; the ratio of the medians is the kernel's share of
 * what this access pattern (buffer sizes, thread hand-offs between matrices) can read. Attention,
 * norms and the output head are left out: ./llm-bench -m gives the whole token.
 * Layout as the engine's CPU backend chooses it (X8 for the int8 types on AVX-512 when a row is
 * whole superblocks; LLM_REPACK=0 keeps the natural layout). Docs: docs/BENCH.md. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "bench/bench.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/threadpool.h"
#include "quant/repack.h"

enum { M_Q, M_K, M_V, M_O, M_GATE, M_UP, M_DOWN, N_MATS };

struct sweep_set {
    enum qtype wt;
    int64_t n[N_MATS], d[N_MATS];
    void **w;        // [layer * N_MATS + m]
    size_t bytes[N_MATS], total;
};

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

// the type of a -q value as the CPU backend stores it
static enum qtype sweep_type(int bits, enum cpu_isa isa, int64_t dim, int64_t hidden) {
    const enum qtype nat = bits == 16 ? QT_F16 : bits == 8 ? QT_Q8_G64 : bits == 4 ? QT_Q4_G64
                         : bits == 3 ? QT_Q3_G64 : QT_Q2_G64;
    const char *env = getenv("LLM_REPACK");
    const int x8 = qtype_x8_of(nat);
    if (x8 < 0 || isa != CPU_ISA_AVX512 || dim % X8_WEIGHTS || hidden % X8_WEIGHTS || (env && env[0] == '0'))
        return nat;
    return (enum qtype)x8;
}

static void set_free(struct sweep_set *s, int n_layers) {
    if (!s->w) return;
    for (int i = 0; i < n_layers * N_MATS; i++) free(s->w[i]);
    free(s->w);
    s->w = NULL;
}

// as the CPU backend allocates weights (cpu_alloc): >= 2 MiB on a 2 MiB boundary with MADV_HUGEPAGE
// on the whole 2 MiB extents (LLM_HUGEPAGES=0: not)
static void *sweep_alloc(size_t n) {
    const size_t huge = (size_t)2 << 20;
    const char *env = getenv("LLM_HUGEPAGES");
    const bool on = n >= huge && !(env && env[0] == '0');
    void *p = aligned_alloc(on ? huge : 64, on ? (n + huge - 1) & ~(huge - 1) : n);
#ifdef MADV_HUGEPAGE
    if (p && on) (void)madvise(p, n & ~(huge - 1), MADV_HUGEPAGE);
#endif
    return p;
}

// every layer gets its own copy of one random matrix per shape (the bytes are what matters); with
// matrix_d > 0 one layer whose only matrix (M_Q) is dim x matrix_d
static int set_make(struct sweep_set *s, const struct model_config *c, int n_layers, int64_t matrix_d,
                    struct bench_rng *g) {
    const int64_t dim = c->dim, kv = (int64_t)c->n_kv_heads * c->head_dim, q = (int64_t)c->n_heads * c->head_dim;
    int64_t shp[N_MATS][2] = {{dim, q}, {dim, kv}, {dim, kv}, {q, dim}, {dim, c->hidden_dim},
                              {dim, c->hidden_dim}, {c->hidden_dim, dim}};
    if (matrix_d > 0) {
        memset(shp, 0, sizeof shp);
        shp[M_Q][0] = dim;
        shp[M_Q][1] = matrix_d;
    }
    s->w = calloc((size_t)n_layers * N_MATS, sizeof *s->w);
    float *row = malloc((size_t)(c->hidden_dim > dim ? c->hidden_dim : dim) * sizeof *row);
    if (!s->w || !row) { free(row); return -1; }
    s->total = 0;
    for (int m = 0; m < N_MATS; m++) {
        s->n[m] = shp[m][0];
        s->d[m] = shp[m][1];
        if (!s->d[m]) continue;
        const size_t rb = qtype_row_bytes(s->wt, s->n[m]);
        s->bytes[m] = rb * (size_t)s->d[m];
        const size_t alloc = (s->bytes[m] + 63) & ~(size_t)63;
        uint8_t *w0 = aligned_alloc(64, alloc);
        if (!w0) { free(row); return -1; }
        for (int64_t r = 0; r < s->d[m]; r++) {
            for (int64_t k = 0; k < s->n[m]; k++) row[k] = (float)bench_rng_uniform(g, -1, 1);
            qtype_traits[s->wt].quantize_row(w0 + (size_t)r * rb, row, s->n[m]);
        }
        for (int l = 0; l < n_layers; l++) {
            void *w = sweep_alloc(alloc);
            if (!w) { free(w0); free(row); return -1; }
            memcpy(w, w0, s->bytes[m]);
            s->w[l * N_MATS + m] = w;
            s->total += s->bytes[m];
        }
        free(w0);
    }
    free(row);
    return 0;
}

struct read_job { const uint8_t *p; size_t bytes; int pf; _Atomic size_t next; uint64_t sum[BENCH_MAX_THREADS * 8]; };

// the same guided self-scheduling as the decode matmuls (kernels/cpu/dispatch.c): a thread takes
// 1/(2 nth) of what is left, >= 16 KiB; a static split would wait for a descheduled vCPU, and the
// probe would read below what the kernels reach
static void read_worker(void *arg, int ith, int nth) {
    struct read_job *j = arg;
    const size_t words = j->bytes / 8;
    uint64_t s = 0;
    for (;;) {
        size_t a = atomic_load_explicit(&j->next, memory_order_relaxed), b;
        do {
            if (a >= words) goto done;
            size_t c = ((words - a) / (2 * (size_t)nth) + 7) & ~(size_t)7;
            if (c < 2048) c = 2048;
            b = a + c < words ? a + c : words;
        } while (!atomic_compare_exchange_weak_explicit(&j->next, &a, b, memory_order_relaxed, memory_order_relaxed));
        const uint64_t *p = (const uint64_t *)j->p + a;
        if (__builtin_cpu_supports("avx2"))
            s += j->pf == 2 ? read_sum_pf_l2l1_avx2(p, b - a) : j->pf ? read_sum_pf_l2_avx2(p, b - a) : read_sum_avx2(p, b - a);
        else
            for (size_t i = 0; i < b - a; i++) s += p[i];
    }
done:
    j->sum[ith * 8] += s;
}

// one pass over every layer: the decode matmuls (mode 0), or reads of the same buffers (1 plain,
// 2 prefetched to L2, 3 to L2 and L1 as the kernels do)
static void sweep_pass(struct threadpool *tp, enum cpu_isa isa, const struct sweep_set *s, int n_layers, int mode,
                       const float *x, float *const *out, struct read_job *rj) {
    for (int l = 0; l < n_layers; l++) {
        void *const *w = s->w + l * N_MATS;
        if (mode) {
            for (int m = 0; m < N_MATS; m++) {
                if (!s->d[m]) continue;
                rj->p = w[m];
                rj->bytes = s->bytes[m];
                rj->pf = mode - 1;
                atomic_store(&rj->next, 0);
                threadpool_run(tp, read_worker, rj);
            }
            continue;
        }
        if (!s->d[M_K]) {   // --matrix: the one matrix
            cpu_matmul(tp, isa, s->wt, out[M_Q], x, w[M_Q], s->n[M_Q], s->d[M_Q], 1);
            continue;
        }
        struct cpu_matmul_part qkv[3], gu[2];
        for (int m = 0; m < 3; m++) qkv[m] = (struct cpu_matmul_part){s->wt, out[m], w[m], s->d[m]};
        cpu_matmul_multi(tp, isa, 3, qkv, x, s->n[M_Q], 1);
        cpu_matmul(tp, isa, s->wt, out[M_O], x, w[M_O], s->n[M_O], s->d[M_O], 1);
        for (int m = 0; m < 2; m++) gu[m] = (struct cpu_matmul_part){s->wt, out[M_GATE + m], w[M_GATE + m], s->d[M_GATE]};
        cpu_matmul_multi(tp, isa, 2, gu, x, s->n[M_GATE], 1);
        cpu_matmul(tp, isa, s->wt, out[M_DOWN], x, w[M_DOWN], s->n[M_DOWN], s->d[M_DOWN], 1);
    }
}

// --by-regime: pass it's matmul GB/s against the fastest of the three probe passes that followed it,
// the pairs binned by that probe rate (4 GB/s bins). The host's bandwidth moves between regimes of
// 1-3 s; a median over all passes mixes them, the bins show how the kernel tracks a faster memory.
#define REGIME_BIN 4.0
static void regime_rows(FILE *f, const char *name, int threads, size_t total, double *const *t, int passes) {
    double *kr = malloc((size_t)passes * sizeof *kr), *pr = malloc((size_t)passes * sizeof *pr);
    double *bk = malloc((size_t)passes * sizeof *bk), *bp = malloc((size_t)passes * sizeof *bp);
    if (!kr || !pr || !bk || !bp) {
        fprintf(f, "| %s | %d | (out of memory) | | | | |\n", name, threads);
        free(kr), free(pr), free(bk), free(bp);
        return;
    }
    int lo = 1 << 30, hi = 0;
    for (int i = 0; i < passes; i++) {
        kr[i] = (double)total / t[0][i] / 1e9;
        pr[i] = 0;
        for (int k = 1; k < 4; k++)
            if ((double)total / t[k][i] / 1e9 > pr[i]) pr[i] = (double)total / t[k][i] / 1e9;
        const int b = (int)(pr[i] / REGIME_BIN);
        lo = b < lo ? b : lo;
        hi = b > hi ? b : hi;
    }
    for (int b = lo; b <= hi; b++) {
        int c = 0;
        for (int i = 0; i < passes; i++)
            if ((int)(pr[i] / REGIME_BIN) == b) bk[c] = kr[i], bp[c] = pr[i], c++;
        if (!c) continue;
        const struct bench_stats sk = bench_stats_of(bk, c), sp = bench_stats_of(bp, c);
        fprintf(f, "| %s | %d | %.0f-%.0f | %d | %.2f | %.2f | %.1f%% |\n", name, threads, b * REGIME_BIN,
                (b + 1) * REGIME_BIN, c, sk.median, sp.median, 100.0 * sk.median / sp.median);
    }
    free(kr), free(pr), free(bk), free(bp);
}

int bench_sweep_run(const struct bench_sweep_opts *o) {
    const struct synth_preset *p = synth_preset_find(o->preset);
    if (!p) {
        fprintf(stderr, "bench --sweep: unknown preset '%s'\n", o->preset);
        return 1;
    }
    const struct model_config *c = &p->cfg;
    const int n_layers = o->matrix_mb > 0 ? 1 : o->layers > 0 && o->layers < c->n_layers ? o->layers : c->n_layers;
    int64_t out_n = (c->hidden_dim > c->dim ? c->hidden_dim : c->dim) * 4;   // floats per output buffer
    const enum cpu_isa isa = cpu_isa_detect();
    struct bench_rng g;
    bench_rng_seed(&g, o->seed);
    const int64_t xn = c->hidden_dim > c->dim ? c->hidden_dim : c->dim;
    float *x = malloc((size_t)xn * sizeof *x), *out[N_MATS] = {0};
    int rc = x ? 0 : 1;
    for (int64_t i = 0; x && i < xn; i++) x[i] = (float)bench_rng_uniform(&g, -1, 1);
    for (int m = 0; m < N_MATS && !rc; m++)
        if (!(out[m] = malloc((size_t)out_n * sizeof(float)))) rc = 1;
    char *reg = NULL;   // --by-regime rows, printed after the main table
    size_t reg_len = 0;
    FILE *regf = o->by_regime ? open_memstream(&reg, &reg_len) : NULL;
    if (o->by_regime && !regf) rc = 1;
    printf("| type | threads | MB/pass | matmul ms | GB/s | probe GB/s | %% of probe |\n");
    printf("| ---- | ------: | ------: | --------: | ---: | ---------: | ---------: |\n");
    for (int ti = 0; ti < o->n_threads && !rc; ti++) {
        struct threadpool *tp = threadpool_create(o->threads[ti]);
        if (!tp) { rc = 1; break; }
        for (int qi = 0; qi < o->n_bits && !rc; qi++) {
            struct sweep_set s = {.wt = sweep_type(o->bits[qi], isa, c->dim, c->hidden_dim)};
            // --matrix: rows for o->matrix_mb MB, a multiple of 64
            const int64_t md =
                o->matrix_mb > 0
                    ? ((int64_t)((double)o->matrix_mb * 1e6 / (double)qtype_row_bytes(s.wt, c->dim)) + 63) / 64 * 64
                    : 0;
            if (md > out_n) {   // only out[M_Q] is written in this mode
                free(out[M_Q]);
                out_n = md;
                if (!(out[M_Q] = malloc((size_t)out_n * sizeof(float)))) {
                    fprintf(stderr, "bench --sweep: out of memory\n");
                    rc = 1;
                    break;
                }
            }
            if (md)
                fprintf(stderr, "sweep: %s, one %d x %lld matrix, %d thread(s)\n", qtype_traits[s.wt].name, c->dim,
                        (long long)md, o->threads[ti]);
            else
                fprintf(stderr, "sweep: %s, %d layers of %s, %d thread(s)\n", qtype_traits[s.wt].name, n_layers,
                        p->name, o->threads[ti]);
            if (set_make(&s, c, n_layers, md, &g) != 0) {
                fprintf(stderr, "bench --sweep: out of memory\n");
                set_free(&s, n_layers);
                rc = 1;
                break;
            }
            struct read_job *rj = calloc(1, sizeof *rj);
            double *t[4];
            for (int k = 0; k < 4; k++) t[k] = calloc((size_t)o->passes, sizeof(double));
            if (!rj || !t[0] || !t[1] || !t[2] || !t[3]) rc = 1;
            for (int it = -1; it < o->passes && !rc; it++)   // it = -1: untimed warm-up of all four
                for (int k = 0; k < 4; k++) {
                    const double t0 = now_s();
                    sweep_pass(tp, isa, &s, n_layers, k, x, out, rj);
                    if (it >= 0) t[k][it] = now_s() - t0;
                }
            if (!rc) {
                struct bench_stats st[4];
                for (int k = 0; k < 4; k++) st[k] = bench_stats_of(t[k], o->passes);
                const double gbs = (double)s.total / st[0].median / 1e9;
                double roof = 0;
                for (int k = 1; k < 4; k++)
                    if ((double)s.total / st[k].median / 1e9 > roof) roof = (double)s.total / st[k].median / 1e9;
                // cyclic passes over less than ~2 LLCs partly hit in cache, the probe as much as the kernel
                const bool cached = (double)s.total < 2.0 * (double)bench_llc_bytes();
                printf("| %s | %d | %.1f%s | %.2f | %.2f | %.2f | %.1f%% |\n", qtype_traits[s.wt].name, o->threads[ti],
                       (double)s.total / 1e6, cached ? " (< 2 LLC)" : "", st[0].median * 1e3, gbs, roof,
                       100.0 * gbs / roof);
                fflush(stdout);
                if (regf) regime_rows(regf, qtype_traits[s.wt].name, o->threads[ti], s.total, t, o->passes);
            }
            for (int k = 0; k < 4; k++) free(t[k]);
            free(rj);
            set_free(&s, n_layers);
        }
        threadpool_destroy(tp);
    }
    if (!rc && o->matrix_mb > 0)
        printf("\n- one %s-wide matrix of ~%d MB, %d passes of each kind interleaved; medians. probe = the fastest of "
               "plain, L2- and L2+L1-prefetched reads of the same buffer, in the matmul's guided chunks\n",
               p->name, o->matrix_mb, o->passes);
    else if (!rc)
        printf("\n- %s shapes, %d layers, %d passes of each kind interleaved; medians. probe = the fastest of "
               "plain, L2- and L2+L1-prefetched reads of the same buffers, in the matmuls' guided chunks per matrix\n",
               p->name, n_layers, o->passes);
    if (regf) {
        fclose(regf);
        if (!rc) {
            printf("\nBy regime: each matmul pass against the fastest of the three probe passes right after it, the\n"
                   "pairs grouped by that probe's GB/s (%.0f GB/s bins); medians per bin.\n\n"
                   "| type | threads | probe bin GB/s | pairs | matmul GB/s | probe GB/s | %% of probe |\n"
                   "| ---- | ------: | -------------: | ----: | ----------: | ---------: | ---------: |\n%s",
                   REGIME_BIN, reg ? reg : "");
        }
        free(reg);
    }
    free(x);
    for (int m = 0; m < N_MATS; m++) free(out[m]);
    return rc;
}
