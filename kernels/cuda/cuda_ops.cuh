/* kernels/cuda/cuda_ops.cuh: launchers for the non-GEMV CUDA kernels (dequant.cu, elementwise.cu,
 * rmsnorm.cu, rope.cu, attention.cu). All pointers are device memory; every launcher enqueues on
 * `s` and returns the launch error as an int (0 = cudaSuccess). Semantics: kernels/backend.h.
 * Test: tests/test_cuda_ops.c */
#ifndef KERNELS_CUDA_CUDA_OPS_CUH
#define KERNELS_CUDA_CUDA_OPS_CUH

#include <cuda_runtime.h>
#include <stdint.h>

#define CUDA_EMBED_MAX_INLINE 16   // token ids passed by value (graph-capturable) up to this count
struct cuda_row_list { int32_t idx[CUDA_EMBED_MAX_INLINE]; };

extern "C" {
/* out row r (n values, f32 or f16 when out_f16) = dequantized row src_row(r) of src (type qt, rows
 * of row_bytes). src_row(r) = r0 + r when idx_dev == NULL and inl == NULL; idx_dev[r] when given;
 * inl->idx[r] when inl is given (n_rows <= CUDA_EMBED_MAX_INLINE). Row indices are not range-checked
 * here: the caller checks them. */
int cuda_dequant_rows(void *out, bool out_f16, const void *src, int qt, int64_t row_bytes, int64_t n,
                      int64_t r0, const int32_t *idx_dev, const struct cuda_row_list *inl,
                      int64_t n_rows, cudaStream_t s);
/* out[i] = (f16 or bf16 or f32) x[i] with round-to-nearest-even; dst_qt is QT_F32/F16/BF16. */
int cuda_convert_f32(void *out, int dst_qt, const float *x, int64_t count, cudaStream_t s);
int cuda_swiglu(float *out, const float *gate, const float *up, int64_t count, cudaStream_t s);
int cuda_add(float *out, const float *a, const float *b, int64_t count, cudaStream_t s);
/* out(t, n) = w * (x / sqrt(mean(x^2) + eps)), rows of n; in place allowed (out == x). */
int cuda_rmsnorm(float *out, const float *x, const float *w, int64_t n, int64_t t, float eps,
                 cudaStream_t s);
/* In place on x(t, row_stride); heads at offsets h*head_dim; see kernels/backend.h for styles. */
int cuda_rope(float *x, int64_t row_stride, int64_t t, int n_heads, int head_dim, int pos0, float theta,
              int style, cudaStream_t s);
/* Causal GQA, one CTA per (head, query token); kv_qt is QT_F32, QT_F16 or QT_BF16. */
int cuda_attention(float *out, int64_t out_stride, const float *q, int64_t q_stride, const void *k,
                   const void *v, int64_t kv_stride, int kv_qt, int64_t t, int n_heads, int n_kv_heads,
                   int head_dim, int pos0, cudaStream_t s);
}

#endif
