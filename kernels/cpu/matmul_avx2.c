/* kernels/cpu/matmul_avx2.c: AVX2+FMA+F16C matmul kernels for every weight type (built with
 * -mavx2 -mfma -mf16c; selected at run time by kernels/cpu/dispatch.c).
 * Register tiles of NR rows x NT tokens: float decode (t = 1) walks 4 rows at once sharing the
 * activation loads; int8 decode walks one row at a time (one sequential, software-prefetched stream
 * per thread: see qdec); prefill walks 4 tokens per row so each unpacked weight group is used 4
 * times, over blocks of 64 rows that stay in L2. Quantized types: int8 activations (struct xq8),
 * u8 x s8 products with _mm256_maddubs_epi16 then _mm256_madd_epi16 to int32, one fp32 FMA per
 * group and token.
 * Lane layouts and bounds: docs/KERNELS.md. Test: tests/test_kernels_matmul.c */
#include <immintrin.h>
#include <string.h>

#include "kernels/cpu/matmul_kernels.h"

#define AI static inline __attribute__((always_inline))
#define ROW_BLOCK 64   // rows per L2 block in prefill

AI float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

AI uint32_t ld32(const void *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
AI uint16_t ld16(const void *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}
AI int64_t ld64(const void *p) {
    int64_t v;
    memcpy(&v, p, 8);
    return v;
}

// ------------------------------------------------------------------------------------------------
// int8 activation quantizer, bit-identical to xq8_quantize_ref (same fp32 formula, cvtps rounds to
// nearest even like lrintf in the default rounding mode)

void xq8_quantize_avx2(struct xq8 *a, const float *x, int64_t j0, int64_t j1) {
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int64_t j = j0; j < j1; j++) {
        for (int64_t g = 0; g < a->ng; g++) {
            const float *xg = x + j * a->n + g * QK_G64;
            __m256 v[8];
            __m256 mx = _mm256_setzero_ps();
            for (int k = 0; k < 8; k++) {
                v[k] = _mm256_loadu_ps(xg + 8 * k);
                mx = _mm256_max_ps(mx, _mm256_and_ps(v[k], absmask));
            }
            __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
            m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
            m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
            float amax = _mm_cvtss_f32(m4);
            float dx = amax / 127.f, id = amax > 0.f ? 127.f / amax : 0.f;
            __m256 idv = _mm256_set1_ps(id);
            __m256i q[8], s = _mm256_setzero_si256();
            for (int k = 0; k < 8; k++) {
                q[k] = _mm256_cvtps_epi32(_mm256_mul_ps(v[k], idv));
                s = _mm256_add_epi32(s, q[k]);
            }
            int8_t *qg = a->q + j * a->n + g * QK_G64;
            for (int h = 0; h < 2; h++) {
                __m256i p0 = _mm256_packs_epi32(q[4 * h + 0], q[4 * h + 1]);
                __m256i p1 = _mm256_packs_epi32(q[4 * h + 2], q[4 * h + 3]);
                __m256i p = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(p0, p1), perm);
                _mm256_storeu_si256((__m256i *)(qg + 32 * h), p);
            }
            __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
            s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
            s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
            int32_t sum = _mm_cvtsi128_si32(s4);
            a->dx[j * a->ng + g] = dx;
            a->sx[j * a->ng + g] = dx * (float)sum;
            a->sum[j * a->ng + g] = sum;
        }
    }
}

// ------------------------------------------------------------------------------------------------
// float weights: f32, f16 (vcvtph2ps), bf16 (<< 16)

enum fkind { FK_F32, FK_F16, FK_BF16 };

AI __m256 ldw8(enum fkind k, const void *w, int64_t i) {
    if (k == FK_F32) return _mm256_loadu_ps((const float *)w + i);
    if (k == FK_F16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + i)));
    __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + i)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
}
AI float ldw1(enum fkind k, const void *w, int64_t i) {
    if (k == FK_F32) return ((const float *)w)[i];
    if (k == FK_F16) return f16_to_f32(((const uint16_t *)w)[i]);
    return bf16_to_f32(((const uint16_t *)w)[i]);
}

