/* tests/test_kernels_matmul.c: cpu_matmul for every weight type x every ISA this CPU runs, against
 * the scalar references (kernels/cpu/matmul_ref.c). Tolerances (docs/KERNELS.md):
 *  - fast vs ref, same algorithm, only summation order differs: tol = 1e-6 + 8*sqrt(n)*eps*S with
 *    S = sum of the magnitudes of the terms the algorithm adds (float types: sum_k |x_k w_k|;
 *    int8 types: sum_g |d_g dx_g| sum_i |q_i xq_i| + |m_g dx_g sum_i xq_i|, since the d and m terms
 *    are summed separately and can cancel).
 *  - small integers with power-of-two scales: every partial sum is exact in fp32, tol = 0.
 *  - int8 ref vs the exact dequantized dot product (activation rounding bound, derived below). */
#include "kernels/cpu/matmul_kernels.h"
#include "quant/quant_ref.h"
#include "tests/test.h"

static const enum qtype TYPES[] = {QT_F32, QT_F16, QT_BF16, QT_Q8_G64, QT_Q4_G64, QT_Q3_G64, QT_Q2_G64,
                                    QT_GGML_Q8_0, QT_GGML_Q4_0};
#define NTYPES (int)(sizeof TYPES / sizeof TYPES[0])

typedef void (*ref_fn)(float *, const float *, const void *, int64_t, int64_t, int64_t);
static ref_fn ref_of(enum qtype wt) {
    switch (wt) {
    case QT_F32: return matmul_f32_ref;
    case QT_F16: return matmul_f16_ref;
    case QT_BF16: return matmul_bf16_ref;
    case QT_Q8_G64: return matmul_q8_g64_ref;
    case QT_Q4_G64: return matmul_q4_g64_ref;
    case QT_Q3_G64: return matmul_q3_g64_ref;
    case QT_Q2_G64: return matmul_q2_g64_ref;
    case QT_GGML_Q8_0: return matmul_q8_0_ref;
    case QT_GGML_Q4_0: return matmul_q4_0_ref;
    default: return NULL;
    }
}

static void *xmalloc(size_t n) {
    void *p = aligned_alloc(64, (n + 63) & ~(size_t)63);
    if (!p) { fprintf(stderr, "out of memory\n"); exit(2); }
    return p;
}

static void *quantize_matrix(enum qtype wt, const float *w, int64_t n, int64_t d) {
    size_t rb = qtype_row_bytes(wt, n);
    uint8_t *q = xmalloc(rb * (size_t)d);
    for (int64_t i = 0; i < d; i++) qtype_traits[wt].quantize_row(q + rb * i, w + i * n, n);
    return q;
}

// codes, per-code fp32 scales d[] and the zero point m of activation group g (64 codes) of row `row`
// (Q8: m = 0, codes signed; ggml Q8_0: two blocks of 32, each with its own d)
static void group_codes(enum qtype wt, const uint8_t *row, int64_t g, int *q, float *d, float *m) {
    if (wt == QT_GGML_Q8_0) {
        const struct ggml_blk_q8_0 *b = (const struct ggml_blk_q8_0 *)(const void *)row + 2 * g;
        for (int i = 0; i < QK_G64; i++) {
            q[i] = b[i / 32].qs[i % 32];
            d[i] = f16_to_f32(b[i / 32].d);
        }
        *m = 0;
        return;
    }
    if (wt == QT_GGML_Q4_0) {   // nibble l (low nibbles first) - 8
        const struct ggml_blk_q4_0 *b = (const struct ggml_blk_q4_0 *)(const void *)row + 2 * g;
        for (int i = 0; i < QK_G64; i++) {
            const int l = i % 32;
            q[i] = (l < 16 ? b[i / 32].qs[l] & 15 : b[i / 32].qs[l - 16] >> 4) - 8;
            d[i] = f16_to_f32(b[i / 32].d);
        }
        *m = 0;
        return;
    }
    const uint8_t *b = row + (size_t)g * qtype_traits[wt].block_bytes;
    float dd;
    if (wt == QT_Q8_G64) {
        const struct blk_q8_g64 *b8 = (const void *)b;
        for (int i = 0; i < QK_G64; i++) q[i] = b8->qs[i];
        dd = f16_to_f32(b8->d);
        *m = 0;
    } else {
        uint8_t u[QK_G64];
        f16_t dh, mh;
        quant_unpack_group(wt, b, &dh, &mh, u);
        for (int i = 0; i < QK_G64; i++) q[i] = u[i];
        dd = f16_to_f32(dh);
        *m = f16_to_f32(mh);
    }
    for (int i = 0; i < QK_G64; i++) d[i] = dd;
}

