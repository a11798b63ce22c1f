/* kernels/cpu/matmul_avx512.c: AVX-512 (F/BW/VL/DQ/VNNI) matmul kernels, selected by dispatch.c only
 * when __builtin_cpu_supports reports all five. Entries left NULL fall back to the AVX2 kernel.
 *
 * Int8-activation types (Q8/Q4/Q3/Q2_G64): one 64-weight group is ONE zmm of u8 codes in natural order
 * (byte i = q[i]), multiplied with the group's 64 int8 activation codes by one VPDPBUSD (u8 x s8, four
 * products summed into each of 16 int32 lanes, exact). The unpack costs per group (vector ALU ops):
 *   Q8: 1 (XOR 0x80 makes the signed codes unsigned, u = q + 128; the 128*sum(xq) it adds is taken
 *          back in int32 by one masked subtract on lane 0, so the integer dot stays exact)
 *   Q4: 2 (256-bit broadcast load, VPSRLVQ by 0 / 4 per half, AND 0x0f)
 *   Q2: 2 (128-bit broadcast load, VPSRLVQ by 0, 2, 4, 6 per quarter, AND 0x03)
 *   Q3: 4 (Q2's unpack of ql without the AND; qh broadcast as one u64 and rotated per 64-bit lane by
 *          VPRORVQ so that bit L of byte j (the high bit of q[8L + j]) lands on bit 2; VPTERNLOG
 *          selects bits 0-1 from ql and bits 2-7 from qh; AND 0x07)
 * then VPDPBUSD, VCVTDQ2PS and one FMA with the group scale d*dx as an embedded broadcast from a
 * stack array: 4-7 ALU ops per 64 weights (AVX2: 12.5-18.5), so even Q2/Q3 decode stays below the
 * bandwidth roof. Zero points: sum_i (d q_i + m) dx xq_i = d dx sum(q xq) + m sx, the m*sx terms of 8
 * groups are one 256-bit FMA.
 * Decode (t = 1) walks one row at a time (one sequential, software-prefetched stream per thread, as in
 * the AVX2 kernel, docs/KERNELS.md); prefill uses a 2-row x 4-token register tile over 64-row blocks.
 * Float types: one 16-lane FMA row stream per thread in decode; prefill with t >= 16 a packed GEMM
 * (pg_rows: W converted once per matmul into 64-row panels, 64 x 6 broadcast micro-tile), else 2 x 4 tiles.
 * Test: tests/test_kernels_matmul.c (runs every ISA this CPU has). Docs: docs/KERNELS.md. */
#include <immintrin.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/matmul_kernels.h"

#define AI static inline __attribute__((always_inline))
#define ROW_BLOCK 64   // rows per L2 block in prefill
// decode: software prefetch PF_BYTES ahead of the single weight stream, once per 64-byte line.
// ~ DRAM latency x per-core bandwidth (100 ns x 14 GB/s = 1.4 KB). Measured on the 2-core Xeon VM
// (2 threads, n x d = 2048 x 5632 and 5632 x 2048, medians): 768 / 1024 / 1536 / 2048 / 4096 B gave
// Q4 75-78 / 66-75 / 83-88 / 58-82 / 55% of the read roof; none: 49%.
#define PF_BYTES 1536
// (A 2- and a 4-row lockstep decode, sharing the activation loads, measured the same as this one
// stream within the machine's noise: 2048x5632 and 5632x2048, 2 threads, best-of times within 5%; end to end, TinyLlama tg64 q8/q4/q3/q2 at 2 threads,
// 4 rows: 18.7-18.9 / 27.9-28.5 / 33.3-35.0 / 41.1-43.2 t/s, 1 row: 17.9-18.4 / 28.9-30.4 / 34.3-34.4 / 42.2-43.0.)

