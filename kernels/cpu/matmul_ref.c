/* kernels/cpu/matmul_ref.c: scalar reference matmuls (the spec every fast kernel is tested against),
 * the int8 activation quantizer they share with the fast paths, and the bytes/flops formulas.
 * out(t, d) = x(t, n) @ W(d, n)^T. The quantized types run the fast paths' algorithm: x is quantized
 * per 64-group to int8 (xq8_quantize_ref), the integer dot sum(q*xq) is exact, and the scales are
 * applied per group, accumulating in double. Docs: docs/KERNELS.md. Test: tests/test_kernels_matmul.c */
#include <math.h>
#include <stdlib.h>

#include "kernels/cpu/matmul_kernels.h"
#include "quant/quant_ref.h"
#include "quant/repack.h"

// ------------------------------------------------------------------------------------------------
// int8 activations

static size_t align64(size_t v) { return (v + 63) & ~(size_t)63; }

size_t xq8_bytes(int64_t n, int64_t t) {
    int64_t ng = n / QK_G64;
    return 2 * align64((size_t)(n * t)) + 2 * align64((size_t)(ng * t) * sizeof(float)) +
           align64((size_t)(ng * t) * sizeof(int32_t));
}

void xq8_init(struct xq8 *a, void *buf, int64_t n, int64_t t) {
    int64_t ng = n / QK_G64;
    char *p = buf;
    a->q = (int8_t *)p;
    p += align64((size_t)(n * t));
    a->qil = (int8_t *)p;
    p += align64((size_t)(n * t));
    a->dx = (float *)p;
    p += align64((size_t)(ng * t) * sizeof(float));
    a->sx = (float *)p;
    p += align64((size_t)(ng * t) * sizeof(float));
    a->sum = (int32_t *)p;
    a->n = n;
    a->ng = ng;
}

void xq8_interleave(struct xq8 *a, int64_t j0, int64_t j1) {
    const int64_t nsb = a->n / X8_WEIGHTS;
    for (int64_t j = j0; j < j1; j++)
        for (int64_t sb = 0; sb < nsb; sb++) {
            const int8_t *src = a->q + j * a->n + sb * X8_WEIGHTS;
            int8_t *dst = a->qil + j * a->n + sb * X8_WEIGHTS;
            // 32-bit chunk c (weights 4c .. 4c+3) of group l goes to vector c/2, lane l + 8 (c & 1)
            for (int l = 0; l < X8_GROUPS; l++)
                for (int c = 0; c < 16; c++) memcpy(dst + 64 * (c >> 1) + 4 * (l + 8 * (c & 1)), src + 64 * l + 4 * c, 4);
        }
}

void xq8_quantize_ref(struct xq8 *a, const float *x, int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; j++) {
        for (int64_t g = 0; g < a->ng; g++) {
            const float *xg = x + j * a->n + g * QK_G64;
            int8_t *qg = a->q + j * a->n + g * QK_G64;
            float amax = 0.f;
            for (int i = 0; i < QK_G64; i++) amax = fmaxf(amax, fabsf(xg[i]));
            float dx = amax / 127.f, id = amax > 0.f ? 127.f / amax : 0.f;
            int32_t s = 0;
            for (int i = 0; i < QK_G64; i++) {
                float v = xg[i] * id;   // |v| <= 127 (+1 ulp), so rint never leaves [-127, 127]
                qg[i] = (int8_t)lrintf(v);
                s += qg[i];
            }
            a->dx[j * a->ng + g] = dx;
            a->sx[j * a->ng + g] = dx * (float)s;
            a->sum[j * a->ng + g] = s;
        }
    }
}

// ------------------------------------------------------------------------------------------------
// float weights: double accumulation

static void rows_f32_ref(float *out, int64_t ldo, const float *x, const struct xq8 *xq, const void *w,
                         int64_t n, int64_t r0, int64_t r1, int64_t t) {
    for (int64_t i = r0; i < r1; i++) {
        const float *wr = (const float *)w + i * n;
        for (int64_t j = 0; j < t; j++) {
            double acc = 0;
            for (int64_t k = 0; k < n; k++) acc += (double)wr[k] * x[j * n + k];
            out[j * ldo + i] = (float)acc;
        }
    }
}

