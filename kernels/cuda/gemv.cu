/* kernels/cuda/gemv.cu: fused dequantize-GEMV for decode, out(d) = W(d, n) @ x(n), fp32 accumulate.
 * Quantized types: each warp streams its row through shared memory in tiles of 32 blocks with
 * coalesced 16-byte loads, then lane L decodes block L of the tile from shared memory. x is staged
 * once per CTA. Reference: tests/test_cuda_ops.c (scalar, double). Design and bytes: docs/CUDA.md */
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/gemv.cuh"

#define GEMV_WARPS 4          // warps per CTA
#define GEMV_ROWS_PER_WARP 2  // rows each warp computes against the staged x
#define GEMV_ROWS_PER_CTA (GEMV_WARPS * GEMV_ROWS_PER_WARP)
#define GEMV_TILE 32          // blocks per tile = one per lane
#define GEMV_XSTRIDE 68       // floats per staged 64-wide x group: 16-byte aligned, and 68 = 4 mod 32
                              // puts the 8 lanes of a float4 quarter-warp on distinct banks

// ------------------------------------------------------------------------------------------------
// Block dot products. blk points into the shared-memory tile, x to the 64 staged x values of this
// block (16-byte aligned), xsum = sum of those 64 x. Returns sum_i x[i] * w[i].
// Asymmetric types use sum x*(d*q + m) = d * sum(x*q) + m * sum(x).

struct blk_dot_q8 {
    static constexpr int bytes = sizeof(struct blk_q8_g64);
    // Block starts are only 2-byte aligned (66 B blocks): read qs as 16-bit pairs.
    static __device__ __forceinline__ float dot(const uint8_t *blk, const float *x, float xsum) {
        const uint16_t *p = (const uint16_t *)blk;
        const float d = cu_h2f(p[0]);
        float s = 0.f;
#pragma unroll
        for (int k = 0; k < 16; k++) {  // elements 4k .. 4k+3
            const float4 xv = *(const float4 *)(x + 4 * k);
            const uint32_t a = p[1 + 2 * k], b = p[2 + 2 * k];
            // (q ^ 0x80) = q + 128 for int8 q; subtract 2^23 + 128 in one exact step
            s = fmaf(xv.x, __uint_as_float(0x4B000000u | ((a & 0xff) ^ 0x80)) - 8388736.0f, s);
            s = fmaf(xv.y, __uint_as_float(0x4B000000u | ((a >> 8) ^ 0x80)) - 8388736.0f, s);
            s = fmaf(xv.z, __uint_as_float(0x4B000000u | ((b & 0xff) ^ 0x80)) - 8388736.0f, s);
            s = fmaf(xv.w, __uint_as_float(0x4B000000u | ((b >> 8) ^ 0x80)) - 8388736.0f, s);
        }
        return d * s;
    }
};

struct blk_dot_q4 {
    static constexpr int bytes = sizeof(struct blk_q4_g64);
    // 36 B blocks, 4-byte aligned: word 0 = d | m << 16, words 1..8 = qs.
    static __device__ __forceinline__ float dot(const uint8_t *blk, const float *x, float xsum) {
        const uint32_t *p = (const uint32_t *)blk;
        const float d = cu_h2f(p[0] & 0xffff), m = cu_h2f(p[0] >> 16);
        float s = 0.f;
#pragma unroll
        for (int k = 0; k < 8; k++) {  // qs bytes 4k..4k+3: low nibbles q[4k+c], high q[4k+c+32]
            const uint32_t q = p[1 + k];
            const float4 xl = *(const float4 *)(x + 4 * k);
            const float4 xh = *(const float4 *)(x + 32 + 4 * k);
            s = fmaf(xl.x, cu_u2f(q & 15), s);
            s = fmaf(xh.x, cu_u2f((q >> 4) & 15), s);
            s = fmaf(xl.y, cu_u2f((q >> 8) & 15), s);
            s = fmaf(xh.y, cu_u2f((q >> 12) & 15), s);
            s = fmaf(xl.z, cu_u2f((q >> 16) & 15), s);
            s = fmaf(xh.z, cu_u2f((q >> 20) & 15), s);
            s = fmaf(xl.w, cu_u2f((q >> 24) & 15), s);
            s = fmaf(xh.w, cu_u2f(q >> 28), s);
        }
        return fmaf(d, s, m * xsum);
    }
};

/* ql byte j (j < 16) holds q[j] in bits 0-1, q[j+16] in 2-3, q[j+32] in 4-5, q[j+48] in 6-7.
 * With ql read as 4 words, word k byte c is j = 4k + c, so q[4k + c + 16s] sits at bit 8c + 2s. */