void xq8_quantize_avx512(struct xq8 *a, const float *x, int64_t j0, int64_t j1) {
    xq8_quantize_avx2(a, x, j0, j1);   // ~1% of decode time; bit-identical to the ref
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
AI long long ld64(const void *p) {
    long long v;
    memcpy(&v, p, 8);
    return v;
}

// ------------------------------------------------------------------------------------------------
// float weights

enum fkind { FK_F32, FK_F16, FK_BF16 };

AI __m512 ldw16(enum fkind k, const void *w, int64_t i) {
    if (k == FK_F32) return _mm512_loadu_ps((const float *)w + i);
    __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)w + i));
    if (k == FK_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
AI float ldw1(enum fkind k, const void *w, int64_t i) {
    if (k == FK_F32) return ((const float *)w)[i];
    if (k == FK_F16) return f16_to_f32(((const uint16_t *)w)[i]);
    return bf16_to_f32(((const uint16_t *)w)[i]);
}

// NR rows from row i, NT tokens from token j; lane l of each accumulator sums k = l mod 16; the
// n % 16 tail is scalar.
AI void ftile(enum fkind kind, int NR, int NT, float *out, int64_t ldo, const float *x, const void *w,
              int64_t n, int64_t i, int64_t j) {
    const size_t es = kind == FK_F32 ? 4 : 2;
    const char *wr[4];
    __m512 acc[4][4];
    for (int r = 0; r < NR; r++) {
        wr[r] = (const char *)w + (size_t)(i + r) * n * es;
        for (int u = 0; u < NT; u++) acc[r][u] = _mm512_setzero_ps();
    }
    const float *xj = x + j * n;
    int64_t k = 0;
    for (; k + 16 <= n; k += 16) {
        __m512 xv[4];
        for (int u = 0; u < NT; u++) xv[u] = _mm512_loadu_ps(xj + u * n + k);
        for (int r = 0; r < NR; r++) {
            __m512 wv = ldw16(kind, wr[r], k);
            for (int u = 0; u < NT; u++) acc[r][u] = _mm512_fmadd_ps(wv, xv[u], acc[r][u]);
        }
    }
    for (int r = 0; r < NR; r++)
        for (int u = 0; u < NT; u++) {
            float s = _mm512_reduce_add_ps(acc[r][u]);
            for (int64_t kk = k; kk < n; kk++) s += ldw1(kind, wr[r], kk) * xj[u * n + kk];
            out[(j + u) * ldo + i + r] = s;
        }
}

// Decode, one row: a single sequential weight stream per thread with a prefetch to L2 FPF_BYTES ahead,
// 4 accumulators. Measured (./llm-bench --kernels --filter matvec -t 2, TinyLlama shapes, % of the read
// roof): the former 4-row lockstep tile without prefetch f16 66-75%, f32 86-90%; one row, T1 prefetch
// 4096 / 8192 / 12288 B: f16 74-87 / 73-91 / 72-91%, f32 81-87 / 83-90 / 80-88%; T0 2048 B f16 66-72%.
// Plus T0 FPF_NEAR ahead (L2 -> L1): f16 91% -> 94-96% of a read probe over the same buffers,
// alternating per pass in one process (22 TinyLlama layers' decode matmuls; T0 alone was worse).
#ifndef FPF_BYTES
#define FPF_BYTES 8192
#endif
#ifndef FPF_NEAR
#define FPF_NEAR 2048
#endif
AI void frow1(enum fkind kind, float *out, const float *x, const void *w, int64_t n, int64_t i) {
    const size_t es = kind == FK_F32 ? 4 : 2;
    const char *wr = (const char *)w + (size_t)i * n * es;
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    int64_t k = 0;
    const int64_t step = 64 / (int64_t)es;   // weights per cache line
    for (; k + 4 * step <= n; k += 4 * step) {
        if (FPF_BYTES)
            for (int l = 0; l < 4; l++) {
                _mm_prefetch(wr + (k + l * step) * es + FPF_BYTES, _MM_HINT_T1);
                _mm_prefetch(wr + (k + l * step) * es + FPF_NEAR, _MM_HINT_T0);
            }
        for (int u = 0; u < 4 * step / 16; u++)
            acc[u & 3] = _mm512_fmadd_ps(ldw16(kind, wr, k + 16 * u), _mm512_loadu_ps(x + k + 16 * u), acc[u & 3]);
    }
    for (; k + 16 <= n; k += 16) acc[0] = _mm512_fmadd_ps(ldw16(kind, wr, k), _mm512_loadu_ps(x + k), acc[0]);
    float s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])));
    for (; k < n; k++) s += ldw1(kind, wr, k) * x[k];
    out[i] = s;
}

// Prefill (t >= PG_MIN_T): a packed GEMM. The 2 x 4 FMA tile below converts every f16/bf16 weight
// vector once per 4 tokens (VCVTPH2PS shares the FP pipes with the FMAs) and loads 6 vectors per 8
// FMAs: f16 pp512 reached ~68% of the FMA peak. Here, per k block of PG_KC: x is copied once into
// 12-token slivers ap[k][12] (zero-padded), then each 32-row panel of W is converted once into
// bp[k][32] (row index fastest, so a 16-lane vector holds 16 rows at one k), and the 32 x 12
// micro-tile does 24 FMAs per 2 panel loads + 12 broadcasts: the conversion is paid once per weight
// per matmul, not once per 4 tokens. Every output lane is one row's sequential sum over its k block
// (fp32 FMA, blocks added in order): the same error class as the vector tiles (KERNELS.md,
// Tolerances). Rows past the last whole panel take the tile path.
#ifndef PG_MR
#define PG_MR 64
#endif
#ifndef PG_NT
#define PG_NT 6
#endif
#define PG_KC 256
#define PG_MIN_T 16

// Per-thread buffers (pool workers call this), freed by a key destructor when the thread exits.
struct pg_buf {
    float *ap, *bp;
    size_t ap_cap;
};
static pthread_key_t pg_key;
static pthread_once_t pg_once = PTHREAD_ONCE_INIT;
static bool pg_key_ok;
static void pg_buf_free(void *p) {
    struct pg_buf *b = p;
    free(b->ap);
    free(b->bp);
    free(b);
}
static void pg_key_init(void) { pg_key_ok = pthread_key_create(&pg_key, pg_buf_free) == 0; }

// this thread's ap and bp for t tokens, or NULL when out of memory (the caller keeps the tile path)
static struct pg_buf *pg_buffers(int64_t t) {
    pthread_once(&pg_once, pg_key_init);
    if (!pg_key_ok) return NULL;
    struct pg_buf *b = pthread_getspecific(pg_key);
    if (!b) {
        b = calloc(1, sizeof *b);
        if (!b) return NULL;
        b->bp = aligned_alloc(64, PG_MR * PG_KC * sizeof(float));
        if (!b->bp || pthread_setspecific(pg_key, b)) {
            free(b->bp);
            free(b);
            return NULL;
        }
    }
    size_t need = (size_t)((t + PG_NT - 1) / PG_NT) * PG_NT * PG_KC * sizeof(float);
    if (need > b->ap_cap) {
        float *p = aligned_alloc(64, need);
        if (!p) return NULL;
        free(b->ap);
        b->ap = p;
        b->ap_cap = need;
    }
    return b;
}

