/* kernels/cpu/matmul_kernels.h: internal declarations of the CPU matmul kernels (refs, AVX2,
 * AVX-512), the int8 activation format they share, and the bytes/flops formulas for benchmarks.
 * Public entry point: cpu_matmul() in kernels/cpu/cpu_kernels.h. Docs: docs/KERNELS.md.
 * Test: tests/test_kernels_matmul.c */
#ifndef KERNELS_CPU_MATMUL_KERNELS_H
#define KERNELS_CPU_MATMUL_KERNELS_H

#include "kernels/cpu/cpu_kernels.h"
#include "quant/ggml_quants.h"

/* int8 activations of t tokens, n a multiple of 64, ng = n/64 groups per token.
 * Token j: codes q[j*n + i] = rint(x_i * 127/amax_g) in [-127,127], amax_g = max|x| over the group,
 * dx[j*ng + g] = amax_g/127, sx[j*ng + g] = dx_g * (float)sum_g and sum[j*ng + g] = the sum of the
 * group's codes (for the zero point m of the asymmetric formats); contiguous per token so the
 * kernels load the scales of 8 groups with one vector load:
 *   sum_i (d q_i + m) dx xq_i = d dx sum(q_i xq_i) + m dx sum(xq_i). */
struct xq8 {
    int8_t *q;
    int8_t *qil;   // the codes of each token's n/512 superblocks in X8 code-vector order (quant/repack.h),
                   // filled by xq8_interleave for the X8 kernels; row stride n
    float *dx, *sx;
    int32_t *sum;
    int64_t n, ng;
};

/* Bytes an xq8 for t tokens of length n needs in one buffer (64-byte aligned parts). */
size_t xq8_bytes(int64_t n, int64_t t);
/* Carves an xq8 out of buf (64-byte aligned, xq8_bytes(n, t) long). */
void xq8_init(struct xq8 *a, void *buf, int64_t n, int64_t t);
/* Quantizes tokens [j0, j1) of x (row stride n). The ref and AVX2 versions are bit-identical
 * (same float formula, round-to-nearest-even); tests check it. */
void xq8_quantize_ref(struct xq8 *a, const float *x, int64_t j0, int64_t j1);
void xq8_quantize_avx2(struct xq8 *a, const float *x, int64_t j0, int64_t j1);
void xq8_quantize_avx512(struct xq8 *a, const float *x, int64_t j0, int64_t j1);
/* qil of tokens [j0, j1) from q (a permutation of 32-bit chunks per 512-code superblock). */
void xq8_interleave(struct xq8 *a, int64_t j0, int64_t j1);

/* Row-range kernel: out[j*ldo + i] for rows i in [r0, r1), tokens j in [0, t).
 * Float weight types read x (row stride n); int8 types read xq (x may be NULL). */
typedef void (*mm_rows_fn)(float *out, int64_t ldo, const float *x, const struct xq8 *xq,
                           const void *w, int64_t n, int64_t r0, int64_t r1, int64_t t);

/* Whether the kernel of type wt consumes int8 activations (xq) instead of x. */
static inline bool mm_uses_xq8(enum qtype wt) {
    return wt == QT_Q8_G64 || wt == QT_Q4_G64 || wt == QT_Q3_G64 || wt == QT_Q2_G64 || wt == QT_Q8_X8 ||
           wt == QT_Q4_X8 || wt == QT_Q3_X8 || wt == QT_Q2_X8 || wt == QT_GGML_Q8_0 || wt == QT_GGML_Q4_0;
}
/* Whether the kernel of type wt reads xq->qil. */
static inline bool mm_uses_qil(enum qtype wt) {
    return wt == QT_Q8_X8 || wt == QT_Q4_X8 || wt == QT_Q3_X8 || wt == QT_Q2_X8;
}

/* Per-ISA tables, NULL where a type has no kernel. */
extern const mm_rows_fn mm_rows_ref[QT_COUNT];
extern const mm_rows_fn mm_rows_avx2[QT_COUNT];
extern const mm_rows_fn mm_rows_avx512[QT_COUNT];
/* The X8 kernels (kernels/cpu/matmul_x8.c, AVX-512 VNNI): entries for QT_Q*_X8 only, merged into
 * mm_rows_avx512 by the dispatcher. */
extern const mm_rows_fn mm_rows_x8[QT_COUNT];
/* The X8 kernels for AVX2 CPUs (kernels/cpu/matmul_x8_avx2.c): QT_Q*_X8 entries, used when
 * isa == CPU_ISA_AVX2. */
extern const mm_rows_fn mm_rows_x8_avx2[QT_COUNT];

/* Intel AMX-INT8 prefill kernels (kernels/cpu/matmul_amx.c, docs/AMX.md): entries for the int8-activation
 * types only; used by cpu_matmul when isa == CPU_ISA_AVX512, t >= AMX_MIN_T and cpu_amx_available().
 * Calling one without AMX runs the AVX2 kernel. Test: tests/test_kernels_amx.c */
#define AMX_MIN_T 4
/* CPUID reports AMX-TILE + AMX-INT8 and AVX-512 F/BW/VL/DQ, and Linux granted the tile state
 * (arch_prctl ARCH_REQ_XCOMP_PERM); cached. LLM_AMX=0 in the environment disables it. */
bool cpu_amx_available(void);
extern const mm_rows_fn mm_rows_amx[QT_COUNT];

/* Scalar references, the spec (STYLE 5): out(t, d) = x(t, n) @ W(d, n)^T, accumulating in double.
 * The quantized ones quantize x with xq8_quantize_ref first (same algorithm as the fast paths). */
void matmul_f32_ref(float *out, const float *x, const void *w, int64_t n, int64_t d, int64_t t);
void matmul_f16_ref(float *out, const float *x, const void *w, int64_t n, int64_t d, int64_t t);
void matmul_bf16_ref(float *out, const float *x, const void *w, int64_t n, int64_t d, int64_t t);
void matmul_q8_g64_ref(float *out, const float *x, const void *w, int64_t n, int64_t d, int64_t t);
void matmul_q4_g64_ref(float *out, const float *x, const void *w, int64_t n, int64_t d, int64_t t);
void matmul_q3_g64_ref(float *out, const float *x, const void *w, int64_t n, int64_t d, int64_t t);
void matmul_q2_g64_ref(float *out, const float *x, const void *w, int64_t n, int64_t d, int64_t t);
/* ggml Q8_0 / Q4_0 (blocks of 32, one fp16 scale each) on int8 activations: n must be a multiple of 64 (one
 * activation group = two weight blocks). */
void matmul_q8_0_ref(float *out, const float *x, const void *w, int64_t n, int64_t d, int64_t t);
void matmul_q4_0_ref(float *out, const float *x, const void *w, int64_t n, int64_t d, int64_t t);

/* Benchmark formulas (docs/KERNELS.md): bytes = weights d*row_bytes + x 4*n*t + out 4*d*t;
 * flops = 2*n*d*t. */
size_t matmul_bytes(enum qtype wt, int64_t n, int64_t d, int64_t t);
double matmul_flops(enum qtype wt, int64_t n, int64_t d, int64_t t);

#endif
