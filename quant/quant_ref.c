/* quant/quant_ref.c: scalar round-to-nearest quantizers for Q8/Q4/Q3/Q2_G64 and the f32/f16/bf16
 * row converters. This file is the spec of the native formats (docs/QUANT_FORMATS.md); every fast
 * kernel is tested against it. Test: tests/test_quant_formats.c */
#include "quant/quant_ref.h"

#include <math.h>

// ------------------------------------------------------------------------------------------------
// fp16 with directed rounding

#define F16_MAX 65504.0f

f16_t f16_round_down(float x) {
    if (x > F16_MAX) x = F16_MAX;   // saturate: the formats never hold inf
    if (x < -F16_MAX) return 0xfbff;
    f16_t h = f32_to_f16(x);
    if (f16_to_f32(h) <= x) return h;
    // one step toward -inf: +0 -> smallest negative subnormal, negative -> larger magnitude
    if (h == 0x0000 || h == 0x8000) return 0x8001;
    return (h & 0x8000) ? (f16_t)(h + 1) : (f16_t)(h - 1);
}

f16_t f16_round_up(float x) {
    if (x < -F16_MAX) x = -F16_MAX;
    if (x > F16_MAX) return 0x7bff;
    f16_t h = f32_to_f16(x);
    if (f16_to_f32(h) >= x) return h;
    // one step toward +inf: -0/+0 -> smallest positive subnormal, negative -> smaller magnitude
    if (h == 0x0000 || h == 0x8000) return 0x0001;
    return (h & 0x8000) ? (f16_t)(h - 1) : (f16_t)(h + 1);
}

// fp32 value >= the double v (the cast rounds to nearest, so step up if it went down)
static float f32_ceil_of(double v) {
    float f = (float)v;
    if ((double)f < v) f = nextafterf(f, INFINITY);
    return f;
}

// ------------------------------------------------------------------------------------------------
// f32 / f16 / bf16 rows

void quantize_row_f32_ref(void *restrict dst, const float *restrict src, int64_t n) {
    memcpy(dst, src, (size_t)n * sizeof(float));
}
void dequantize_row_f32_ref(float *restrict out, const void *restrict src, int64_t n) {
    memcpy(out, src, (size_t)n * sizeof(float));
}
void quantize_row_f16_ref(void *restrict dst, const float *restrict src, int64_t n) {
    f16_t *d = dst;
    for (int64_t i = 0; i < n; i++) d[i] = f32_to_f16(src[i]);
}
void dequantize_row_f16_ref(float *restrict out, const void *restrict src, int64_t n) {
    const f16_t *s = src;
    for (int64_t i = 0; i < n; i++) out[i] = f16_to_f32(s[i]);
}
void quantize_row_bf16_ref(void *restrict dst, const float *restrict src, int64_t n) {
    bf16_t *d = dst;
    for (int64_t i = 0; i < n; i++) d[i] = f32_to_bf16(src[i]);
}
void dequantize_row_bf16_ref(float *restrict out, const void *restrict src, int64_t n) {
    const bf16_t *s = src;
    for (int64_t i = 0; i < n; i++) out[i] = bf16_to_f32(s[i]);
}

// ------------------------------------------------------------------------------------------------
// Q8_G64: symmetric, w = d * q, q in [-127, 127]

void quantize_row_q8_g64_ref(void *restrict dst, const float *restrict src, int64_t n) {
    struct blk_q8_g64 *b = dst;
    for (int64_t g = 0; g < n / QK_G64; g++, src += QK_G64) {
        float amax = 0.0f;
        for (int i = 0; i < QK_G64; i++) amax = fmaxf(amax, fabsf(src[i]));
        bool constant = true;
        for (int i = 1; i < QK_G64; i++) constant = constant && src[i] == src[0];
        // d rounded UP to fp16, so |x|/d <= 127 and no q is clamped: |x - d*q| <= d/2.
        // A constant group uses d = fp16(|x|) (nearest), q = +-1: exact when x is an fp16 number.
        f16_t dh = constant ? f32_to_f16(fminf(amax, F16_MAX))
                            : f16_round_up(f32_ceil_of((double)amax / 127.0));
        double dr = f16_to_f32(dh);
        b[g].d = dh;
        for (int i = 0; i < QK_G64; i++) {
            int q = dr > 0 ? (int)floor((double)src[i] / dr + 0.5) : 0;
            b[g].qs[i] = (int8_t)(q < -127 ? -127 : q > 127 ? 127 : q);
        }
    }
}

void dequantize_row_q8_g64_ref(float *restrict out, const void *restrict src, int64_t n) {
    const struct blk_q8_g64 *b = src;
    for (int64_t g = 0; g < n / QK_G64; g++, out += QK_G64) {
        float d = f16_to_f32(b[g].d);
        for (int i = 0; i < QK_G64; i++) out[i] = d * (float)b[g].qs[i];
    }
}

// ------------------------------------------------------------------------------------------------
// Q4/Q3/Q2_G64: asymmetric, w = d * q + m, q in [0, 2^bits - 1]

static int qtype_qmax(enum qtype t) {
    return t == QT_Q4_G64 ? 15 : t == QT_Q3_G64 ? 7 : 3;
}

