/* kernels/cuda/rope.cu: rotary position embedding in place, one thread per rotated pair.
 * The angle pos * theta^(-2i/head_dim) and its cos/sin are computed in double and rounded to
 * float once, so they do not depend on fp32 argument reduction at large positions; the rotation
 * itself is x0*c - x1*s and x0*s + x1*c with each product rounded (no FMA), as in scalar C.
 * Test: tests/test_cuda_ops.c */
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_ops.cuh"

#define ROPE_THREADS 256

__global__ void k_rope(float *x, int64_t row_stride, int64_t t, int n_heads, int head_dim, int pos0,
                       double theta, int style, int64_t total) {
    const int half = head_dim / 2;
    for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (int64_t)gridDim.x * blockDim.x) {
        const int i = (int)(e % half);                       // pair index within the head
        const int h = (int)((e / half) % n_heads);
        const int64_t tok = e / ((int64_t)half * n_heads);
        const double ang = (double)(pos0 + tok) * pow(theta, -2.0 * i / head_dim);
        double sd, cd;
        sincos(ang, &sd, &cd);
        const float c = (float)cd, sn = (float)sd;
        float *hx = x + tok * row_stride + (int64_t)h * head_dim;
        const int a = style == 0 ? 2 * i : i, b = style == 0 ? 2 * i + 1 : i + half;
        const float x0 = hx[a], x1 = hx[b];
        hx[a] = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, sn));
        hx[b] = __fadd_rn(__fmul_rn(x0, sn), __fmul_rn(x1, c));
    }
}

extern "C" int cuda_rope(float *x, int64_t row_stride, int64_t t, int n_heads, int head_dim, int pos0,
                         float theta, int style, cudaStream_t s) {
    if (t <= 0 || n_heads <= 0 || head_dim <= 0 || head_dim % 2 || pos0 < 0 ||
        (style != 0 && style != 1) || row_stride < (int64_t)n_heads * head_dim)
        return (int)cudaErrorInvalidValue;
    const int64_t total = t * n_heads * (head_dim / 2);
    const int64_t g = (total + ROPE_THREADS - 1) / ROPE_THREADS;
    k_rope<<<(unsigned)(g < 65536 ? g : 65536), ROPE_THREADS, 0, s>>>(x, row_stride, t, n_heads, head_dim,
                                                                      pos0, (double)theta, style, total);
    return (int)cudaGetLastError();
}