static void rows_f16_ref(float *out, int64_t ldo, const float *x, const struct xq8 *xq, const void *w,
                         int64_t n, int64_t r0, int64_t r1, int64_t t) {
    for (int64_t i = r0; i < r1; i++) {
        const f16_t *wr = (const f16_t *)w + i * n;
        for (int64_t j = 0; j < t; j++) {
            double acc = 0;
            for (int64_t k = 0; k < n; k++) acc += (double)f16_to_f32(wr[k]) * x[j * n + k];
            out[j * ldo + i] = (float)acc;
        }
    }
}

static void rows_bf16_ref(float *out, int64_t ldo, const float *x, const struct xq8 *xq, const void *w,
                          int64_t n, int64_t r0, int64_t r1, int64_t t) {
    for (int64_t i = r0; i < r1; i++) {
        const bf16_t *wr = (const bf16_t *)w + i * n;
        for (int64_t j = 0; j < t; j++) {
            double acc = 0;
            for (int64_t k = 0; k < n; k++) acc += (double)bf16_to_f32(wr[k]) * x[j * n + k];
            out[j * ldo + i] = (float)acc;
        }
    }
}

// ------------------------------------------------------------------------------------------------
// int8-activation weights: exact integer dot per group, scales applied in double

static void rows_q8_g64_ref(float *out, int64_t ldo, const float *x, const struct xq8 *xq,
                            const void *w, int64_t n, int64_t r0, int64_t r1, int64_t t) {
    int64_t ng = n / QK_G64;
    for (int64_t i = r0; i < r1; i++) {
        const struct blk_q8_g64 *b = (const struct blk_q8_g64 *)w + i * ng;
        for (int64_t j = 0; j < t; j++) {
            double acc = 0;
            for (int64_t g = 0; g < ng; g++) {
                const int8_t *xg = xq->q + j * n + g * QK_G64;
                int32_t s = 0;
                for (int k = 0; k < QK_G64; k++) s += (int32_t)b[g].qs[k] * xg[k];
                acc += (double)f16_to_f32(b[g].d) * xq->dx[j * ng + g] * s;
            }
            out[j * ldo + i] = (float)acc;
        }
    }
}

// ggml Q8_0: each 32-weight block has its own scale; an activation group (64) spans two blocks.
static void rows_q8_0_ref(float *out, int64_t ldo, const float *x, const struct xq8 *xq, const void *w,
                          int64_t n, int64_t r0, int64_t r1, int64_t t) {
    const int64_t ng = n / QK_G64, nb = n / 32;
    for (int64_t i = r0; i < r1; i++) {
        const struct ggml_blk_q8_0 *b = (const struct ggml_blk_q8_0 *)w + i * nb;
        for (int64_t j = 0; j < t; j++) {
            double acc = 0;
            for (int64_t k = 0; k < nb; k++) {
                const int8_t *xb = xq->q + j * n + k * 32;
                int32_t s = 0;
                for (int l = 0; l < 32; l++) s += (int32_t)b[k].qs[l] * xb[l];
                acc += (double)f16_to_f32(b[k].d) * xq->dx[j * ng + k / 2] * s;
            }
            out[j * ldo + i] = (float)acc;
        }
    }
}

// ggml Q4_0: code l of a block is its nibble l (l < 16: low nibbles, else high) minus 8.
static void rows_q4_0_ref(float *out, int64_t ldo, const float *x, const struct xq8 *xq, const void *w,
                          int64_t n, int64_t r0, int64_t r1, int64_t t) {
    const int64_t ng = n / QK_G64, nb = n / 32;
    for (int64_t i = r0; i < r1; i++) {
        const struct ggml_blk_q4_0 *b = (const struct ggml_blk_q4_0 *)w + i * nb;
        for (int64_t j = 0; j < t; j++) {
            double acc = 0;
            for (int64_t k = 0; k < nb; k++) {
                const int8_t *xb = xq->q + j * n + k * 32;
                int32_t s = 0;
                for (int l = 0; l < 32; l++) s += ((l < 16 ? b[k].qs[l] & 15 : b[k].qs[l - 16] >> 4) - 8) * xb[l];
                acc += (double)f16_to_f32(b[k].d) * xq->dx[j * ng + k / 2] * s;
            }
            out[j * ldo + i] = (float)acc;
        }
    }
}