// PG_MR rows x PG_NT tokens over kc: o[u * ldo + r] (+)= sum_k bp[k][r] * ap[k][u], u < nt
static void pg_micro(float *o, int64_t ldo, const float *ap, const float *bp, int64_t kc, int nt, bool first) {
    enum { NV = PG_MR / 16 };
    __m512 acc[NV][PG_NT];
    for (int v = 0; v < NV; v++)
        for (int u = 0; u < PG_NT; u++) acc[v][u] = _mm512_setzero_ps();
    for (int64_t k = 0; k < kc; k++) {
        __m512 wv[NV];
        for (int v = 0; v < NV; v++) wv[v] = _mm512_load_ps(bp + k * PG_MR + 16 * v);
        const float *a = ap + k * PG_NT;
        for (int u = 0; u < PG_NT; u++) {
            const __m512 b = _mm512_set1_ps(a[u]);
            for (int v = 0; v < NV; v++) acc[v][u] = _mm512_fmadd_ps(wv[v], b, acc[v][u]);
        }
    }
    for (int u = 0; u < nt; u++) {
        float *q = o + u * ldo;
        for (int v = 0; v < NV; v++) {
            if (!first) acc[v][u] = _mm512_add_ps(acc[v][u], _mm512_loadu_ps(q + 16 * v));
            _mm512_storeu_ps(q + 16 * v, acc[v][u]);
        }
    }
}

// c[e] = (r[0][e], r[1][e], ..., r[15][e]): a 16 x 16 transpose in 64 shuffles (pairs, quads, then
// 128-bit lanes)
AI void tr16x16(__m512 r[16]) {
    __m512 t[16], u[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);       // lane L: r0[4L] r1[4L] r0[4L+1] r1[4L+1]
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);   //         r0[4L+2] r1[4L+2] ...
    }
    for (int g = 0; g < 4; g++) {   // u[4g + e], lane L: rows 4g..4g+3 at k = 4L + e
        u[4 * g + 0] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
        u[4 * g + 1] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
        u[4 * g + 2] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
        u[4 * g + 3] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
    }
    for (int e = 0; e < 4; e++) {   // 4 x 4 transpose of 128-bit lanes: r[4L + e] = lane L of u[e], u[4+e], ...
        __m512 v0 = _mm512_shuffle_f32x4(u[e], u[4 + e], 0x44), v1 = _mm512_shuffle_f32x4(u[e], u[4 + e], 0xEE);
        __m512 v2 = _mm512_shuffle_f32x4(u[8 + e], u[12 + e], 0x44), v3 = _mm512_shuffle_f32x4(u[8 + e], u[12 + e], 0xEE);
        r[0 + e] = _mm512_shuffle_f32x4(v0, v2, 0x88);
        r[4 + e] = _mm512_shuffle_f32x4(v0, v2, 0xDD);
        r[8 + e] = _mm512_shuffle_f32x4(v1, v3, 0x88);
        r[12 + e] = _mm512_shuffle_f32x4(v1, v3, 0xDD);
    }
}

// bp[k][r] = w[i0 + r][k0 + k] as f32, r < 32, k < kc: 16 x 16 blocks converted and transposed in
// registers (a scatter per 16 weights measured ~15% of a t = 128 matmul), the k tail scalar
AI void pg_pack_w(enum fkind kind, float *bp, const void *w, int64_t n, int64_t i0, int64_t k0, int64_t kc) {
    const size_t es = kind == FK_F32 ? 4 : 2;
    for (int h = 0; h < PG_MR; h += 16) {
        const char *wr[16];
        for (int r = 0; r < 16; r++) wr[r] = (const char *)w + ((size_t)(i0 + h + r) * n + k0) * es;
        int64_t k = 0;
        for (; k + 16 <= kc; k += 16) {
            __m512 v[16];
            for (int r = 0; r < 16; r++) v[r] = ldw16(kind, wr[r], k);
            tr16x16(v);
            for (int e = 0; e < 16; e++) _mm512_store_ps(bp + (k + e) * PG_MR + h, v[e]);
        }
        for (; k < kc; k++)
            for (int r = 0; r < 16; r++) bp[k * PG_MR + h + r] = ldw1(kind, wr[r], k);
    }
}

// the whole 32-row panels of [r0, r1); returns the first row not done
AI int64_t pg_rows(enum fkind kind, float *out, int64_t ldo, const float *x, const void *w, int64_t n,
                   int64_t r0, int64_t r1, int64_t t) {
    const int64_t iend = r0 + (r1 - r0) / PG_MR * PG_MR;
    struct pg_buf *pb = iend > r0 ? pg_buffers(t) : NULL;
    if (!pb) return r0;
    float *const pg_ap = pb->ap, *const pg_bp = pb->bp;
    const int64_t ntile = (t + PG_NT - 1) / PG_NT;
    for (int64_t k0 = 0; k0 < n; k0 += PG_KC) {
        const int64_t kc = n - k0 < PG_KC ? n - k0 : PG_KC;
        for (int64_t jt = 0; jt < ntile; jt++) {   // ap: tile jt at jt * kc * 12, [k][u]
            float *a = pg_ap + jt * kc * PG_NT;
            for (int u = 0; u < PG_NT; u++) {
                const int64_t j = jt * PG_NT + u;
                if (j < t)
                    for (int64_t k = 0; k < kc; k++) a[k * PG_NT + u] = x[j * n + k0 + k];
                else
                    for (int64_t k = 0; k < kc; k++) a[k * PG_NT + u] = 0.f;
            }
        }
        for (int64_t i0 = r0; i0 < iend; i0 += PG_MR) {
            pg_pack_w(kind, pg_bp, w, n, i0, k0, kc);
            if (i0 + PG_MR < iend) {   // the next panel's block into L2 while this one computes: its
                const size_t es = kind == FK_F32 ? 4 : 2;   // PG_MR short row pieces defeat the
                for (int r = 0; r < PG_MR; r++) {            // hardware prefetchers
                    const char *p = (const char *)w + ((size_t)(i0 + PG_MR + r) * n + k0) * es;
                    for (size_t o = 0; o < (size_t)kc * es; o += 64) _mm_prefetch(p + o, _MM_HINT_T1);
                }
            }
            for (int64_t jt = 0; jt < ntile; jt++) {
                const int64_t j0 = jt * PG_NT;
                const int nt = t - j0 < PG_NT ? (int)(t - j0) : PG_NT;
                pg_micro(out + j0 * ldo + i0, ldo, pg_ap + jt * kc * PG_NT, pg_bp, kc, nt, k0 == 0);
            }
        }
    }
    return iend;
}