// NR rows starting at row i, NT tokens starting at token j. Each accumulator is a dot product over
// 8 lanes (lane l sums k = l mod 8), reduced at the end; the n % 8 tail is scalar.
AI void ftile(enum fkind kind, int NR, int NT, float *out, int64_t ldo, const float *x, const void *w,
              int64_t n, int64_t i, int64_t j) {
    size_t es = kind == FK_F32 ? 4 : 2;
    const char *wr[4];
    __m256 acc[4][4];
    for (int r = 0; r < NR; r++) {
        wr[r] = (const char *)w + (size_t)(i + r) * n * es;
        for (int u = 0; u < NT; u++) acc[r][u] = _mm256_setzero_ps();
    }
    const float *xj = x + j * n;
    int64_t k = 0;
    for (; k + 8 <= n; k += 8) {
        __m256 xv[4];
        for (int u = 0; u < NT; u++) xv[u] = _mm256_loadu_ps(xj + u * n + k);
        for (int r = 0; r < NR; r++) {
            __m256 wv = ldw8(kind, wr[r], k);
            for (int u = 0; u < NT; u++) acc[r][u] = _mm256_fmadd_ps(wv, xv[u], acc[r][u]);
        }
    }
    for (int r = 0; r < NR; r++)
        for (int u = 0; u < NT; u++) {
            float s = hsum256(acc[r][u]);
            for (int64_t kk = k; kk < n; kk++) s += ldw1(kind, wr[r], kk) * xj[u * n + kk];
            out[(j + u) * ldo + i + r] = s;
        }
}

AI void frows(enum fkind kind, float *out, int64_t ldo, const float *x, const void *w, int64_t n,
              int64_t r0, int64_t r1, int64_t t) {
    for (int64_t b0 = r0; b0 < r1; b0 += ROW_BLOCK) {
        int64_t b1 = b0 + ROW_BLOCK < r1 ? b0 + ROW_BLOCK : r1;
        for (int64_t j = 0; j < t; j += 4) {
            int64_t nt = t - j < 4 ? t - j : 4, i = b0;
            switch (nt) {
            case 1:
                for (; i + 4 <= b1; i += 4) ftile(kind, 4, 1, out, ldo, x, w, n, i, j);
                for (; i < b1; i++) ftile(kind, 1, 1, out, ldo, x, w, n, i, j);
                break;
            case 2:
                for (; i + 4 <= b1; i += 4) ftile(kind, 4, 2, out, ldo, x, w, n, i, j);
                for (; i < b1; i++) ftile(kind, 1, 2, out, ldo, x, w, n, i, j);
                break;
            case 3:
                for (; i + 2 <= b1; i += 2) ftile(kind, 2, 3, out, ldo, x, w, n, i, j);
                for (; i < b1; i++) ftile(kind, 1, 3, out, ldo, x, w, n, i, j);
                break;
            default:
                for (; i + 2 <= b1; i += 2) ftile(kind, 2, 4, out, ldo, x, w, n, i, j);
                for (; i < b1; i++) ftile(kind, 1, 4, out, ldo, x, w, n, i, j);
                break;
            }
        }
    }
}

static void rows_f32_avx2(float *out, int64_t ldo, const float *x, const struct xq8 *xq, const void *w,
                          int64_t n, int64_t r0, int64_t r1, int64_t t) {
    frows(FK_F32, out, ldo, x, w, n, r0, r1, t);
}
static void rows_f16_avx2(float *out, int64_t ldo, const float *x, const struct xq8 *xq, const void *w,
                          int64_t n, int64_t r0, int64_t r1, int64_t t) {
    frows(FK_F16, out, ldo, x, w, n, r0, r1, t);
}
static void rows_bf16_avx2(float *out, int64_t ldo, const float *x, const struct xq8 *xq, const void *w,
                           int64_t n, int64_t r0, int64_t r1, int64_t t) {
    frows(FK_BF16, out, ldo, x, w, n, r0, r1, t);
}

// ------------------------------------------------------------------------------------------------
// int8-activation weights. unpack_*() turn one group into two u8 vectors w0 (codes 0..31) and w1
// (codes 32..63) matching the activation codes xq[0..31], xq[32..63]; gdot() returns 8 int32 lanes
// whose sum is QK_SCALE(wt) * sum(q * xq) (exact). Q2/Q3 keep their upper 128-bit lane pre-scaled by
// 4 (one AND instead of a shift + AND), and madd by (4 | 1) evens it out: QK_SCALE = 4.

