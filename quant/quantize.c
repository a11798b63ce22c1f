/* quant/quantize.c: f32 matrix -> qtype, multithreaded over rows, RTN or the optimized (OPT)
 * per-group search for d and m. OPT is calibration-free: a coarse-to-fine grid over the scale with
 * a least-squares fit per point, alternating least squares from the best, fp16 neighbours of d,
 * and RTN kept unless the winner's exact fp32-reconstruction error is strictly lower.
 * About 2-3 us per group per core. docs/QUANT_FORMATS.md; tests/test_quant_opt.c */
#include "quant/quantize.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>

#include "quant/quant_ref.h"

// ------------------------------------------------------------------------------------------------
// One group of 64
//
// The search scores candidates in fp32 with 64-wide elementwise passes that gcc/clang
// auto-vectorize at -O3 without -ffast-math: codes are kept as floats and rounded by the
// 1.5*2^23 trick, and sums go through a fixed halving tree (deterministic, no reduction order
// freedom needed). Only the winner is re-scored with cand_err, the exact double-accumulated error
// of the dequantizer's reconstruction, and compared with RTN's: that strict comparison is what
// makes OPT never worse than RTN, whatever the fp32 search got wrong.

#define G QK_G64
#define L 8              // the halving tree stops at 8 partial sums, added in double
#define OPT_NSTEP 24     // scale grid: qmax-1 .. qmax+1 in steps of 1/12 (ggml's make_qkx2 uses 20)
#define OPT_COARSE 4     // grid walked every 4th step, then the 6 steps around the best coarse one
#define OPT_TOP 2        // grid points (ranked by their fit error) scored with fp16 d, m
#define OPT_ALS_ITERS 6  // alternating least squares refinements of the best grid point
#define RND_MAGIC 12582912.0f   // 1.5 * 2^23: (v + M) - M rounds v to nearest (even) for |v| < 2^22

struct cand {
    f16_t d, m;
    uint8_t q[G];  // codes; for Q8 the int8 value + 128
    double err;    // weighted squared error of the fp16 reconstruction
};

/* Error of the reconstruction d*q + m computed in fp32 exactly as the _ref dequantizers do. */
static double cand_err(const float *x, const float *w, const struct cand *c, int sym) {
    float d = f16_to_f32(c->d), m = f16_to_f32(c->m);
    double s = 0;
    for (int i = 0; i < G; i++) {
        float y = sym ? d * (float)((int)c->q[i] - 128) : d * (float)c->q[i] + m;
        double r = (double)x[i] - (double)y;
        s += (w ? (double)w[i] : 1.0) * r * r;
    }
    return s;
}

/* Per-group constants of the search. Codes are floats in [lo, hi] (sym: [-127, 127], m = 0). */
struct grp {
    float x[G], w[G];
    float lo, hi;
    int sym;
    double s1, sx, sxx;   // sum w, sum w x, sum w x^2
};

/* A scored candidate: fp16 (d, m), float codes, fp32 error and the sums its LS refit needs. */
struct fcand {
    f16_t d, m;
    float err;
    double sq, sqq, sqx;   // sum w q, sum w q^2, sum w q x
    float q[G];
};

/* Sum of a[0..63] in a fixed order (halving tree: vectorizable, deterministic). Clobbers a. */
static inline double tree_sum(float *restrict a) {
    for (int h = G / 2; h >= L; h /= 2)
        for (int j = 0; j < h; j++) a[j] += a[j + h];
    double s = 0;
    for (int j = 0; j < L; j++) s += a[j];
    return s;
}

/* The least-squares sums of the codes q = round(clamp((x - m) * inv)): sum w q, w q^2, w q x. */
static void pass_sums(const struct grp *restrict g, float m, float inv, double *sq, double *sqq,
                      double *sqx) {
    float aq[G], aqq[G], aqx[G];
    const float lo = g->lo, hi = g->hi;
    for (int i = 0; i < G; i++) {
        float x = g->x[i], w = g->w[i];
        float v = (x - m) * inv;
        v = v < lo ? lo : v;
        v = v > hi ? hi : v;
        float q = (v + RND_MAGIC) - RND_MAGIC;
        float wq = w * q;
        aq[i] = wq, aqq[i] = wq * q, aqx[i] = wq * x;
    }
    *sq = tree_sum(aq), *sqq = tree_sum(aqq), *sqx = tree_sum(aqx);
}

/* As pass_sums, also storing the codes in c->q and scoring the fp32 reconstruction d q + m:
 * c->err = sum w (d q + m - x)^2. */