AI void frows(enum fkind kind, float *out, int64_t ldo, const float *x, const void *w, int64_t n,
              int64_t r0, int64_t r1, int64_t t) {
    if (t == 1) {
        for (int64_t i = r0; i < r1; i++) frow1(kind, out, x, w, n, i);
        return;
    }
    if (t >= PG_MIN_T) r0 = pg_rows(kind, out, ldo, x, w, n, r0, r1, t);
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

static void rows_f32_avx512(float *out, int64_t ldo, const float *x, const struct xq8 *xq, const void *w,
                            int64_t n, int64_t r0, int64_t r1, int64_t t) {
    frows(FK_F32, out, ldo, x, w, n, r0, r1, t);
}
static void rows_f16_avx512(float *out, int64_t ldo, const float *x, const struct xq8 *xq, const void *w,
                            int64_t n, int64_t r0, int64_t r1, int64_t t) {
    frows(FK_F16, out, ldo, x, w, n, r0, r1, t);
}
static void rows_bf16_avx512(float *out, int64_t ldo, const float *x, const struct xq8 *xq, const void *w,
                             int64_t n, int64_t r0, int64_t r1, int64_t t) {
    frows(FK_BF16, out, ldo, x, w, n, r0, r1, t);
}

// ------------------------------------------------------------------------------------------------
// int8-activation weights

AI size_t blk_bytes(enum qtype wt) {
    return wt == QT_Q8_G64 ? sizeof(struct blk_q8_g64) : wt == QT_Q4_G64 ? sizeof(struct blk_q4_g64)
         : wt == QT_Q3_G64 ? sizeof(struct blk_q3_g64) : sizeof(struct blk_q2_g64);
}

// 64 u8 codes of one group in natural order (Q8: q + 128).
AI __m512i unpack(enum qtype wt, const uint8_t *b) {
    if (wt == QT_Q8_G64) {
        const struct blk_q8_g64 *q = (const void *)b;
        return _mm512_xor_si512(_mm512_loadu_si512(q->qs), _mm512_set1_epi8((char)0x80));
    }
    if (wt == QT_Q4_G64) {   // qs[i] = q[i] | q[i+32] << 4
        const struct blk_q4_g64 *q = (const void *)b;
        __m512i v = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)q->qs));
        v = _mm512_srlv_epi64(v, _mm512_set_epi64(4, 4, 4, 4, 0, 0, 0, 0));
        return _mm512_and_si512(v, _mm512_set1_epi8(0x0f));
    }
    // 2-bit plane: byte k = q[k] | q[k+16] << 2 | q[k+32] << 4 | q[k+48] << 6; 128-bit quarter L of the
    // broadcast shifted right by 2L holds q[16L + k] in bits 0-1 of byte k
    const uint8_t *p2 = wt == QT_Q3_G64 ? ((const struct blk_q3_g64 *)(const void *)b)->ql
                                        : ((const struct blk_q2_g64 *)(const void *)b)->qs;
    __m512i v = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)p2));
    v = _mm512_srlv_epi64(v, _mm512_set_epi64(6, 6, 4, 4, 2, 2, 0, 0));
    if (wt == QT_Q2_G64) return _mm512_and_si512(v, _mm512_set1_epi8(0x03));
    // Q3 high plane: qh as a u64, bit 8j + b = high bit of q[j + 8b]. 64-bit lane L holds q[8L .. 8L+7],
    // so byte j of lane L wants bit 8j + L moved to 8j + 2: rotate right by L - 2 (mod 64).
    const struct blk_q3_g64 *q3 = (const void *)b;
    __m512i h = _mm512_rorv_epi64(_mm512_set1_epi64(ld64(q3->qh)), _mm512_set_epi64(5, 4, 3, 2, 1, 0, 63, 62));
    // imm 0xe4 = bit select C ? A : B, C = 0x03: bits 0-1 from v (A), bits 2-7 from h (B)
    __m512i u = _mm512_ternarylogic_epi32(v, h, _mm512_set1_epi8(0x03), 0xe4);
    return _mm512_and_si512(u, _mm512_set1_epi8(0x07));
}

// fp16 (d, m) of 8 consecutive blocks -> dv, mv (8 scalar loads: gathers are slow on Intel since
// the Downfall microcode fix). For Q8, mv is garbage and unused.
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

// sum of the 16 lanes of a and the 8 lanes of b
AI float hsum(__m512 a, __m256 b) {
    __m256 a8 = _mm256_add_ps(b, _mm512_castps512_ps256(a));
    a8 = _mm256_add_ps(a8, _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)));
    __m128 a4 = _mm_add_ps(_mm256_castps256_ps128(a8), _mm256_extractf128_ps(a8, 1));
    a4 = _mm_add_ps(a4, _mm_movehl_ps(a4, a4));
    a4 = _mm_add_ss(a4, _mm_movehdup_ps(a4));
    return _mm_cvtss_f32(a4);
}

