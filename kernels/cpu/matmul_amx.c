/* kernels/cpu/matmul_amx.c: Intel AMX prefill kernels (t >= AMX_MIN_T tokens) for the int8-activation
 * weight types Q8/Q4/Q3/Q2_G64. Built with AVX-512 F/BW/VL/DQ + -mamx-tile -mamx-int8 -mamx-bf16;
 * dispatch.c uses them only when cpu_isa_detect() is AVX512 and cpu_amx_available().
 * One 64-weight group is exactly the K of one int8 tile op: A = 16 weight rows x 64 codes (row-major;
 * Q4/Q3/Q2 unpacked to u8, TDPBUSD; Q8 s8 straight from the blocks, TDPBSSD), B = 16 tokens' int8
 * codes in AMX's VNNI layout (row kr = k/4, bytes tok*4 + k%4), C = 16 rows x 16 tokens int32 = the
 * exact sum(q*xq) of that group. Each C is stored and scaled with AVX-512 into fp32 accumulators
 * (one zmm = one weight row, 16 tokens): acc_r += cvt(C_r) * (d_r * dx_tok). The zero-point term
 * sum_g m_rg * sx_gt (Q4/Q3/Q2) is one bf16 tile product per 32 groups on exact bf16 splits of m
 * and sx. Same math as the AVX2 kernels; only the fp32 summation order differs.
 * Layouts, loop order, bounds and measurements: docs/AMX.md. Test: tests/test_kernels_amx.c */
#include <cpuid.h>
#include <immintrin.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "kernels/cpu/matmul_kernels.h"

#define AI static inline __attribute__((always_inline))
#define TILE 1024                 // bytes of one 16 x 64 B tile
#ifndef B_CHUNK_BYTES
#define B_CHUNK_BYTES (1 << 20)   // packed activations per token chunk: stays in the 2 MiB L2
#endif

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

// ------------------------------------------------------------------------------------------------
// availability: CPUID (AMX-TILE, AMX-INT8, AMX-BF16, palette 1 with 8 tiles of 16 x 64 B), AVX-512, the
// kernel's permission for the 8 KiB tile state (once per process), and XCR0 enabling it.

static uint64_t xgetbv0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static bool amx_probe(void) {
    const char *env = getenv("LLM_AMX");
    if (env && env[0] == '0') return false;
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw") ||
        !__builtin_cpu_supports("avx512vl") || !__builtin_cpu_supports("avx512dq"))
        return false;
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return false;   // OSXSAVE
    if (__get_cpuid_max(0, NULL) < 0x1d) return false;
    __cpuid_count(7, 0, a, b, c, d);
    if (!(d & (1u << 22)) || !(d & (1u << 24)) || !(d & (1u << 25))) return false;   // AMX-BF16, -TILE, -INT8
    __cpuid_count(0x1d, 0, a, b, c, d);
    if (a < 1) return false;                                     // max palette
    __cpuid_count(0x1d, 1, a, b, c, d);
    if ((b & 0xffff) < 64 || (b >> 16) < 8 || (c & 0xffff) < 16) return false;   // bytes/row, tiles, rows
    if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) != 0) return false;
    return (xgetbv0() & (3ull << 17)) == (3ull << 17);           // XTILECFG | XTILEDATA
}

static _Atomic int amx_state = -1;

bool cpu_amx_available(void) {
    int s = atomic_load_explicit(&amx_state, memory_order_acquire);
    if (s < 0) {   // two racing first calls both probe and agree; arch_prctl is idempotent
        s = amx_probe();
        atomic_store_explicit(&amx_state, s, memory_order_release);
    }
    return s != 0;
}

// palette 1, all 8 tiles 16 rows x 64 bytes. Loaded at the start of every call on the calling
// thread and released at its end (LDTILECFG + TILERELEASE measured ~56 ns together): correct on
// every pool worker and robust against any other AMX user on the thread changing the config; the
// released state also keeps the 8 KiB of tile data out of idle threads' context switches.
struct tilecfg {
    uint8_t palette, start_row, rsvd[14];
    uint16_t colsb[16];
    uint8_t rows[16];
};

static void tile_config(void) {
    struct tilecfg c __attribute__((aligned(64)));
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int i = 0; i < 8; i++) {
        c.colsb[i] = 64;
        c.rows[i] = 16;
    }
    _tile_loadconfig(&c);
}

// ------------------------------------------------------------------------------------------------
// 16 x 16 transpose of 32-bit elements (64 shuffles): r[i] lane j -> r[j] lane i