struct blk_dot_q3 {
    static constexpr int bytes = sizeof(struct blk_q3_g64);
    // 28 B blocks, 4-byte aligned: word 0 = d | m << 16, words 1..4 = ql, words 5..6 = qh
    // (qh[i % 8] bit i / 8 = q[i] bit 2: element 16*sh + 4k + c is byte 4*(k&1) + c, bit 2*sh + k/2,
    // i.e. word 5 + (k & 1), bit 8c + 2*sh + k/2)
    static __device__ __forceinline__ float dot(const uint8_t *blk, const float *x, float xsum) {
        const uint32_t *p = (const uint32_t *)blk;
        const float d = cu_h2f(p[0] & 0xffff), m = cu_h2f(p[0] >> 16);
        float s = 0.f;
#pragma unroll
        for (int sh = 0; sh < 4; sh++) {        // elements 16*sh .. 16*sh + 15
#pragma unroll
            for (int k = 0; k < 4; k++) {
                const uint32_t ql = p[1 + k];
                const uint32_t h = p[5 + (k & 1)] >> (2 * sh + (k >> 1));  // bit 8c = high bit of element c
                const float4 xv = *(const float4 *)(x + 16 * sh + 4 * k);
                s = fmaf(xv.x, cu_u2f(((ql >> (2 * sh)) & 3) | ((h & 1) << 2)), s);
                s = fmaf(xv.y, cu_u2f(((ql >> (8 + 2 * sh)) & 3) | (((h >> 8) & 1) << 2)), s);
                s = fmaf(xv.z, cu_u2f(((ql >> (16 + 2 * sh)) & 3) | (((h >> 16) & 1) << 2)), s);
                s = fmaf(xv.w, cu_u2f(((ql >> (24 + 2 * sh)) & 3) | (((h >> 24) & 1) << 2)), s);
            }
        }
        return fmaf(d, s, m * xsum);
    }
};

struct blk_dot_q2 {
    static constexpr int bytes = sizeof(struct blk_q2_g64);
    // 20 B blocks, 4-byte aligned: word 0 = d | m << 16, words 1..4 = qs (same order as Q3's ql)
    static __device__ __forceinline__ float dot(const uint8_t *blk, const float *x, float xsum) {
        const uint32_t *p = (const uint32_t *)blk;
        const float d = cu_h2f(p[0] & 0xffff), m = cu_h2f(p[0] >> 16);
        float s = 0.f;
#pragma unroll
        for (int sh = 0; sh < 4; sh++) {
#pragma unroll
            for (int k = 0; k < 4; k++) {
                const uint32_t q = p[1 + k];
                const float4 xv = *(const float4 *)(x + 16 * sh + 4 * k);
                s = fmaf(xv.x, cu_u2f((q >> (2 * sh)) & 3), s);
                s = fmaf(xv.y, cu_u2f((q >> (8 + 2 * sh)) & 3), s);
                s = fmaf(xv.z, cu_u2f((q >> (16 + 2 * sh)) & 3), s);
                s = fmaf(xv.w, cu_u2f((q >> (24 + 2 * sh)) & 3), s);
            }
        }
        return fmaf(d, s, m * xsum);
    }
};

// Shared memory per warp for one tile: the 16-byte window covering 32 blocks plus a misaligned start.
template <class B> struct tile_chunks {
    static constexpr int n = (GEMV_TILE * B::bytes + 15 + 15) / 16;
};

