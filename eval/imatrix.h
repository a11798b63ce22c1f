/* eval/imatrix.h: collects calibration statistics (quant/calib.h) from a running engine through
 * its matmul observer: per matmul input, the sum of x_i^2 and optionally the Gram matrix X^T X
 * (packed upper triangle), both accumulated in double. Used by ./imatrix (eval/imatrix_main.c).
 * Test: tests/test_loader_imatrix.c */
#ifndef EVAL_IMATRIX_H
#define EVAL_IMATRIX_H

#include "engine/engine.h"
#include "quant/calib.h"

struct imatrix_acc;

/* hessian: also accumulate X^T X. n_threads for the Gram updates (own kernel; OpenBLAS's
 * ssyrk when built with it). NULL on OOM. */
struct imatrix_acc *imatrix_acc_new(bool hessian, int n_threads);
void imatrix_acc_free(struct imatrix_acc *a);
/* The engine_matmul_observer to register with ctx = the accumulator. */
void imatrix_acc_observe(void *ctx, const char *const *names, int n_w, const struct tensor *x);
/* Means into *out (one entry per weight name; inputs shared by several weights give each the
 * same x2 and the first one the Gram matrix, the others xtx_of). ERR_OOM, also for an allocation
 * that failed while observing. */
int imatrix_acc_finish(struct imatrix_acc *a, struct calib *out, struct err *e);

/* G[i][j] += sum_t X[t][i] X[t][j] for j >= i (G packed upper by rows, double), X (T x n) f32:
 * the Gram update, exposed for its test. */
void imatrix_gram_update(double *G, const float *X, int64_t T, int64_t n, int n_threads);

#endif
