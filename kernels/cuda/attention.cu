/* kernels/cuda/attention.cu: causal grouped-query attention over the KV cache, decode and prefill.
 * One CTA per (head, query token); positions are processed in chunks of ATT_CHUNK with an online
 * softmax, so any context length works with fixed shared memory. head_dim <= 256.
 * Reference: tests/test_cuda_ops.c (double softmax). Test: tests/test_cuda_ops.c */
#include <math.h>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_ops.cuh"

#define ATT_THREADS 128   // 4 warps
#define ATT_CHUNK 256     // positions per softmax chunk
#define ATT_MAX_HD 256    // each thread owns output dims tid and tid + 128

template <class T> __device__ __forceinline__ float att_ld(const T *p);
template <> __device__ __forceinline__ float att_ld<float>(const float *p) { return *p; }
template <> __device__ __forceinline__ float att_ld<__half>(const __half *p) { return __half2float(*p); }
template <> __device__ __forceinline__ float att_ld<__nv_bfloat16>(const __nv_bfloat16 *p) {
    return __bfloat162float(*p);
}

/* q(t, q_stride), k/v(n_ctx, kv_stride), out(t, out_stride). Query tq sits at position pos0 + tq
 * and attends to positions 0 .. pos0 + tq. */
template <class T>
__global__ void __launch_bounds__(ATT_THREADS)
    k_attention(float *__restrict__ out, int64_t out_stride, const float *__restrict__ q, int64_t q_stride,
                const T *__restrict__ k, const T *__restrict__ v, int64_t kv_stride, int n_heads,
                int n_kv_heads, int hd, int pos0, float scale) {
    __shared__ float qs[ATT_MAX_HD];
    __shared__ float sc[ATT_CHUNK];
    __shared__ float part[ATT_THREADS / 32];
    const int h = blockIdx.x, tq = blockIdx.y;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int kvh = h / (n_heads / n_kv_heads);
    const int n_pos = pos0 + tq + 1;
    const T *kh = k + (int64_t)kvh * hd, *vh = v + (int64_t)kvh * hd;

    for (int i = threadIdx.x; i < hd; i += ATT_THREADS) qs[i] = q[(int64_t)tq * q_stride + (int64_t)h * hd + i];
    __syncthreads();

    const int d0 = threadIdx.x, d1 = threadIdx.x + ATT_THREADS;  // owned output dims (if < hd)
    float acc0 = 0.f, acc1 = 0.f, m = -INFINITY, l = 0.f;
    for (int p0 = 0; p0 < n_pos; p0 += ATT_CHUNK) {
        const int cnt = min(ATT_CHUNK, n_pos - p0);
        // 1. scores: one warp per position, lanes across head dims
        for (int j = warp; j < cnt; j += ATT_THREADS / 32) {
            const T *kr = kh + (int64_t)(p0 + j) * kv_stride;
            float dot = 0.f;
            for (int i = lane; i < hd; i += 32) dot = fmaf(qs[i], att_ld(kr + i), dot);
            dot = cu_warp_sum(dot);
            if (lane == 0) sc[j] = dot * scale;
        }
        __syncthreads();
        // 2. chunk max over all threads
        float cm = -INFINITY;
        for (int j = threadIdx.x; j < cnt; j += ATT_THREADS) cm = fmaxf(cm, sc[j]);
        cm = cu_warp_max(cm);
        if (lane == 0) part[warp] = cm;
        __syncthreads();
        cm = part[0];
        for (int w = 1; w < ATT_THREADS / 32; w++) cm = fmaxf(cm, part[w]);
        const float m_new = fmaxf(m, cm);
        const float corr = expf(m - m_new);  // 0 on the first chunk (m = -inf, acc = l = 0)
        // 3. probabilities (unnormalized) in place
        for (int j = threadIdx.x; j < cnt; j += ATT_THREADS) sc[j] = expf(sc[j] - m_new);
        __syncthreads();
        // 4. every thread sums the chunk in the same order (so l is identical everywhere) and
        //    accumulates its output dims; V reads are coalesced across threads.
        float psum = 0.f, a0 = 0.f, a1 = 0.f;
        for (int j = 0; j < cnt; j++) {
            const float pj = sc[j];
            const T *vr = vh + (int64_t)(p0 + j) * kv_stride;
            psum += pj;
            if (d0 < hd) a0 = fmaf(pj, att_ld(vr + d0), a0);
            if (d1 < hd) a1 = fmaf(pj, att_ld(vr + d1), a1);
        }
        acc0 = acc0 * corr + a0;
        acc1 = acc1 * corr + a1;
        l = l * corr + psum;
        m = m_new;
        __syncthreads();  // sc and part are rewritten by the next chunk
    }
    float *orow = out + (int64_t)tq * out_stride + (int64_t)h * hd;
    if (d0 < hd) orow[d0] = acc0 / l;
    if (d1 < hd) orow[d1] = acc1 / l;
}

extern "C" int cuda_attention(float *out, int64_t out_stride, const float *q, int64_t q_stride,
                              const void *k, const void *v, int64_t kv_stride, int kv_qt, int64_t t,
                              int n_heads, int n_kv_heads, int head_dim, int pos0, cudaStream_t s) {
    if (t <= 0 || t > 65535 || n_heads <= 0 || n_kv_heads <= 0 || n_heads % n_kv_heads ||
        head_dim <= 0 || head_dim > ATT_MAX_HD || pos0 < 0)
        return (int)cudaErrorInvalidValue;
    const dim3 grid((unsigned)n_heads, (unsigned)t);
    const float scale = 1.0f / sqrtf((float)head_dim);
    switch (kv_qt) {
    case QT_F32:
        k_attention<float><<<grid, ATT_THREADS, 0, s>>>(out, out_stride, q, q_stride, (const float *)k,
                                                        (const float *)v, kv_stride, n_heads, n_kv_heads,
                                                        head_dim, pos0, scale);
        break;
    case QT_F16:
        k_attention<__half><<<grid, ATT_THREADS, 0, s>>>(out, out_stride, q, q_stride, (const __half *)k,
                                                         (const __half *)v, kv_stride, n_heads,
                                                         n_kv_heads, head_dim, pos0, scale);
        break;
    case QT_BF16:
        k_attention<__nv_bfloat16><<<grid, ATT_THREADS, 0, s>>>(
            out, out_stride, q, q_stride, (const __nv_bfloat16 *)k, (const __nv_bfloat16 *)v, kv_stride,
            n_heads, n_kv_heads, head_dim, pos0, scale);
        break;
    default: return (int)cudaErrorInvalidValue;
    }
    return (int)cudaGetLastError();
}