static void pass_score(const struct grp *restrict g, float d, float m, float inv,
                       struct fcand *restrict c) {
    float aq[G], aqq[G], aqx[G], ae[G];
    const float lo = g->lo, hi = g->hi;
    for (int i = 0; i < G; i++) {
        float x = g->x[i], w = g->w[i];
        float v = (x - m) * inv;
        v = v < lo ? lo : v;
        v = v > hi ? hi : v;
        float q = (v + RND_MAGIC) - RND_MAGIC;
        c->q[i] = q;
        float wq = w * q;
        aq[i] = wq, aqq[i] = wq * q, aqx[i] = wq * x;
        float r = (d * q + m) - x;
        ae[i] = w * r * r;
    }
    c->sq = tree_sum(aq), c->sqq = tree_sum(aqq), c->sqx = tree_sum(aqx);
    c->err = (float)tree_sum(ae);
}

/* Weighted least squares for (d, m) with the codes of c fixed (m = 0 when sym):
 *   min sum w (d q + m - x)^2  ->  [Sqq Sq; Sq S1] [d; m] = [Sqx; Sx] */
static bool ls_fit(const struct grp *g, double sq, double sqq, double sqx, double *d, double *m) {
    if (g->sym) {
        if (!(sqq > 0)) return false;
        *d = sqx / sqq, *m = 0;
        return true;
    }
    double det = sqq * g->s1 - sq * sq;
    if (!(det > 1e-9 * sqq * g->s1)) return false;   // (nearly) all codes equal: d undetermined
    *d = (g->s1 * sqx - sq * g->sx) / det;
    *m = (sqq * g->sx - sq * sqx) / det;
    return true;
}

/* Scores the fp16 pair (dh, mh): re-rounds the codes against them. false if d is not usable. */
static bool score16(const struct grp *g, f16_t dh, f16_t mh, struct fcand *c) {
    float d = f16_to_f32(dh), m = g->sym ? 0.0f : f16_to_f32(mh);
    if (!(d > 0) || !(d <= 65504.0f)) return false;
    c->d = dh, c->m = g->sym ? 0 : mh;
    pass_score(g, d, m, 1.0f / d, c);
    return c->err == c->err;   // not NaN
}

/* Candidate from real-valued (d, m): round both to fp16, re-round q, evaluate. */
static bool score(const struct grp *g, double d, double m, struct fcand *c) {
    if (!(d > 0) || !(d <= 65504.0) || !(fabs(m) <= 65504.0)) return false;
    return score16(g, f32_to_f16((float)d), g->sym ? 0 : f32_to_f16((float)m), c);
}

#define SWAP_BEST(c, best) do { struct fcand *t_ = (best); (best) = (c); (c) = t_; } while (0)

/* Grid point `is`: codes from the min-max quantizer with the range stretched/shrunk by
 * levels/(levels + delta) and a least-squares fit (d, m) to them. Returns the fit's error
 * Sxx - d Sqx - m Sx (real-valued d, m, codes not re-rounded), or INFINITY. */
static double grid_point(const struct grp *g, int is, double range, float off, double *d,
                         double *m) {
    int levels = g->sym ? 127 : (int)g->hi;
    double iscale = (levels + (is - OPT_NSTEP / 2) * (2.0 / OPT_NSTEP)) / range;
    double sq, sqq, sqx;
    pass_sums(g, off, (float)iscale, &sq, &sqq, &sqx);
    if (!ls_fit(g, sq, sqq, sqx, d, m)) return INFINITY;
    return g->sxx - *d * sqx - *m * g->sx;
}

/* The OPT_TOP grid points with the lowest fit error, best first. */
struct top {
    double e[OPT_TOP], d[OPT_TOP], m[OPT_TOP];
    int is[OPT_TOP];   // grid step, -1 = empty
};

static void grid_try(const struct grp *g, int is, double range, float off, struct top *t) {
    double d = 0, m = 0, e = grid_point(g, is, range, off, &d, &m);
    int k = OPT_TOP;
    for (; k > 0 && e < t->e[k - 1]; k--)
        if (k < OPT_TOP) t->e[k] = t->e[k - 1], t->d[k] = t->d[k - 1], t->m[k] = t->m[k - 1],
                         t->is[k] = t->is[k - 1];
    if (k < OPT_TOP) t->e[k] = e, t->d[k] = d, t->m[k] = m, t->is[k] = is;
}

/* The optimized quantizer for one group: returns the best candidate in *best, which on entry holds
 * RTN's result (so the output is never worse than RTN). */
