/* bench/bench_simd_avx2.c: the AVX2 loops of the roofline probe: fp32 FMA peak of one thread and a
 * 256-bit streaming read (compiled with -mavx2 -mfma by the Makefile's *_avx2.o rule).
 * Only call them after __builtin_cpu_supports("avx2") && ("fma"). */
#include <immintrin.h>

#include "bench/bench.h"

double fma_peak_avx2(double seconds) {
    // 10 independent accumulators hide the 4-cycle FMA latency on 2 FMA ports (needs >= 8)
    __m256 a0 = _mm256_set1_ps(0.1f), a1 = a0, a2 = a0, a3 = a0, a4 = a0;
    __m256 a5 = a0, a6 = a0, a7 = a0, a8 = a0, a9 = a0;
    const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
    const long inner = 1 << 14;   // 164k FMAs, ~40 us: short enough to fit between preemptions
    double t0 = bench_now(), t1 = t0, best = 0;
    do {   // best block: a block in which the thread was descheduled is slow, not representative
        double tb = t1;
        for (long i = 0; i < inner; i++) {
            a0 = _mm256_fmadd_ps(a0, m, c); a1 = _mm256_fmadd_ps(a1, m, c);
            a2 = _mm256_fmadd_ps(a2, m, c); a3 = _mm256_fmadd_ps(a3, m, c);
            a4 = _mm256_fmadd_ps(a4, m, c); a5 = _mm256_fmadd_ps(a5, m, c);
            a6 = _mm256_fmadd_ps(a6, m, c); a7 = _mm256_fmadd_ps(a7, m, c);
            a8 = _mm256_fmadd_ps(a8, m, c); a9 = _mm256_fmadd_ps(a9, m, c);
        }
        t1 = bench_now();
        double g = (double)inner * 10 * 8 * 2 / (t1 - tb) / 1e9;   // 10 FMAs x 8 lanes x 2 flops
        if (g > best) best = g;
    } while (t1 - t0 < seconds);
    // keep the result alive so the loop is not removed
    __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                             _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
    s = _mm256_add_ps(s, _mm256_add_ps(a8, a9));
    float out[8];
    _mm256_storeu_ps(out, s);
    volatile float sink = out[0];
    (void)sink;
    return best;
}

// 4 x 256-bit accumulators, 128 B per iteration; the loads dominate, the adds are free.
// pf: 0 = no software prefetch, 1 = to L1 READ_PF_BYTES ahead, 2 = to L2 READ_PF_L2_BYTES ahead
// (the decode kernels' two ways: natural int8 layout, X8 and float decode), once per 64 B line
static inline __attribute__((always_inline)) uint64_t read_loop(const uint64_t *p, size_t n, int pf) {
    __m256i a = _mm256_setzero_si256(), b = a, c = a, d = a;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        if (pf == 1) {
            _mm_prefetch((const char *)(p + i) + READ_PF_BYTES, _MM_HINT_T0);
            _mm_prefetch((const char *)(p + i) + READ_PF_BYTES + 64, _MM_HINT_T0);
        } else if (pf >= 2) {
            _mm_prefetch((const char *)(p + i) + READ_PF_L2_BYTES, _MM_HINT_T1);
            _mm_prefetch((const char *)(p + i) + READ_PF_L2_BYTES + 64, _MM_HINT_T1);
            if (pf == 3) {
                _mm_prefetch((const char *)(p + i) + READ_PF_NEAR_BYTES, _MM_HINT_T0);
                _mm_prefetch((const char *)(p + i) + READ_PF_NEAR_BYTES + 64, _MM_HINT_T0);
            }
        }
        a = _mm256_add_epi64(a, _mm256_loadu_si256((const __m256i *)(p + i)));
        b = _mm256_add_epi64(b, _mm256_loadu_si256((const __m256i *)(p + i + 4)));
        c = _mm256_add_epi64(c, _mm256_loadu_si256((const __m256i *)(p + i + 8)));
        d = _mm256_add_epi64(d, _mm256_loadu_si256((const __m256i *)(p + i + 12)));
    }
    a = _mm256_add_epi64(_mm256_add_epi64(a, b), _mm256_add_epi64(c, d));
    uint64_t o[4];
    _mm256_storeu_si256((__m256i *)o, a);
    uint64_t s = o[0] + o[1] + o[2] + o[3];
    for (; i < n; i++) s += p[i];
    return s;
}

uint64_t read_sum_avx2(const uint64_t *p, size_t n) { return read_loop(p, n, 0); }
// on the Xeon dev VM one prefetched stream per core reads ~10-15% faster than the hardware
// prefetcher alone, and the decode kernels prefetch, so the roof must include these
uint64_t read_sum_pf_avx2(const uint64_t *p, size_t n) { return read_loop(p, n, 1); }
uint64_t read_sum_pf_l2_avx2(const uint64_t *p, size_t n) { return read_loop(p, n, 2); }
// the decode kernels' pattern since they also prefetch into L1 (kernels/cpu/matmul_x8_avx512.c)
uint64_t read_sum_pf_l2l1_avx2(const uint64_t *p, size_t n) { return read_loop(p, n, 3); }

// int8 dot-product peak of one thread with AVX2 (no VNNI): the AVX2 int8 kernels' step, VPMADDUBSW
// (32 u8 x s8 products, pairs summed to int16), VPMADDWD by ones (to int32) and VPADDD, in 8
// independent chains. GOP/s (2 ops per product).
double dp_peak_avx2(double seconds) {
    __m256i a[8];
    for (int k = 0; k < 8; k++) a[k] = _mm256_set1_epi32(k);
    // the signed operand comes from a 512-byte L1-resident buffer (one load per step, as the kernels
    // load weights), so the products are not loop-invariant and the only chain is the VPADDD
    _Alignas(32) int8_t w[16][32];
    for (int i = 0; i < 16; i++)
        for (int k = 0; k < 32; k++) w[i][k] = (int8_t)(i * 7 + k - 40);
    const __m256i u = _mm256_set1_epi8(3), ones = _mm256_set1_epi16(1);
    const long inner = 1 << 13;
    double t0 = bench_now(), t1 = t0, best = 0;
    do {
        double tb = t1;
        for (long i = 0; i < inner; i++) {
#pragma GCC unroll 8
            for (int k = 0; k < 8; k++) {
                const __m256i x = _mm256_load_si256((const __m256i *)w[(i + k) & 15]);
                a[k] = _mm256_add_epi32(a[k], _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), ones));
            }
        }
        t1 = bench_now();
        double g = (double)inner * 8 * 32 * 2 / (t1 - tb) / 1e9;
        if (g > best) best = g;
    } while (t1 - t0 < seconds);
    __m256i s = a[0];
    for (int k = 1; k < 8; k++) s = _mm256_add_epi32(s, a[k]);
    int out[8];
    _mm256_storeu_si256((__m256i *)out, s);
    volatile int sink = out[0];
    (void)sink;
    return best;
}
