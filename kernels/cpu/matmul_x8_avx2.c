/* kernels/cpu/matmul_x8_avx2.c: AVX2 kernels for the X8 layouts (quant/repack.h), the decode and
 * prefill path of Q8/Q4/Q3/Q2 on AVX2 CPUs without AVX-512 VNNI (built with -mavx2 -mfma -mf16c;
 * selected by dispatch.c when the CPU backend has repacked a weight, kernels/cpu/backend_cpu.c).
 *
 * Why: the natural-layout AVX2 kernels (matmul_avx2.c) spend per 64-weight group two VPMADDUBSW,
 * one VPMADDWD, a variable in-lane permute for the group's scale, a conversion and an FMA, plus 8
 * scalar loads per 8 groups for the fp16 scales. On a core with one 128-bit integer multiplier
 * (AMD Zen 1: VPMADDUBSW/VPMADDWD ymm 2 cycles each, one pipe; VPERMILPS/VPSRLVQ ymm 4 cycles,
 * measured) that made Q3/Q2 decode compute-bound at 33-42% of the read roof, slower than Q4.
 * In X8 order one 32-byte half of a code vector holds 4 consecutive weights of each of the 8
 * groups of a superblock (int32 lane l = group l), so the products of all 16 half-vectors
 * accumulate per group without any horizontal work; VPMADDUBSW's int16 pair sums are added in
 * int16 (bounds below) and widened by one VPMADDWD per superblock and class; the fp16 scales of 8
 * groups are one 16-byte load, and conversion, scale and zero point are 3 ops per 8 groups.
 * Multiplier cycles per superblock (512 weights), Zen 1: Q8 64 (2 VPMADDUBSW + 2 VPMADDWD per
 * vector: signed codes need VPSIGNB, and a pair sum of 2 * 127 * 127 fills int16), Q4 36, Q3 42,
 * Q2 36, i.e. 8.3 / 8 / 5.3 / 4.4 bytes of weights per cycle.
 *
 * int16 accumulation bounds (|xq| <= 127, one accumulator per class and token per superblock):
 *   Q4: two accumulators of 8 VPMADDUBSW, pair <= 2*15*127 = 3810: 30480 < 2^15
 *   Q3: every field shifted down to bits 0-2 (the two high bits to bit 2, value 4): per half-vector
 *       6 fields <= 7 and 2 <= 3 and 2 <= 4: 2 * (6*1778 + 2*762 + 2*1016) = 28448 in one accumulator
 *   Q2: class x1 (fields at bits 0-1), 8 x 762 = 6096; class x4 (fields at bits 2-3, kept in place),
 *       8 x 3048 = 24384; combined after widening (x4 class >> 2, exact: all its terms are multiples of 4)
 *   Q8: each VPMADDUBSW widened on its own (VPMADDWD), int32
 * Decode (t = 1) walks one row at a time with software prefetch; more tokens use a 1-row x NT-token
 * tile (NT <= 4) over blocks of 32 rows, like the AVX-512 file.
 * Test: tests/test_kernels_x8.c (X8 vs the natural reference, and exact-integer sums). */
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/matmul_kernels.h"
#include "quant/repack.h"

#define AI static inline __attribute__((always_inline))

// decode prefetch distances (bytes ahead of the weight stream, once per 64-byte line)
#ifndef X8A_PF_FAR
#define X8A_PF_FAR 8192
#endif
#ifndef X8A_PF_NEAR
#define X8A_PF_NEAR 2048
#endif

AI size_t sb_bytes(enum qtype wt) {
    return wt == QT_Q8_X8 ? 8 * sizeof(struct blk_q8_g64) : wt == QT_Q4_X8 ? 8 * sizeof(struct blk_q4_g64)
         : wt == QT_Q3_X8 ? 8 * sizeof(struct blk_q3_g64) : 8 * sizeof(struct blk_q2_g64);
}

AI __m256i ld(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }
AI __m256i mub(__m256i w, const int8_t *x) { return _mm256_maddubs_epi16(w, ld(x)); }
AI __m256i srl16(__m256i v, int s) { return _mm256_srli_epi16(v, s); }

