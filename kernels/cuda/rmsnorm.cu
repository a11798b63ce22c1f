/* kernels/cuda/rmsnorm.cu: out(t, n) = w * (x * 1/sqrt(mean(x^2) + eps)), one CTA per row,
 * fp32 sum of squares with a warp-shuffle tree. Test: tests/test_cuda_ops.c */
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_ops.cuh"

#define RMS_THREADS 256

// In place is safe: every thread reads its x[i] before the barrier and writes only its own out[i].
__global__ void __launch_bounds__(RMS_THREADS)
    k_rmsnorm(float *out, const float *x, const float *__restrict__ w, int64_t n, float eps) {
    __shared__ float part[RMS_THREADS / 32];
    const float *xr = x + (int64_t)blockIdx.x * n;
    float *orow = out + (int64_t)blockIdx.x * n;
    float ss = 0.f;
    for (int64_t i = threadIdx.x; i < n; i += RMS_THREADS) ss = fmaf(xr[i], xr[i], ss);
    ss = cu_warp_sum(ss);
    if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = ss;
    __syncthreads();
    float tot = 0.f;
    for (int k = 0; k < RMS_THREADS / 32; k++) tot += part[k];  // same order in every thread
    const float inv = 1.0f / sqrtf(tot / (float)n + eps);      // IEEE sqrt and division
    for (int64_t i = threadIdx.x; i < n; i += RMS_THREADS) orow[i] = w[i] * (inv * xr[i]);
}

extern "C" int cuda_rmsnorm(float *out, const float *x, const float *w, int64_t n, int64_t t, float eps,
                            cudaStream_t s) {
    if (n <= 0 || t <= 0 || t > 0x7fffffff) return (int)cudaErrorInvalidValue;
    k_rmsnorm<<<(unsigned)t, RMS_THREADS, 0, s>>>(out, x, w, n, eps);
    return (int)cudaGetLastError();
}
