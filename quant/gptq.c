/* quant/gptq.c: GPTQ for the group-64 formats (quant/gptq.h). The dense algebra is plain C in
 * double, written as row updates (axpy form) so that gcc vectorizes it without -ffast-math:
 *   1. H_d = H + damp * mean(diag H) * I (in the act-order permutation when asked);
 *   2. U, upper triangular with U^T U = H_d^-1: with J the order reversal, chol(J H_d J) = L
 *      gives H_d = R R^T for the upper triangular R = J L J, so H_d^-1 = R^-T R^-1 and U = R^-1;
 *   3. per row, column i: q = round-to-grid(w_i), e = (w_i - q) / U_ii, w_j -= e U_ij for j > i
 *      (within a lazy block of columns first, then the block's errors on the rest at once). */
#include "quant/gptq.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>

#include "quant/quant_ref.h"
#include "quant/quantize.h"

#define G QK_G64

/* In-place Cholesky of the n x n row-major lower triangle of a (a = L L^T); false if a pivot is
 * not positive. Right-looking: column k is copied to col[] so the trailing update is an axpy. */
static bool cholesky_lower(double *a, int64_t n, double *col) {
    for (int64_t k = 0; k < n; k++) {
        double akk = a[k * n + k];
        if (!(akk > 0) || !isfinite(akk)) return false;
        double lkk = sqrt(akk), inv = 1.0 / lkk;
        a[k * n + k] = lkk;
        for (int64_t i = k + 1; i < n; i++) col[i] = a[i * n + k] *= inv;
        for (int64_t i = k + 1; i < n; i++) {
            double *restrict ri = a + i * n;
            const double ci = col[i];
            for (int64_t j = k + 1; j <= i; j++) ri[j] -= ci * col[j];
        }
    }
    return true;
}

#ifdef HAVE_OPENBLAS
// LAPACK from OpenBLAS (blocked, multithreaded): Cholesky and triangular inverse, column-major
extern void dpotrf_(const char *uplo, const int *n, double *a, const int *lda, int *info);
extern void dtrtri_(const char *uplo, const char *diag, const int *n, double *a, const int *lda, int *info);

static bool inverse_chol_upper_lapack(double *hd, int64_t n, float *u) {
    // B = J hd J; column-major lower Cholesky B = L L^T, then L^-1 in place; U = J L^-1 J
    for (int64_t i = 0; i < n * n / 2; i++) {
        double t = hd[i];
        hd[i] = hd[n * n - 1 - i], hd[n * n - 1 - i] = t;
    }
    const int ni = (int)n;
    int info = 0;
    dpotrf_("L", &ni, hd, &ni, &info);
    if (info != 0) return false;
    dtrtri_("L", "N", &ni, hd, &ni, &info);
    if (info != 0) return false;
    // Linv[i][j] (i >= j) is at hd[j * n + i]; U[a][b] = Linv[n-1-a][n-1-b] for b >= a
    for (int64_t a = 0; a < n; a++)
        for (int64_t b = 0; b < n; b++)
            u[a * n + b] = b >= a ? (float)hd[(n - 1 - b) * n + (n - 1 - a)] : 0.0f;
    return true;
}
#endif

/* U (upper, row-major n x n, float) with U^T U = hd^-1; hd (double, n x n symmetric) is destroyed. */
static bool inverse_chol_upper_own(double *hd, int64_t n, float *u) {
    // B = J hd J, in place: element (i, j) <-> (n-1-i, n-1-j) is a 180-degree rotation
    for (int64_t i = 0; i < n * n / 2; i++) {
        double t = hd[i];
        hd[i] = hd[n * n - 1 - i], hd[n * n - 1 - i] = t;
    }
    double *col = malloc((size_t)n * sizeof *col), *r = NULL;
    bool ok = col && cholesky_lower(hd, n, col);
    free(col);
    if (!ok) return false;
    // R = J L J: R[i][j] = L[n-1-i][n-1-j], upper; rotate back in place (the lower triangle of L
    // becomes the upper triangle of R; the rest is garbage we do not read)
    for (int64_t i = 0; i < n * n / 2; i++) {
        double t = hd[i];
        hd[i] = hd[n * n - 1 - i], hd[n * n - 1 - i] = t;
    }
    r = hd;
    // U = R^-1, upper: row i of U = (e_i - sum_{k>i} R_ik U_k) / R_ii, rows from the bottom up.
    // Accumulated in double in a scratch row, stored as float.
    double *row = malloc((size_t)n * sizeof *row), *ud = malloc((size_t)n * (size_t)n * sizeof *ud);
    if (!row || !ud) { free(row), free(ud); return false; }
    for (int64_t i = n - 1; i >= 0; i--) {
        const double rii = r[i * n + i];
        if (!(rii > 0)) { free(row), free(ud); return false; }
        for (int64_t j = i; j < n; j++) row[j] = 0;
        for (int64_t k = i + 1; k < n; k++) {
            const double rik = r[i * n + k];
            const double *restrict uk = ud + k * n;
            for (int64_t j = k; j < n; j++) row[j] -= rik * uk[j];
        }
        row[i] += 1.0;
        const double inv = 1.0 / rii;
        for (int64_t j = i; j < n; j++) ud[i * n + j] = row[j] * inv;
    }
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) u[i * n + j] = j >= i ? (float)ud[i * n + j] : 0.0f;
    free(row), free(ud);
    return true;
}