// Integer dots of one superblock for NT tokens: S[u] lane l = sum(q * xq) of group l (exact).
// xs[u] = token u's 512 interleaved activation codes of this superblock; half h (0, 1) of code
// vector k pairs the codes at cv + 64 k + 32 h with xs + 64 k + 32 h.
AI void sb_dot(enum qtype wt, int NT, const uint8_t *sb, const int8_t *const *xs, __m256i *S) {
    const __m256i ones = _mm256_set1_epi16(1);
    if (wt == QT_Q8_X8) {
        const uint8_t *cv = sb + 16;
        __m256i a[2][4];
        for (int u = 0; u < NT; u++) a[0][u] = a[1][u] = _mm256_setzero_si256();
        for (int k = 0; k < 16; k++) {   // |q| x sign(xq, q)
            __m256i w = ld(cv + 32 * k), aw = _mm256_sign_epi8(w, w);
            for (int u = 0; u < NT; u++) {
                __m256i p = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(ld(xs[u] + 32 * k), w));
                a[k & 1][u] = _mm256_add_epi32(a[k & 1][u], _mm256_madd_epi16(p, ones));
            }
        }
        for (int u = 0; u < NT; u++) S[u] = _mm256_add_epi32(a[0][u], a[1][u]);
        return;
    }
    const uint8_t *cv = sb + 32;
    if (wt == QT_Q4_X8) {   // packed j: low nibble = vector 2j, high nibble = vector 2j+1
        const __m256i m4 = _mm256_set1_epi8(0x0f);
        __m256i a[2][4];
        for (int u = 0; u < NT; u++) a[0][u] = a[1][u] = _mm256_setzero_si256();
        for (int j = 0; j < 4; j++)
            for (int h = 0; h < 2; h++) {
                __m256i v = ld(cv + 64 * j + 32 * h);
                __m256i wl = _mm256_and_si256(v, m4), wh = _mm256_and_si256(srl16(v, 4), m4);
                for (int u = 0; u < NT; u++) {
                    a[0][u] = _mm256_add_epi16(a[0][u], mub(wl, xs[u] + 128 * j + 32 * h));
                    a[1][u] = _mm256_add_epi16(a[1][u], mub(wh, xs[u] + 128 * j + 64 + 32 * h));
                }
            }
        for (int u = 0; u < NT; u++)
            S[u] = _mm256_add_epi32(_mm256_madd_epi16(a[0][u], ones), _mm256_madd_epi16(a[1][u], ones));
        return;
    }
    if (wt == QT_Q3_X8) {
        // P0 = cv0 | cv1 << 3 | (cv2 & 3) << 6, P1 likewise for cv3..cv5, P2 = cv6 | cv7 << 3 |
        // (cv2 >> 2) << 6 | (cv5 >> 2) << 7: every field shifted to bit 0 (16-bit shifts: the bits
        // coming in from the next byte land above the mask), the high bits to bit 2 (value 4)
        const __m256i m7 = _mm256_set1_epi8(0x07), m3 = _mm256_set1_epi8(0x03), m4 = _mm256_set1_epi8(0x04);
        __m256i a[2][4];
        for (int u = 0; u < NT; u++) a[0][u] = a[1][u] = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            const __m256i p0 = ld(cv + 32 * h), p1 = ld(cv + 64 + 32 * h), p2 = ld(cv + 128 + 32 * h);
            const __m256i w[10] = {_mm256_and_si256(p0, m7), _mm256_and_si256(srl16(p0, 3), m7),
                                   _mm256_and_si256(srl16(p0, 6), m3), _mm256_and_si256(p1, m7),
                                   _mm256_and_si256(srl16(p1, 3), m7), _mm256_and_si256(srl16(p1, 6), m3),
                                   _mm256_and_si256(p2, m7), _mm256_and_si256(srl16(p2, 3), m7),
                                   _mm256_and_si256(srl16(p2, 4), m4), _mm256_and_si256(srl16(p2, 5), m4)};
            static const int vec[10] = {0, 1, 2, 3, 4, 5, 6, 7, 2, 5};
            for (int k = 0; k < 10; k++)
                for (int u = 0; u < NT; u++)
                    a[k & 1][u] = _mm256_add_epi16(a[k & 1][u], mub(w[k], xs[u] + 64 * vec[k] + 32 * h));
        }
        for (int u = 0; u < NT; u++) S[u] = _mm256_madd_epi16(_mm256_add_epi16(a[0][u], a[1][u]), ones);
        return;
    }
    // Q2: packed j bits 2c..2c+1 = vector 4j + c; c = 0, 2 at bits 0-1 (x1), c = 1, 3 at bits 2-3 (x4)
    const __m256i m03 = _mm256_set1_epi8(0x03), m0c = _mm256_set1_epi8(0x0c);
    __m256i a[2][4];
    for (int u = 0; u < NT; u++) a[0][u] = a[1][u] = _mm256_setzero_si256();
    for (int j = 0; j < 2; j++)
        for (int h = 0; h < 2; h++) {
            const __m256i v = ld(cv + 64 * j + 32 * h), t = srl16(v, 4);
            const __m256i w0 = _mm256_and_si256(v, m03), w1 = _mm256_and_si256(v, m0c), w2 = _mm256_and_si256(t, m03),
                          w3 = _mm256_and_si256(t, m0c);
            for (int u = 0; u < NT; u++) {
                const int8_t *x = xs[u] + 256 * j + 32 * h;
                a[0][u] = _mm256_add_epi16(a[0][u], _mm256_add_epi16(mub(w0, x), mub(w2, x + 128)));
                a[1][u] = _mm256_add_epi16(a[1][u], _mm256_add_epi16(mub(w1, x + 64), mub(w3, x + 192)));
            }
        }
    for (int u = 0; u < NT; u++)
        S[u] = _mm256_add_epi32(_mm256_madd_epi16(a[0][u], ones), _mm256_srai_epi32(_mm256_madd_epi16(a[1][u], ones), 2));
}