AI void transpose16(__m512i r[16]) {
    __m512i t[16], u[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);       // per 128-bit lane: a0 b0 a1 b1
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);   //                   a2 b2 a3 b3
    }
    for (int i = 0; i < 16; i += 4) {
        u[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);         // a0 b0 c0 d0
        u[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);     // a1 b1 c1 d1
        u[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]); // a2 b2 c2 d2
        u[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]); // a3 b3 c3 d3
    }
    // u[4q + k] lane l = column 4l + k of rows 4q..4q+3
    for (int k = 0; k < 4; k++) {
        __m512i vlo = _mm512_shuffle_i32x4(u[k], u[4 + k], 0x44), vhi = _mm512_shuffle_i32x4(u[k], u[4 + k], 0xee);
        __m512i wlo = _mm512_shuffle_i32x4(u[8 + k], u[12 + k], 0x44), whi = _mm512_shuffle_i32x4(u[8 + k], u[12 + k], 0xee);
        r[k] = _mm512_shuffle_i32x4(vlo, wlo, 0x88);
        r[4 + k] = _mm512_shuffle_i32x4(vlo, wlo, 0xdd);
        r[8 + k] = _mm512_shuffle_i32x4(vhi, whi, 0x88);
        r[12 + k] = _mm512_shuffle_i32x4(vhi, whi, 0xdd);
    }
}

// ------------------------------------------------------------------------------------------------
// Per-call scratch (one _Thread_local growable buffer per thread, 64-byte aligned parts).
// ng groups, nkc = ceil(ng/32) chunks of 32 groups for the bf16 zero-point product, cb token blocks
// per chunk of tokens.

struct amx_bufs {
    uint8_t *bp;     // [cb][ng] int8 B tiles (VNNI: row kr = codes 4kr..4kr+3 of 16 tokens)
    float *dxt;      // [cb][ng][16] dx of the block's 16 tokens (0 past t)
    uint8_t *sb;     // [cb][nkc][3] bf16 B tiles of sx (3 parts, VNNI pairs of groups)
    uint8_t *a;      // [ng] A tiles: 16 rows x 64 codes of one row block
    const uint8_t *asrc;       // A tile of group g at asrc + g*agstride, rows astride apart: a, or
    size_t astride, agstride;  // for Q8 full blocks the weights themselves (no copy)
    const uint8_t *w;          // the block's first row, for unpack_group
    size_t rb;
    int nr;
    float *dt;       // [ng][16] fp32 d of the block's 16 rows (0 past the last row)
    uint8_t *ma;     // [2][nkc] bf16 A tiles of m (2 parts: 16 rows x 32 groups)
    int32_t *cbuf;   // 2 C tiles + 1 fp32 zero-point tile
};

// Exact splits into bf16 (kept in the top 16 bits of a 32-bit lane). fp32 = 24 significant bits:
// hi = x truncated to 8 bits, mid = (x - hi) truncated, lo = the rest (<= 8 bits, exact); each
// subtraction is exact (the low bits of x). fp16 m has 11 bits: hi + mid is exact, lo = 0.
AI __m512i trunc16(__m512 v) { return _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32((int)0xffff0000u)); }
AI void split3(__m512 x, __m512i p[3]) {
    p[0] = trunc16(x);
    __m512 r = _mm512_sub_ps(x, _mm512_castsi512_ps(p[0]));
    p[1] = trunc16(r);
    p[2] = _mm512_castps_si512(_mm512_sub_ps(r, _mm512_castsi512_ps(p[1])));
}
// 32-bit lanes of (bf16 of group 2j) | (bf16 of group 2j+1) << 16
AI __m512i pair16(__m512i even, __m512i odd) { return _mm512_or_si512(_mm512_srli_epi32(even, 16), odd); }

// ------------------------------------------------------------------------------------------------
// activations -> B tiles. Token block tb (tokens j0 + 16 tb ...), group g: tile (tb*ng + g), whose
// row kr holds dword kr (codes 4kr..4kr+3) of each of the 16 tokens: a 16 x 16 dword transpose of
// the tokens' 64-byte groups. Tokens >= t get zero codes and zero scales. dxt: the 16 tokens' dx of
// group g in one vector. sb (asymmetric types): for the zero-point product sum_g m_rg sx_gt on the
// bf16 tile unit, sx split exactly into 3 bf16 parts, tile (tb, kc, part) row kr = groups
// (kc*32 + 2kr, +1) of the 16 tokens (AMX's bf16 VNNI pairs); groups >= ng are zero.

