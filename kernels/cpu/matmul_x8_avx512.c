/* kernels/cpu/matmul_x8_avx512.c: AVX-512 VNNI kernels for the X8 layouts (quant/repack.h), the
 * decode path of Q8/Q4/Q3/Q2 on AVX-512 CPUs. Selected by dispatch.c when the CPU backend has
 * repacked a weight (engine load, kernels/cpu/backend_cpu.c).
 *
 * Why a second layout: the natural kernels (matmul_avx512.c) spend one VPDPBUSD, one VCVTDQ2PS and
 * one FMA per 64-weight group, because a group fills all 16 lanes; with the unpack that is 5-7
 * vector ops per group, ~1.4 ns, which does not hide behind the ~2.4 ns per group that the memory
 * stream takes per core (Q4 decode was 60-70% of the read roof). In X8 order 8 groups share one
 * accumulator (lanes l and l+8 = group l), so the integer dot of a superblock of 8 groups is
 * 8 VPDPBUSD into 1-4 accumulators, and the conversion, scales and zero points cost a handful of
 * 256-bit ops per 8 groups.
 *
 * Bit fields are not shifted down: a field at bit s is masked in place (one AND) and its products
 * accumulate 2^s times too large in an accumulator of its own "scale class"; the classes are
 * combined exactly at the end of the superblock by arithmetic shifts (every term in class c is a
 * multiple of 2^s). Per code vector (64 weights): Q8 XOR + DPBUSD; Q4/Q2 AND + DPBUSD; Q3 1.25 of
 * each (three 3-bit fields per byte; two codes have their high bit in a separate field). Exactness: |class sums| < 2^31 for every superblock
 * (at most 16 DPBUSD of 4 products <= 255 * 127 each per lane).
 *
 * Decode (t = 1) walks one row at a time with a software prefetch PF_BYTES ahead; more tokens use a
 * 1-row x NT-token tile (NT <= 4) that unpacks each vector once for NT tokens.
 * Test: tests/test_kernels_matmul.c (X8 vs the natural reference). Docs: docs/KERNELS.md. */
#include <immintrin.h>
#include <string.h>

#include "kernels/cpu/matmul_kernels.h"
#include "quant/repack.h"

#define AI static inline __attribute__((always_inline))
// decode: software prefetch into L2 (T1) PF_BYTES ahead of the single weight stream, once per line.
// Measured on the 2-core Xeon VM (./llm-bench --kernels --filter x8 -t 2, TinyLlama shapes): T0 at
// 1536 B (the natural kernel's choice) gave q8/q4/q3/q2 74-80/60-71/57-68/53-65% of the read roof;
// T1 at 3072 / 6144 / 9216 / 12288 / 16384 B: q4 74-85 / 75-82 / 75-86 / 72-79 / 70-80%; 6144-9216
// best for every type, 8192 taken. (The stream probe's read roof includes the same prefetch, bench/.)
#define PF_BYTES 8192
#define PF_DO(a) _mm_prefetch((a), _MM_HINT_T1)
// Every type also pulls the lines NEAR_PF ahead from L2 into L1 (T0). Measured with the decode
// matmuls of 22 TinyLlama layers (q/k/v, o, gate/up, down) alternating per pass with a read-only
// probe over the same buffers, in one process (the VM's bandwidth drifts too much between runs for
// a 3% effect): q4 84-88% -> 95-96% of that probe, q8 89-95% -> 96-97%, q3 79-87% -> 90%,
// q2 80-81% -> 79-86% (no T0 / T0 at 512 B / 2048 / 3072 / 4096 B: q4 85 / 88-91 / 92-95 / 96 / 96%).
// (The earlier 512 B for Q2/Q3 only, and "no gain for Q8/Q4", were measured between runs.)
#define NEAR_PF 3072
#define NEAR_ON(wt) true

