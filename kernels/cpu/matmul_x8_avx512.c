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
 * Decode (t = 1) walks one row at a time (x8_dec) with a software prefetch PF_BYTES(wt) ahead (none
 * for Q8/Q4); prefill (t > 1) uses 2-row x 4-token tiles of fully unpacked
 * code vectors (x8_tile_pf).
 * Test: tests/test_kernels_matmul.c (X8 vs the natural reference). Docs: docs/KERNELS.md. */
#include <immintrin.h>
#include <string.h>

#include "kernels/cpu/matmul_kernels.h"
#include "quant/repack.h"

#define AI static inline __attribute__((always_inline))
// decode: software prefetch into L2 (T1) PF_BYTES(wt) ahead of the single weight stream, once per line.
// Measured on the 2-core Xeon VM (./llm-bench --kernels --filter x8 -t 2, TinyLlama shapes): T0 at
// 1536 B (the natural kernel's choice) gave q8/q4/q3/q2 74-80/60-71/57-68/53-65% of the read roof;
// T1 at 3072 / 6144 / 9216 / 12288 / 16384 B: q4 74-85 / 75-82 / 75-86 / 72-79 / 70-80%; 6144-9216
// best for every type, 8192 taken. (The stream probe's read roof includes the same prefetch, bench/.)
// Since 2026-12-03 the distance is per type, 0 = no software prefetch (the hardware prefetchers
// alone). Zen 4 VM, a DRAM-resident decode matmul (n = 2048, 100-300 MB of random X8 weights, the
// engine's cpu_matmul) alternated with plain and prefetched read passes over the same buffer, three
// rounds, % of the faster read: 1 thread, 8 KiB (the old default for all) / none / 16 KiB: q8 79-83 /
// 92-104 / 77-82%, q4 80-85 / 87-100 / 76-86%, q3 88-96 / 69-88 / 91-99%, q2 91-95 / 74-78 /
// 101-105%; 2 threads q8 74-82 / 90-103 / 78-87%, q4 79-91 / 89-104 / 76-86%, q3 86-94 / 74-96 /
// 87-93%, q2 89-91 / 78-95 / 90-94%. The types with the least arithmetic per byte stream best
// without the prefetch instructions (they take load slots: 18 per Q8 superblock), the ones with the
// most need them further ahead. The hint: T1, T2, with or without the T0 step below, all equal
// within the noise of `--sweep -q 8,4,3,2 -r 5`; T0 only and NTA worse. PF_Q8 .. PF_Q2, PF_HINT and
// NEAR_ON are -D-overridable for such A/Bs.
#ifndef PF_Q8
#define PF_Q8 0
#endif
#ifndef PF_Q4
#define PF_Q4 0
#endif
#ifndef PF_Q3
#define PF_Q3 8192
#endif
#ifndef PF_Q2
#define PF_Q2 16384
#endif
#define PF_BYTES(wt) \
    ((size_t)((wt) == QT_Q8_X8 ? PF_Q8 : (wt) == QT_Q4_X8 ? PF_Q4 : (wt) == QT_Q3_X8 ? PF_Q3 : PF_Q2))
#ifndef PF_HINT
#define PF_HINT _MM_HINT_T1
#endif
#define PF_DO(a) _mm_prefetch((a), PF_HINT)
// Every type that prefetches also pulls the lines NEAR_PF ahead from L2 into L1 (T0). Measured with the decode
// matmuls of 22 TinyLlama layers (q/k/v, o, gate/up, down) alternating per pass with a read-only
// probe over the same buffers, in one process (the VM's bandwidth drifts too much between runs for
// a 3% effect): q4 84-88% -> 95-96% of that probe, q8 89-95% -> 96-97%, q3 79-87% -> 90%,
// q2 80-81% -> 79-86% (no T0 / T0 at 512 B / 2048 / 3072 / 4096 B: q4 85 / 88-91 / 92-95 / 96 / 96%).
// (The earlier 512 B for Q2/Q3 only, and "no gain for Q8/Q4", were measured between runs.)
#define NEAR_PF 3072
#ifndef NEAR_ON
#define NEAR_ON(wt) true
#endif

AI size_t sb_bytes(enum qtype wt) {
    return wt == QT_Q8_X8 ? 8 * sizeof(struct blk_q8_g64) : wt == QT_Q4_X8 ? 8 * sizeof(struct blk_q4_g64)
         : wt == QT_Q3_X8 ? 8 * sizeof(struct blk_q3_g64) : 8 * sizeof(struct blk_q2_g64);
}

#define DP(a, w, x) _mm512_dpbusd_epi32((a), (w), _mm512_loadu_si512(x))

AI float hsum8(__m256 a) {
    __m128 a4 = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    a4 = _mm_add_ps(a4, _mm_movehl_ps(a4, a4));
    a4 = _mm_add_ss(a4, _mm_movehdup_ps(a4));
    return _mm_cvtss_f32(a4);
}