#define QK_SCALE(wt) ((wt) == QT_Q2_G64 || (wt) == QT_Q3_G64 ? 4 : 1)

AI size_t blk_bytes(enum qtype wt) {
    return wt == QT_Q8_G64 ? sizeof(struct blk_q8_g64) : wt == QT_Q4_G64 ? sizeof(struct blk_q4_g64)
         : wt == QT_Q3_G64 ? sizeof(struct blk_q3_g64) : sizeof(struct blk_q2_g64);
}

// Q4: qs[i] = q[i] | q[i+32] << 4: the low nibbles are q[0..31] in order, the high nibbles q[32..63].
AI void unpack_q4(const struct blk_q4_g64 *b, __m256i *w0, __m256i *w1) {
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    __m256i v = _mm256_loadu_si256((const __m256i *)b->qs);
    *w0 = _mm256_and_si256(v, m4);
    *w1 = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
}

// 2-bit plane (Q2 qs, Q3 ql): byte k holds q[k], q[k+16], q[k+32], q[k+48] at bits 0, 2, 4, 6.
// v = the 16 bytes in both 128-bit lanes; mask 0x03 in the low lane, 0x0c in the high lane:
//   w0 = v & (03|0c)        = q[0..15]  | 4*q[16..31]
//   w1 = (v >> 4) & (03|0c) = q[32..47] | 4*q[48..63]   (16-bit shift; the bits that cross a byte
//                                                        boundary land in the masked-off nibble)
AI void unpack_2bit(const uint8_t *p, __m256i *w0, __m256i *w1) {
    const __m256i m = _mm256_setr_m128i(_mm_set1_epi8(0x03), _mm_set1_epi8(0x0c));
    __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)p));
    *w0 = _mm256_and_si256(v, m);
    *w1 = _mm256_and_si256(_mm256_srli_epi16(v, 4), m);
}

// Q3: the high bit of q[i] is bit i / 8 of qh[i % 8], so in the broadcast 64-bit qh every 64-bit
// quarter of w0/w1 (8 consecutive codes) finds its 8 high bits at ONE bit position, one per byte:
//   w0 quarters = q[0..7], q[8..15] (low lane, want 1*h at bit 2), q[16..23], q[24..31] (upper lane,
//   pre-scaled by 4: want bit 4) hold bits 0, 1, 2, 3: shift left by 2, 1, 2, 1;
//   w1 quarters = q[32..39], q[40..47], q[48..55], q[56..63] hold bits 4, 5, 6, 7: shift right by
//   2, 3, 2, 3.
// Shifts of <= 3 never move the wanted bit across a byte; an AND (0x04 | 0x10) keeps it and an OR
// puts it above the 2-bit code: 6 ALU ops for the high plane (was 9 with a shuffle + min).
AI void unpack_q3(const struct blk_q3_g64 *b, __m256i *w0, __m256i *w1) {
    const __m256i hm = _mm256_setr_m128i(_mm_set1_epi8(0x04), _mm_set1_epi8(0x10));
    __m256i lo0, lo1;
    unpack_2bit(b->ql, &lo0, &lo1);
    __m256i qh = _mm256_set1_epi64x((long long)ld64(b->qh));
    __m256i h0 = _mm256_and_si256(_mm256_sllv_epi64(qh, _mm256_setr_epi64x(2, 1, 2, 1)), hm);
    __m256i h1 = _mm256_and_si256(_mm256_srlv_epi64(qh, _mm256_setr_epi64x(2, 3, 2, 3)), hm);
    *w0 = _mm256_or_si256(lo0, h0);
    *w1 = _mm256_or_si256(lo1, h1);
}

AI void unpack(enum qtype wt, const void *b, __m256i *w0, __m256i *w1) {
    if (wt == QT_Q8_G64) {
        const struct blk_q8_g64 *q = b;
        *w0 = _mm256_loadu_si256((const __m256i *)q->qs);
        *w1 = _mm256_loadu_si256((const __m256i *)(q->qs + 32));
    } else if (wt == QT_Q4_G64) {
        unpack_q4(b, w0, w1);
    } else if (wt == QT_Q3_G64) {
        unpack_q3(b, w0, w1);
    } else {
        unpack_2bit(((const struct blk_q2_g64 *)b)->qs, w0, w1);
    }
}