// Q4/Q3/Q2: codes come from quant_unpack_group, the format's own spec.
static void rows_qasym_ref(enum qtype wt, float *out, int64_t ldo, const struct xq8 *xq, const void *w,
                           int64_t n, int64_t r0, int64_t r1, int64_t t) {
    int64_t ng = n / QK_G64;
    size_t bb = qtype_traits[wt].block_bytes;
    uint8_t q[QK_G64];
    for (int64_t i = r0; i < r1; i++) {
        const uint8_t *row = (const uint8_t *)w + (size_t)i * ng * bb;
        for (int64_t j = 0; j < t; j++) {
            double acc = 0;
            for (int64_t g = 0; g < ng; g++) {
                f16_t d, m;
                quant_unpack_group(wt, row + g * bb, &d, &m, q);
                const int8_t *xg = xq->q + j * n + g * QK_G64;
                int32_t s = 0;
                for (int k = 0; k < QK_G64; k++) s += (int32_t)q[k] * xg[k];
                double dx = xq->dx[j * ng + g];
                acc += (double)f16_to_f32(d) * dx * s + (double)f16_to_f32(m) * dx * xq->sum[j * ng + g];
            }
            out[j * ldo + i] = (float)acc;
        }
    }
}

static void rows_q4_g64_ref(float *out, int64_t ldo, const float *x, const struct xq8 *xq,
                            const void *w, int64_t n, int64_t r0, int64_t r1, int64_t t) {
    rows_qasym_ref(QT_Q4_G64, out, ldo, xq, w, n, r0, r1, t);
}
static void rows_q3_g64_ref(float *out, int64_t ldo, const float *x, const struct xq8 *xq,
                            const void *w, int64_t n, int64_t r0, int64_t r1, int64_t t) {
    rows_qasym_ref(QT_Q3_G64, out, ldo, xq, w, n, r0, r1, t);
}
static void rows_q2_g64_ref(float *out, int64_t ldo, const float *x, const struct xq8 *xq,
                            const void *w, int64_t n, int64_t r0, int64_t r1, int64_t t) {
    rows_qasym_ref(QT_Q2_G64, out, ldo, xq, w, n, r0, r1, t);
}

// X8: each row converted back to the natural layout (quant/repack.c, exact), then the natural reference
static void rows_x8_ref(enum qtype wt, float *out, int64_t ldo, const float *x, const struct xq8 *xq,
                        const void *w, int64_t n, int64_t r0, int64_t r1, int64_t t) {
    const enum qtype nat = (enum qtype)qtype_natural_of(wt);
    const size_t rb = qtype_row_bytes(wt, n);
    void *row = malloc(rb ? rb : 1);
    if (!row) abort();   // reference, test-only code
    for (int64_t i = r0; i < r1; i++) {
        x8_unpack_row(wt, row, (const uint8_t *)w + (size_t)i * rb, n);
        mm_rows_ref[nat](out + i, ldo, x, xq, row, n, 0, 1, t);
    }
    free(row);
}
#define X8_REF(name, T)                                                                           \
    static void rows_##name##_ref(float *out, int64_t ldo, const float *x, const struct xq8 *xq,  \
                                  const void *w, int64_t n, int64_t r0, int64_t r1, int64_t t) { \
        rows_x8_ref(T, out, ldo, x, xq, w, n, r0, r1, t);                                         \
    }
