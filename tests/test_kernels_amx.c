/* tests/test_kernels_amx.c: the AMX-INT8 prefill kernels (kernels/cpu/matmul_amx.c) for every
 * int8-activation type against the scalar references, through cpu_matmul (with and without a pool,
 * so the dispatch and the per-thread tile config are tested) and called directly on a sub-range of
 * rows. SKIP (77) where the CPU or the OS lacks AMX. cpu_matmul uses AMX from t >= AMX_MIN_T; the direct
 * calls cover every t here, including t = 1. Tolerances as in test_kernels_matmul.c:
 *  - same algorithm, the integer dots are exact, only the fp32 summation order differs:
 *    tol = 1e-6 + 8*sqrt(n)*eps*S, S = sum_g |d_g dx_g| sum_i |q_i xq_i| + |m_g dx_g sum_i xq_i|.
 *    (The AMX kernel adds the 2*ng group terms sequentially: error <= (ng+1)*eps*S, inside this
 *    tol for n < 2^18.)
 *  - small integers with power-of-two scales: every partial sum is exact in fp32, tol = 0. */
#include "kernels/cpu/matmul_kernels.h"
#include "quant/quant_ref.h"
#include "tests/test.h"

static const enum qtype TYPES[] = {QT_Q8_G64, QT_Q4_G64, QT_Q3_G64, QT_Q2_G64};
#define NTYPES (int)(sizeof TYPES / sizeof TYPES[0])