AI bool is_q8(enum qtype wt) { return wt == QT_Q8_G64 || wt == QT_Q8_X8; }
AI bool is_x8(enum qtype wt) { return wt == QT_Q8_X8 || wt == QT_Q4_X8 || wt == QT_Q3_X8 || wt == QT_Q2_X8; }

static void pack_acts(enum qtype wt, const struct xq8 *xq, int64_t t, int64_t j0, int64_t nb,
                      const struct amx_bufs *bf) {
    const int64_t n = xq->n, ng = xq->ng, nkc = (ng + 31) / 32;
    float sxv[64][16] __attribute__((aligned(64)));   // one chunk of 32 groups (+ slack), transposed
    for (int64_t tb = 0; tb < nb; tb++) {
        const int64_t jb = j0 + 16 * tb, nt = t - jb < 16 ? t - jb : 16;
        for (int64_t g = 0; g < ng; g++) {
            __m512i r[16];
            for (int k = 0; k < 16; k++)
                r[k] = k < nt ? _mm512_loadu_si512(xq->q + (jb + k) * n + g * QK_G64) : _mm512_setzero_si512();
            transpose16(r);
            uint8_t *tile = bf->bp + (size_t)(tb * ng + g) * TILE;
            for (int k = 0; k < 16; k++) _mm512_store_si512(tile + 64 * k, r[k]);
            float *dv = bf->dxt + (tb * ng + g) * 16;
            for (int k = 0; k < 16; k++) dv[k] = k < nt ? xq->dx[(jb + k) * ng + g] : 0.f;
        }
        if (is_q8(wt)) continue;
        for (int64_t kc = 0; kc < nkc; kc++) {
            for (int gi = 0; gi < 32; gi++)
                for (int k = 0; k < 16; k++) {
                    int64_t g = kc * 32 + gi;
                    sxv[gi][k] = k < nt && g < ng ? xq->sx[(jb + k) * ng + g] : 0.f;
                }
            uint8_t *tiles = bf->sb + (size_t)((tb * nkc + kc) * 3) * TILE;
            for (int kr = 0; kr < 16; kr++) {
                __m512i e[3], o[3];
                split3(_mm512_load_ps(sxv[2 * kr]), e);
                split3(_mm512_load_ps(sxv[2 * kr + 1]), o);
                for (int q = 0; q < 3; q++) _mm512_store_si512(tiles + q * TILE + 64 * kr, pair16(e[q], o[q]));
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// weights -> A tiles: rows [i0, i0+nr) of W, group g -> a[g*TILE + r*64 + k] = code k of row r
// (natural order), rows >= nr zero; dt[g*16 + r] = fp32 d (0 for rows >= nr); ma: m of the 16 rows
// split in 2 exact bf16 parts, tile (part, kc) row r = groups kc*32 .. kc*32+31 (0 past ng).

AI size_t blk_bytes(enum qtype wt) {   // natural block bytes (X8: of the natural type; a superblock is 8)
    return is_q8(wt) ? sizeof(struct blk_q8_g64) : (wt == QT_Q4_G64 || wt == QT_Q4_X8) ? sizeof(struct blk_q4_g64)
         : (wt == QT_Q3_G64 || wt == QT_Q3_X8) ? sizeof(struct blk_q3_g64) : sizeof(struct blk_q2_g64);
}

// X8 (quant/repack.h): the 8 plain code vectors of one superblock, cv[k] byte 4L + b = code
// 8k + 4(L >> 3) + b of group L & 7 (Q8: the int8 codes, for TDPBSSD)
AI void x8_code_vectors(enum qtype wt, const uint8_t *sb, __m512i cv[8]) {
    if (wt == QT_Q8_X8) {
        for (int k = 0; k < 8; k++) cv[k] = _mm512_loadu_si512(sb + 16 + 64 * k);
        return;
    }
    const uint8_t *c = sb + 32;
    if (wt == QT_Q4_X8) {
        for (int j = 0; j < 4; j++) {
            __m512i v = _mm512_loadu_si512(c + 64 * j);
            cv[2 * j] = _mm512_and_si512(v, _mm512_set1_epi8(0x0f));
            cv[2 * j + 1] = _mm512_and_si512(_mm512_srli_epi16(v, 4), _mm512_set1_epi8(0x0f));
        }
        return;
    }
    if (wt == QT_Q3_X8) {   // P0 = cv0 | cv1 << 3 | (cv2 & 3) << 6, P1 likewise, P2 = cv6 | cv7 << 3 | hi(cv2) << 6 | hi(cv5) << 7
        // (16-bit shifts: bits from the neighbouring byte land only on masked-off bits)
        const __m512i p0 = _mm512_loadu_si512(c), p1 = _mm512_loadu_si512(c + 64), p2 = _mm512_loadu_si512(c + 128);
        const __m512i m7 = _mm512_set1_epi8(7), m3 = _mm512_set1_epi8(3), m4 = _mm512_set1_epi8(4);
        cv[0] = _mm512_and_si512(p0, m7);
        cv[1] = _mm512_and_si512(_mm512_srli_epi16(p0, 3), m7);
        cv[2] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(p0, 6), m3), _mm512_and_si512(_mm512_srli_epi16(p2, 4), m4));
        cv[3] = _mm512_and_si512(p1, m7);
        cv[4] = _mm512_and_si512(_mm512_srli_epi16(p1, 3), m7);
        cv[5] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(p1, 6), m3), _mm512_and_si512(_mm512_srli_epi16(p2, 5), m4));
        cv[6] = _mm512_and_si512(p2, m7);
        cv[7] = _mm512_and_si512(_mm512_srli_epi16(p2, 3), m7);
        return;
    }
    for (int j = 0; j < 2; j++) {   // Q2
        __m512i v = _mm512_loadu_si512(c + 64 * j);
        cv[4 * j] = _mm512_and_si512(v, _mm512_set1_epi8(3));
        cv[4 * j + 1] = _mm512_and_si512(_mm512_srli_epi16(v, 2), _mm512_set1_epi8(3));
        cv[4 * j + 2] = _mm512_and_si512(_mm512_srli_epi16(v, 4), _mm512_set1_epi8(3));
        cv[4 * j + 3] = _mm512_and_si512(_mm512_srli_epi16(v, 6), _mm512_set1_epi8(3));
    }
}