// Q8 (signed weights): |w| x sign(xq, w); each maddubs pair is <= 2*127*127 = 32258 < 2^15, and each
// half goes through madd separately. Q4 (<= 15): both halves summed in int16 first (<= 4*15*127 =
// 7620). Q3/Q2: upper lane <= 4*(28*127*2) = 28448 after the add, still < 2^15.
AI __m256i gdot(enum qtype wt, __m256i w0, __m256i w1, const int8_t *xg) {
    __m256i x0 = _mm256_loadu_si256((const __m256i *)xg), x1 = _mm256_loadu_si256((const __m256i *)(xg + 32));
    if (wt == QT_Q8_G64) {
        const __m256i ones = _mm256_set1_epi16(1);
        __m256i p0 = _mm256_maddubs_epi16(_mm256_sign_epi8(w0, w0), _mm256_sign_epi8(x0, w0));
        __m256i p1 = _mm256_maddubs_epi16(_mm256_sign_epi8(w1, w1), _mm256_sign_epi8(x1, w1));
        return _mm256_add_epi32(_mm256_madd_epi16(p0, ones), _mm256_madd_epi16(p1, ones));
    }
    const __m256i k = QK_SCALE(wt) == 4 ? _mm256_setr_m128i(_mm_set1_epi16(4), _mm_set1_epi16(1))
                                        : _mm256_set1_epi16(1);
    __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(w0, x0), _mm256_maddubs_epi16(w1, x1));
    return _mm256_madd_epi16(p, k);
}

// fp16 d (and m) of 8 consecutive blocks: one gather of the first 4 bytes of each block, then
// pack the low halves (d) and high halves (m) into [d0..d7 | m0..m7] and convert.
// (vpgatherdd measured slower than these 8 scalar loads + inserts on Zen 3.)
AI void gather_dm(enum qtype wt, const uint8_t *b0, __m256 *dv, __m256 *mv) {
    const int bb = (int)blk_bytes(wt);
    __m256i v = _mm256_setr_epi32((int)ld32(b0), (int)ld32(b0 + bb), (int)ld32(b0 + 2 * bb), (int)ld32(b0 + 3 * bb),
                                  (int)ld32(b0 + 4 * bb), (int)ld32(b0 + 5 * bb), (int)ld32(b0 + 6 * bb),
                                  (int)ld32(b0 + 7 * bb));
    __m256i dl = _mm256_and_si256(v, _mm256_set1_epi32(0xffff)), mh = _mm256_srli_epi32(v, 16);
    __m256i pk = _mm256_permute4x64_epi64(_mm256_packus_epi32(dl, mh), 0xd8);
    *dv = _mm256_cvtph_ps(_mm256_castsi256_si128(pk));
    *mv = _mm256_cvtph_ps(_mm256_extracti128_si256(pk, 1));
}