// S for (row i, token j): sum of |terms| as the algorithm adds them (see the header comment)
static double abs_sum(enum qtype wt, const float *x, const struct xq8 *xq, const void *w, int64_t n,
                      int64_t i, int64_t j) {
    double s = 0;
    if (!mm_uses_xq8(wt)) {
        const uint16_t *h = (const uint16_t *)w + i * n;
        for (int64_t k = 0; k < n; k++) {
            double wk = wt == QT_F32 ? ((const float *)w)[i * n + k] : wt == QT_F16 ? f16_to_f32(h[k]) : bf16_to_f32(h[k]);
            s += fabs(wk * x[j * n + k]);
        }
        return s;
    }
    const uint8_t *row = (const uint8_t *)w + qtype_row_bytes(wt, n) * (size_t)i;
    int q[QK_G64];
    float d[QK_G64];
    for (int64_t g = 0; g < n / QK_G64; g++) {
        float m;
        group_codes(wt, row, g, q, d, &m);
        double dx = xq->dx[j * xq->ng + g], sq = 0;
        for (int k = 0; k < QK_G64; k++) sq += fabs((double)d[k] * q[k] * xq->q[j * n + g * QK_G64 + k]);
        s += fabs(dx) * sq + fabs(m * dx * xq->sum[j * xq->ng + g]);
    }
    return s;
}

static struct threadpool *pool2;

// One case: random x in [-1,1], W = quantize(random [-1,1]); fast (through cpu_matmul) vs ref.
static void check_case(struct rng *g, enum cpu_isa isa, enum qtype wt, int64_t n, int64_t d, int64_t t,
                       struct threadpool *tp) {
    float *x = rng_f32(g, (size_t)(n * t), -1.f, 1.f), *wf = rng_f32(g, (size_t)(n * d), -1.f, 1.f);
    if (t > 1) for (int64_t k = 0; k < n; k++) x[n + k] *= 1e-3f;   // a token with a different scale
    void *w = quantize_matrix(wt, wf, n, d);
    float *ref = xmalloc(sizeof(float) * (size_t)(d * t)), *got = guarded_alloc_f32((size_t)(d * t));
    ref_of(wt)(ref, x, w, n, d, t);
    cpu_matmul(tp, isa, wt, got, x, w, n, d, t);
    struct xq8 xq = {0};
    void *buf = NULL;
    if (mm_uses_xq8(wt)) {
        buf = xmalloc(xq8_bytes(n, t));
        xq8_init(&xq, buf, n, t);
        xq8_quantize_ref(&xq, x, 0, t);
    }
    for (int64_t j = 0; j < t; j++)
        for (int64_t i = 0; i < d; i++) {
            // reordered length-n sum: error ~ sqrt(n)*eps*S (STYLE 5)
            double tol = 1e-6 + 8.0 * sqrt((double)n) * FLT_EPSILON * abs_sum(wt, x, &xq, w, n, i, j);
            CHECK_NEAR(got[j * d + i], ref[j * d + i], tol, "%s %s n=%lld d=%lld t=%lld row=%lld tok=%lld",
                       qtype_traits[wt].name, cpu_isa_name(isa), (long long)n, (long long)d, (long long)t,
                       (long long)i, (long long)j);
        }
    CHECK(guard_intact(got, (size_t)(d * t)), "%s %s wrote past out[%lld]", qtype_traits[wt].name,
          cpu_isa_name(isa), (long long)(d * t));
    free(x); free(wf); free(w); free(ref); free(buf); guarded_free(got);
}