void quant_pack_group(enum qtype t, void *blk, f16_t d, f16_t m, const uint8_t *q) {
    if (t == QT_Q4_G64) {
        struct blk_q4_g64 *b = blk;
        b->d = d, b->m = m;
        for (int i = 0; i < 32; i++) b->qs[i] = (uint8_t)((q[i] & 15) | (q[i + 32] & 15) << 4);
    } else if (t == QT_Q3_G64) {
        struct blk_q3_g64 *b = blk;
        b->d = d, b->m = m;
        // ql byte j: q[j], q[j+16], q[j+32], q[j+48] low 2 bits at shifts 0, 2, 4, 6
        for (int j = 0; j < 16; j++)
            b->ql[j] = (uint8_t)((q[j] & 3) | (q[j + 16] & 3) << 2 | (q[j + 32] & 3) << 4 |
                                 (q[j + 48] & 3) << 6);
        memset(b->qh, 0, sizeof b->qh);
        for (int i = 0; i < 64; i++) b->qh[i % 8] |= (uint8_t)(((q[i] >> 2) & 1) << (i / 8));
    } else {
        struct blk_q2_g64 *b = blk;
        b->d = d, b->m = m;
        for (int j = 0; j < 16; j++)
            b->qs[j] = (uint8_t)((q[j] & 3) | (q[j + 16] & 3) << 2 | (q[j + 32] & 3) << 4 |
                                 (q[j + 48] & 3) << 6);
    }
}

void quant_unpack_group(enum qtype t, const void *blk, f16_t *d, f16_t *m, uint8_t *q) {
    if (t == QT_Q4_G64) {
        const struct blk_q4_g64 *b = blk;
        *d = b->d, *m = b->m;
        for (int i = 0; i < 32; i++) q[i] = b->qs[i] & 15, q[i + 32] = b->qs[i] >> 4;
    } else if (t == QT_Q3_G64) {
        const struct blk_q3_g64 *b = blk;
        *d = b->d, *m = b->m;
        for (int i = 0; i < 64; i++)
            q[i] = (uint8_t)(((b->ql[i % 16] >> (2 * (i / 16))) & 3) |
                             ((b->qh[i % 8] >> (i / 8)) & 1) << 2);
    } else {
        const struct blk_q2_g64 *b = blk;
        *d = b->d, *m = b->m;
        for (int i = 0; i < 64; i++) q[i] = (b->qs[i % 16] >> (2 * (i / 16))) & 3;
    }
}

static void quantize_row_asym(enum qtype t, void *restrict dst, const float *restrict src,
                              int64_t n) {
    const int qmax = qtype_qmax(t);
    const size_t bb = qtype_traits[t].block_bytes;
    uint8_t q[QK_G64];
    for (int64_t g = 0; g < n / QK_G64; g++, src += QK_G64) {
        float mn = src[0], mx = src[0];
        for (int i = 1; i < QK_G64; i++) mn = fminf(mn, src[i]), mx = fmaxf(mx, src[i]);
        // m rounded DOWN and d rounded UP to fp16: [m, m + qmax*d] covers [min, max], so
        // round-to-nearest never clamps and |x - (d*q + m)| <= d/2. A constant group whose value
        // is an fp16 number gets d = 0 and round-trips exactly.
        f16_t mh = f16_round_down(mn);
        double mr = f16_to_f32(mh);
        f16_t dh = mx > mr ? f16_round_up(f32_ceil_of(((double)mx - mr) / qmax)) : 0;
        double dr = f16_to_f32(dh);
        for (int i = 0; i < QK_G64; i++) {
            int v = dr > 0 ? (int)floor(((double)src[i] - mr) / dr + 0.5) : 0;
            q[i] = (uint8_t)(v < 0 ? 0 : v > qmax ? qmax : v);
        }
        quant_pack_group(t, (char *)dst + (size_t)g * bb, dh, mh, q);
    }
}

static void dequantize_row_asym(enum qtype t, float *restrict out, const void *restrict src,
                                int64_t n) {
    const size_t bb = qtype_traits[t].block_bytes;
    uint8_t q[QK_G64];
    for (int64_t g = 0; g < n / QK_G64; g++, out += QK_G64) {
        f16_t dh, mh;
        quant_unpack_group(t, (const char *)src + (size_t)g * bb, &dh, &mh, q);
        float d = f16_to_f32(dh), m = f16_to_f32(mh);
        for (int i = 0; i < QK_G64; i++) out[i] = d * (float)q[i] + m;
    }
}

void quantize_row_q4_g64_ref(void *restrict dst, const float *restrict src, int64_t n) {
    quantize_row_asym(QT_Q4_G64, dst, src, n);
}
void quantize_row_q3_g64_ref(void *restrict dst, const float *restrict src, int64_t n) {
    quantize_row_asym(QT_Q3_G64, dst, src, n);
}
void quantize_row_q2_g64_ref(void *restrict dst, const float *restrict src, int64_t n) {
    quantize_row_asym(QT_Q2_G64, dst, src, n);
}

// Q4 is the hot load path, so it gets a direct nibble loop instead of the generic unpack.
void dequantize_row_q4_g64_ref(float *restrict out, const void *restrict src, int64_t n) {
    const struct blk_q4_g64 *b = src;
    for (int64_t g = 0; g < n / QK_G64; g++, out += QK_G64) {
        float d = f16_to_f32(b[g].d), m = f16_to_f32(b[g].m);
        for (int i = 0; i < 32; i++) {
            out[i] = d * (float)(b[g].qs[i] & 15) + m;
            out[i + 32] = d * (float)(b[g].qs[i] >> 4) + m;
        }
    }
}
void dequantize_row_q3_g64_ref(float *restrict out, const void *restrict src, int64_t n) {
    dequantize_row_asym(QT_Q3_G64, out, src, n);
}
void dequantize_row_q2_g64_ref(float *restrict out, const void *restrict src, int64_t n) {
    dequantize_row_asym(QT_Q2_G64, out, src, n);
}