// ------------------------------------------------------------------------------------------------
// Quantized kernel. Dynamic shared memory: [warps][tile chunks] uint4 | xs[nb * 68] | xsum[nb].
// Min 8 CTAs/SM caps registers at 64: without it ptxas picked 40 registers and spilled (Q4).
template <class B>
__global__ void __launch_bounds__(GEMV_WARPS * 32, 8)
    k_matvec_q(float *__restrict__ out, const float *__restrict__ x, const uint8_t *__restrict__ w,
               int64_t nb, int64_t d) {
    extern __shared__ uint4 smem[];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    uint4 *tile = smem + (size_t)warp * tile_chunks<B>::n;
    float *xs = (float *)(smem + GEMV_WARPS * tile_chunks<B>::n);
    float *xsum = xs + nb * GEMV_XSTRIDE;

    // Stage x (n = 64 * nb floats) in groups of 64 with stride 68, then each group's sum.
    for (int64_t e = threadIdx.x; e < nb * QK_G64; e += blockDim.x)
        xs[(e / QK_G64) * GEMV_XSTRIDE + (e % QK_G64)] = x[e];
    __syncthreads();
    for (int64_t b = threadIdx.x; b < nb; b += blockDim.x) {
        float s = 0.f;
        for (int j = 0; j < QK_G64; j++) s += xs[b * GEMV_XSTRIDE + j];
        xsum[b] = s;
    }
    __syncthreads();

    const int64_t row_bytes = nb * B::bytes;
    for (int r = 0; r < GEMV_ROWS_PER_WARP; r++) {
        const int64_t row = (int64_t)blockIdx.x * GEMV_ROWS_PER_CTA + warp * GEMV_ROWS_PER_WARP + r;
        if (row >= d) break;  // warp-uniform
        const uint8_t *rp = w + row * row_bytes;
        float acc = 0.f;
        for (int64_t b0 = 0; b0 < nb; b0 += GEMV_TILE) {
            const int cnt = (int)min((int64_t)GEMV_TILE, nb - b0);
            const uint8_t *a0 = rp + b0 * B::bytes;
            // 16-byte window [ws, ws + 16*nch) covering the tile's bytes [a0, a0 + cnt*bytes).
            // ws >= w because w is 16-byte aligned; the end may pass the row by < 16 bytes.
            const uint4 *ws = (const uint4 *)((uintptr_t)a0 & ~(uintptr_t)15);
            const int shift = (int)((uintptr_t)a0 & 15);
            const int nch = (shift + cnt * B::bytes + 15) / 16;
            for (int c = lane; c < nch; c += 32) tile[c] = __ldg(ws + c);
            __syncwarp();
            if (lane < cnt) {
                const int64_t b = b0 + lane;
                acc += B::dot((const uint8_t *)tile + shift + lane * B::bytes, xs + b * GEMV_XSTRIDE,
                              xsum[b]);
            }
            __syncwarp();  // the tile is overwritten next iteration
        }
        acc = cu_warp_sum(acc);
        if (lane == 0) out[row] = acc;
    }
}

template <class B>
static int launch_q(float *out, const float *x, const void *w, int64_t n, int64_t d, cudaStream_t s) {
    if (n <= 0 || d <= 0 || n % QK_G64 || ((uintptr_t)w & 15)) return (int)cudaErrorInvalidValue;
    const int64_t nb = n / QK_G64;
    const size_t smem = (size_t)GEMV_WARPS * tile_chunks<B>::n * 16 +
                        (size_t)nb * (GEMV_XSTRIDE + 1) * sizeof(float);
    static size_t smem_opted = 48 * 1024;  // per template instance; the default limit
    if (smem > smem_opted) {
        cudaError_t err = cudaFuncSetAttribute(k_matvec_q<B>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                               (int)smem);
        if (err != cudaSuccess) return (int)err;  // n too large for one CTA's shared memory
        smem_opted = smem;
    }
    const int64_t grid = (d + GEMV_ROWS_PER_CTA - 1) / GEMV_ROWS_PER_CTA;
    if (grid > 0x7fffffff) return (int)cudaErrorInvalidValue;
    k_matvec_q<B><<<(unsigned)grid, GEMV_WARPS * 32, smem, s>>>(out, x, (const uint8_t *)w, nb, d);
    return (int)cudaGetLastError();
}

// ------------------------------------------------------------------------------------------------
// Dense kernels: one warp per row, lanes read consecutive 16-byte chunks of W and x (x stays in L1).

__global__ void __launch_bounds__(GEMV_WARPS * 32)
    k_matvec_f32(float *__restrict__ out, const float *__restrict__ x, const float *__restrict__ w,
                 int64_t n, int64_t d) {
    const int lane = threadIdx.x % 32;
    const int64_t row = (int64_t)blockIdx.x * GEMV_WARPS + threadIdx.x / 32;
    if (row >= d) return;  // warp-uniform
    const float *wr = w + row * n;
    float acc = 0.f;
    int64_t k0 = 0;
    if ((((uintptr_t)wr | (uintptr_t)x) & 15) == 0) {
        const float4 *w4 = (const float4 *)wr, *x4 = (const float4 *)x;
        for (int64_t k = lane; k < n / 4; k += 32) {
            const float4 a = __ldg(w4 + k), b = __ldg(x4 + k);
            acc = fmaf(a.x, b.x, acc);
            acc = fmaf(a.y, b.y, acc);
            acc = fmaf(a.z, b.z, acc);
            acc = fmaf(a.w, b.w, acc);
        }
        k0 = n / 4 * 4;
    }
    for (int64_t k = k0 + lane; k < n; k += 32) acc = fmaf(wr[k], x[k], acc);  // tail or unaligned
    acc = cu_warp_sum(acc);
    if (lane == 0) out[row] = acc;
}