static void opt_group(const float *x, const float *w, int qmax, int sym, struct cand *best) {
    struct grp g;
    float mn = x[0], mx = x[0], amax = 0, fin = 0;
    for (int i = 0; i < G; i++) {
        float a = x[i] < 0 ? -x[i] : x[i];
        mn = x[i] < mn ? x[i] : mn, mx = x[i] > mx ? x[i] : mx, amax = a > amax ? a : amax;
        fin += x[i] * 0.0f;   // NaN if any x is NaN or infinite
    }
    double range = sym ? (double)amax : (double)mx - (double)mn;
    if (!(range > 0) || fin != 0 || !(range <= 1e30)) return;   // constant or non-finite: keep RTN
    g.sym = sym, g.lo = sym ? -127.0f : 0.0f, g.hi = sym ? 127.0f : (float)qmax;
    g.s1 = 0, g.sx = 0, g.sxx = 0;
    for (int i = 0; i < G; i++) {
        g.x[i] = x[i], g.w[i] = w ? w[i] : 1.0f;
        g.s1 += g.w[i], g.sx += (double)g.w[i] * x[i], g.sxx += (double)g.w[i] * x[i] * x[i];
    }
    if (!(g.s1 > 0)) return;
    const float off = sym ? 0.0f : mn;
    struct fcand buf[2], *b = &buf[0], *c = &buf[1];
    b->err = INFINITY;
    // 1. scale grid, coarse (every OPT_COARSE-th step) then the steps around the best coarse one,
    //    ranked by the fit's error; the OPT_TOP best are scored for real (fp16, re-rounded codes)
    struct top top;
    for (int k = 0; k < OPT_TOP; k++) top.e[k] = INFINITY, top.is[k] = -1;
    for (int is = 0; is <= OPT_NSTEP; is += OPT_COARSE) grid_try(&g, is, range, off, &top);
    if (top.is[0] < 0) return;
    const int cis = top.is[0];
    for (int is = cis - OPT_COARSE + 1; is < cis + OPT_COARSE; is++)
        if (is >= 0 && is <= OPT_NSTEP && is != cis) grid_try(&g, is, range, off, &top);
    for (int k = 0; k < OPT_TOP && top.is[k] >= 0; k++)
        if (score(&g, top.d[k], top.m[k], c) && c->err < b->err) SWAP_BEST(c, b);
    if (!(b->err < INFINITY)) return;
    // 2. alternating least squares from the best: fit (d, m) to the codes, re-round, repeat
    for (int it = 0; it < OPT_ALS_ITERS; it++) {
        double d, m;
        if (!ls_fit(&g, b->sq, b->sqq, b->sqx, &d, &m) || !score(&g, d, m, c)) break;
        if (!(c->err < b->err)) break;
        SWAP_BEST(c, b);
    }
    // 3. fp16 neighbours of the final d (rounding d to fp16 is not error-optimal for 64 codes)
    const f16_t d0 = b->d, m0 = b->m;
    for (int k = -1; k <= 1; k += 2) {
        f16_t dh = (f16_t)(d0 + k);
        if ((dh & 0x7c00) == 0x7c00 || (dh & 0x8000)) continue;
        if (score16(&g, dh, m0, c) && c->err < b->err) SWAP_BEST(c, b);
    }
    // 4. the exact error of the winner decides against RTN
    struct cand o;
    o.d = b->d, o.m = b->m;
    for (int i = 0; i < G; i++) o.q[i] = (uint8_t)((int)b->q[i] + (sym ? 128 : 0));
    o.err = cand_err(x, w, &o, sym);
    if (o.err < best->err) *best = o;
}

static void quantize_group_opt(enum qtype t, void *blk, const float *x, const float *w) {
    struct cand rtn;
    qtype_traits[t].quantize_row(blk, x, G);   // RTN first: the result to beat
    if (t == QT_Q8_G64) {
        struct blk_q8_g64 *b = blk;
        rtn.d = b->d, rtn.m = 0;
        for (int i = 0; i < G; i++) rtn.q[i] = (uint8_t)(b->qs[i] + 128);
        rtn.err = cand_err(x, w, &rtn, 1);
        struct cand best = rtn;
        opt_group(x, w, 127, 1, &best);
        b->d = best.d;
        for (int i = 0; i < G; i++) b->qs[i] = (int8_t)((int)best.q[i] - 128);
        return;
    }
    int qmax = (1 << qtype_traits[t].bits) - 1;
    quant_unpack_group(t, blk, &rtn.d, &rtn.m, rtn.q);
    rtn.err = cand_err(x, w, &rtn, 0);
    struct cand best = rtn;
    opt_group(x, w, qmax, 0, &best);
    if (best.err < rtn.err) quant_pack_group(t, blk, best.d, best.m, best.q);
}

