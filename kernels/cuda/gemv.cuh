/* kernels/cuda/gemv.cuh: fused dequantize-GEMV launchers, out(d) = W(d, n) @ x(n), for decode (t = 1).
 * All pointers are device memory; launches go on `stream` and return the launch error (0 = ok).
 * Quantized W must be 16-byte aligned and the reads may run up to 15 bytes past the last row, so W
 * must sit in memory from the CUDA backend's alloc (which pads every allocation). See docs/CUDA.md.
 * Test: tests/test_cuda_ops.c */
#ifndef KERNELS_CUDA_GEMV_CUH
#define KERNELS_CUDA_GEMV_CUH

#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
int cuda_matvec_f32(float *out, const float *x, const void *w, int64_t n, int64_t d, cudaStream_t s);
int cuda_matvec_f16(float *out, const float *x, const void *w, int64_t n, int64_t d, cudaStream_t s);
int cuda_matvec_q8_g64(float *out, const float *x, const void *w, int64_t n, int64_t d, cudaStream_t s);
int cuda_matvec_q4_g64(float *out, const float *x, const void *w, int64_t n, int64_t d, cudaStream_t s);
int cuda_matvec_q3_g64(float *out, const float *x, const void *w, int64_t n, int64_t d, cudaStream_t s);
int cuda_matvec_q2_g64(float *out, const float *x, const void *w, int64_t n, int64_t d, cudaStream_t s);
/* Bytes one call reads from memory: the weights plus x, for GB/s reports (STYLE section 6). */
double cuda_matvec_bytes(int qtype, int64_t n, int64_t d);
}

#endif