// code vectors -> the 8 groups' 64 codes in natural order: group l = dwords l, l + 8 of cv[0..7].
// Pair the dwords into qword l of each vector, then an 8 x 8 qword transpose (32 shuffles).
AI void x8_groups(__m512i cv[8]) {
    const __m512i pair = _mm512_setr_epi32(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15);
    __m512i p[8], a[8], b[8];
    for (int k = 0; k < 8; k++) p[k] = _mm512_permutexvar_epi32(pair, cv[k]);
    const __m512i lo1 = _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11), hi1 = _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15);
    for (int k = 0; k < 4; k++) {   // a[2k] = (p[2k] q0, p[2k+1] q0, .. q3), a[2k+1] = q4 .. q7
        a[2 * k] = _mm512_permutex2var_epi64(p[2 * k], lo1, p[2 * k + 1]);
        a[2 * k + 1] = _mm512_permutex2var_epi64(p[2 * k], hi1, p[2 * k + 1]);
    }
    const __m512i lo2 = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11), hi2 = _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15);
    for (int h = 0; h < 2; h++)     // b[4h + 2i + 0/1]: vectors 4h .. 4h+3, qwords (4i, 4i+1) / (4i+2, 4i+3)
        for (int i = 0; i < 2; i++) {
            b[4 * h + 2 * i] = _mm512_permutex2var_epi64(a[4 * h + i], lo2, a[4 * h + 2 + i]);
            b[4 * h + 2 * i + 1] = _mm512_permutex2var_epi64(a[4 * h + i], hi2, a[4 * h + 2 + i]);
        }
    const __m512i lo3 = _mm512_setr_epi64(0, 1, 2, 3, 8, 9, 10, 11), hi3 = _mm512_setr_epi64(4, 5, 6, 7, 12, 13, 14, 15);
    for (int q = 0; q < 4; q++) {   // b[q] holds qwords 2q', 2q'+1 of vectors 0..3 (q' from the order above)
        cv[2 * q] = _mm512_permutex2var_epi64(b[q], lo3, b[4 + q]);
        cv[2 * q + 1] = _mm512_permutex2var_epi64(b[q], hi3, b[4 + q]);
    }
}