AI size_t sb_bytes(enum qtype wt) {
    return wt == QT_Q8_X8 ? 8 * sizeof(struct blk_q8_g64) : wt == QT_Q4_X8 ? 8 * sizeof(struct blk_q4_g64)
         : wt == QT_Q3_X8 ? 8 * sizeof(struct blk_q3_g64) : 8 * sizeof(struct blk_q2_g64);
}

#define DP(a, w, x) _mm512_dpbusd_epi32((a), (w), _mm512_loadu_si512(x))

// Integer dots of one superblock for NT tokens: S[u] lane L = part of group L & 7's sum(q * xq).
// xs[u] = token u's 512 interleaved activation codes of this superblock.
AI void sb_dot(enum qtype wt, int NT, const uint8_t *sb, const int8_t *const *xs, __m512i *S) {
    __m512i a[4][4];   // [class][token]
    for (int c = 0; c < 4; c++)
        for (int u = 0; u < NT; u++) a[c][u] = _mm512_setzero_si512();
    if (wt == QT_Q8_X8) {
        const uint8_t *cv = sb + 16;
        const __m512i flip = _mm512_set1_epi8((char)0x80);
        for (int k = 0; k < 8; k++) {   // u8 = q + 128; 128 * sum(xq) is taken back per group by the caller
            __m512i w = _mm512_xor_si512(_mm512_loadu_si512(cv + 64 * k), flip);
            for (int u = 0; u < NT; u++) a[k & 1][u] = DP(a[k & 1][u], w, xs[u] + 64 * k);
        }
        for (int u = 0; u < NT; u++) S[u] = _mm512_add_epi32(a[0][u], a[1][u]);
        return;
    }
    const uint8_t *cv = sb + 32;
    if (wt == QT_Q4_X8) {   // packed j: low nibble = vector 2j (class x1), high = vector 2j+1 (x16)
        const __m512i lo = _mm512_set1_epi8(0x0f), hi = _mm512_set1_epi8((char)0xf0);
        for (int j = 0; j < 4; j++) {
            __m512i v = _mm512_loadu_si512(cv + 64 * j);
            __m512i wl = _mm512_and_si512(v, lo), wh = _mm512_and_si512(v, hi);
            for (int u = 0; u < NT; u++) {
                a[(j & 1)][u] = DP(a[(j & 1)][u], wl, xs[u] + 128 * j);
                a[2 + (j & 1)][u] = DP(a[2 + (j & 1)][u], wh, xs[u] + 128 * j + 64);
            }
        }
        for (int u = 0; u < NT; u++)
            S[u] = _mm512_add_epi32(_mm512_add_epi32(a[0][u], a[1][u]),
                                    _mm512_srai_epi32(_mm512_add_epi32(a[2][u], a[3][u]), 4));
        return;
    }
    if (wt == QT_Q3_X8) {
        // classes x1, x8, x16, x64: fields at bits 0-2 (x1), 3-5 (x8), 6-7 (the low 2 bits of vectors
        // 2 and 5, x64); their high bits (code value 4) sit at P2 bits 6 and 7: bit 6 is 64 = 16 * 4
        // (class x16), bit 7 one 16-bit shift down the same (the bit shifted in from the next byte
        // lands on bit 7, masked off)
        const __m512i p0 = _mm512_loadu_si512(cv), p1 = _mm512_loadu_si512(cv + 64), p2 = _mm512_loadu_si512(cv + 128);
        const __m512i m7 = _mm512_set1_epi8(0x07), m38 = _mm512_set1_epi8(0x38), mc0 = _mm512_set1_epi8((char)0xc0),
                      m40 = _mm512_set1_epi8(0x40);
        const __m512i w[10] = {_mm512_and_si512(p0, m7),  _mm512_and_si512(p0, m38), _mm512_and_si512(p0, mc0),
                               _mm512_and_si512(p1, m7),  _mm512_and_si512(p1, m38), _mm512_and_si512(p1, mc0),
                               _mm512_and_si512(p2, m7),  _mm512_and_si512(p2, m38), _mm512_and_si512(p2, m40),
                               _mm512_and_si512(_mm512_srli_epi16(p2, 1), m40)};
        static const int cls[10] = {0, 1, 3, 0, 1, 3, 0, 1, 2, 2}, vec[10] = {0, 1, 2, 3, 4, 5, 6, 7, 2, 5};
        for (int k = 0; k < 10; k++)
            for (int u = 0; u < NT; u++) a[cls[k]][u] = DP(a[cls[k]][u], w[k], xs[u] + 64 * vec[k]);
        for (int u = 0; u < NT; u++)
            S[u] = _mm512_add_epi32(_mm512_add_epi32(a[0][u], _mm512_srai_epi32(a[1][u], 3)),
                                    _mm512_add_epi32(_mm512_srai_epi32(a[2][u], 4), _mm512_srai_epi32(a[3][u], 6)));
        return;
    }
    // Q2: packed j bits 2c..2c+1 = vector 4j + c, class c (x 4^c)
    for (int j = 0; j < 2; j++) {
        __m512i v = _mm512_loadu_si512(cv + 64 * j);
        for (int c = 0; c < 4; c++) {
            __m512i w = _mm512_and_si512(v, _mm512_set1_epi8((char)(3 << (2 * c))));
            for (int u = 0; u < NT; u++) a[c][u] = DP(a[c][u], w, xs[u] + 64 * (4 * j + c));
        }
    }
    for (int u = 0; u < NT; u++)
        S[u] = _mm512_add_epi32(_mm512_add_epi32(a[0][u], _mm512_srai_epi32(a[1][u], 2)),
                                _mm512_add_epi32(_mm512_srai_epi32(a[2][u], 4), _mm512_srai_epi32(a[3][u], 6)));
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
                PF_DO((const char *)sb + PF_BYTES + off);
                if (NEAR_ON(wt)) _mm_prefetch((const char *)sb + NEAR_PF + off, _MM_HINT_T0);
            }
        const int8_t *xs[4];
        for (int u = 0; u < NT; u++) xs[u] = xq->qil + (j + u) * n + s * X8_WEIGHTS;
        __m512i S[4];
        sb_dot(wt, NT, sb, xs, S);
        __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)sb));
        __m256 m = wt == QT_Q8_X8 ? d : _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(sb + 16)));
        for (int u = 0; u < NT; u++) {
            const int64_t g = (j + u) * ng + 8 * s;
            __m256i s8 = _mm256_add_epi32(_mm512_castsi512_si256(S[u]), _mm512_extracti64x4_epi64(S[u], 1));
            if (wt == QT_Q8_X8)
                s8 = _mm256_sub_epi32(s8, _mm256_slli_epi32(_mm256_loadu_si256((const __m256i *)(xq->sum + g)), 7));
            accf[u] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s8), _mm256_mul_ps(d, _mm256_loadu_ps(xq->dx + g)), accf[u]);
            if (wt != QT_Q8_X8) accm[u] = _mm256_fmadd_ps(m, _mm256_loadu_ps(xq->sx + g), accm[u]);
        }
    }
    for (int u = 0; u < NT; u++) out[(j + u) * ldo + i] = hsum8(_mm256_add_ps(accf[u], accm[u]));
}

