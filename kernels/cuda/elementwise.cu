/* kernels/cuda/elementwise.cu: swiglu and add, f32, one thread per element (grid-stride).
 * Plain IEEE fp32 math (expf, division): matches the scalar reference to a few ulp.
 * Test: tests/test_cuda_ops.c */
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_ops.cuh"

#define EW_THREADS 256

static unsigned ew_grid(int64_t count) {
    const int64_t g = (count + EW_THREADS - 1) / EW_THREADS;
    return (unsigned)(g < 65536 ? (g > 0 ? g : 1) : 65536);
}

// out may alias gate or up: each element is read before it is written by the same thread.
__global__ void k_swiglu(float *out, const float *gate, const float *up, int64_t count) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < count;
         i += (int64_t)gridDim.x * blockDim.x) {
        const float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];  // silu(g) * up
    }
}

__global__ void k_add(float *out, const float *a, const float *b, int64_t count) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < count;
         i += (int64_t)gridDim.x * blockDim.x)
        out[i] = a[i] + b[i];
}

extern "C" int cuda_swiglu(float *out, const float *gate, const float *up, int64_t count, cudaStream_t s) {
    if (count <= 0) return (int)cudaErrorInvalidValue;
    k_swiglu<<<ew_grid(count), EW_THREADS, 0, s>>>(out, gate, up, count);
    return (int)cudaGetLastError();
}

extern "C" int cuda_add(float *out, const float *a, const float *b, int64_t count, cudaStream_t s) {
    if (count <= 0) return (int)cudaErrorInvalidValue;
    k_add<<<ew_grid(count), EW_THREADS, 0, s>>>(out, a, b, count);
    return (int)cudaGetLastError();
}
