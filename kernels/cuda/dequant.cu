/* kernels/cuda/dequant.cu: weight rows of any handled type -> f32 or f16, one thread per output
 * element (coalesced writes). Used by embed (f32, bit-exact with the scalar reference) and by the
 * prefill matmul (f16 scratch for cuBLAS). Also f32 -> f16/bf16 conversion. Test: tests/test_cuda_ops.c */
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_ops.cuh"

#define DQ_THREADS 256

__global__ void k_dequant_rows(void *__restrict__ out, bool out_f16, const uint8_t *__restrict__ src,
                               enum qtype qt, int64_t row_bytes, int64_t n, int64_t r0,
                               const int32_t *__restrict__ idx_dev, struct cuda_row_list inl,
                               bool use_inl, int64_t total) {
    for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = e / n, i = e % n;
        const int64_t sr = use_inl ? inl.idx[r] : idx_dev ? idx_dev[r] : r0 + r;
        const float v = cu_deq_elem(qt, src + sr * row_bytes, i);
        if (out_f16)
            ((__half *)out)[e] = __float2half_rn(v);
        else
            ((float *)out)[e] = v;
    }
}

// Grid for a grid-stride loop over `total` elements: enough CTAs to fill any GPU, capped.
static unsigned grid_for(int64_t total, int threads) {
    const int64_t g = (total + threads - 1) / threads;
    return (unsigned)(g < 65536 ? (g > 0 ? g : 1) : 65536);
}

extern "C" int cuda_dequant_rows(void *out, bool out_f16, const void *src, int qt, int64_t row_bytes,
                                 int64_t n, int64_t r0, const int32_t *idx_dev,
                                 const struct cuda_row_list *inl, int64_t n_rows, cudaStream_t s) {
    if (n <= 0 || n_rows <= 0) return (int)cudaErrorInvalidValue;
    if (inl && n_rows > CUDA_EMBED_MAX_INLINE) return (int)cudaErrorInvalidValue;
    struct cuda_row_list l;
    memset(&l, 0, sizeof l);
    if (inl) l = *inl;
    const int64_t total = n * n_rows;
    k_dequant_rows<<<grid_for(total, DQ_THREADS), DQ_THREADS, 0, s>>>(
        out, out_f16, (const uint8_t *)src, (enum qtype)qt, row_bytes, n, r0, idx_dev, l, inl != NULL,
        total);
    return (int)cudaGetLastError();
}

__global__ void k_convert_f32(void *__restrict__ out, enum qtype dst, const float *__restrict__ x,
                              int64_t count) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < count;
         i += (int64_t)gridDim.x * blockDim.x) {
        const float v = x[i];
        if (dst == QT_F16)
            ((__half *)out)[i] = __float2half_rn(v);
        else if (dst == QT_BF16)
            ((__nv_bfloat16 *)out)[i] = __float2bfloat16_rn(v);
        else
            ((float *)out)[i] = v;
    }
}

extern "C" int cuda_convert_f32(void *out, int dst_qt, const float *x, int64_t count, cudaStream_t s) {
    if (count <= 0 || (dst_qt != QT_F32 && dst_qt != QT_F16 && dst_qt != QT_BF16))
        return (int)cudaErrorInvalidValue;
    k_convert_f32<<<grid_for(count, DQ_THREADS), DQ_THREADS, 0, s>>>(out, (enum qtype)dst_qt, x, count);
    return (int)cudaGetLastError();
}
