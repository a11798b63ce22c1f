/* kernels/cuda/cuda_common.cuh: device helpers shared by the CUDA kernels: fp16/bf16 bit conversions,
 * the element-wise decoder of every weight layout (the readable GPU copy of quant/qtypes.h), exact
 * small-int-to-float conversion and warp reductions. Test: tests/test_cuda_ops.c */
#ifndef KERNELS_CUDA_CUDA_COMMON_CUH
#define KERNELS_CUDA_CUDA_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

// The shared headers are C11: `restrict` is not a C++ keyword and their functions have C linkage.
#define restrict __restrict__
extern "C" {
#include "quant/qtypes.h"
}
#undef restrict

// ------------------------------------------------------------------------------------------------
// Host-side size math for the types the CUDA backend handles (a parallel table, STYLE section 4;
// it does not read qtype_traits so the CUDA objects link even before quant/qtypes.c exists).

/* Bytes of one row of n weights of type t, or -1 if t is not handled here or n is not a multiple
 * of the group size. */
static inline int64_t cu_row_bytes(enum qtype t, int64_t n) {
    if (n <= 0) return -1;
    switch (t) {
    case QT_F32: return 4 * n;
    case QT_F16:
    case QT_BF16: return 2 * n;
    case QT_Q8_G64: return n % QK_G64 ? -1 : n / QK_G64 * (int64_t)sizeof(struct blk_q8_g64);
    case QT_Q4_G64: return n % QK_G64 ? -1 : n / QK_G64 * (int64_t)sizeof(struct blk_q4_g64);
    case QT_Q3_G64: return n % QK_G64 ? -1 : n / QK_G64 * (int64_t)sizeof(struct blk_q3_g64);
    case QT_Q2_G64: return n % QK_G64 ? -1 : n / QK_G64 * (int64_t)sizeof(struct blk_q2_g64);
    default: return -1;
    }
}

// ------------------------------------------------------------------------------------------------
// Scalar conversions

__device__ __forceinline__ float cu_h2f(uint16_t h) { return __half2float(__ushort_as_half(h)); }
__device__ __forceinline__ float cu_bf2f(uint16_t h) { return __uint_as_float((uint32_t)h << 16); }
// Little-endian 16-bit load at any byte alignment.
__device__ __forceinline__ uint16_t cu_ld_u16(const uint8_t *p) {
    return (uint16_t)(p[0] | (p[1] << 8));
}
/* Exact v -> float for 0 <= v < 2^23: the bits 0x4B000000 | v are the float 2^23 + v, and the
 * subtraction is exact. Avoids I2F, which issues at a quarter of the FMA rate. */
__device__ __forceinline__ float cu_u2f(uint32_t v) {
    return __uint_as_float(0x4B000000u | v) - 8388608.0f;
}

// ------------------------------------------------------------------------------------------------
// Element-wise decoder: weight i of a row of type t (row = first byte of the row). This is the
// spec of each layout as written in quant/qtypes.h; the dequantize kernels use it, the fused GEMV
// kernels decode whole blocks with word loads instead. The result is computed as d*q + m with two
// fp32 roundings (no FMA), exactly like the scalar C reference, so embed is bit-exact.
__device__ __forceinline__ float cu_deq_elem(enum qtype t, const uint8_t *row, int64_t i) {
    const int64_t b = i / QK_G64;
    const int j = (int)(i % QK_G64);
    switch (t) {
    case QT_F32: return __uint_as_float(cu_ld_u16(row + 4 * i) | ((uint32_t)cu_ld_u16(row + 4 * i + 2) << 16));
    case QT_F16: return cu_h2f(cu_ld_u16(row + 2 * i));
    case QT_BF16: return cu_bf2f(cu_ld_u16(row + 2 * i));
    case QT_Q8_G64: {  // | d | qs[64] |
        const uint8_t *p = row + b * (int64_t)sizeof(struct blk_q8_g64);
        return __fmul_rn(cu_h2f(cu_ld_u16(p)), (float)(int8_t)p[2 + j]);
    }
    case QT_Q4_G64: {  // | d | m | qs[32]: low nibble q[j], high nibble q[j+32] |
        const uint8_t *p = row + b * (int64_t)sizeof(struct blk_q4_g64);
        const int q = (p[4 + (j & 31)] >> (4 * (j >> 5))) & 15;
        return __fadd_rn(__fmul_rn(cu_h2f(cu_ld_u16(p)), (float)q), cu_h2f(cu_ld_u16(p + 2)));
    }
    case QT_Q3_G64: {  // | d | m | ql[16]: 2-bit plane | qh[8]: 1-bit plane |
        const uint8_t *p = row + b * (int64_t)sizeof(struct blk_q3_g64);
        const int lo = (p[4 + (j % 16)] >> (2 * (j / 16))) & 3;
        const int hi = (p[20 + j % 8] >> (j / 8)) & 1;  // qh[j % 8] bit j / 8
        return __fadd_rn(__fmul_rn(cu_h2f(cu_ld_u16(p)), (float)(lo | (hi << 2))),
                         cu_h2f(cu_ld_u16(p + 2)));
    }
    case QT_Q2_G64: {  // | d | m | qs[16]: same order as Q3's ql |
        const uint8_t *p = row + b * (int64_t)sizeof(struct blk_q2_g64);
        const int q = (p[4 + (j % 16)] >> (2 * (j / 16))) & 3;
        return __fadd_rn(__fmul_rn(cu_h2f(cu_ld_u16(p)), (float)q), cu_h2f(cu_ld_u16(p + 2)));
    }
    default: return __int_as_float(0x7fc00000);  // NaN: the host checks types before launching
    }
}

// ------------------------------------------------------------------------------------------------
// Reductions

__device__ __forceinline__ float cu_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float cu_warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

#endif