// Small integers, power-of-two scales: every product and partial sum is an integer multiple of a
// power of two below 2^24, so fp32 is exact in any order: tol = 0, and an indexing bug cannot hide.
static void check_exact(struct rng *g, enum cpu_isa isa, enum qtype wt, int64_t n, int64_t d, int64_t t) {
    size_t rb = qtype_row_bytes(wt, n);
    float *x = xmalloc(sizeof(float) * (size_t)(n * t));
    uint8_t *w = xmalloc(rb * (size_t)d);
    double *exact = xmalloc(sizeof(double) * (size_t)(d * t));
    float *wf = xmalloc(sizeof(float) * (size_t)(n * d));
    if (!mm_uses_xq8(wt)) {
        for (int64_t k = 0; k < n * t; k++) x[k] = (float)((int)(rng_u64(g) % 17) - 8) * 0.25f;
        for (int64_t k = 0; k < n * d; k++) wf[k] = (float)((int)(rng_u64(g) % 17) - 8) * 0.5f;
        for (int64_t i = 0; i < d; i++) qtype_traits[wt].quantize_row(w + rb * i, wf + i * n, n);
    } else {
        // x: integers in [-127,127] with |x| = 127 somewhere in each group, so dx = 1 and xq = x exactly
        for (int64_t k = 0; k < n * t; k++) x[k] = (float)((int)(rng_u64(g) % 255) - 127);
        for (int64_t k = 0; k < n * t; k += QK_G64) x[k + (int64_t)(rng_u64(g) % QK_G64)] = (rng_u64(g) & 1) ? 127.f : -127.f;
        int qmax = wt == QT_Q8_G64 ? 127 : wt == QT_Q4_G64 ? 15 : wt == QT_Q3_G64 ? 7 : 3;
        for (int64_t i = 0; i < d && wt == QT_GGML_Q8_0; i++)   // blocks of 32, d = 0.5 or 0.25
            for (int64_t k = 0; k < n / 32; k++) {
                struct ggml_blk_q8_0 *b = (struct ggml_blk_q8_0 *)(void *)(w + rb * i) + k;
                const float dk = (rng_u64(g) & 1) ? 0.5f : 0.25f;
                b->d = f32_to_f16(dk);
                for (int l = 0; l < 32; l++) {   // -128 too: a file may hold it, the kernels must too
                    b->qs[l] = (int8_t)((int)(rng_u64(g) % 256) - 128);
                    wf[i * n + k * 32 + l] = dk * b->qs[l];
                }
            }
        for (int64_t i = 0; i < d && wt == QT_GGML_Q4_0; i++)   // blocks of 32, codes 0..15 (- 8)
            for (int64_t k = 0; k < n / 32; k++) {
                struct ggml_blk_q4_0 *b = (struct ggml_blk_q4_0 *)(void *)(w + rb * i) + k;
                const float dk = (rng_u64(g) & 1) ? 0.5f : 0.25f;
                b->d = f32_to_f16(dk);
                for (int l = 0; l < 16; l++) {
                    const int lo = (int)(rng_u64(g) % 16), hi = (int)(rng_u64(g) % 16);
                    b->qs[l] = (uint8_t)(lo | hi << 4);
                    wf[i * n + k * 32 + l] = dk * (lo - 8);
                    wf[i * n + k * 32 + 16 + l] = dk * (hi - 8);
                }
            }
        for (int64_t i = 0; i < d && wt != QT_GGML_Q8_0 && wt != QT_GGML_Q4_0; i++)
            for (int64_t gi = 0; gi < n / QK_G64; gi++) {
                uint8_t *b = w + rb * i + (size_t)gi * qtype_traits[wt].block_bytes;
                f16_t dh = f32_to_f16(0.5f), mh = f32_to_f16((float)((int)(rng_u64(g) % 5) - 2));
                uint8_t q[QK_G64];
                if (wt == QT_Q8_G64) {
                    struct blk_q8_g64 *b8 = (void *)b;
                    b8->d = dh;
                    for (int k = 0; k < QK_G64; k++) b8->qs[k] = (int8_t)((int)(rng_u64(g) % 255) - 127);
                    for (int k = 0; k < QK_G64; k++) wf[i * n + gi * QK_G64 + k] = 0.5f * b8->qs[k];
                    continue;
                }
                for (int k = 0; k < QK_G64; k++) q[k] = (uint8_t)(rng_u64(g) % (uint64_t)(qmax + 1));
                quant_pack_group(wt, b, dh, mh, q);
                for (int k = 0; k < QK_G64; k++) wf[i * n + gi * QK_G64 + k] = 0.5f * q[k] + f16_to_f32(mh);
            }
    }
    for (int64_t j = 0; j < t; j++)
        for (int64_t i = 0; i < d; i++) {
            double s = 0;
            for (int64_t k = 0; k < n; k++) s += (double)wf[i * n + k] * x[j * n + k];
            exact[j * d + i] = s;
        }
    float *got = guarded_alloc_f32((size_t)(d * t)), *ref = xmalloc(sizeof(float) * (size_t)(d * t));
    ref_of(wt)(ref, x, w, n, d, t);
    cpu_matmul(pool2, isa, wt, got, x, w, n, d, t);
    for (int64_t k = 0; k < d * t; k++) {
        CHECK_NEAR(ref[k], exact[k], 0, "exact ref %s n=%lld d=%lld t=%lld k=%lld", qtype_traits[wt].name,
                   (long long)n, (long long)d, (long long)t, (long long)k);
        CHECK_NEAR(got[k], exact[k], 0, "exact %s %s n=%lld d=%lld t=%lld k=%lld", qtype_traits[wt].name,
                   cpu_isa_name(isa), (long long)n, (long long)d, (long long)t, (long long)k);
    }
    CHECK(guard_intact(got, (size_t)(d * t)), "exact: wrote past the end");
    free(x); free(w); free(exact); free(wf); free(ref); guarded_free(got);
}