// one group's 64 codes in order, as one zmm
AI __m512i unpack64(enum qtype wt, const uint8_t *b) {
    if (wt == QT_Q8_G64) return _mm512_loadu_si512(b + 2);
    if (wt == QT_Q4_G64) {
        // qs[i] = q[i] | q[i+32] << 4: both 256-bit halves = qs, the upper one shifted by 4
        __m512i v = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(b + 4)));
        v = _mm512_mask_srli_epi16(v, 0xffff0000u, v, 4);
        return _mm512_and_si512(v, _mm512_set1_epi8(0x0f));
    }
    // 2-bit plane: byte k holds q[k], q[k+16], q[k+32], q[k+48] at bits 0, 2, 4, 6; 128-bit lane L
    // of the output is q[16L + k] = plane >> 2L (a 16-bit shift: bits from the next byte only
    // reach bits >= 8-2L >= 2 of the low byte, masked off)
    __m512i v = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(b + 4)));
    v = _mm512_srlv_epi16(v, _mm512_setr_epi64(0, 0, 0x0002000200020002ll, 0x0002000200020002ll,
                                               0x0004000400040004ll, 0x0004000400040004ll,
                                               0x0006000600060006ll, 0x0006000600060006ll));
    if (wt == QT_Q2_G64) return _mm512_and_si512(v, _mm512_set1_epi8(0x03));
    // Q3 high bit of q[i] = bit i/8 of qh[i%8]: in the broadcast qh, qword Q = i/8 holds it at bit Q
    // of byte i%8; rotating qword Q right by Q-2 puts it at bit 2; then lo&3 | h&4 in one ternlog.
    __m512i lo = _mm512_and_si512(v, _mm512_set1_epi8(0x03));
    uint64_t qh;
    memcpy(&qh, b + 4 + 16, 8);
    __m512i h = _mm512_rorv_epi64(_mm512_set1_epi64((long long)qh), _mm512_setr_epi64(62, 63, 0, 1, 2, 3, 4, 5));
    return _mm512_ternarylogic_epi32(lo, h, _mm512_set1_epi8(0x04), 0xf8);   // lo | (h & 4)
}

// group g of the block's 16 rows into A tile g (rows >= nr zero). Called from the tile loop of
// the block's first token block, a few groups ahead of the tile load that reads it: the codes
// land in L1 just before use and the unpack overlaps the tile unit (a separate pass over the
// whole block measured ~35 ns per group at t = 16, mostly L1 misses on the 16*n-byte buffer).
AI void unpack_group(enum qtype wt, const struct amx_bufs *bf, int64_t g) {
    if (is_x8(wt)) {   // a whole superblock when g is its first group (groups are passed in order)
        if (g % 8) return;
        const uint8_t *sb = bf->w + g * blk_bytes(wt);   // superblock g/8 starts at 8 natural blocks each
        uint8_t *a = bf->a + g * TILE;
        for (int r = 0; r < 16; r++) {
            __m512i cv[8];
            if (r < bf->nr) {
                x8_code_vectors(wt, sb + (size_t)r * bf->rb, cv);
                x8_groups(cv);
            } else {
                for (int l = 0; l < 8; l++) cv[l] = _mm512_setzero_si512();
            }
            for (int l = 0; l < 8; l++) _mm512_store_si512(a + (size_t)l * TILE + 64 * r, cv[l]);
        }
        return;
    }
    const uint8_t *b = bf->w + g * blk_bytes(wt);
    uint8_t *a = bf->a + g * TILE;
    if (bf->nr == 16)
        for (int r = 0; r < 16; r++) _mm512_store_si512(a + 64 * r, unpack64(wt, b + (size_t)r * bf->rb));
    else
        for (int r = 0; r < 16; r++)
            _mm512_store_si512(a + 64 * r, r < bf->nr ? unpack64(wt, b + (size_t)r * bf->rb) : _mm512_setzero_si512());
}

// per row block: where A comes from, dt, and the bf16 m tiles
AI void prepare_rows(enum qtype wt, const uint8_t *w, size_t rb, int64_t ng, int nr, struct amx_bufs *bf) {
    const size_t bb = blk_bytes(wt);
    bf->w = w;
    bf->rb = rb;
    bf->nr = nr;
    bf->asrc = bf->a;
    bf->astride = 64;
    bf->agstride = TILE;
    if (wt == QT_Q8_G64 && nr == 16) {   // the 64 codes of a natural Q8 block are already a tile row
        bf->asrc = w + 2;
        bf->astride = rb;
        bf->agstride = bb;
    }
    // (d | m << 16) of the 16 rows' block g: one masked gather (Q8: d | qs[0..1] << 16); X8: d and m
    // of group l of superblock s at bytes 2l and 16 + 2l of the superblock, two gathers
    const __mmask16 rm = (__mmask16)((1u << nr) - 1);
    const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                           _mm512_set1_epi32((int)rb));
