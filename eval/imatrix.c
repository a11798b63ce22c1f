/* eval/imatrix.c: calibration statistics from the engine's matmul inputs (eval/imatrix.h). */
#include "eval/imatrix.h"

#include <pthread.h>
#include <stdlib.h>

#ifdef HAVE_OPENBLAS
#include <cblas.h>
#endif

struct input {
    int64_t n;
    double count;
    double *sum2;           // n
    double *xtx;            // packed upper, or NULL
    char names[4][96];
    int n_names;
};

struct imatrix_acc {
    bool hessian;
    int n_threads;
    struct input *in;
    int n_in, cap, cursor;
    int oom;
    float *scratch;         // OpenBLAS path: n x n float product
    int64_t scratch_n;
};

struct imatrix_acc *imatrix_acc_new(bool hessian, int n_threads) {
    struct imatrix_acc *a = calloc(1, sizeof *a);
    if (a) a->hessian = hessian, a->n_threads = n_threads < 1 ? 1 : n_threads;
    return a;
}

void imatrix_acc_free(struct imatrix_acc *a) {
    if (!a) return;
    for (int i = 0; i < a->n_in; i++) free(a->in[i].sum2), free(a->in[i].xtx);
    free(a->in), free(a->scratch), free(a);
}

// ------------------------------------------------------------------------------------------------
// The Gram update, own kernel: 8 rows x 64 columns of G accumulated in float over the T tokens of
// one call (a tile in L1), then added to the double accumulator.

#define TI 8
#define TJ 64

struct gjob { double *G; const float *X; int64_t T, n; int k, nk; };

static void gram_tile(double *G, const float *X, int64_t T, int64_t n, int64_t i0) {
    const int64_t ni = i0 + TI <= n ? TI : n - i0;
    for (int64_t j0 = i0; j0 < n; j0 += TJ) {
        const int64_t nj = j0 + TJ <= n ? TJ : n - j0;
        float acc[TI][TJ] = {{0}};
        for (int64_t t = 0; t < T; t++) {
            const float *restrict xr = X + t * n;
            for (int64_t r = 0; r < ni; r++) {
                const float a = xr[i0 + r];
                float *restrict ac = acc[r];
                if (nj == TJ)
                    for (int c = 0; c < TJ; c++) ac[c] += a * xr[j0 + c];
                else
                    for (int64_t c = 0; c < nj; c++) ac[c] += a * xr[j0 + c];
            }
        }
        for (int64_t r = 0; r < ni; r++) {
            const int64_t i = i0 + r;
            double *gi = G + calib_tri_row(n, i) - i;   // gi[j] = G[i][j], j >= i
            for (int64_t c = 0; c < nj; c++)
                if (j0 + c >= i) gi[j0 + c] += acc[r][c];
        }
    }
}

static void *gjob_run(void *arg) {
    struct gjob *j = arg;
    // tiles dealt round-robin: the top rows (long) and bottom rows (short) spread over threads
    for (int64_t i0 = (int64_t)j->k * TI; i0 < j->n; i0 += (int64_t)j->nk * TI) gram_tile(j->G, j->X, j->T, j->n, i0);
    return NULL;
}

void imatrix_gram_update(double *G, const float *X, int64_t T, int64_t n, int n_threads) {
    int nt = n_threads < 1 ? 1 : n_threads > 64 ? 64 : n_threads;
    struct gjob jobs[64];
    pthread_t tid[64];
    bool started[64] = {false};
    for (int k = 0; k < nt; k++) {
        jobs[k] = (struct gjob){.G = G, .X = X, .T = T, .n = n, .k = k, .nk = nt};
        if (k > 0) started[k] = pthread_create(&tid[k], NULL, gjob_run, &jobs[k]) == 0;
    }
    gjob_run(&jobs[0]);
    for (int k = 1; k < nt; k++) {
        if (started[k]) pthread_join(tid[k], NULL);
        else gjob_run(&jobs[k]);
    }
}

// ------------------------------------------------------------------------------------------------