struct gjob {
    enum qtype t;
    char *dst;
    const float *W, *U, *hdiag;   // hdiag: diag(H) in original column order (group importance)
    const int64_t *perm;          // column k of the work order is original column perm[k]; NULL = identity
    int64_t n, r0, r1;
    int block;
    double loss;
    int fail;                     // ERR_OOM
};

/* The optimized quantizer's (d, m) for 64 values x with importance w. */
static void group_params(enum qtype t, const float *x, const float *w, float *d, float *m, f16_t *dh,
                         f16_t *mh) {
    uint8_t blk[sizeof(struct blk_q8_g64)];
    quantize_row_opt(t, blk, x, G, w);
    if (t == QT_Q8_G64) {
        const struct blk_q8_g64 *b = (const void *)blk;
        *dh = b->d, *mh = 0;
    } else {
        uint8_t q[G];
        quant_unpack_group(t, blk, dh, mh, q);
    }
    *d = f16_to_f32(*dh), *m = t == QT_Q8_G64 ? 0.0f : f16_to_f32(*mh);
}

/* Rows go in tiles of RT: each row of U is loaded once per tile and used for every row of it, so
 * U (n^2 floats, 127 MB for n = 5632) is streamed rows/RT times instead of rows times. Each row's
 * arithmetic is the same as alone, so the codes do not depend on the tiling or the thread count. */
#define RT 16

static void *gjob_run(void *arg) {
    struct gjob *j = arg;
    const enum qtype t = j->t;
    const int64_t n = j->n, ng = n / G, bl = j->block;
    const bool sym = t == QT_Q8_G64;
    const float lo = sym ? -127.0f : 0.0f, hi = sym ? 127.0f : (float)((1 << qtype_traits[t].bits) - 1);
    const size_t rb = qtype_row_bytes(t, n), bb = qtype_traits[t].block_bytes;
    float *w = malloc((size_t)RT * (size_t)n * sizeof *w), *err = malloc((size_t)RT * (size_t)bl * sizeof *err);
    float *gd = malloc((size_t)RT * (size_t)ng * sizeof *gd), *gm = malloc((size_t)RT * (size_t)ng * sizeof *gm);
    f16_t *gdh = malloc((size_t)RT * (size_t)ng * sizeof *gdh), *gmh = malloc((size_t)RT * (size_t)ng * sizeof *gmh);
    uint8_t *codes = malloc((size_t)RT * (size_t)n);
    if (!w || !err || !gd || !gm || !gdh || !gmh || !codes) { j->fail = ERR_OOM; goto out; }
    for (int64_t r0 = j->r0; r0 < j->r1; r0 += RT) {
        const int nr = (int)(j->r1 - r0 < RT ? j->r1 - r0 : RT);
        for (int k = 0; k < nr; k++) {
            const float *src = j->W + (r0 + k) * n;
            float *wk = w + (size_t)k * n;
            if (j->perm) {
                // static groups: parameters from the original weights, then the permuted work order
                for (int64_t g = 0; g < ng; g++)
                    group_params(t, src + g * G, j->hdiag + g * G, &gd[k * ng + g], &gm[k * ng + g],
                                 &gdh[k * ng + g], &gmh[k * ng + g]);
                for (int64_t c = 0; c < n; c++) wk[c] = src[j->perm[c]];
            } else {
                memcpy(wk, src, (size_t)n * sizeof *wk);
            }
        }
        for (int64_t b0 = 0; b0 < n; b0 += bl) {
            const int64_t b1 = b0 + bl < n ? b0 + bl : n;
            for (int64_t i = b0; i < b1; i++) {
                const int64_t oc = j->perm ? j->perm[i] : i;   // original column
                const int64_t g = oc / G;
                const float *restrict ui = j->U + i * n;
                for (int k = 0; k < nr; k++) {
                    float *restrict wk = w + (size_t)k * n;
                    float *gdk = gd + k * ng, *gmk = gm + k * ng;
                    if (!j->perm && i % G == 0)   // group starts: parameters from the updated weights
                        group_params(t, wk + i, j->hdiag + i, &gdk[g], &gmk[g], &gdh[k * ng + g], &gmh[k * ng + g]);
                    const float d = gdk[g], m = gmk[g];
                    float q = 0;
                    if (d > 0) {
                        q = rintf((wk[i] - m) / d);
                        q = q < lo ? lo : q > hi ? hi : q;
                    }
                    const float deq = sym ? d * q : d * q + m;   // as the _ref dequantizers compute it
                    codes[(size_t)k * n + oc] = (uint8_t)((int)q + (sym ? 128 : 0));
                    const float e = (wk[i] - deq) / ui[i];
                    err[(size_t)k * bl + (i - b0)] = e;
                    j->loss += (double)e * e;
                    for (int64_t c = i + 1; c < b1; c++) wk[c] -= e * ui[c];
                }
            }
            for (int64_t i = b0; i < b1; i++) {
                const float *restrict ui = j->U + i * n;
                for (int k = 0; k < nr; k++) {
                    const float e = err[(size_t)k * bl + (i - b0)];
                    float *restrict wk = w + (size_t)k * n;
                    for (int64_t c = b1; c < n; c++) wk[c] -= e * ui[c];
                }
            }
        }
        for (int k = 0; k < nr; k++) {
            char *row = j->dst + (size_t)(r0 + k) * rb;
            for (int64_t g = 0; g < ng; g++) {
                void *blk = row + (size_t)g * bb;
                if (sym) {
                    struct blk_q8_g64 *b = blk;
                    b->d = gdh[k * ng + g];
                    for (int i = 0; i < G; i++) b->qs[i] = (int8_t)((int)codes[(size_t)k * n + g * G + i] - 128);
                } else {
                    quant_pack_group(t, blk, gdh[k * ng + g], gmh[k * ng + g], codes + (size_t)k * n + g * G);
                }
            }
        }
    }
out:
    free(w), free(err), free(gd), free(gm), free(gdh), free(gmh), free(codes);
    return NULL;
}