// Exact int32 dot of one group: 16 lanes summing to sum_i q_i * xq_i. For Q8 the u8 codes are q + 128,
// so 128 * sum(xq) (c128, precomputed) is subtracted from lane 0.
AI __m512i qgroup(enum qtype wt, __m512i w, const int8_t *xg, const int32_t *c128) {
    __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, _mm512_loadu_si512(xg));
    if (wt == QT_Q8_G64) s = _mm512_mask_sub_epi32(s, 1, s, _mm512_set1_epi32(*c128));
    return s;
}

// Decode: one row, groups 8 at a time (scales d*dx of 8 groups in one vector, stored to a stack
// array so each group's FMA takes its scale as an embedded broadcast), two accumulators alternating.
AI void qdec(enum qtype wt, float *out, const struct xq8 *xq, const uint8_t *row, size_t rb, int64_t i) {
    const int64_t ng = xq->ng;
    const size_t bb = blk_bytes(wt);
    __m512 acc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
    __m256 accm = _mm256_setzero_ps();
    float sc[8] __attribute__((aligned(32)));
    int32_t c128[8] __attribute__((aligned(32)));
    int64_t g = 0;
    for (; g + 8 <= ng; g += 8) {
        const uint8_t *b = row + g * bb;
        for (size_t off = 0; off < 8 * bb; off += 64) _mm_prefetch((const char *)b + PF_BYTES + off, _MM_HINT_T0);
        __m256 dv, mv;
        gather_dm(wt, b, &dv, &mv);
        _mm256_store_ps(sc, _mm256_mul_ps(dv, _mm256_loadu_ps(xq->dx + g)));
        if (wt == QT_Q8_G64)
            _mm256_store_si256((__m256i *)c128, _mm256_slli_epi32(_mm256_loadu_si256((const __m256i *)(xq->sum + g)), 7));
        else
            accm = _mm256_fmadd_ps(mv, _mm256_loadu_ps(xq->sx + g), accm);
#pragma GCC unroll 8
        for (int k = 0; k < 8; k++) {
            __m512i s = qgroup(wt, unpack(wt, b + k * bb), xq->q + (g + k) * QK_G64, c128 + k);
            acc[k & 1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_set1_ps(sc[k]), acc[k & 1]);
        }
    }
    float accs = 0.f;
    for (; g < ng; g++) {   // ng % 8 tail groups
        const uint8_t *b = row + g * bb;
        float d = f16_to_f32(ld16(b)), m = wt == QT_Q8_G64 ? 0.f : f16_to_f32(ld16(b + 2));
        int32_t c = xq->sum[g] * 128;
        __m512i s = qgroup(wt, unpack(wt, b), xq->q + g * QK_G64, &c);
        acc[0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_set1_ps(d * xq->dx[g]), acc[0]);
        accs += m * xq->sx[g];
    }
    out[i] = hsum(_mm512_add_ps(acc[0], acc[1]), accm) + accs;
}

// Prefill tile: NR rows from row i x NT tokens from token j; each unpacked group is used NT times.
AI void qtile(enum qtype wt, int NR, int NT, float *out, int64_t ldo, const struct xq8 *xq, const uint8_t *w,
              size_t rb, int64_t i, int64_t j) {
    const int64_t ng = xq->ng, n = xq->n;
    const size_t bb = blk_bytes(wt);
    __m512 acc[2][4];
    __m256 accm[2][4];
    float accs[2][4];
    const uint8_t *row[2];
    for (int r = 0; r < NR; r++) {
        row[r] = w + (size_t)(i + r) * rb;
        for (int u = 0; u < NT; u++) {
            acc[r][u] = _mm512_setzero_ps();
            accm[r][u] = _mm256_setzero_ps();
            accs[r][u] = 0.f;
        }
    }
    float sc[2][4][8] __attribute__((aligned(32)));
    int32_t c128[4][8] __attribute__((aligned(32)));
    int64_t g = 0;
    for (; g + 8 <= ng; g += 8) {
        if (wt == QT_Q8_G64)
            for (int u = 0; u < NT; u++)
                _mm256_store_si256((__m256i *)c128[u],
                                   _mm256_slli_epi32(_mm256_loadu_si256((const __m256i *)(xq->sum + (j + u) * ng + g)), 7));
        for (int r = 0; r < NR; r++) {
            __m256 dv, mv;
            gather_dm(wt, row[r] + g * bb, &dv, &mv);
            for (int u = 0; u < NT; u++) {
                _mm256_store_ps(sc[r][u], _mm256_mul_ps(dv, _mm256_loadu_ps(xq->dx + (j + u) * ng + g)));
                if (wt != QT_Q8_G64)
                    accm[r][u] = _mm256_fmadd_ps(mv, _mm256_loadu_ps(xq->sx + (j + u) * ng + g), accm[r][u]);
            }
        }
        for (int k = 0; k < 8; k++) {
            for (int r = 0; r < NR; r++) {
                const uint8_t *b = row[r] + (g + k) * bb;
                _mm_prefetch((const char *)b + 1024, _MM_HINT_T0);
                __m512i wv = unpack(wt, b);
                for (int u = 0; u < NT; u++) {
                    __m512i s = qgroup(wt, wv, xq->q + (j + u) * n + (g + k) * QK_G64, &c128[u][k]);
                    acc[r][u] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_set1_ps(sc[r][u][k]), acc[r][u]);
                }
            }
        }
    }
    for (; g < ng; g++) {   // ng % 8 tail groups
        for (int r = 0; r < NR; r++) {
            const uint8_t *b = row[r] + g * bb;
            float d = f16_to_f32(ld16(b)), m = wt == QT_Q8_G64 ? 0.f : f16_to_f32(ld16(b + 2));
            __m512i wv = unpack(wt, b);
            for (int u = 0; u < NT; u++) {
                int32_t c = xq->sum[(j + u) * ng + g] * 128;
                __m512i s = qgroup(wt, wv, xq->q + (j + u) * n + g * QK_G64, &c);
                acc[r][u] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_set1_ps(d * xq->dx[(j + u) * ng + g]),
                                            acc[r][u]);
                accs[r][u] += m * xq->sx[(j + u) * ng + g];
            }
        }
    }
    for (int r = 0; r < NR; r++)
        for (int u = 0; u < NT; u++) out[(j + u) * ldo + i + r] = hsum(acc[r][u], accm[r][u]) + accs[r][u];
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
                for (; i + 2 <= b1; i += 2) qtile(wt, 2, 3, out, ldo, xq, w, rb, i, j);
                for (; i < b1; i++) qtile(wt, 1, 3, out, ldo, xq, w, rb, i, j);
                break;
            default:
                for (; i + 2 <= b1; i += 2) qtile(wt, 2, 4, out, ldo, xq, w, rb, i, j);
                for (; i < b1; i++) qtile(wt, 1, 4, out, ldo, xq, w, rb, i, j);
                break;
            }
        }
    }
}