// Code vector k (0..7) of a superblock with every field shifted down to bit 0 (u8 codes; Q8: q + 128).
// Prefill unpacks each vector once for the NT tokens of a tile, so a full unpack is cheaper there than
// the scale classes of sb_dot, which cost shifts and adds per token.
AI __m512i cv_unpacked(enum qtype wt, const uint8_t *sb, int k) {
    const __m512i *v = (const __m512i *)(sb + (wt == QT_Q8_X8 ? 16 : 32));
    if (wt == QT_Q8_X8) return _mm512_xor_si512(_mm512_loadu_si512(v + k), _mm512_set1_epi8((char)0x80));
    if (wt == QT_Q4_X8) {
        const __m512i p = _mm512_loadu_si512(v + (k >> 1)), m = _mm512_set1_epi8(0x0f);
        return _mm512_and_si512(k & 1 ? _mm512_srli_epi16(p, 4) : p, m);
    }
    if (wt == QT_Q2_X8) {
        const __m512i p = _mm512_loadu_si512(v + (k >> 2));
        return _mm512_and_si512((k & 3) ? _mm512_srli_epi16(p, 2 * (k & 3)) : p, _mm512_set1_epi8(3));
    }
    // Q3 (repack.h): P0 = cv0 | cv1 << 3 | (cv2 & 3) << 6, P1 = cv3 | cv4 << 3 | (cv5 & 3) << 6,
    // P2 = cv6 | cv7 << 3 | (cv2 >> 2) << 6 | (cv5 >> 2) << 7
    const __m512i m7 = _mm512_set1_epi8(7);
    if (k == 6 || k == 7) {
        const __m512i p = _mm512_loadu_si512(v + 2);
        return _mm512_and_si512(k == 7 ? _mm512_srli_epi16(p, 3) : p, m7);
    }
    const int q = k / 3, f = k % 3;
    const __m512i p = _mm512_loadu_si512(v + q);
    if (f == 0) return _mm512_and_si512(p, m7);
    if (f == 1) return _mm512_and_si512(_mm512_srli_epi16(p, 3), m7);
    const __m512i p2 = _mm512_loadu_si512(v + 2);
    return _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(p, 6), _mm512_set1_epi8(3)),
                           _mm512_and_si512(_mm512_srli_epi16(p2, q ? 5 : 4), _mm512_set1_epi8(4)));
}