X8_REF(q8_x8, QT_Q8_X8)
X8_REF(q4_x8, QT_Q4_X8)
X8_REF(q3_x8, QT_Q3_X8)
X8_REF(q2_x8, QT_Q2_X8)

const mm_rows_fn mm_rows_ref[QT_COUNT] = {
    [QT_F32] = rows_f32_ref,
    [QT_F16] = rows_f16_ref,
    [QT_BF16] = rows_bf16_ref,
    [QT_Q8_G64] = rows_q8_g64_ref,
    [QT_Q4_G64] = rows_q4_g64_ref,
    [QT_Q3_G64] = rows_q3_g64_ref,
    [QT_Q2_G64] = rows_q2_g64_ref,
    [QT_Q8_X8] = rows_q8_x8_ref,
    [QT_Q4_X8] = rows_q4_x8_ref,
    [QT_Q3_X8] = rows_q3_x8_ref,
    [QT_Q2_X8] = rows_q2_x8_ref,
    [QT_GGML_Q8_0] = rows_q8_0_ref,
    [QT_GGML_Q4_0] = rows_q4_0_ref,
};

// ------------------------------------------------------------------------------------------------
// whole-matrix references

static void matmul_ref_run(enum qtype wt, float *out, const float *x, const void *w, int64_t n, int64_t d,
                           int64_t t) {
    struct xq8 a = {0};
    void *buf = NULL;
    if (mm_uses_xq8(wt)) {
        buf = aligned_alloc(64, xq8_bytes(n, t));
        if (!buf) abort();   // references are test-only code
        xq8_init(&a, buf, n, t);
        xq8_quantize_ref(&a, x, 0, t);
    }
    mm_rows_ref[wt](out, d, x, &a, w, n, 0, d, t);
    free(buf);
}

void matmul_f32_ref(float *out, const float *x, const void *w, int64_t n, int64_t d, int64_t t) {
    matmul_ref_run(QT_F32, out, x, w, n, d, t);
}
void matmul_f16_ref(float *out, const float *x, const void *w, int64_t n, int64_t d, int64_t t) {
    matmul_ref_run(QT_F16, out, x, w, n, d, t);
}
void matmul_bf16_ref(float *out, const float *x, const void *w, int64_t n, int64_t d, int64_t t) {
    matmul_ref_run(QT_BF16, out, x, w, n, d, t);
}
void matmul_q8_g64_ref(float *out, const float *x, const void *w, int64_t n, int64_t d, int64_t t) {
    matmul_ref_run(QT_Q8_G64, out, x, w, n, d, t);
}
void matmul_q4_g64_ref(float *out, const float *x, const void *w, int64_t n, int64_t d, int64_t t) {
    matmul_ref_run(QT_Q4_G64, out, x, w, n, d, t);
}
void matmul_q3_g64_ref(float *out, const float *x, const void *w, int64_t n, int64_t d, int64_t t) {
    matmul_ref_run(QT_Q3_G64, out, x, w, n, d, t);
}
void matmul_q2_g64_ref(float *out, const float *x, const void *w, int64_t n, int64_t d, int64_t t) {
    matmul_ref_run(QT_Q2_G64, out, x, w, n, d, t);
}
void matmul_q8_0_ref(float *out, const float *x, const void *w, int64_t n, int64_t d, int64_t t) {
    matmul_ref_run(QT_GGML_Q8_0, out, x, w, n, d, t);
}
void matmul_q4_0_ref(float *out, const float *x, const void *w, int64_t n, int64_t d, int64_t t) {
    matmul_ref_run(QT_GGML_Q4_0, out, x, w, n, d, t);
}

// ------------------------------------------------------------------------------------------------
// benchmark formulas

size_t matmul_bytes(enum qtype wt, int64_t n, int64_t d, int64_t t) {
    return (size_t)d * qtype_row_bytes(wt, n) + (size_t)(4 * n * t) + (size_t)(4 * d * t);
}

double matmul_flops(enum qtype wt, int64_t n, int64_t d, int64_t t) {
    (void)wt;
    return 2.0 * (double)n * (double)d * (double)t;
}