// NR rows from row i, NT tokens from token j. Groups go 8 at a time: the 8 scales d_g*dx_g of a
// (row, token) sit in one vector sc and group k picks its lane with vpermps; the zero-point terms
// m_g*sx_g of the 8 groups are one FMA into the same accumulator (everything is summed at the end).
AI void qtile(enum qtype wt, int NR, int NT, float *out, int64_t ldo, const struct xq8 *xq, const uint8_t *w,
              size_t rb, int64_t i, int64_t j) {
    const int64_t ng = xq->ng, n = xq->n;
    const size_t bb = blk_bytes(wt);
    const float kinv = 1.f / QK_SCALE(wt);
    __m256 acc[4][4];
    float accs[4][4];
    const uint8_t *row[4];
    for (int r = 0; r < NR; r++) {
        row[r] = w + (size_t)(i + r) * rb;
        for (int u = 0; u < NT; u++) {
            acc[r][u] = _mm256_setzero_ps();
            accs[r][u] = 0.f;
        }
    }
    int64_t g = 0;
    for (; g + 8 <= ng; g += 8) {
        float sc[4][4][8] __attribute__((aligned(32)));   // group k's scale: a broadcast load
        for (int r = 0; r < NR; r++) {
            __m256 dv, mv;
            gather_dm(wt, row[r] + g * bb, &dv, &mv);
            dv = _mm256_mul_ps(dv, _mm256_set1_ps(kinv));
            for (int u = 0; u < NT; u++) {
                _mm256_store_ps(sc[r][u], _mm256_mul_ps(dv, _mm256_loadu_ps(xq->dx + (j + u) * ng + g)));
                if (wt != QT_Q8_G64)
                    acc[r][u] = _mm256_fmadd_ps(mv, _mm256_loadu_ps(xq->sx + (j + u) * ng + g), acc[r][u]);
            }
        }
#pragma GCC unroll 8
        for (int k = 0; k < 8; k++) {
            for (int r = 0; r < NR; r++) {
                const uint8_t *b = row[r] + (g + k) * bb;
                _mm_prefetch((const char *)b + 1024, _MM_HINT_T0);
                __m256i w0, w1;
                unpack(wt, b, &w0, &w1);
                for (int u = 0; u < NT; u++) {
                    __m256i s = gdot(wt, w0, w1, xq->q + (j + u) * n + (g + k) * QK_G64);
                    acc[r][u] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_broadcast_ss(&sc[r][u][k]),
                                                acc[r][u]);
                }
            }
        }
    }
    for (; g < ng; g++) {   // ng % 8 tail groups: scalar scales
        for (int r = 0; r < NR; r++) {
            const uint8_t *b = row[r] + g * bb;
            float d = f16_to_f32(ld16(b)) * kinv, m = wt == QT_Q8_G64 ? 0.f : f16_to_f32(ld16(b + 2));
            __m256i w0, w1;
            unpack(wt, b, &w0, &w1);
            for (int u = 0; u < NT; u++) {
                __m256i s = gdot(wt, w0, w1, xq->q + (j + u) * n + g * QK_G64);
                acc[r][u] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(d * xq->dx[(j + u) * ng + g]),
                                            acc[r][u]);
                accs[r][u] += m * xq->sx[(j + u) * ng + g];
            }
        }
    }
    for (int r = 0; r < NR; r++)
        for (int u = 0; u < NT; u++) out[(j + u) * ldo + i + r] = hsum256(acc[r][u]) + accs[r][u];
}

// Decode (t = 1): one row at a time, so each thread reads its slice of W as ONE sequential stream,
// which the hardware prefetcher follows best. Measured on one Zen 3 core (n=2048, d=5632, DRAM):
// a 4-row tile (4 interleaved streams, each only 18-33 cache lines long) reached ~11 GB/s for Q8,
// one stream ~19 GB/s; for the compute-bound Q3/Q2 the 4-row tile's shared activation loads gained
// nothing measurable. On top, every row software-prefetches the same position of the row PF_ROWS
// rows below, once per 64-byte line (PF_ROWS*rb >= 2.5 KB ahead for every type at n >= 2048,
// covering the DRAM latency: ~100 ns = ~1.5 KB per core at 15 GB/s); without it Q8 drops to
// ~13 GB/s. Prefetches past the end of W are harmless (they never fault).
// Groups go 8 at a time: the 8 scales d*dx sit in one vector, duplicated per 128-bit half (scl =
// groups 0-3 in both halves, sch = 4-7) so group k's scale is one in-lane vshufps broadcast; the 8
// zero-point terms m*sx are one FMA. Two accumulators alternate so the FMA latency never limits.
#define PF_ROWS 4
AI void qdec(enum qtype wt, float *out, const struct xq8 *xq, const uint8_t *row, size_t rb, int64_t i) {
    const int64_t ng = xq->ng;
    const size_t bb = blk_bytes(wt);
    const float kinv = 1.f / QK_SCALE(wt);
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    int64_t g = 0;
    for (; g + 8 <= ng; g += 8) {
        const uint8_t *b = row + g * bb;
        for (size_t off = 0; off < 8 * bb; off += 64) _mm_prefetch((const char *)b + PF_ROWS * rb + off, _MM_HINT_T0);
        __m256 dv, mv;
        gather_dm(wt, b, &dv, &mv);
        __m256 sc = _mm256_mul_ps(dv, _mm256_mul_ps(_mm256_loadu_ps(xq->dx + g), _mm256_set1_ps(kinv)));
        __m256 scl = _mm256_permute2f128_ps(sc, sc, 0x00), sch = _mm256_permute2f128_ps(sc, sc, 0x11);
        if (wt != QT_Q8_G64) acc[1] = _mm256_fmadd_ps(mv, _mm256_loadu_ps(xq->sx + g), acc[1]);
#pragma GCC unroll 8
        for (int k = 0; k < 8; k++) {
            __m256i w0, w1;
            unpack(wt, b + k * bb, &w0, &w1);
            __m256i s = gdot(wt, w0, w1, xq->q + (g + k) * QK_G64);
            // element k%4 of each 128-bit lane (permutevar, not shuffle_ps: needs no immediate at -O0/-O1)
            __m256 h = k < 4 ? scl : sch;
            acc[k & 1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_permutevar_ps(h, _mm256_set1_epi32(k & 3)), acc[k & 1]);
        }
    }
    float accs = 0.f;
    for (; g < ng; g++) {   // ng % 8 tail groups: scalar scales
        const uint8_t *b = row + g * bb;
        float d = f16_to_f32(ld16(b)) * kinv, m = wt == QT_Q8_G64 ? 0.f : f16_to_f32(ld16(b + 2));
        __m256i w0, w1;
        unpack(wt, b, &w0, &w1);
        __m256i s = gdot(wt, w0, w1, xq->q + g * QK_G64);
        acc[0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(d * xq->dx[g]), acc[0]);
        accs += m * xq->sx[g];
    }
    out[i] = hsum256(_mm256_add_ps(acc[0], acc[1])) + accs;
}