// int8 ref vs the exact product of the dequantized weights with the unquantized x. Per element,
// xq = rint(x*id), id = fl(127/amax), dx = fl(amax/127), so dx*xq - x = dx*(xq - x*id') + x*(dx*id' - 1)
// with |xq - x*id'| <= 1/2 (+ the rounding of x*id, inside the 4 eps below) and |dx*id' - 1| <= 2 eps:
//   |ref - sum_i w_i x_i| <= sum_g sum_{i in g} |w_i| (dx_g/2 + 4 eps |x_i|)
//                            + eps * sum_i |w_i x_i|   (w_i = fl(d q_i + m) in dequantize_row vs exact)
//                            + 8 sqrt(n) eps S + 1e-6  (the ref's own fp32 output and summation).
static void check_ref_vs_f32(struct rng *g, enum qtype wt, int64_t n, int64_t d) {
    float *x = rng_f32(g, (size_t)n, -1.f, 1.f), *wf = rng_f32(g, (size_t)(n * d), -1.f, 1.f);
    for (int64_t k = 0; k < n; k += 3) x[k] *= 0.01f;   // uneven magnitudes inside groups
    void *w = quantize_matrix(wt, wf, n, d);
    size_t rb = qtype_row_bytes(wt, n);
    float *deq = xmalloc(sizeof(float) * (size_t)n), *ref = xmalloc(sizeof(float) * (size_t)d);
    ref_of(wt)(ref, x, w, n, d, 1);
    void *buf = xmalloc(xq8_bytes(n, 1));
    struct xq8 xq;
    xq8_init(&xq, buf, n, 1);
    xq8_quantize_ref(&xq, x, 0, 1);
    for (int64_t i = 0; i < d; i++) {
        qtype_traits[wt].dequantize_row(deq, (const uint8_t *)w + rb * i, n);
        double dot = 0, bound = 1e-6, sxw = 0;
        for (int64_t k = 0; k < n; k++) {
            double dxg = xq.dx[k / QK_G64];
            dot += (double)deq[k] * x[k];
            bound += fabs(deq[k]) * (dxg / 2 + 4 * FLT_EPSILON * fabs(x[k]));
            sxw += fabs((double)deq[k] * x[k]);
        }
        bound += FLT_EPSILON * sxw + 8.0 * sqrt((double)n) * FLT_EPSILON * abs_sum(wt, x, &xq, w, n, i, 0);
        CHECK_NEAR(ref[i], dot, bound, "ref vs f32 %s n=%lld row=%lld", qtype_traits[wt].name, (long long)n,
                   (long long)i);
    }
    free(x); free(wf); free(w); free(deq); free(ref); free(buf);
}

// AVX2/AVX-512 activation quantizers must be bit-identical to the ref one (same fp32 formula).
static void check_xq8(struct rng *g, enum cpu_isa isa, int64_t n, int64_t t) {
    float *x = rng_f32(g, (size_t)(n * t), -3.f, 3.f);
    for (int64_t k = 0; k < QK_G64; k++) x[k] = 0.f;            // an all-zero group: dx = 0
    if (n * t > 2 * QK_G64) x[QK_G64 + 5] = 1e-30f;               // a tiny-amax group
    size_t nb = xq8_bytes(n, t);
    void *b1 = xmalloc(nb), *b2 = xmalloc(nb);
    memset(b1, 0, nb);
    memset(b2, 0, nb);
    struct xq8 a1, a2;
    xq8_init(&a1, b1, n, t);
    xq8_init(&a2, b2, n, t);
    xq8_quantize_ref(&a1, x, 0, t);
    if (isa == CPU_ISA_AVX512) xq8_quantize_avx512(&a2, x, 0, t);
    else xq8_quantize_avx2(&a2, x, 0, t);
    CHECK(memcmp(a1.q, a2.q, (size_t)(n * t)) == 0, "xq8 %s codes differ n=%lld", cpu_isa_name(isa), (long long)n);
    CHECK(memcmp(a1.dx, a2.dx, sizeof(float) * (size_t)(a1.ng * t)) == 0, "xq8 %s dx differ", cpu_isa_name(isa));
    CHECK(memcmp(a1.sx, a2.sx, sizeof(float) * (size_t)(a1.ng * t)) == 0, "xq8 %s sx differ", cpu_isa_name(isa));
    CHECK(memcmp(a1.sum, a2.sum, sizeof(int32_t) * (size_t)(a1.ng * t)) == 0, "xq8 %s sums differ", cpu_isa_name(isa));
    free(x); free(b1); free(b2);
}

