/* quant/gptq.h: GPTQ (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for
 * Generative Pre-trained Transformers") for the engine's group-64 formats (q8/q4/q3/q2_g64).
 * Columns are quantized one at a time; each column's rounding error, scaled by the inverse
 * Hessian's Cholesky factor, is pushed onto the columns not yet quantized, so that the matmul's
 * output error ||(W - Q) x||^2 over the calibration inputs is minimised rather than ||W - Q||^2.
 * Lazy batches of `block` columns, the damped inverse Hessian's upper Cholesky factor, group
 * parameters (d, m) chosen per row and group by the optimized quantizer (quant/quantize.h) on the
 * updated weights when the group starts, or with act_order on the original weights up front
 * (static groups: the group-64 layout is kept). docs/QUANT_FORMATS.md; test: tests/test_quant_gptq.c */
#ifndef QUANT_GPTQ_H
#define QUANT_GPTQ_H

#include "quant/qtypes.h"

struct gptq_opts {
    double damp;      // added to H's diagonal: damp * mean(diag H) (GPTQ's percdamp; default 0.1)
    bool act_order;   // columns in decreasing diag(H) order (default on)
    int block;        // lazy-batch width in columns (128 default; any >= 1)
};
/* The defaults differ from the paper's (0.01, off): on SmolLM2-135M calibrated on ARC-Easy text and
 * evaluated on WikiText-2, damp 0.1 with act-order gave the lowest KL divergence at q3 and q4
 * (docs/QUANT_FORMATS.md). */
#define GPTQ_OPTS_DEFAULT ((struct gptq_opts){.damp = 0.1, .act_order = true, .block = 128})

/* Quantizes W (rows x n, row-major, not modified) to type t (a native group-64 type) into dst
 * (qtype_nbytes(t, n, rows) bytes), given H = E[x x^T] (n x n, symmetric, row-major, not
 * modified). loss (may be NULL) receives sum over rows of (w - q)^T H_d (w - q) as GPTQ accounts
 * it (H_d = the damped H): the mean squared output error the quantization adds. Returns 0, or
 * ERR_ARG (type, n not a multiple of 64, damp < 0), ERR_FORMAT (H not positive definite even
 * after damping, or not finite), ERR_OOM. n_threads splits the rows. */
int gptq_quantize_matrix(enum qtype t, void *dst, const float *W, int64_t n, int64_t rows,
                         const float *H, const struct gptq_opts *o, int n_threads, double *loss,
                         struct err *e);

/* The output error sum over rows of (w - deq(q))^T H (w - deq(q)) of any quantized matrix of
 * type t (H undamped, n x n). For comparing quantizers and for the bit allocator. */
double quant_output_error(enum qtype t, const void *q, const float *W, int64_t n, int64_t rows,
                          const float *H, int n_threads);

/* U (upper triangular, n x n row-major) with U^T U = A^-1, for A symmetric positive definite
 * (n x n, double; destroyed). impl 0: the own C code; 1: LAPACK's dpotrf/dtrtri from OpenBLAS
 * (blocked, multithreaded), false when built without it. false if A is not positive definite.
 * gptq_quantize_matrix uses LAPACK when it is there. Exposed for tests. */
bool gptq_inverse_chol_upper(double *a, int64_t n, float *u, int impl);

#endif
