/* quant/calib.h: calibration statistics of a model's matmul inputs, the input to the
 * importance-weighted and GPTQ quantizers. For every weight matrix W (rows x n), over the tokens
 * of a calibration text: the mean of x_i^2 per input column (llama.cpp's importance matrix) and,
 * optionally, the mean input Gram matrix H = E[x x^T] (the GPTQ Hessian up to a factor 2).
 * Files: loaders/imatrix.h (llama.cpp's GGUF imatrix and legacy .dat, plus our H tensors).
 * Collected by ./imatrix (eval/imatrix.c). Test: tests/test_quant_gptq.c */
#ifndef QUANT_CALIB_H
#define QUANT_CALIB_H

#include "quant/common.h"

struct calib_entry {
    char name[96];   // the weight's GGUF name, "blk.0.attn_q.weight"
    int64_t n;       // input width = the weight's row length
    double count;    // tokens (input rows) averaged
    float *x2;       // n: mean of x_i^2
    float *xtx;      // n(n+1)/2: mean of x_i x_j, j >= i, packed upper triangle by rows; NULL: none
    int xtx_of;      // >= 0: the entry whose xtx this one shares (same input: q/k/v, gate/up)
    double xtx_count;
};

struct calib {
    int n, cap;
    struct calib_entry *e;
    int chunks, chunk_size;   // what was run (informational; 0 when unknown)
    char dataset[256];        // calibration file name (informational)
};

/* Index in c->e of the packed upper-triangle offset of row i, n columns: rows 0..i-1 hold
 * n, n-1, ..., n-i+1 entries. */
static inline int64_t calib_tri_row(int64_t n, int64_t i) { return i * n - i * (i - 1) / 2; }

/* Adds an entry with zeroed x2 (and xtx when with_xtx), or returns the existing one's index.
 * Returns the index, or -1 with e set (ERR_OOM, or ERR_FORMAT when name exists with another n). */
int calib_add(struct calib *c, const char *name, int64_t n, bool with_xtx, struct err *e);
const struct calib_entry *calib_find(const struct calib *c, const char *name);
/* The xtx this entry uses (its own or the one it shares), NULL if none. */
const float *calib_xtx(const struct calib *c, const struct calib_entry *ce);
/* H as a full symmetric n x n row-major matrix (out: n*n floats). false if the entry has none. */
bool calib_hessian_full(const struct calib *c, const struct calib_entry *ce, float *out);
void calib_free(struct calib *c);

#endif