// Decode: NR rows x 1 token, each activation vector loaded once for the NR rows. In decode the int8
// activations (512 B per superblock) are read from L1 for every row, more bytes than the weights
// themselves (Q4 288 B, Q2 160 B); on Zen 4 L1 served ~120 GB/s of 512-bit loads per core, so loads
// and the ~1.5 512-bit ops per cycle of AND / VPDPBUSD / class sums set the in-cache rate.
// REG keeps a loaded weight vector in a register: folded into each AND, the compiler reloads it per
// field (Q3: 10 loads instead of 3).
#define REG(v) __asm__("" : "+v"(v))
AI void sb_dot(enum qtype wt, int NR, const uint8_t *const *sb, const int8_t *x, __m512i *S) {
    __m512i a[4][4];   // [class][row]
    for (int c = 0; c < 4; c++)
        for (int r = 0; r < NR; r++) a[c][r] = _mm512_setzero_si512();
    if (wt == QT_Q8_X8) {
        const __m512i flip = _mm512_set1_epi8((char)0x80);
        for (int k = 0; k < 8; k++) {
            const __m512i xv = _mm512_loadu_si512(x + 64 * k);
            for (int r = 0; r < NR; r++) {
                a[k & 1][r] = _mm512_dpbusd_epi32(a[k & 1][r], _mm512_xor_si512(_mm512_loadu_si512(sb[r] + 16 + 64 * k), flip), xv);
            }
        }
        for (int r = 0; r < NR; r++) S[r] = _mm512_add_epi32(a[0][r], a[1][r]);
        return;
    }
    if (wt == QT_Q4_X8) {
        const __m512i lo = _mm512_set1_epi8(0x0f), hi = _mm512_set1_epi8((char)0xf0);
        for (int j = 0; j < 4; j++) {
            const __m512i xl = _mm512_loadu_si512(x + 128 * j), xh = _mm512_loadu_si512(x + 128 * j + 64);
            for (int r = 0; r < NR; r++) {
                __m512i v = _mm512_loadu_si512(sb[r] + 32 + 64 * j);
                REG(v);
                a[j & 1][r] = _mm512_dpbusd_epi32(a[j & 1][r], _mm512_and_si512(v, lo), xl);
                a[2 + (j & 1)][r] = _mm512_dpbusd_epi32(a[2 + (j & 1)][r], _mm512_and_si512(v, hi), xh);
            }
        }
        for (int r = 0; r < NR; r++)
            S[r] = _mm512_add_epi32(_mm512_add_epi32(a[0][r], a[1][r]),
                                    _mm512_srai_epi32(_mm512_add_epi32(a[2][r], a[3][r]), 4));
        return;
    }
    if (wt == QT_Q3_X8) {   // one packed vector P0 / P1 / P2 at a time
        const __m512i m7 = _mm512_set1_epi8(0x07), m38 = _mm512_set1_epi8(0x38), mc0 = _mm512_set1_epi8((char)0xc0),
                      m40 = _mm512_set1_epi8(0x40);
        for (int q = 0; q < 3; q++) {
            __m512i p[4];
            for (int r = 0; r < NR; r++) {
                p[r] = _mm512_loadu_si512(sb[r] + 32 + 64 * q);
                REG(p[r]);
            }
            // P0 / P1: vectors 3q (bits 0-2, x1), 3q + 1 (bits 3-5, x8), low bits of 3q + 2 (6-7, x64);
            // P2: vectors 6 (x1), 7 (x8), high bits of 2 (bit 6) and 5 (bit 7 >> 1), both x16
            const int nf = q < 2 ? 3 : 4;
            for (int f = 0; f < nf; f++) {
                static const int cls[3][4] = {{0, 1, 3}, {0, 1, 3}, {0, 1, 2, 2}}, vec[3][4] = {{0, 1, 2}, {3, 4, 5}, {6, 7, 2, 5}};
                const __m512i xv = _mm512_loadu_si512(x + 64 * vec[q][f]);
                const __m512i m = f == 0 ? m7 : f == 1 ? m38 : q < 2 ? mc0 : m40;
                for (int r = 0; r < NR; r++) {
                    const __m512i src = f == 3 ? _mm512_srli_epi16(p[r], 1) : p[r];
                    a[cls[q][f]][r] = _mm512_dpbusd_epi32(a[cls[q][f]][r], _mm512_and_si512(src, m), xv);
                }
            }
        }
        for (int r = 0; r < NR; r++)
            S[r] = _mm512_add_epi32(_mm512_add_epi32(a[0][r], _mm512_srai_epi32(a[1][r], 3)),
                                    _mm512_add_epi32(_mm512_srai_epi32(a[2][r], 4), _mm512_srai_epi32(a[3][r], 6)));
        return;
    }
    for (int j = 0; j < 2; j++) {   // Q2
        __m512i v[4];
        for (int r = 0; r < NR; r++) {
            v[r] = _mm512_loadu_si512(sb[r] + 32 + 64 * j);
            REG(v[r]);
        }
        for (int c = 0; c < 4; c++) {
            const __m512i xv = _mm512_loadu_si512(x + 64 * (4 * j + c)), m = _mm512_set1_epi8((char)(3 << (2 * c)));
            for (int r = 0; r < NR; r++) a[c][r] = _mm512_dpbusd_epi32(a[c][r], _mm512_and_si512(v[r], m), xv);
        }
    }
    for (int r = 0; r < NR; r++)
        S[r] = _mm512_add_epi32(_mm512_add_epi32(a[0][r], _mm512_srai_epi32(a[1][r], 2)),
                                _mm512_add_epi32(_mm512_srai_epi32(a[2][r], 4), _mm512_srai_epi32(a[3][r], 6)));
}