#define QROWS(name, wt)                                                                              \
    static void rows_##name##_avx512(float *out, int64_t ldo, const float *x, const struct xq8 *xq,  \
                                     const void *w, int64_t n, int64_t r0, int64_t r1, int64_t t) { \
        qrows(wt, out, ldo, xq, w, n, r0, r1, t);                                                    \
    }
QROWS(q8_g64, QT_Q8_G64)
QROWS(q4_g64, QT_Q4_G64)
QROWS(q3_g64, QT_Q3_G64)
QROWS(q2_g64, QT_Q2_G64)

// ------------------------------------------------------------------------------------------------
// ggml Q8_0 and Q4_0 (blocks of 32 codes, one fp16 scale each), on the int8 activations: one
// activation group of 64 = two weight blocks = one zmm of signed codes (Q4_0: nibble - 8). VPDPBUSD
// wants u8 x s8, so the codes go in as |q| and the activations take q's sign (|q| <= 128 fits u8,
// -xq fits s8); lanes 0-7 sum block 0, lanes 8-15 block 1, so the scale vector is d0*dx in the low
// half and d1*dx in the high half. Decode: one row per pass; prefill: each row's unpacked group
// serves 4 tokens, over 64-row blocks.
AI __m256i q40_codes32(const struct ggml_blk_q4_0 *b) {   // weights 0..15: low nibbles, 16..31: high
    const __m128i v = _mm_loadu_si128((const __m128i *)b->qs), m = _mm_set1_epi8(0x0f);
    const __m256i c = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m), _mm_and_si128(v, m));
    return _mm256_sub_epi8(c, _mm256_set1_epi8(8));
}
AI __m512i g32_codes(enum qtype wt, const void *blk, __mmask64 *neg) {
    __m512i w;
    if (wt == QT_GGML_Q8_0) {
        const struct ggml_blk_q8_0 *b = blk;
        w = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)b[0].qs)),
                               _mm256_loadu_si256((const __m256i *)b[1].qs), 1);
    } else {
        const struct ggml_blk_q4_0 *b = blk;
        w = _mm512_inserti64x4(_mm512_castsi256_si512(q40_codes32(&b[0])), q40_codes32(&b[1]), 1);
    }
    *neg = _mm512_movepi8_mask(w);
    return _mm512_abs_epi8(w);
}
// (d0 x 8, d1 x 8): the two blocks' scales (the fp16 d leads both block types), converted by F16C
AI __m512 g32_scales(const uint8_t *blk, size_t bb) {
    uint16_t d0, d1;
    memcpy(&d0, blk, 2);
    memcpy(&d1, blk + bb, 2);
    const __m128 d = _mm_cvtph_ps(_mm_set_epi16(0, 0, 0, 0, 0, 0, (short)d1, (short)d0));
    return _mm512_mask_mov_ps(_mm512_set1_ps(_mm_cvtss_f32(d)), 0xFF00,
                              _mm512_set1_ps(_mm_cvtss_f32(_mm_shuffle_ps(d, d, 1))));
}
AI size_t g32_bytes(enum qtype wt) {
    return wt == QT_GGML_Q8_0 ? sizeof(struct ggml_blk_q8_0) : sizeof(struct ggml_blk_q4_0);
}
AI void g32_tile(enum qtype wt, int NT, float *out, int64_t ldo, const struct xq8 *xq, const uint8_t *row,
                 int64_t i, int64_t j) {
    const int64_t n = xq->n, ng = xq->ng;
    const size_t bb = g32_bytes(wt);
    __m512 acc[4][2];
    for (int u = 0; u < NT; u++) acc[u][0] = acc[u][1] = _mm512_setzero_ps();
    for (int64_t g = 0; g < ng; g++) {
        const uint8_t *b = row + 2 * g * bb;
        if (NT == 1) _mm_prefetch((const char *)b + 1024, _MM_HINT_T0);
        __mmask64 neg;
        const __m512i aw = g32_codes(wt, b, &neg);
        const __m512 dv = g32_scales(b, bb);
        for (int u = 0; u < NT; u++) {
            const __m512i xv = _mm512_loadu_si512(xq->q + (j + u) * n + g * QK_G64);
            const __m512i sx = _mm512_mask_sub_epi8(xv, neg, _mm512_setzero_si512(), xv);
            const __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), aw, sx);
            const __m512 sc = _mm512_mul_ps(dv, _mm512_set1_ps(xq->dx[(j + u) * ng + g]));
            acc[u][g & 1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), sc, acc[u][g & 1]);
        }
    }
    for (int u = 0; u < NT; u++) out[(j + u) * ldo + i] = _mm512_reduce_add_ps(_mm512_add_ps(acc[u][0], acc[u][1]));
}
// Prefill with activations prepared once per (64-row block, 4-token tile), so that the per-row,
// per-token work is one VPDPBUSD, a convert and two FP ops. Q8_0: the activations go in as
// u8 = xq + 128 against the signed codes, and 128 * (sum of each lane's 4 codes) is taken back once
// per row and group (it starts the accumulator); Q4_0: the activation lanes are permuted into the
// nibbles' order (0, 2, 1, 3) and -8 * (sum of each lane's 4 activations) starts the accumulator, as
// in q40_decode. Lanes -> blocks: Q8_0 0-7 / 8-15, Q4_0 0-3, 8-11 / 4-7, 12-15.
#define G32_PF_MAX_NG 128   // 2 x 32 KiB of prepared activations on the stack
AI void g32_prefill(enum qtype wt, float *out, int64_t ldo, const struct xq8 *xq, const uint8_t *w8, size_t rb,
                    int64_t r0, int64_t r1, int64_t t) {
    const int64_t n = xq->n, ng = xq->ng;
    const size_t bb = g32_bytes(wt);
    __m512i xa[4][G32_PF_MAX_NG], xc[4][G32_PF_MAX_NG];
    const __m512i shift = _mm512_set_epi64(4, 4, 4, 4, 0, 0, 0, 0), m4 = _mm512_set1_epi8(0x0f);
    const __m512i c80 = _mm512_set1_epi8((char)0x80);
    const __m512i didx = wt == QT_GGML_Q4_0 ? _mm512_set_epi32(1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0)
                                            : _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    for (int64_t j = 0; j < t; j += 4) {
        const int nt = t - j < 4 ? (int)(t - j) : 4;
        for (int u = 0; u < nt; u++)
            for (int64_t g = 0; g < ng; g++) {
                const __m512i xv = _mm512_loadu_si512(xq->q + (j + u) * n + g * QK_G64);
                if (wt == QT_GGML_Q4_0) {
                    xa[u][g] = _mm512_shuffle_i64x2(xv, xv, _MM_SHUFFLE(3, 1, 2, 0));
                    xc[u][g] = _mm512_sub_epi32(_mm512_setzero_si512(),
                                                _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(8), xa[u][g]));
                } else {
                    xa[u][g] = _mm512_xor_si512(xv, c80);
                }
            }
        for (int64_t i = r0; i < r1; i++) {
            const uint8_t *b = w8 + (size_t)i * rb;
            __m512 acc[4][2];
            for (int u = 0; u < 4; u++) acc[u][0] = acc[u][1] = _mm512_setzero_ps();
            for (int64_t g = 0; g < ng; g++, b += 2 * bb) {
                __m512i q, c0 = _mm512_setzero_si512();
                if (wt == QT_GGML_Q4_0) {
                    const struct ggml_blk_q4_0 *q4 = (const void *)b;
                    const __m256i q2 = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)q4[0].qs)),
                                                               _mm_loadu_si128((const __m128i *)q4[1].qs), 1);
                    q = _mm512_and_si512(_mm512_srlv_epi64(_mm512_broadcast_i64x4(q2), shift), m4);
                } else {
                    const struct ggml_blk_q8_0 *q8 = (const void *)b;
                    q = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)q8[0].qs)),
                                           _mm256_loadu_si256((const __m256i *)q8[1].qs), 1);
                    c0 = _mm512_sub_epi32(c0, _mm512_dpbusd_epi32(_mm512_setzero_si512(), c80, q));
                }
                uint16_t d0, d1;
                memcpy(&d0, b, 2);
                memcpy(&d1, b + bb, 2);
                const __m128 dd = _mm_cvtph_ps(_mm_cvtsi32_si128((int)((uint32_t)d0 | (uint32_t)d1 << 16)));
                const __m512 dv = _mm512_permutexvar_ps(didx, _mm512_castps128_ps512(dd));
                for (int u = 0; u < nt; u++) {
                    const __m512i s = wt == QT_GGML_Q4_0 ? _mm512_dpbusd_epi32(xc[u][g], q, xa[u][g])
                                                         : _mm512_dpbusd_epi32(c0, xa[u][g], q);
                    const __m512 sc = _mm512_mul_ps(dv, _mm512_set1_ps(xq->dx[(j + u) * ng + g]));
                    acc[u][g & 1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), sc, acc[u][g & 1]);
                }
            }
            for (int u = 0; u < nt; u++) out[(j + u) * ldo + i] = _mm512_reduce_add_ps(_mm512_add_ps(acc[u][0], acc[u][1]));
        }
    }
}