// Prefill without AMX: NR rows x NT tokens (NR <= 2, NT <= 4) from row i, token j. Each code vector
// is unpacked once for the NT tokens and each activation vector loaded once for the NR rows; one
// int32 accumulator per (row, token) and superblock, so the per-superblock scale work is one
// convert and two FMAs per (row, token). (The 1-row x 4-token tile of sb_dot reached ~30% of the
// VPDPBUSD peak on Zen 4.)
AI void x8_tile_pf(enum qtype wt, int NR, int NT, float *out, int64_t ldo, const struct xq8 *xq, const uint8_t *w,
                   size_t rb, int64_t i, int64_t j) {
    const int64_t n = xq->n, ng = xq->ng, nsb = n / X8_WEIGHTS;
    const size_t sbb = sb_bytes(wt);
    __m256 acc[2][4];
    for (int r = 0; r < NR; r++)
        for (int u = 0; u < NT; u++) acc[r][u] = _mm256_setzero_ps();
    for (int64_t s = 0; s < nsb; s++) {
        const uint8_t *sb[2];
        for (int r = 0; r < NR; r++) sb[r] = w + (size_t)(i + r) * rb + s * sbb;
        __m512i S[2][4];
        for (int r = 0; r < NR; r++)
            for (int u = 0; u < NT; u++) S[r][u] = _mm512_setzero_si512();
        for (int k = 0; k < 8; k++) {
            __m512i wv[2];
            for (int r = 0; r < NR; r++) wv[r] = cv_unpacked(wt, sb[r], k);
            for (int u = 0; u < NT; u++) {
                const __m512i xv = _mm512_loadu_si512(xq->qil + (j + u) * n + s * X8_WEIGHTS + 64 * k);
                for (int r = 0; r < NR; r++) S[r][u] = _mm512_dpbusd_epi32(S[r][u], wv[r], xv);
            }
        }
        __m256 d[2], m[2];
        for (int r = 0; r < NR; r++) {
            d[r] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)sb[r]));
            m[r] = wt == QT_Q8_X8 ? d[r] : _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(sb[r] + 16)));
        }
        for (int u = 0; u < NT; u++) {
            const int64_t g = (j + u) * ng + 8 * s;
            const __m256 dx = _mm256_loadu_ps(xq->dx + g);
            const __m256 sx = wt == QT_Q8_X8 ? dx : _mm256_loadu_ps(xq->sx + g);
            const __m256i c128 = wt == QT_Q8_X8 ? _mm256_slli_epi32(_mm256_loadu_si256((const __m256i *)(xq->sum + g)), 7)
                                                : _mm256_setzero_si256();
            for (int r = 0; r < NR; r++) {
                __m256i s8 = _mm256_add_epi32(_mm512_castsi512_si256(S[r][u]), _mm512_extracti64x4_epi64(S[r][u], 1));
                if (wt == QT_Q8_X8) s8 = _mm256_sub_epi32(s8, c128);
                acc[r][u] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s8), _mm256_mul_ps(d[r], dx), acc[r][u]);
                if (wt != QT_Q8_X8) acc[r][u] = _mm256_fmadd_ps(m[r], sx, acc[r][u]);
            }
        }
    }
    for (int r = 0; r < NR; r++)
        for (int u = 0; u < NT; u++) out[(j + u) * ldo + i + r] = hsum8(acc[r][u]);
}