int main(void) {
    test_begin("test_kernels_matmul");
    struct rng g;
    rng_init(&g, 0);
    pool2 = threadpool_create(2);
    enum cpu_isa best = cpu_isa_detect();
    printf("best ISA here: %s (AVX-512 variants %s)\n", cpu_isa_name(best),
           best >= CPU_ISA_AVX512 ? "tested" : "NOT tested: this CPU lacks AVX-512");
    static const int64_t NQ[] = {64, 128, 192, 320, 2048};
    static const int64_t NTAIL[] = {1, 2, 3, 7, 8, 15, 16, 17, 31, 33, 63, 127, 129};
    static const int64_t DS[] = {1, 3, 4, 5, 8, 17, 64, 256};
    static const int64_t TS[] = {1, 2, 3, 4, 5, 8, 13};
    for (int isa = CPU_ISA_REF; isa <= (int)best; isa++) {
        if (isa != CPU_ISA_REF)
            for (int k = 0; k < 5; k++) check_xq8(&g, (enum cpu_isa)isa, NQ[k], 3);
        for (int ti = 0; ti < NTYPES; ti++) {
            enum qtype wt = TYPES[ti];
            int before = test_failures;
            for (int ni = 0; ni < 5 + 13; ni++) {
                int64_t n = ni < 5 ? NQ[ni] : NTAIL[ni - 5];
                if (ni >= 5 && mm_uses_xq8(wt)) break;
                for (int di = 0; di < 8; di++)
                    for (int tj = 0; tj < 7; tj++) {
                        if (n == 2048 && DS[di] > 64 && TS[tj] > 3) continue;   // keep the ref affordable
                        check_case(&g, (enum cpu_isa)isa, wt, n, DS[di], TS[tj], (di + tj) % 3 ? pool2 : NULL);
                    }
            }
            check_case(&g, (enum cpu_isa)isa, wt, 2048, 5632, 1, pool2);   // TinyLlama w1/w3 decode
            check_case(&g, (enum cpu_isa)isa, wt, 256, 40, 33, pool2);     // prefill (OpenBLAS path if built)
            // float prefill, t >= 16: the packed GEMM (32-row panels, k blocks of 256, 12-token tiles)
            // with its row tail (72 = 2 x 32 + 8), k tails (600 = 256 + 256 + 88) and token tails
            // (29 = 12 + 12 + 5, 16 = 12 + 4); 2 threads: each takes one panel + a 16-row tail
            check_case(&g, (enum cpu_isa)isa, wt, 640, 72, 29, NULL);
            if (!mm_uses_xq8(wt)) check_case(&g, (enum cpu_isa)isa, wt, 600, 72, 29, NULL);
            check_case(&g, (enum cpu_isa)isa, wt, 320, 96, 16, pool2);
            check_exact(&g, (enum cpu_isa)isa, wt, 576, 40, 17);
            check_exact(&g, (enum cpu_isa)isa, wt, 320, 17, 5);
            check_exact(&g, (enum cpu_isa)isa, wt, 2048, 9, 1);
            check_exact(&g, (enum cpu_isa)isa, wt, 128, 8, 20);
            printf("%-7s %-6s %s\n", qtype_traits[wt].name, cpu_isa_name((enum cpu_isa)isa),
                   test_failures == before ? "ok" : "FAIL");
        }
    }
    for (int ti = 3; ti < NTYPES; ti++)
        for (int k = 0; k < 5; k++) check_ref_vs_f32(&g, TYPES[ti], NQ[k], 16);
    threadpool_destroy(pool2);
    return test_end();
}