#define GATHER_DM(g)                                                                                       \
    (is_x8(wt) ? _mm512_or_si512(                                                                        \
                     _mm512_and_si512(_mm512_mask_i32gather_epi32(_mm512_setzero_si512(), rm, idx,       \
                                                                  w + ((g) & ~7) * bb + 2 * ((g) & 7), 1), \
                                      _mm512_set1_epi32(0xffff)),                                        \
                     is_q8(wt) ? _mm512_setzero_si512()                                                  \
                               : _mm512_slli_epi32(_mm512_mask_i32gather_epi32(                           \
                                                       _mm512_setzero_si512(), rm, idx,                  \
                                                       w + ((g) & ~7) * bb + 16 + 2 * ((g) & 7), 1),      \
                                                   16))                                                  \
               : _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), rm, idx, w + (g) * bb, 1))
    if (is_q8(wt)) {
        for (int64_t g = 0; g < ng; g++) {
            __m512i v = GATHER_DM(g);
            _mm512_store_ps(bf->dt + g * 16, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(v)));
        }
        return;
    }
    const int64_t nkc = (ng + 31) / 32;
    for (int64_t kc = 0; kc < nkc; kc++) {
        __m512i mp[2][16];   // [part][pair j]: lane r = m parts of groups (2j, 2j+1) of row r
        for (int j = 0; j < 16; j++) {
            __m512i sp[2][2];
            for (int h = 0; h < 2; h++) {
                const int64_t g = kc * 32 + 2 * j + h;
                __m512i v = _mm512_setzero_si512();
                if (g < ng) {
                    v = GATHER_DM(g);
                    _mm512_store_ps(bf->dt + g * 16, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(v)));
                }
                __m512 m = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(v, 16)));
                sp[h][0] = trunc16(m);
                sp[h][1] = _mm512_castps_si512(_mm512_sub_ps(m, _mm512_castsi512_ps(sp[h][0])));
            }
            mp[0][j] = pair16(sp[0][0], sp[1][0]);
            mp[1][j] = pair16(sp[0][1], sp[1][1]);
        }
        for (int p = 0; p < 2; p++) {
            transpose16(mp[p]);   // mp[p][r] = row r's 16 pairs = 32 groups
            uint8_t *tile = bf->ma + (size_t)(p * nkc + kc) * TILE;
            for (int r = 0; r < 16; r++) _mm512_store_si512(tile + 64 * r, mp[p][r]);
        }
    }
}
#undef GATHER_DM

// ------------------------------------------------------------------------------------------------
// one 16-row x 16-token output tile over all ng groups. Two tile sets (A0 B0 C0 = tmm0-2, A1 B1 C1
// = tmm3-5) alternate, so group g+1's tile op runs while group g's C is scaled. The zero-point
// term sum_g m_rg sx_gt is a bf16 tile product (tmm6 += 2 m parts x 3 sx parts, 6 exact products
// per group summed in fp32 by TDPBF16PS) that initializes the accumulators: 16 zmm FMAs fewer per
// group, which matters because 512-bit FP throughput halves while the tile unit is busy (measured,
// docs/AMX.md).

#define DP(wt, c, a, b)                                  \
    do {                                                 \
        if (is_q8(wt)) _tile_dpbssd(c, a, b);            \
        else _tile_dpbusd(c, a, b);                      \
    } while (0)
#define ISSUE(wt, g, ta, tb, tc)                         \
    do {                                                 \
        if (unpack && (g) + UNPACK_AHEAD < ng) unpack_group(wt, bf, (g) + UNPACK_AHEAD); \
        _tile_loadd(ta, bf->asrc + (g) * bf->agstride, bf->astride); \
        _tile_loadd(tb, bt + (g) * TILE, 64);            \
        _tile_zero(tc);                                  \
        DP(wt, tc, ta, tb);                              \
    } while (0)

// acc[r] (16 tokens of row r) += cvt(C_r) * (d_r * dx)
AI void epilogue(__m512 acc[16], const int32_t *c, const float *dr, const float *dxv) {
    __m512 dx = _mm512_load_ps(dxv);
    for (int r = 0; r < 16; r++)
        acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(c + 16 * r)), _mm512_mul_ps(dx, _mm512_set1_ps(dr[r])),
                                 acc[r]);
}