__global__ void __launch_bounds__(GEMV_WARPS * 32)
    k_matvec_f16(float *__restrict__ out, const float *__restrict__ x, const __half *__restrict__ w,
                 int64_t n, int64_t d) {
    const int lane = threadIdx.x % 32;
    const int64_t row = (int64_t)blockIdx.x * GEMV_WARPS + threadIdx.x / 32;
    if (row >= d) return;
    const __half *wr = w + row * n;
    float acc = 0.f;
    int64_t k0 = 0;
    if ((((uintptr_t)wr | (uintptr_t)x) & 15) == 0) {
        const uint4 *w8 = (const uint4 *)wr;  // 8 halves per 16 bytes
        const float4 *x4 = (const float4 *)x;
        for (int64_t k = lane; k < n / 8; k += 32) {
            const uint4 a = __ldg(w8 + k);
            const float4 b0 = __ldg(x4 + 2 * k), b1 = __ldg(x4 + 2 * k + 1);
            acc = fmaf(cu_h2f(a.x & 0xffff), b0.x, acc);
            acc = fmaf(cu_h2f(a.x >> 16), b0.y, acc);
            acc = fmaf(cu_h2f(a.y & 0xffff), b0.z, acc);
            acc = fmaf(cu_h2f(a.y >> 16), b0.w, acc);
            acc = fmaf(cu_h2f(a.z & 0xffff), b1.x, acc);
            acc = fmaf(cu_h2f(a.z >> 16), b1.y, acc);
            acc = fmaf(cu_h2f(a.w & 0xffff), b1.z, acc);
            acc = fmaf(cu_h2f(a.w >> 16), b1.w, acc);
        }
        k0 = n / 8 * 8;
    }
    for (int64_t k = k0 + lane; k < n; k += 32) acc = fmaf(__half2float(wr[k]), x[k], acc);
    acc = cu_warp_sum(acc);
    if (lane == 0) out[row] = acc;
}

static int dense_grid(int64_t d, unsigned *grid) {
    const int64_t g = (d + GEMV_WARPS - 1) / GEMV_WARPS;
    if (d <= 0 || g > 0x7fffffff) return 0;
    *grid = (unsigned)g;
    return 1;
}

// ------------------------------------------------------------------------------------------------
// Launchers

extern "C" int cuda_matvec_f32(float *out, const float *x, const void *w, int64_t n, int64_t d,
                               cudaStream_t s) {
    unsigned grid;
    if (n <= 0 || !dense_grid(d, &grid)) return (int)cudaErrorInvalidValue;
    k_matvec_f32<<<grid, GEMV_WARPS * 32, 0, s>>>(out, x, (const float *)w, n, d);
    return (int)cudaGetLastError();
}
extern "C" int cuda_matvec_f16(float *out, const float *x, const void *w, int64_t n, int64_t d,
                               cudaStream_t s) {
    unsigned grid;
    if (n <= 0 || !dense_grid(d, &grid) || ((uintptr_t)w & 1)) return (int)cudaErrorInvalidValue;
    k_matvec_f16<<<grid, GEMV_WARPS * 32, 0, s>>>(out, x, (const __half *)w, n, d);
    return (int)cudaGetLastError();
}
extern "C" int cuda_matvec_q8_g64(float *out, const float *x, const void *w, int64_t n, int64_t d,
                                  cudaStream_t s) {
    return launch_q<blk_dot_q8>(out, x, w, n, d, s);
}
extern "C" int cuda_matvec_q4_g64(float *out, const float *x, const void *w, int64_t n, int64_t d,
                                  cudaStream_t s) {
    return launch_q<blk_dot_q4>(out, x, w, n, d, s);
}
extern "C" int cuda_matvec_q3_g64(float *out, const float *x, const void *w, int64_t n, int64_t d,
                                  cudaStream_t s) {
    return launch_q<blk_dot_q3>(out, x, w, n, d, s);
}
extern "C" int cuda_matvec_q2_g64(float *out, const float *x, const void *w, int64_t n, int64_t d,
                                  cudaStream_t s) {
    return launch_q<blk_dot_q2>(out, x, w, n, d, s);
}

extern "C" double cuda_matvec_bytes(int qtype, int64_t n, int64_t d) {
    const int64_t rb = cu_row_bytes((enum qtype)qtype, n);
    return rb < 0 ? 0.0 : (double)rb * (double)d + 4.0 * (double)n + 4.0 * (double)d;
}