// NR consecutive rows from row i (base = row i's first byte). The rows are one contiguous block of
// NR * rb bytes, prefetched as one linear stream: superblock step s covers NR * sbb bytes PF_BYTES
// ahead of the block's consumed share, so by the block's end the next block's first PF_BYTES are
// on their way.
AI void x8_dec(enum qtype wt, int NR, float *out, const struct xq8 *xq, const uint8_t *base, size_t rb, int64_t i) {
    const int64_t nsb = xq->n / X8_WEIGHTS;
    const size_t sbb = sb_bytes(wt);
    __m256 accf[4], accm[4];
    for (int r = 0; r < NR; r++) accf[r] = accm[r] = _mm256_setzero_ps();
    for (int64_t s = 0; s < nsb; s++) {
        const char *pf = (const char *)base + (size_t)s * NR * sbb;
        if (PF_BYTES(wt))
            for (size_t off = 0; off < NR * sbb; off += 64) {
                PF_DO(pf + PF_BYTES(wt) + off);
                if (NEAR_ON(wt)) _mm_prefetch(pf + NEAR_PF + off, _MM_HINT_T0);
            }
        const uint8_t *sb[4];
        for (int r = 0; r < NR; r++) sb[r] = base + (size_t)r * rb + s * sbb;
        __m512i S[4];
        sb_dot(wt, NR, sb, xq->qil + s * X8_WEIGHTS, S);
        const int64_t g = 8 * s;
        const __m256 dx = _mm256_loadu_ps(xq->dx + g);
        const __m256 sx = wt == QT_Q8_X8 ? dx : _mm256_loadu_ps(xq->sx + g);
        const __m256i c128 = wt == QT_Q8_X8 ? _mm256_slli_epi32(_mm256_loadu_si256((const __m256i *)(xq->sum + g)), 7)
                                            : _mm256_setzero_si256();
        for (int r = 0; r < NR; r++) {
            const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)sb[r]));
            __m256i s8 = _mm256_add_epi32(_mm512_castsi512_si256(S[r]), _mm512_extracti64x4_epi64(S[r], 1));
            if (wt == QT_Q8_X8) s8 = _mm256_sub_epi32(s8, c128);
            accf[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s8), _mm256_mul_ps(d, dx), accf[r]);
            if (wt != QT_Q8_X8)
                accm[r] = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(sb[r] + 16))), sx, accm[r]);
        }
    }
    for (int r = 0; r < NR; r++) out[i + r] = hsum8(_mm256_add_ps(accf[r], accm[r]));
}

// Rows per decode pass. Measured on the Zen 4 VM (2026-12-03), in cache (1 thread, 256 x 2048 rows,
// L2-resident), GB/s of weights for NR = 1 / 2 / 4: q8 58-64 / 52-69 / 64-73, q4 39-51 / 45-58 /
// 52-62, q3 29-37 / 33-40 / 34-40, q2 24-31 / 30-32 / 32-34; but from DRAM NR = 4 was worse
// (./llm-bench -m tl-qN.bin -p 0 -n 64 -r 4, three alternating rounds, paired roof: q4 61-79% vs
// 73-79%, q3 64-66% vs 69-86%), as was a 4-row pass over a row-interleaved address pattern
// (--sweep). So 1. (REG alone, best of 6 runs in cache: q4 42.6 -> 50.8 GB/s, q3 31.1 -> 36.7.)
#ifndef DEC_NR
#define DEC_NR 1
#endif

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
        // the stream's first PF_BYTES(wt): the in-loop prefetch only covers what follows
        const char *c0 = (const char *)(w8 + (size_t)r0 * rb);
        const size_t head = (size_t)(r1 - r0) * rb < PF_BYTES(wt) ? (size_t)(r1 - r0) * rb : PF_BYTES(wt);
        for (size_t off = 0; off < head; off += 64) PF_DO(c0 + off);
        int64_t i = r0;
        for (; i + DEC_NR <= r1; i += DEC_NR) x8_dec(wt, DEC_NR, out, xq, w8 + (size_t)i * rb, rb, i);
        for (; i < r1; i++) x8_dec(wt, 1, out, xq, w8 + (size_t)i * rb, rb, i);
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