#define UNPACK_AHEAD 2
AI void tile_tokens(enum qtype wt, float *out, int64_t ldo, const struct amx_bufs *bf, int64_t tb, int64_t ng,
                    int nr, int nt, const uint8_t *pf, int64_t pf_lines) {
    const bool unpack = tb == 0 && bf->asrc == bf->a;   // first token block: unpack A as we go
    if (unpack)
        for (int64_t g = 0; g < UNPACK_AHEAD && g < ng; g++) unpack_group(wt, bf, g);
    const uint8_t *bt = bf->bp + (size_t)(tb * ng) * TILE;
    const float *dxt = bf->dxt + tb * ng * 16, *dt = bf->dt;
    int32_t *cbuf = bf->cbuf;
    __m512 acc[16];
    if (is_q8(wt)) {
        for (int r = 0; r < 16; r++) acc[r] = _mm512_setzero_ps();
    } else {
        const int64_t nkc = (ng + 31) / 32;
        const uint8_t *sb = bf->sb + (size_t)(tb * nkc * 3) * TILE;
        _tile_zero(6);
        for (int64_t kc = 0; kc < nkc; kc++) {
            _tile_loadd(1, sb + (kc * 3 + 0) * TILE, 64);
            _tile_loadd(3, sb + (kc * 3 + 1) * TILE, 64);
            _tile_loadd(4, sb + (kc * 3 + 2) * TILE, 64);
            _tile_loadd(0, bf->ma + kc * TILE, 64);   // m part 0
            _tile_dpbf16ps(6, 0, 1);
            _tile_dpbf16ps(6, 0, 3);
            _tile_dpbf16ps(6, 0, 4);
            _tile_loadd(0, bf->ma + (nkc + kc) * TILE, 64);   // m part 1
            _tile_dpbf16ps(6, 0, 1);
            _tile_dpbf16ps(6, 0, 3);
            _tile_dpbf16ps(6, 0, 4);
        }
        _tile_stored(6, cbuf + 512, 64);
        for (int r = 0; r < 16; r++) acc[r] = _mm512_load_ps((const float *)(cbuf + 512) + 16 * r);
    }
    // software prefetch (to L2) of pf_lines cache lines from pf, spread over the group loop: the
    // next row block's weights, so its unpack does not wait on DRAM (+12% for Q8 at t = 16)
    const int64_t pf_step = (pf_lines + ng - 1) / ng;
#define PF_W(g)                                                                          \
    for (int64_t l = (g) * pf_step; l < ((g) + 1) * pf_step && l < pf_lines; l++)        \
        _mm_prefetch((const char *)pf + 64 * l, _MM_HINT_T1)
    ISSUE(wt, 0, 0, 1, 2);
    for (int64_t g = 0; g < ng; g += 2) {
        if (g + 1 < ng) ISSUE(wt, g + 1, 3, 4, 5);
        PF_W(g);
        _tile_stored(2, cbuf, 64);
        epilogue(acc, cbuf, dt + g * 16, dxt + g * 16);
        if (g + 2 < ng) ISSUE(wt, g + 2, 0, 1, 2);
        if (g + 1 < ng) {
            PF_W(g + 1);
            _tile_stored(5, cbuf + 256, 64);
            epilogue(acc, cbuf + 256, dt + (g + 1) * 16, dxt + (g + 1) * 16);
        }
    }
#undef PF_W
    __m512i v[16];
    for (int r = 0; r < 16; r++) v[r] = _mm512_castps_si512(acc[r]);
    transpose16(v);   // v[tok] = the 16 rows of token tok
    const __mmask16 rm = (__mmask16)((1u << nr) - 1);
    for (int k = 0; k < nt; k++) _mm512_mask_storeu_ps(out + k * ldo, rm, _mm512_castsi512_ps(v[k]));
}

// ------------------------------------------------------------------------------------------------
// driver: token chunks of <= B_CHUNK_BYTES packed activations; per chunk, row blocks of 16 (weights
// unpacked once per block and chunk), then every token block of the chunk.

// The pool's workers call these kernels too, so the buffer is also registered with a pthread key
// whose destructor frees it when a worker exits (threadpool_destroy): no leak per pool.
static _Thread_local void *scratch;
static _Thread_local size_t scratch_cap;
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static bool scratch_key_ok;

static void scratch_key_init(void) { scratch_key_ok = pthread_key_create(&scratch_key, free) == 0; }

static void *scratch_get(size_t bytes) {
    if (bytes <= scratch_cap) return scratch;
    pthread_once(&scratch_once, scratch_key_init);
    if (!scratch_key_ok) return NULL;
    size_t cap = (bytes + bytes / 2 + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, cap);
    if (!p || pthread_setspecific(scratch_key, p) != 0) {
        free(p);
        return NULL;
    }
    free(scratch);
    scratch = p;
    scratch_cap = cap;
    return p;
}