AI void qrows(enum qtype wt, float *out, int64_t ldo, const struct xq8 *xq, const void *w, int64_t n,
              int64_t r0, int64_t r1, int64_t t) {
    size_t rb = qtype_row_bytes(wt, n);
    if (t == 1) {
        for (int64_t i = r0; i < r1; i++) qdec(wt, out, xq, (const uint8_t *)w + (size_t)i * rb, rb, i);
        return;
    }
    for (int64_t b0 = r0; b0 < r1; b0 += ROW_BLOCK) {
        int64_t b1 = b0 + ROW_BLOCK < r1 ? b0 + ROW_BLOCK : r1;
        for (int64_t j = 0; j < t; j += 4) {
            int64_t nt = t - j < 4 ? t - j : 4, i = b0;
            switch (nt) {
            case 1:
                for (; i + 2 <= b1; i += 2) qtile(wt, 2, 1, out, ldo, xq, w, rb, i, j);
                for (; i < b1; i++) qtile(wt, 1, 1, out, ldo, xq, w, rb, i, j);
                break;
            case 2:
                for (; i + 2 <= b1; i += 2) qtile(wt, 2, 2, out, ldo, xq, w, rb, i, j);
                for (; i < b1; i++) qtile(wt, 1, 2, out, ldo, xq, w, rb, i, j);
                break;
            case 3:
                for (; i < b1; i++) qtile(wt, 1, 3, out, ldo, xq, w, rb, i, j);
                break;
            default:
                for (; i < b1; i++) qtile(wt, 1, 4, out, ldo, xq, w, rb, i, j);
                break;
            }
        }
    }
}

#define QROWS(name, wt)                                                                              \
    static void rows_##name##_avx2(float *out, int64_t ldo, const float *x, const struct xq8 *xq,    \
                                   const void *w, int64_t n, int64_t r0, int64_t r1, int64_t t) {   \
        qrows(wt, out, ldo, xq, w, n, r0, r1, t);                                                    \
    }
QROWS(q8_g64, QT_Q8_G64)
QROWS(q4_g64, QT_Q4_G64)
QROWS(q3_g64, QT_Q3_G64)
QROWS(q2_g64, QT_Q2_G64)

