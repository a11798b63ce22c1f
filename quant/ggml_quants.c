/* quant/ggml_quants.c: scalar dequantizers for ggml's Q8_0/Q4_0/Q4_1/Q4_K/Q5_K/Q6_K and RTN
 * quantizers for Q8_0/Q4_0/Q4_1. Written from the GGUF format description; layouts in
 * quant/ggml_quants.h. Test: tests/test_ggml_dequant.c, tests/test_ggml_dequant_py.sh (gguf-py). */
#include "quant/ggml_quants.h"

#include <math.h>

// ------------------------------------------------------------------------------------------------
// 32-weight block formats

void ggml_dequantize_row_q8_0(float *restrict out, const void *restrict src, int64_t n) {
    const struct ggml_blk_q8_0 *b = src;
    for (int64_t g = 0; g < n / 32; g++, out += 32) {
        float d = f16_to_f32(b[g].d);
        for (int i = 0; i < 32; i++) out[i] = d * (float)b[g].qs[i];
    }
}

void ggml_dequantize_row_q4_0(float *restrict out, const void *restrict src, int64_t n) {
    const struct ggml_blk_q4_0 *b = src;
    for (int64_t g = 0; g < n / 32; g++, out += 32) {
        float d = f16_to_f32(b[g].d);
        for (int j = 0; j < 16; j++) {   // low nibbles are weights 0..15, high nibbles 16..31
            out[j] = d * (float)((b[g].qs[j] & 15) - 8);
            out[j + 16] = d * (float)((b[g].qs[j] >> 4) - 8);
        }
    }
}

void ggml_dequantize_row_q4_1(float *restrict out, const void *restrict src, int64_t n) {
    const struct ggml_blk_q4_1 *b = src;
    for (int64_t g = 0; g < n / 32; g++, out += 32) {
        float d = f16_to_f32(b[g].d), m = f16_to_f32(b[g].m);
        for (int j = 0; j < 16; j++) {
            out[j] = d * (float)(b[g].qs[j] & 15) + m;
            out[j + 16] = d * (float)(b[g].qs[j] >> 4) + m;
        }
    }
}

// ------------------------------------------------------------------------------------------------
// K-quants: 256-weight super-blocks

/* The 12 scale bytes of Q4_K/Q5_K hold 8 six-bit scales and 8 six-bit mins:
 *   j < 4:  sc = s[j] & 63,                      mn = s[j+4] & 63
 *   j >= 4: sc = (s[j+4] & 15) | (s[j-4] >> 6) << 4, mn = (s[j+4] >> 4) | (s[j] >> 6) << 4
 * i.e. bytes 0-3 carry sc[0..3] plus the top 2 bits of sc[4..7], bytes 4-7 carry mn[0..3] plus the
 * top 2 bits of mn[4..7], and bytes 8-11 carry the low 4 bits of sc[4..7] (low nibble) and
 * mn[4..7] (high nibble). */
static void k_scale_min(int j, const uint8_t *s, int *sc, int *mn) {
    if (j < 4) {
        *sc = s[j] & 63;
        *mn = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 15) | (s[j - 4] >> 6) << 4;
        *mn = (s[j + 4] >> 4) | (s[j] >> 6) << 4;
    }
}

void ggml_dequantize_row_q4_K(float *restrict out, const void *restrict src, int64_t n) {
    const struct ggml_blk_q4_K *b = src;
    for (int64_t g = 0; g < n / GGML_QK_K; g++) {
        float d = f16_to_f32(b[g].d), dmin = f16_to_f32(b[g].dmin);
        const uint8_t *q = b[g].qs;
        // each 32-byte chunk of qs holds two sub-blocks: low nibbles = sub-block 2c, high = 2c+1
        for (int c = 0; c < 4; c++, q += 32) {
            int sc0, mn0, sc1, mn1;
            k_scale_min(2 * c, b[g].scales, &sc0, &mn0);
            k_scale_min(2 * c + 1, b[g].scales, &sc1, &mn1);
            float d0 = d * (float)sc0, m0 = dmin * (float)mn0;
            float d1 = d * (float)sc1, m1 = dmin * (float)mn1;
            for (int l = 0; l < 32; l++) *out++ = d0 * (float)(q[l] & 15) - m0;
            for (int l = 0; l < 32; l++) *out++ = d1 * (float)(q[l] >> 4) - m1;
        }
    }
}