bool gptq_inverse_chol_upper(double *a, int64_t n, float *u, int impl) {
#ifdef HAVE_OPENBLAS
    if (impl != 0) return inverse_chol_upper_lapack(a, n, u);
#else
    if (impl != 0) return false;
#endif
    return inverse_chol_upper_own(a, n, u);
}

static int cmp_desc(const void *a, const void *b, void *ctx) {
    const float *d = ctx;
    const int64_t i = *(const int64_t *)a, j = *(const int64_t *)b;
    return d[i] > d[j] ? -1 : d[i] < d[j] ? 1 : (i > j) - (i < j);   // stable: ties by index
}

int gptq_quantize_matrix(enum qtype t, void *dst, const float *W, int64_t n, int64_t rows,
                         const float *H, const struct gptq_opts *o, int n_threads, double *loss,
                         struct err *e) {
    if (loss) *loss = 0;
    if ((unsigned)t >= QT_COUNT || !qtype_traits[t].native || qtype_traits[t].group != G)
        return ERR(e, ERR_ARG, "GPTQ quantizes the group-64 types (q8/q4/q3/q2_g64), not %s",
                   (unsigned)t < QT_COUNT ? qtype_traits[t].name : "?");
    struct gptq_opts op = o ? *o : GPTQ_OPTS_DEFAULT;
    if (op.block < 1) op.block = 128;
    if (n <= 0 || n % G || n > (1 << 16)) return ERR(e, ERR_ARG, "row length %lld: not a multiple of 64 in 64..65536", (long long)n);
    if (!(op.damp >= 0) || !(op.damp < 1e6)) return ERR(e, ERR_ARG, "damp %g out of range", op.damp);
    if (rows <= 0) return ERR_OK;
    int rc = ERR_OK;
    double *hd = malloc((size_t)n * (size_t)n * sizeof *hd);
    float *u = malloc((size_t)n * (size_t)n * sizeof *u), *hdiag = malloc((size_t)n * sizeof *hdiag);
    int64_t *perm = op.act_order ? malloc((size_t)n * sizeof *perm) : NULL;
    if (!hd || !u || !hdiag || (op.act_order && !perm)) {
        rc = ERR(e, ERR_OOM, "out of memory for a %lld x %lld Hessian", (long long)n, (long long)n);
        goto done;
    }
    double mean = 0;
    for (int64_t i = 0; i < n; i++) {
        hdiag[i] = H[i * n + i];
        if (!isfinite(hdiag[i]) || hdiag[i] < 0) {
            rc = ERR(e, ERR_FORMAT, "Hessian diagonal %lld is %g (not finite or negative)", (long long)i, hdiag[i]);
            goto done;
        }
        mean += hdiag[i];
    }
    mean /= (double)n;
    if (!(mean > 0)) { rc = ERR(e, ERR_FORMAT, "Hessian is zero (no calibration input reached this matrix)"); goto done; }
    if (perm) {
        for (int64_t i = 0; i < n; i++) perm[i] = i;
        qsort_r(perm, (size_t)n, sizeof *perm, cmp_desc, hdiag);
    }
    const double damp = op.damp * mean;
    for (int64_t i = 0; i < n; i++) {
        const int64_t pi = perm ? perm[i] : i;
        for (int64_t j = 0; j < n; j++) hd[i * n + j] = H[pi * n + (perm ? perm[j] : j)];
        hd[i * n + i] += damp;
        // an input never seen in calibration: H_ii = 0 makes its column free to absorb errors
        // it cannot cause; keep it at least at the damping so U stays bounded
        if (hd[i * n + i] <= 0) hd[i * n + i] = mean > 0 ? mean * 1e-2 : 1.0;
    }
#ifdef HAVE_OPENBLAS
    const int impl = 1;
#else
    const int impl = 0;
#endif
    if (!gptq_inverse_chol_upper(hd, n, u, impl)) {
        rc = ERR(e, ERR_FORMAT, "Hessian not positive definite after damping %g (raise --gptq-damp)", op.damp);
        goto done;
    }
    int nt = n_threads < 1 ? 1 : n_threads;
    if (nt > rows) nt = (int)rows;
    if (nt > 64) nt = 64;
    struct gjob jobs[64];
    pthread_t tid[64];
    bool started[64] = {false};
    for (int k = 0; k < nt; k++) {
        jobs[k] = (struct gjob){.t = t, .dst = dst, .W = W, .U = u, .hdiag = hdiag, .perm = perm, .n = n,
                                .r0 = rows * k / nt, .r1 = rows * (k + 1) / nt, .block = op.block};
        if (k > 0) started[k] = pthread_create(&tid[k], NULL, gjob_run, &jobs[k]) == 0;
    }
    gjob_run(&jobs[0]);
    for (int k = 1; k < nt; k++) {
        if (started[k]) pthread_join(tid[k], NULL);
        else gjob_run(&jobs[k]);
    }
    for (int k = 0; k < nt; k++) {
        if (jobs[k].fail && !rc) rc = ERR(e, jobs[k].fail, "out of memory in a GPTQ worker");
        if (loss) *loss += jobs[k].loss;
    }
done:
    free(hd), free(u), free(hdiag), free(perm);
    return rc;
}