AI void g32_rows(enum qtype wt, float *out, int64_t ldo, const struct xq8 *xq, const void *w, int64_t n,
                 int64_t r0, int64_t r1, int64_t t) {
    const size_t rb = (size_t)(n / 32) * g32_bytes(wt);
    const uint8_t *w8 = w;
    if (t > 1 && xq->ng <= G32_PF_MAX_NG) {
        for (int64_t b0 = r0; b0 < r1; b0 += ROW_BLOCK)   // W block in L2 across the token tiles
            g32_prefill(wt, out, ldo, xq, w8, rb, b0, b0 + ROW_BLOCK < r1 ? b0 + ROW_BLOCK : r1, t);
        return;
    }
    if (t == 1) {
        for (int64_t i = r0; i < r1; i++) g32_tile(wt, 1, out, ldo, xq, w8 + (size_t)i * rb, i, 0);
        return;
    }
    for (int64_t b0 = r0; b0 < r1; b0 += ROW_BLOCK) {   // W block in L2, each 4-token x tile in L1
        const int64_t b1 = b0 + ROW_BLOCK < r1 ? b0 + ROW_BLOCK : r1;
        int64_t j = 0;
        for (; j + 4 <= t; j += 4)
            for (int64_t i = b0; i < b1; i++) g32_tile(wt, 4, out, ldo, xq, w8 + (size_t)i * rb, i, j);
        for (; j < t; j++)
            for (int64_t i = b0; i < b1; i++) g32_tile(wt, 1, out, ldo, xq, w8 + (size_t)i * rb, i, j);
    }
}
static void rows_q8_0_avx512(float *out, int64_t ldo, const float *x, const struct xq8 *xq, const void *w,
                             int64_t n, int64_t r0, int64_t r1, int64_t t) {
    g32_rows(QT_GGML_Q8_0, out, ldo, xq, w, n, r0, r1, t);
}
// Q4_0 decode, leaner than g32_tile (measured 49% of the read roof there: ~30 vector ops per 64
// weights). Per call the activation groups are rearranged once, for all rows of the chunk, into the
// order the nibbles unpack in: a block's 16 bytes hold weights 0-15 (low nibbles) and 16-31 (high),
// so [qs0 | qs1] as a ymm, doubled and shifted by 0 / 4 per 256-bit half and masked, gives
// (b0 w0-15, b1 w0-15, b0 w16-31, b1 w16-31) = activation 128-bit lanes (0, 2, 1, 3). The -8 offset
// becomes the accumulator's start: -8 * (sum of each lane's 4 activations), also precomputed. Per
// group and row: 5 ops to unpack, 4 for the two scales (lanes 0-3, 8-11: block 0; 4-7, 12-15:
// block 1), VPDPBUSD, convert, scale by dx, FMA.
#define Q40_MAX_NG 256   // rearranged activations on the stack: 2 x 16 KiB
static void q40_decode(float *out, const struct xq8 *xq, const void *w, int64_t n, int64_t r0, int64_t r1) {
    const int64_t ng = xq->ng;
    __m512i xp[Q40_MAX_NG], c8[Q40_MAX_NG];
    for (int64_t g = 0; g < ng; g++) {
        const __m512i xv = _mm512_loadu_si512(xq->q + g * QK_G64);
        xp[g] = _mm512_shuffle_i64x2(xv, xv, _MM_SHUFFLE(3, 1, 2, 0));
        c8[g] = _mm512_sub_epi32(_mm512_setzero_si512(),
                                 _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(8), xp[g]));
    }
    const __m512i shift = _mm512_set_epi64(4, 4, 4, 4, 0, 0, 0, 0), m4 = _mm512_set1_epi8(0x0f);
    const __m512i didx = _mm512_set_epi32(1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0);
    const size_t rb = (size_t)(n / 32) * sizeof(struct ggml_blk_q4_0);
    for (int64_t i = r0; i < r1; i++) {
        const struct ggml_blk_q4_0 *b = (const void *)((const uint8_t *)w + (size_t)i * rb);
        __m512 acc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
        for (int64_t g = 0; g < ng; g++, b += 2) {
            _mm_prefetch((const char *)b + 1024, _MM_HINT_T0);
            const __m256i q2 = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)b[0].qs)),
                                                       _mm_loadu_si128((const __m128i *)b[1].qs), 1);
            const __m512i q = _mm512_and_si512(_mm512_srlv_epi64(_mm512_broadcast_i64x4(q2), shift), m4);
            const __m512i s = _mm512_dpbusd_epi32(c8[g], q, xp[g]);
            const __m128 d = _mm_cvtph_ps(_mm_cvtsi32_si128((int)((uint32_t)b[0].d | (uint32_t)b[1].d << 16)));
            const __m512 dv = _mm512_permutexvar_ps(didx, _mm512_castps128_ps512(d));
            acc[g & 1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dv, _mm512_set1_ps(xq->dx[g])), acc[g & 1]);
        }
        out[i] = _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1]));
    }
}
static void rows_q4_0_avx512(float *out, int64_t ldo, const float *x, const struct xq8 *xq, const void *w,
                             int64_t n, int64_t r0, int64_t r1, int64_t t) {
    if (t == 1 && xq->ng <= Q40_MAX_NG) q40_decode(out, xq, w, n, r0, r1);
    else g32_rows(QT_GGML_Q4_0, out, ldo, xq, w, n, r0, r1, t);
}

const mm_rows_fn mm_rows_avx512[QT_COUNT] = {
    [QT_F32] = rows_f32_avx512,
    [QT_F16] = rows_f16_avx512,
    [QT_BF16] = rows_bf16_avx512,
    [QT_Q8_G64] = rows_q8_g64_avx512,
    [QT_Q4_G64] = rows_q4_g64_avx512,
    [QT_Q3_G64] = rows_q3_g64_avx512,
    [QT_Q2_G64] = rows_q2_g64_avx512,
    [QT_GGML_Q8_0] = rows_q8_0_avx512,
    [QT_GGML_Q4_0] = rows_q4_0_avx512,
};