void ggml_dequantize_row_q5_K(float *restrict out, const void *restrict src, int64_t n) {
    const struct ggml_blk_q5_K *b = src;
    for (int64_t g = 0; g < n / GGML_QK_K; g++) {
        float d = f16_to_f32(b[g].d), dmin = f16_to_f32(b[g].dmin);
        const uint8_t *ql = b[g].qs, *qh = b[g].qh;
        // as Q4_K; the fifth bit of weight l of sub-block s is bit s of qh[l]
        for (int c = 0; c < 4; c++, ql += 32) {
            int sc0, mn0, sc1, mn1;
            k_scale_min(2 * c, b[g].scales, &sc0, &mn0);
            k_scale_min(2 * c + 1, b[g].scales, &sc1, &mn1);
            float d0 = d * (float)sc0, m0 = dmin * (float)mn0;
            float d1 = d * (float)sc1, m1 = dmin * (float)mn1;
            for (int l = 0; l < 32; l++)
                *out++ = d0 * (float)((ql[l] & 15) | ((qh[l] >> (2 * c)) & 1) << 4) - m0;
            for (int l = 0; l < 32; l++)
                *out++ = d1 * (float)((ql[l] >> 4) | ((qh[l] >> (2 * c + 1)) & 1) << 4) - m1;
        }
    }
}

void ggml_dequantize_row_q6_K(float *restrict out, const void *restrict src, int64_t n) {
    const struct ggml_blk_q6_K *b = src;
    for (int64_t g = 0; g < n / GGML_QK_K; g++) {
        float d = f16_to_f32(b[g].d);
        const uint8_t *ql = b[g].ql, *qh = b[g].qh;
        const int8_t *sc = b[g].scales;
        // two halves of 128 weights; in each, weight l + 32*k (k = 0..3) takes
        //   low 4 bits: ql[l] (k=0), ql[l+32] (k=1), ql[l]>>4 (k=2), ql[l+32]>>4 (k=3)
        //   high 2 bits: (qh[l] >> 2k) & 3; its scale is sc[l/16 + 2k]
        for (int h = 0; h < 2; h++, ql += 64, qh += 32, sc += 8, out += 128) {
            for (int l = 0; l < 32; l++) {
                int is = l / 16;
                int q0 = ((ql[l] & 15) | ((qh[l] >> 0) & 3) << 4) - 32;
                int q1 = ((ql[l + 32] & 15) | ((qh[l] >> 2) & 3) << 4) - 32;
                int q2 = ((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32;
                int q3 = ((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32;
                out[l] = d * (float)sc[is + 0] * (float)q0;
                out[l + 32] = d * (float)sc[is + 2] * (float)q1;
                out[l + 64] = d * (float)sc[is + 4] * (float)q2;
                out[l + 96] = d * (float)sc[is + 6] * (float)q3;
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// RTN quantizers (same arithmetic as ggml's reference, so synthetic files match llama.cpp's)

void ggml_quantize_row_q8_0(void *restrict dst, const float *restrict src, int64_t n) {
    struct ggml_blk_q8_0 *b = dst;
    for (int64_t g = 0; g < n / 32; g++, src += 32) {
        float amax = 0.0f;
        for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(src[i]));
        float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        b[g].d = f32_to_f16(d);
        for (int i = 0; i < 32; i++) b[g].qs[i] = (int8_t)roundf(src[i] * id);
    }
}

void ggml_quantize_row_q4_0(void *restrict dst, const float *restrict src, int64_t n) {
    struct ggml_blk_q4_0 *b = dst;
    for (int64_t g = 0; g < n / 32; g++, src += 32) {
        float amax = 0.0f, max = 0.0f;   // max: the signed value of largest magnitude
        for (int i = 0; i < 32; i++)
            if (fabsf(src[i]) > amax) amax = fabsf(src[i]), max = src[i];
        float d = max / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        b[g].d = f32_to_f16(d);
        for (int j = 0; j < 16; j++) {
            float x0 = src[j] * id + 8.5f, x1 = src[j + 16] * id + 8.5f;
            int q0 = (int)x0 < 15 ? (int)x0 : 15, q1 = (int)x1 < 15 ? (int)x1 : 15;
            b[g].qs[j] = (uint8_t)(q0 | q1 << 4);
        }
    }
}

void ggml_quantize_row_q4_1(void *restrict dst, const float *restrict src, int64_t n) {
    struct ggml_blk_q4_1 *b = dst;
    for (int64_t g = 0; g < n / 32; g++, src += 32) {
        float mn = src[0], mx = src[0];
        for (int i = 1; i < 32; i++) mn = fminf(mn, src[i]), mx = fmaxf(mx, src[i]);
        float d = (mx - mn) / 15.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        b[g].d = f32_to_f16(d);
        b[g].m = f32_to_f16(mn);
        for (int j = 0; j < 16; j++) {
            float x0 = (src[j] - mn) * id + 0.5f, x1 = (src[j + 16] - mn) * id + 0.5f;
            int q0 = (int)x0 < 15 ? (int)x0 : 15, q1 = (int)x1 < 15 ? (int)x1 : 15;
            b[g].qs[j] = (uint8_t)(q0 | q1 << 4);
        }
    }
}