// ggml Q8_0 / Q4_0 (blocks of 32, one fp16 scale each; Q4_0 codes = nibble - 8) on the int8
// activations: per block |q| (u8) times xq with q's sign (VPSIGNB), VPMADDUBSW (|q| <= 128,
// |xq| <= 127: pair sums <= 32512, no saturation), VPMADDWD to int32, one FMA with d*dx.
// Prefill: each block's codes serve 4 tokens, over 64-row blocks.
AI __m256i g32_codes_avx2(enum qtype wt, const uint8_t *blk) {
    if (wt == QT_GGML_Q8_0) return _mm256_loadu_si256((const __m256i *)((const struct ggml_blk_q8_0 *)(const void *)blk)->qs);
    const __m128i v = _mm_loadu_si128((const __m128i *)((const struct ggml_blk_q4_0 *)(const void *)blk)->qs);
    const __m128i m = _mm_set1_epi8(0x0f);
    const __m256i c = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m), _mm_and_si128(v, m));
    return _mm256_sub_epi8(c, _mm256_set1_epi8(8));
}
AI void g32_tile_avx2(enum qtype wt, int NT, float *out, int64_t ldo, const struct xq8 *xq, const uint8_t *row,
                      int64_t i, int64_t j) {
    const int64_t n = xq->n, ng = xq->ng, nb = n / 32;
    const size_t bb = wt == QT_GGML_Q8_0 ? sizeof(struct ggml_blk_q8_0) : sizeof(struct ggml_blk_q4_0);
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[4][2];
    for (int u = 0; u < NT; u++) acc[u][0] = acc[u][1] = _mm256_setzero_ps();
    for (int64_t k = 0; k < nb; k++) {
        const uint8_t *b = row + (size_t)k * bb;
        if (NT == 1 && (k & 1) == 0) _mm_prefetch((const char *)b + 1024, _MM_HINT_T0);
        const __m256i w = g32_codes_avx2(wt, b);
        const __m256i aw = _mm256_sign_epi8(w, w);
        uint16_t dh;
        memcpy(&dh, b, 2);
        const float d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(dh)));
        for (int u = 0; u < NT; u++) {
            const __m256i xv = _mm256_loadu_si256((const __m256i *)(xq->q + (j + u) * n + k * 32));
            const __m256i s = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, _mm256_sign_epi8(xv, w)), ones);
            acc[u][k & 1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(d * xq->dx[(j + u) * ng + k / 2]),
                                            acc[u][k & 1]);
        }
    }
    for (int u = 0; u < NT; u++) out[(j + u) * ldo + i] = hsum256(_mm256_add_ps(acc[u][0], acc[u][1]));
}
AI void g32_rows_avx2(enum qtype wt, float *out, int64_t ldo, const struct xq8 *xq, const void *w, int64_t n,
                      int64_t r0, int64_t r1, int64_t t) {
    const size_t rb = (size_t)(n / 32) * (wt == QT_GGML_Q8_0 ? sizeof(struct ggml_blk_q8_0) : sizeof(struct ggml_blk_q4_0));
    const uint8_t *w8 = w;
    if (t == 1) {
        for (int64_t i = r0; i < r1; i++) g32_tile_avx2(wt, 1, out, ldo, xq, w8 + (size_t)i * rb, i, 0);
        return;
    }
    for (int64_t b0 = r0; b0 < r1; b0 += ROW_BLOCK) {
        const int64_t b1 = b0 + ROW_BLOCK < r1 ? b0 + ROW_BLOCK : r1;
        int64_t j = 0;
        for (; j + 4 <= t; j += 4)
            for (int64_t i = b0; i < b1; i++) g32_tile_avx2(wt, 4, out, ldo, xq, w8 + (size_t)i * rb, i, j);
        for (; j < t; j++)
            for (int64_t i = b0; i < b1; i++) g32_tile_avx2(wt, 1, out, ldo, xq, w8 + (size_t)i * rb, i, j);
    }
}
static void rows_q8_0_avx2(float *out, int64_t ldo, const float *x, const struct xq8 *xq, const void *w,
                           int64_t n, int64_t r0, int64_t r1, int64_t t) {
    g32_rows_avx2(QT_GGML_Q8_0, out, ldo, xq, w, n, r0, r1, t);
}
static void rows_q4_0_avx2(float *out, int64_t ldo, const float *x, const struct xq8 *xq, const void *w,
                           int64_t n, int64_t r0, int64_t r1, int64_t t) {
    g32_rows_avx2(QT_GGML_Q4_0, out, ldo, xq, w, n, r0, r1, t);
}

const mm_rows_fn mm_rows_avx2[QT_COUNT] = {
    [QT_F32] = rows_f32_avx2,
    [QT_F16] = rows_f16_avx2,
    [QT_BF16] = rows_bf16_avx2,
    [QT_Q8_G64] = rows_q8_g64_avx2,
    [QT_Q4_G64] = rows_q4_g64_avx2,
    [QT_Q3_G64] = rows_q3_g64_avx2,
    [QT_Q2_G64] = rows_q2_g64_avx2,
    [QT_GGML_Q8_0] = rows_q8_0_avx2,
    [QT_GGML_Q4_0] = rows_q4_0_avx2,
};