static struct input *find_input(struct imatrix_acc *a, const char *const *names, int n_w, int64_t n) {
    // the forward pass calls in the same order every time: try the next one first
    for (int k = 0; k < a->n_in; k++) {
        struct input *in = &a->in[(a->cursor + k) % a->n_in];
        if (strcmp(in->names[0], names[0]) == 0) {
            a->cursor = (int)(in - a->in + 1) % a->n_in;
            return in->n == n ? in : NULL;
        }
    }
    if (a->n_in == a->cap) {
        int cap = a->cap ? 2 * a->cap : 128;
        struct input *ni = realloc(a->in, (size_t)cap * sizeof *ni);
        if (!ni) return NULL;
        a->in = ni, a->cap = cap;
    }
    struct input *in = &a->in[a->n_in];
    memset(in, 0, sizeof *in);
    in->n = n;
    in->n_names = n_w < 4 ? n_w : 4;
    for (int k = 0; k < in->n_names; k++) snprintf(in->names[k], sizeof in->names[k], "%s", names[k]);
    in->sum2 = calloc((size_t)n, sizeof(double));
    if (a->hessian) in->xtx = calloc((size_t)calib_tri_row(n, n), sizeof(double));
    if (!in->sum2 || (a->hessian && !in->xtx)) {
        free(in->sum2), free(in->xtx);
        return NULL;
    }
    a->n_in++;
    return in;
}

void imatrix_acc_observe(void *ctx, const char *const *names, int n_w, const struct tensor *x) {
    struct imatrix_acc *a = ctx;
    if (a->oom || n_w < 1 || x->type != QT_F32) return;
    const int64_t n = x->ne[0], T = x->ne[1];
    struct input *in = find_input(a, names, n_w, n);
    if (!in) { a->oom = 1; return; }
    const float *X = x->data;
    for (int64_t t = 0; t < T; t++)
        for (int64_t j = 0; j < n; j++) in->sum2[j] += (double)X[t * n + j] * X[t * n + j];
    in->count += (double)T;
    if (!in->xtx) return;
#ifdef HAVE_OPENBLAS
    if (a->scratch_n < n) {
        free(a->scratch);
        a->scratch = malloc((size_t)n * (size_t)n * sizeof(float));
        a->scratch_n = a->scratch ? n : 0;
        if (!a->scratch) { a->oom = 1; return; }
    }
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, (blasint)n, (blasint)T, 1.0f, X, (blasint)n, 0.0f,
                a->scratch, (blasint)n);
    for (int64_t i = 0; i < n; i++) {
        double *gi = in->xtx + calib_tri_row(n, i) - i;
        const float *si = a->scratch + i * n;
        for (int64_t j = i; j < n; j++) gi[j] += si[j];
    }
#else
    imatrix_gram_update(in->xtx, X, T, n, a->n_threads);
#endif
}

int imatrix_acc_finish(struct imatrix_acc *a, struct calib *out, struct err *e) {
    memset(out, 0, sizeof *out);
    if (a->oom) return ERR(e, ERR_OOM, "out of memory while collecting statistics");
    for (int k = 0; k < a->n_in; k++) {
        const struct input *in = &a->in[k];
        if (!(in->count > 0)) continue;
        int first = -1;
        for (int w = 0; w < in->n_names; w++) {
            const bool own = w == 0 && in->xtx;
            int i = calib_add(out, in->names[w], in->n, own, e);
            if (i < 0) { calib_free(out); return e->code; }
            struct calib_entry *ce = &out->e[i];
            ce->count = in->count;
            for (int64_t j = 0; j < in->n; j++) ce->x2[j] = (float)(in->sum2[j] / in->count);
            if (own) {
                const int64_t m = calib_tri_row(in->n, in->n);
                for (int64_t j = 0; j < m; j++) ce->xtx[j] = (float)(in->xtx[j] / in->count);
                ce->xtx_count = in->count;
                first = i;
            } else if (first >= 0) {
                ce->xtx_of = first;
                ce->xtx_count = in->count;
            }
        }
    }
    return ERR_OK;
}