AI float hsum8(__m256 a) {
    __m128 a4 = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    a4 = _mm_add_ps(a4, _mm_movehl_ps(a4, a4));
    a4 = _mm_add_ss(a4, _mm_movehdup_ps(a4));
    return _mm_cvtss_f32(a4);
}

// one row x NT tokens from token j: out[(j+u)*ldo + i]
AI void x8_tile(enum qtype wt, int NT, float *out, int64_t ldo, const struct xq8 *xq, const uint8_t *row,
                int64_t i, int64_t j, bool prefetch) {
    const int64_t n = xq->n, ng = xq->ng, nsb = n / X8_WEIGHTS;
    const size_t sbb = sb_bytes(wt);
    __m256 accf[4], accm[4];
    for (int u = 0; u < NT; u++) accf[u] = accm[u] = _mm256_setzero_ps();
    for (int64_t s = 0; s < nsb; s++) {
        const uint8_t *sb = row + s * sbb;
        if (prefetch)
            for (size_t off = 0; off < sbb; off += 64) {
                _mm_prefetch((const char *)sb + X8A_PF_FAR + off, _MM_HINT_T1);
                _mm_prefetch((const char *)sb + X8A_PF_NEAR + off, _MM_HINT_T0);
            }
        const int8_t *xs[4];
        for (int u = 0; u < NT; u++) xs[u] = xq->qil + (j + u) * n + s * X8_WEIGHTS;
        __m256i S[4];
        sb_dot(wt, NT, sb, xs, S);
        const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)sb));
        const __m256 m = wt == QT_Q8_X8 ? d : _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(sb + 16)));
        for (int u = 0; u < NT; u++) {
            const int64_t g = (j + u) * ng + 8 * s;
            accf[u] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(S[u]), _mm256_mul_ps(d, _mm256_loadu_ps(xq->dx + g)), accf[u]);
            if (wt != QT_Q8_X8) accm[u] = _mm256_fmadd_ps(m, _mm256_loadu_ps(xq->sx + g), accm[u]);
        }
    }
    for (int u = 0; u < NT; u++) out[(j + u) * ldo + i] = hsum8(_mm256_add_ps(accf[u], accm[u]));
}

AI void x8_rows(enum qtype wt, float *out, int64_t ldo, const struct xq8 *xq, const void *w, int64_t n,
                int64_t r0, int64_t r1, int64_t t) {
    const size_t rb = qtype_row_bytes(wt, n);
    const uint8_t *w8 = w;
    if (t == 1) {
        // the stream's first X8A_PF_FAR bytes: the in-loop prefetch only covers what follows
        const char *c0 = (const char *)(w8 + (size_t)r0 * rb);
        const size_t len = (size_t)(r1 - r0) * rb, head = len < X8A_PF_FAR ? len : X8A_PF_FAR;
        for (size_t off = 0; off < head; off += 64) {   // two calls: the hint must be a constant at -O1 too
            if (off < X8A_PF_NEAR) _mm_prefetch(c0 + off, _MM_HINT_T0);
            else _mm_prefetch(c0 + off, _MM_HINT_T1);
        }
        for (int64_t i = r0; i < r1; i++) x8_tile(wt, 1, out, ldo, xq, w8 + (size_t)i * rb, i, 0, true);
        return;
    }
    // prefill: blocks of 32 rows (<= 32 * rb bytes, L2-resident) swept by 4-token tiles
    for (int64_t b0 = r0; b0 < r1; b0 += 32) {
        const int64_t b1 = b0 + 32 < r1 ? b0 + 32 : r1;
        for (int64_t j = 0; j < t; j += 4) {
            const int64_t nt = t - j < 4 ? t - j : 4;
            for (int64_t i = b0; i < b1; i++) {
                const uint8_t *row = w8 + (size_t)i * rb;
                switch (nt) {
                case 1: x8_tile(wt, 1, out, ldo, xq, row, i, j, false); break;
                case 2: x8_tile(wt, 2, out, ldo, xq, row, i, j, false); break;
                case 3: x8_tile(wt, 3, out, ldo, xq, row, i, j, false); break;
                default: x8_tile(wt, 4, out, ldo, xq, row, i, j, false); break;
                }
            }
        }
    }
}

#define X8ROWS(name, wt)                                                                          \
    static void rows_##name##_avx2(float *out, int64_t ldo, const float *x, const struct xq8 *xq, \
                                   const void *w, int64_t n, int64_t r0, int64_t r1, int64_t t) { \
        x8_rows(wt, out, ldo, xq, w, n, r0, r1, t);                                               \
    }
X8ROWS(q8_x8, QT_Q8_X8)
X8ROWS(q4_x8, QT_Q4_X8)
X8ROWS(q3_x8, QT_Q3_X8)
X8ROWS(q2_x8, QT_Q2_X8)

const mm_rows_fn mm_rows_x8_avx2[QT_COUNT] = {
    [QT_Q8_X8] = rows_q8_x8_avx2,
    [QT_Q4_X8] = rows_q4_x8_avx2,
    [QT_Q3_X8] = rows_q3_x8_avx2,
    [QT_Q2_X8] = rows_q2_x8_avx2,
};