#define PF_TILES(NT)                                                                   \
    do {                                                                               \
        int64_t i = b0;                                                                \
        for (; i + 2 <= b1; i += 2) x8_tile_pf(wt, 2, NT, out, ldo, xq, w8, rb, i, j); \
        for (; i < b1; i++) x8_tile_pf(wt, 1, NT, out, ldo, xq, w8, rb, i, j);         \
    } while (0)

AI void x8_rows(enum qtype wt, float *out, int64_t ldo, const struct xq8 *xq, const void *w, int64_t n,
                int64_t r0, int64_t r1, int64_t t) {
    const size_t rb = qtype_row_bytes(wt, n);
    const uint8_t *w8 = w;
    if (t == 1) {
        // the stream's first PF_BYTES: the in-loop prefetch only covers what follows
        const char *c0 = (const char *)(w8 + (size_t)r0 * rb);
        const size_t head = (size_t)(r1 - r0) * rb < PF_BYTES ? (size_t)(r1 - r0) * rb : PF_BYTES;
        for (size_t off = 0; off < head; off += 64) PF_DO(c0 + off);
        for (int64_t i = r0; i < r1; i++) x8_tile(wt, 1, out, ldo, xq, w8 + (size_t)i * rb, i, 0, true);
        return;
    }
    // prefill without AMX: blocks of 32 rows (<= 32 * rb bytes, L2-resident) swept by 4-token tiles
    for (int64_t b0 = r0; b0 < r1; b0 += 32) {
        const int64_t b1 = b0 + 32 < r1 ? b0 + 32 : r1;
        for (int64_t j = 0; j < t; j += 4) {
            const int64_t nt = t - j < 4 ? t - j : 4;
            switch (nt) {
            case 1: PF_TILES(1); break;
            case 2: PF_TILES(2); break;
            case 3: PF_TILES(3); break;
            default: PF_TILES(4); break;
            }
        }
    }
}

#define X8ROWS(name, wt)                                                                         \
    static void rows_##name##_avx512(float *out, int64_t ldo, const float *x, const struct xq8 *xq, \
                                     const void *w, int64_t n, int64_t r0, int64_t r1, int64_t t) { \
        x8_rows(wt, out, ldo, xq, w, n, r0, r1, t);                                              \
    }
X8ROWS(q8_x8, QT_Q8_X8)
X8ROWS(q4_x8, QT_Q4_X8)
X8ROWS(q3_x8, QT_Q3_X8)
X8ROWS(q2_x8, QT_Q2_X8)

const mm_rows_fn mm_rows_x8[QT_COUNT] = {
    [QT_Q8_X8] = rows_q8_x8_avx512,
    [QT_Q4_X8] = rows_q4_x8_avx512,
    [QT_Q3_X8] = rows_q3_x8_avx512,
    [QT_Q2_X8] = rows_q2_x8_avx512,
};