void quantize_row_opt(enum qtype t, void *dst, const float *src, int64_t n, const float *imp) {
    const size_t bb = qtype_traits[t].block_bytes;
    for (int64_t g = 0; g < n / G; g++)
        quantize_group_opt(t, (char *)dst + (size_t)g * bb, src + g * G, imp ? imp + g * G : NULL);
}

double quant_row_sqerr(enum qtype t, const void *q, const float *x, int64_t n, const float *w) {
    const struct qtype_traits *tr = &qtype_traits[t];
    float y[256];
    double s = 0;
    int gs = tr->group < 64 ? 64 : tr->group;   // f32/f16: convert 64 at a time
    for (int64_t g = 0; g < n / gs; g++) {
        tr->dequantize_row(y, (const char *)q + (size_t)g * (size_t)(gs / tr->group) * tr->block_bytes, gs);
        for (int i = 0; i < gs; i++) {
            double r = (double)x[g * gs + i] - (double)y[i];
            s += (w ? (double)w[g * gs + i] : 1.0) * r * r;
        }
    }
    return s;
}

// ------------------------------------------------------------------------------------------------
// Matrices, multithreaded over rows

struct qjob {
    enum qtype t;
    enum quant_method m;
    char *dst;
    const float *src, *imp;
    int64_t n, r0, r1;
    size_t row_bytes;
};

static void *qjob_run(void *arg) {
    struct qjob *j = arg;
    const bool opt = j->m == QM_OPT && qtype_traits[j->t].native;
    for (int64_t r = j->r0; r < j->r1; r++) {
        void *d = j->dst + (size_t)r * j->row_bytes;
        const float *s = j->src + r * j->n;
        if (opt) quantize_row_opt(j->t, d, s, j->n, j->imp);
        else qtype_traits[j->t].quantize_row(d, s, j->n);
    }
    return NULL;
}

int quantize_matrix_imp(enum qtype t, enum quant_method m, void *dst, const float *src, int64_t n,
                        int64_t rows, const float *imp, int n_threads, struct err *e) {
    if ((unsigned)t >= QT_COUNT) return ERR(e, ERR_ARG, "unknown qtype %d", (int)t);
    const struct qtype_traits *tr = &qtype_traits[t];
    if (!tr->quantize_row) return ERR(e, ERR_ARG, "type %s is load-only (no quantizer)", tr->name);
    if (n <= 0 || rows < 0 || n % tr->group != 0)
        return ERR(e, ERR_ARG, "row length %lld is not a positive multiple of %s's group %d",
                   (long long)n, tr->name, tr->group);
    if (rows == 0) return ERR_OK;
    struct qjob base = {.t = t, .m = m, .dst = dst, .src = src, .imp = imp, .n = n,
                        .row_bytes = qtype_row_bytes(t, n)};
    // at least ~64K weights per thread so small tensors do not pay for thread start-up
    int64_t max_threads = (n * rows) / 65536 + 1;
    int nt = n_threads < 1 ? 1 : n_threads;
    if (nt > max_threads) nt = (int)max_threads;
    if (nt > rows) nt = (int)rows;
    if (nt > 256) nt = 256;
    struct qjob jobs[256];
    pthread_t tid[256];
    bool started[256] = {false};
    for (int k = 0; k < nt; k++) {
        jobs[k] = base;
        jobs[k].r0 = rows * k / nt;
        jobs[k].r1 = rows * (k + 1) / nt;
        if (k > 0) started[k] = pthread_create(&tid[k], NULL, qjob_run, &jobs[k]) == 0;
    }
    qjob_run(&jobs[0]);
    for (int k = 1; k < nt; k++) {
        if (started[k]) pthread_join(tid[k], NULL);
        else qjob_run(&jobs[k]);   // thread could not start: do its rows here
    }
    return ERR_OK;
}

int quantize_matrix(enum qtype t, enum quant_method m, void *dst, const float *src, int64_t n,
                    int64_t rows, int n_threads, struct err *e) {
    return quantize_matrix_imp(t, m, dst, src, n, rows, NULL, n_threads, e);
}

void dequantize_matrix(enum qtype t, float *dst, const void *src, int64_t n, int64_t rows) {
    const size_t rb = qtype_row_bytes(t, n);
    for (int64_t r = 0; r < rows; r++)
        qtype_traits[t].dequantize_row(dst + r * n, (const char *)src + (size_t)r * rb, n);
}

size_t quantize_nbytes(enum qtype t, int64_t n, int64_t rows) {
    uint64_t nb;
    if (!qtype_nbytes(t, n, rows, &nb) || nb > SIZE_MAX) return 0;
    return (size_t)nb;
}