typedef void (*ref_fn)(float *, const float *, const void *, int64_t, int64_t, int64_t);
static ref_fn ref_of(enum qtype wt) {
    switch (wt) {
    case QT_Q8_G64: return matmul_q8_g64_ref;
    case QT_Q4_G64: return matmul_q4_g64_ref;
    case QT_Q3_G64: return matmul_q3_g64_ref;
    default: return matmul_q2_g64_ref;
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

// S for every (row i, token j) at once: S[j*d + i] (see the header comment)
static double *abs_sums(enum qtype wt, const struct xq8 *xq, const void *w, int64_t n, int64_t d, int64_t t) {
    const int64_t ng = n / QK_G64;
    const size_t bb = qtype_traits[wt].block_bytes, rb = qtype_row_bytes(wt, n);
    double *s = xmalloc(sizeof(double) * (size_t)(d * t));
    for (int64_t k = 0; k < d * t; k++) s[k] = 0;
    int q[QK_G64];
    for (int64_t i = 0; i < d; i++)
        for (int64_t g = 0; g < ng; g++) {
            const uint8_t *b = (const uint8_t *)w + rb * (size_t)i + bb * (size_t)g;
            float dd, m;
            if (wt == QT_Q8_G64) {
                const struct blk_q8_g64 *b8 = (const void *)b;
                for (int k = 0; k < QK_G64; k++) q[k] = b8->qs[k];
                dd = f16_to_f32(b8->d);
                m = 0;
            } else {
                uint8_t u[QK_G64];
                f16_t dh, mh;
                quant_unpack_group(wt, b, &dh, &mh, u);
                for (int k = 0; k < QK_G64; k++) q[k] = u[k];
                dd = f16_to_f32(dh);
                m = f16_to_f32(mh);
            }
            for (int64_t j = 0; j < t; j++) {
                const int8_t *xg = xq->q + j * n + g * QK_G64;
                double dx = xq->dx[j * ng + g], sq = 0;
                for (int k = 0; k < QK_G64; k++) sq += fabs((double)q[k] * xg[k]);
                s[j * d + i] += fabs(dd * dx) * sq + fabs(m * dx * xq->sum[j * ng + g]);
            }
        }
    return s;
}

static struct threadpool *pool2;

#define SENTINEL 12345.f

// Random x in [-1,1] (one token scaled by 1e-3), W = quantize(random [-1,1]).
// (1) cpu_matmul(AVX512) -> AMX when t >= AMX_MIN_T; (2) mm_rows_amx on rows [r0, r1) only: the
// other rows must keep their sentinel. Both against the ref; 64 canaries after out.
static void check_case(struct rng *g, enum qtype wt, int64_t n, int64_t d, int64_t t, struct threadpool *tp) {
    float *x = rng_f32(g, (size_t)(n * t), -1.f, 1.f), *wf = rng_f32(g, (size_t)(n * d), -1.f, 1.f);
    if (t > 1) for (int64_t k = 0; k < n; k++) x[n + k] *= 1e-3f;   // a token with a different scale
    void *w = quantize_matrix(wt, wf, n, d);
    float *ref = xmalloc(sizeof(float) * (size_t)(d * t));
    float *got = guarded_alloc_f32((size_t)(d * t)), *sub = guarded_alloc_f32((size_t)(d * t));
    ref_of(wt)(ref, x, w, n, d, t);
    cpu_matmul(tp, CPU_ISA_AVX512, wt, got, x, w, n, d, t);

    void *buf = xmalloc(xq8_bytes(n, t));
    struct xq8 xq;
    xq8_init(&xq, buf, n, t);
    xq8_quantize_ref(&xq, x, 0, t);
    int64_t r0 = d > 2 ? (int64_t)(rng_u64(g) % (uint64_t)(d / 2)) : 0;
    int64_t r1 = r0 + 1 + (int64_t)(rng_u64(g) % (uint64_t)(d - r0));
    for (int64_t k = 0; k < d * t; k++) sub[k] = SENTINEL;
    mm_rows_amx[wt](sub, d, x, &xq, w, n, r0, r1, t);

    double *s = abs_sums(wt, &xq, w, n, d, t);
    for (int64_t j = 0; j < t; j++)
        for (int64_t i = 0; i < d; i++) {
            double tol = 1e-6 + 8.0 * sqrt((double)n) * FLT_EPSILON * s[j * d + i];
            CHECK_NEAR(got[j * d + i], ref[j * d + i], tol, "cpu_matmul %s n=%lld d=%lld t=%lld row=%lld tok=%lld %s",
                       qtype_traits[wt].name, (long long)n, (long long)d, (long long)t, (long long)i,
                       (long long)j, tp ? "pool" : "no pool");
            if (i >= r0 && i < r1)
                CHECK_NEAR(sub[j * d + i], ref[j * d + i], tol, "rows_amx %s n=%lld d=%lld t=%lld rows [%lld,%lld) row=%lld tok=%lld",
                           qtype_traits[wt].name, (long long)n, (long long)d, (long long)t, (long long)r0,
                           (long long)r1, (long long)i, (long long)j);
            else
                CHECK(sub[j * d + i] == SENTINEL, "rows_amx %s n=%lld d=%lld t=%lld rows [%lld,%lld) wrote row %lld tok %lld",
                      qtype_traits[wt].name, (long long)n, (long long)d, (long long)t, (long long)r0, (long long)r1,
                      (long long)i, (long long)j);
        }
    CHECK(guard_intact(got, (size_t)(d * t)), "cpu_matmul %s wrote past out[%lld]", qtype_traits[wt].name,
          (long long)(d * t));
    CHECK(guard_intact(sub, (size_t)(d * t)), "rows_amx %s wrote past out[%lld]", qtype_traits[wt].name,
          (long long)(d * t));
    free(x); free(wf); free(w); free(ref); free(buf); free(s); guarded_free(got); guarded_free(sub);
}

// Small integers, power-of-two scales: x integers in [-127,127] with |x| = 127 in every group (dx = 1,
// xq = x), d = 0.5, m in {-2..2}: every term and partial sum is a multiple of 0.5 below 2^23
// (n <= 512: |sum| <= 512*(0.5*127*127 + 2*127) = 4.3e6 < 2^23), exact in fp32 in any order: tol = 0.
static void check_exact(struct rng *g, enum qtype wt, int64_t n, int64_t d, int64_t t) {
    size_t rb = qtype_row_bytes(wt, n);
    float *x = xmalloc(sizeof(float) * (size_t)(n * t)), *wf = xmalloc(sizeof(float) * (size_t)(n * d));
    uint8_t *w = xmalloc(rb * (size_t)d);
    double *exact = xmalloc(sizeof(double) * (size_t)(d * t));
    for (int64_t k = 0; k < n * t; k++) x[k] = (float)((int)(rng_u64(g) % 255) - 127);
    for (int64_t k = 0; k < n * t; k += QK_G64) x[k + (int64_t)(rng_u64(g) % QK_G64)] = (rng_u64(g) & 1) ? 127.f : -127.f;
    int qmax = wt == QT_Q8_G64 ? 127 : wt == QT_Q4_G64 ? 15 : wt == QT_Q3_G64 ? 7 : 3;
    for (int64_t i = 0; i < d; i++)
        for (int64_t gi = 0; gi < n / QK_G64; gi++) {
            uint8_t *b = w + rb * i + (size_t)gi * qtype_traits[wt].block_bytes;
            f16_t dh = f32_to_f16(0.5f), mh = f32_to_f16((float)((int)(rng_u64(g) % 5) - 2));
            if (wt == QT_Q8_G64) {
                struct blk_q8_g64 *b8 = (void *)b;
                b8->d = dh;
                for (int k = 0; k < QK_G64; k++) b8->qs[k] = (int8_t)((int)(rng_u64(g) % 255) - 127);
                for (int k = 0; k < QK_G64; k++) wf[i * n + gi * QK_G64 + k] = 0.5f * b8->qs[k];
                continue;
            }
            uint8_t q[QK_G64];
            for (int k = 0; k < QK_G64; k++) q[k] = (uint8_t)(rng_u64(g) % (uint64_t)(qmax + 1));
            quant_pack_group(wt, b, dh, mh, q);
            for (int k = 0; k < QK_G64; k++) wf[i * n + gi * QK_G64 + k] = 0.5f * q[k] + f16_to_f32(mh);
        }
    for (int64_t j = 0; j < t; j++)
        for (int64_t i = 0; i < d; i++) {
            double s = 0;
            for (int64_t k = 0; k < n; k++) s += (double)wf[i * n + k] * x[j * n + k];
            exact[j * d + i] = s;
        }
    float *got = guarded_alloc_f32((size_t)(d * t));
    cpu_matmul(pool2, CPU_ISA_AVX512, wt, got, x, w, n, d, t);
    for (int64_t k = 0; k < d * t; k++)
        CHECK_NEAR(got[k], exact[k], 0, "exact %s n=%lld d=%lld t=%lld row=%lld tok=%lld", qtype_traits[wt].name,
                   (long long)n, (long long)d, (long long)t, (long long)(k % d), (long long)(k / d));
    CHECK(guard_intact(got, (size_t)(d * t)), "exact %s: wrote past the end", qtype_traits[wt].name);
    free(x); free(wf); free(w); free(exact); guarded_free(got);
}

int main(void) {
    test_begin("test_kernels_amx");
    if (cpu_isa_detect() < CPU_ISA_AVX512 || !cpu_amx_available()) test_skip("no AMX");
    struct rng g;
    rng_init(&g, 0);
    pool2 = threadpool_create(2);
    static const int64_t NS[] = {64, 128, 320, 2048};
    static const int64_t DS[] = {1, 5, 16, 17, 33, 64, 100};
    static const int64_t TS[] = {4, 5, 8, 15, 16, 17, 31, 32, 33, 64, 100};
    for (int ti = 0; ti < NTYPES; ti++) {
        enum qtype wt = TYPES[ti];
        int before = test_failures;
        for (int ni = 0; ni < 4; ni++)
            for (int di = 0; di < 7; di++)
                for (int tj = 0; tj < 11; tj++) {
                    check_case(&g, wt, NS[ni], DS[di], TS[tj], (di + tj) % 3 ? pool2 : NULL);
                }
        check_case(&g, wt, 5632, 48, 20, pool2);   // TinyLlama w2's n (ng = 88: 3 bf16 chunks, the last partial)
        check_case(&g, wt, 2048, 40, 1, pool2);    // t = 1: cpu_matmul decodes; rows_amx pads 15 tokens
        check_case(&g, wt, 64, 3000, 700, pool2);  // 2 token chunks (> 1 MiB of packed activations)
        check_exact(&g, wt, 320, 33, 33);
        check_exact(&g, wt, 128, 17, 17);
        check_exact(&g, wt, 512, 40, 48);
        printf("%-7s amx %s\n", qtype_traits[wt].name, test_failures == before ? "ok" : "FAIL");
    }
    threadpool_destroy(pool2);
    return test_end();
}
