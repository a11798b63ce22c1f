/* bench/bench_simd_avx512.c: the AVX-512 fp32 FMA peak loop of the roofline probe (compiled with the
 * Makefile's *_avx512.o flags). Only call it after __builtin_cpu_supports("avx512f"). The int8 and
 * fp32 AVX-512 kernels run 16-lane FMAs, so their compute roof is this loop, not the 8-lane one. */
#include <immintrin.h>

#include "bench/bench.h"

double fma_peak_avx512(double seconds) {
    // 12 independent accumulators hide the 4-cycle FMA latency on 2 512-bit FMA ports (needs >= 8)
    __m512 a[12];
    for (int k = 0; k < 12; k++) a[k] = _mm512_set1_ps(0.1f + 0.01f * (float)k);
    const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
    const long inner = 1 << 13;   // 98k FMAs, ~20 us: short enough to fit between preemptions
    double t0 = bench_now(), t1 = t0, best = 0;
    do {   // best block: a block in which the thread was descheduled is slow, not representative
        double tb = t1;
        for (long i = 0; i < inner; i++) {
#pragma GCC unroll 12
            for (int k = 0; k < 12; k++) a[k] = _mm512_fmadd_ps(a[k], m, c);
        }
        t1 = bench_now();
        double g = (double)inner * 12 * 16 * 2 / (t1 - tb) / 1e9;   // 12 FMAs x 16 lanes x 2 flops
        if (g > best) best = g;
    } while (t1 - t0 < seconds);
    __m512 s = a[0];
    for (int k = 1; k < 12; k++) s = _mm512_add_ps(s, a[k]);
    volatile float sink = _mm512_reduce_add_ps(s);   // keep the loop alive
    (void)sink;
    return best;
}

// int8 dot-product peak of one thread: 12 independent VPDPBUSD chains (64 u8 x s8 products per
// instruction, 2 ops each: multiply and add), the instruction the AVX-512 VNNI int8 kernels run.
// Only call after __builtin_cpu_supports("avx512vnni"). GOP/s (1e9 int8 multiply-adds x 2).
double dp_peak_avx512(double seconds) {
    __m512i a[12];
    for (int k = 0; k < 12; k++) a[k] = _mm512_set1_epi32(k);
    const __m512i u = _mm512_set1_epi8(3), v = _mm512_set1_epi8(-2);
    const long inner = 1 << 13;
    double t0 = bench_now(), t1 = t0, best = 0;
    do {
        double tb = t1;
        for (long i = 0; i < inner; i++) {
#pragma GCC unroll 12
            for (int k = 0; k < 12; k++) a[k] = _mm512_dpbusd_epi32(a[k], u, v);
        }
        t1 = bench_now();
        double g = (double)inner * 12 * 64 * 2 / (t1 - tb) / 1e9;
        if (g > best) best = g;
    } while (t1 - t0 < seconds);
    __m512i s = a[0];
    for (int k = 1; k < 12; k++) s = _mm512_add_epi32(s, a[k]);
    volatile int sink = _mm512_reduce_or_epi32(s);   // not add: the header sums in C int (UB on wrap)
    (void)sink;
    return best;
}
