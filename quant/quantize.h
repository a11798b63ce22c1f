/* quant/quantize.h: f32 matrix -> any quantizable qtype, multithreaded over rows, with two methods:
 * QM_RTN (the _ref round-to-nearest of quant/quant_ref.c) and QM_OPT (calibration-free search for
 * each group's d and m minimising the squared reconstruction error; never worse than RTN).
 * Format and algorithm: docs/QUANT_FORMATS.md. Test: tests/test_quant_opt.c */
#ifndef QUANT_QUANTIZE_H
#define QUANT_QUANTIZE_H

#include "quant/qtypes.h"

enum quant_method { QM_RTN, QM_OPT };

/* Quantizes rows x n floats (row-major, n contiguous) into dst (qtype_nbytes(t, n, rows) bytes,
 * caller-owned). QM_OPT applies to the native group-64 types; other types use their RTN
 * quantize_row. n_threads <= 1 runs on the calling thread. Returns 0, or ERR_ARG when t has no
 * quantizer or n is not a multiple of its group (message names both), ERR_OOM when threads
 * cannot be started. Thread-safe (no shared state). */
int quantize_matrix(enum qtype t, enum quant_method m, void *dst, const float *src, int64_t n,
                    int64_t rows, int n_threads, struct err *e);

/* As quantize_matrix, with a non-negative importance weight per column (imp[n], may be NULL):
 * QM_OPT then minimises sum_i imp[i] * (x_i - deq_i)^2 per group. */
int quantize_matrix_imp(enum qtype t, enum quant_method m, void *dst, const float *src, int64_t n,
                        int64_t rows, const float *imp, int n_threads, struct err *e);

/* Dequantizes rows x n weights of type t into dst (rows * n floats). n a multiple of the group. */
void dequantize_matrix(enum qtype t, float *dst, const void *src, int64_t n, int64_t rows);

/* Bytes of a (rows x n) matrix of type t; 0 if n is not a multiple of the group or on overflow. */
size_t quantize_nbytes(enum qtype t, int64_t n, int64_t rows);

/* One row with the optimized quantizer (n a multiple of 64; t a native type; imp may be NULL). */
void quantize_row_opt(enum qtype t, void *dst, const float *src, int64_t n, const float *imp);

/* Weighted squared error sum_i w_i (x_i - deq_i)^2 of one quantized row (w may be NULL = 1). */
double quant_row_sqerr(enum qtype t, const void *q, const float *x, int64_t n, const float *w);

#endif