AI void amx_rows(enum qtype wt, float *out, int64_t ldo, const float *x, const struct xq8 *xq, const void *w,
                 int64_t n, int64_t r0, int64_t r1, int64_t t) {
    if (r0 >= r1 || t <= 0) return;
    const int64_t ng = n / QK_G64, nkc = (ng + 31) / 32, nbt = (t + 15) / 16;
    const size_t rb = qtype_row_bytes(wt, n);
    int64_t maxcb = B_CHUNK_BYTES / (ng * TILE);
    if (maxcb < 1) maxcb = 1;
    const int64_t nch = (nbt + maxcb - 1) / maxcb, cb = (nbt + nch - 1) / nch;
    const size_t sz[7] = {(size_t)(cb * ng) * TILE, (size_t)(cb * ng) * 64, (size_t)(cb * nkc * 3) * TILE,
                          (size_t)ng * TILE, (size_t)ng * 64, (size_t)(2 * nkc) * TILE, 3 * TILE};
    size_t total = 0;
    for (int k = 0; k < 7; k++) total += sz[k];
    uint8_t *buf = cpu_amx_available() ? scratch_get(total) : NULL;
    if (!buf) {   // no AMX, or out of memory: the AVX2 / X8 kernel needs no scratch
        (is_x8(wt) ? mm_rows_x8 : mm_rows_avx2)[wt](out, ldo, x, xq, w, n, r0, r1, t);
        return;
    }
    struct amx_bufs bf;
    bf.bp = buf;
    bf.dxt = (float *)(buf + sz[0]);
    bf.sb = buf + sz[0] + sz[1];
    bf.a = bf.sb + sz[2];
    bf.dt = (float *)(bf.a + sz[3]);
    bf.ma = (uint8_t *)bf.dt + sz[4];
    bf.cbuf = (int32_t *)(bf.ma + sz[5]);
    tile_config();
    for (int64_t c0 = 0; c0 < nbt; c0 += cb) {
        const int64_t nb = nbt - c0 < cb ? nbt - c0 : cb;
        pack_acts(wt, xq, t, 16 * c0, nb, &bf);
        for (int64_t i0 = r0; i0 < r1; i0 += 16) {
            const int nr = r1 - i0 < 16 ? (int)(r1 - i0) : 16;
            prepare_rows(wt, (const uint8_t *)w + (size_t)i0 * rb, rb, ng, nr, &bf);
            // the next block's weights, spread over this block's token blocks (within this chunk)
            const int64_t next = i0 + 16 < r1 ? (r1 - i0 - 16 < 16 ? r1 - i0 - 16 : 16) : 0;
            const uint8_t *pf = (const uint8_t *)w + (size_t)(i0 + 16) * rb;
            const int64_t pf_total = (int64_t)(((size_t)next * rb + 63) / 64), pf_per = (pf_total + nb - 1) / nb;
            for (int64_t tb = 0; tb < nb; tb++) {
                const int64_t j = 16 * (c0 + tb), left = pf_total - tb * pf_per;
                const int nt = t - j < 16 ? (int)(t - j) : 16;
                tile_tokens(wt, out + j * ldo + i0, ldo, &bf, tb, ng, nr, nt, pf + 64 * tb * pf_per,
                            left < 0 ? 0 : left < pf_per ? left : pf_per);
            }
        }
    }
    _tile_release();
}

#define AMX_ROWS(name, wt)                                                                           \
    static void rows_##name##_amx(float *out, int64_t ldo, const float *x, const struct xq8 *xq,     \
                                  const void *w, int64_t n, int64_t r0, int64_t r1, int64_t t) {    \
        amx_rows(wt, out, ldo, x, xq, w, n, r0, r1, t);                                              \
    }
AMX_ROWS(q8_g64, QT_Q8_G64)
AMX_ROWS(q4_g64, QT_Q4_G64)
AMX_ROWS(q3_g64, QT_Q3_G64)
AMX_ROWS(q2_g64, QT_Q2_G64)
AMX_ROWS(q8_x8, QT_Q8_X8)
AMX_ROWS(q4_x8, QT_Q4_X8)
AMX_ROWS(q3_x8, QT_Q3_X8)
AMX_ROWS(q2_x8, QT_Q2_X8)

const mm_rows_fn mm_rows_amx[QT_COUNT] = {
    [QT_Q8_G64] = rows_q8_g64_amx,
    [QT_Q4_G64] = rows_q4_g64_amx,
    [QT_Q3_G64] = rows_q3_g64_amx,
    [QT_Q2_G64] = rows_q2_g64_amx,
    [QT_Q8_X8] = rows_q8_x8_amx,
    [QT_Q4_X8] = rows_q4_x8_amx,
    [QT_Q3_X8] = rows_q3_x8_amx,
    [QT_Q2_X8] = rows_q2_x8_amx,
};