struct ejob {
    enum qtype t;
    const char *q;
    const float *W, *H;
    int64_t n, r0, r1;
    double sum;
};

static void *ejob_run(void *arg) {
    struct ejob *j = arg;
    const int64_t n = j->n;
    const size_t rb = qtype_row_bytes(j->t, n);
    float *d = malloc((size_t)n * sizeof *d), *hd = malloc((size_t)n * sizeof *hd);
    if (!d || !hd) { free(d), free(hd); j->sum = NAN; return NULL; }
    for (int64_t r = j->r0; r < j->r1; r++) {
        qtype_traits[j->t].dequantize_row(d, j->q + (size_t)r * rb, n);
        for (int64_t i = 0; i < n; i++) d[i] = j->W[r * n + i] - d[i];
        for (int64_t i = 0; i < n; i++) hd[i] = 0;
        for (int64_t i = 0; i < n; i++) {   // hd = H d, as axpys over H's rows
            const float di = d[i];
            const float *restrict hi = j->H + i * n;
            for (int64_t c = 0; c < n; c++) hd[c] += di * hi[c];
        }
        double s = 0;
        for (int64_t i = 0; i < n; i++) s += (double)d[i] * hd[i];
        j->sum += s;
    }
    free(d), free(hd);
    return NULL;
}

double quant_output_error(enum qtype t, const void *q, const float *W, int64_t n, int64_t rows,
                          const float *H, int n_threads) {
    int nt = n_threads < 1 ? 1 : n_threads > 64 ? 64 : n_threads;
    if (nt > rows) nt = rows > 0 ? (int)rows : 1;
    struct ejob jobs[64];
    pthread_t tid[64];
    bool started[64] = {false};
    for (int k = 0; k < nt; k++) {
        jobs[k] = (struct ejob){.t = t, .q = q, .W = W, .H = H, .n = n, .r0 = rows * k / nt,
                                .r1 = rows * (k + 1) / nt};
        if (k > 0) started[k] = pthread_create(&tid[k], NULL, ejob_run, &jobs[k]) == 0;
    }
    ejob_run(&jobs[0]);
    double s = 0;
    for (int k = 1; k < nt; k++) {
        if (started[k]) pthread_join(tid[k], NULL);
        else ejob_run(&jobs[k]);
    }
    for (int k = 0; k < nt; k++) s += jobs[k].sum;
    return s;
}
