/* tests/test_kernels_x8.c: the X8 layouts (quant/repack.c) and their AVX-512 VNNI and AVX2 kernels
 * (kernels/cpu/matmul_x8_avx512.c, kernels/cpu/matmul_x8_avx2.c).
 *  - repack: pack -> unpack returns the natural bytes; X8 dequantize_row = natural dequantize_row
 *    (bit-identical); X8 quantize_row = natural quantize + pack; the name lookup does not know X8
 *    (files and bit plans cannot name it) and its sizes need n % 512 == 0.
 *  - kernels: cpu_matmul on X8 weights vs the natural reference on the same weights. Same integer
 *    dot and scales, only the fp32 summation order differs: tol = 1e-6 + 8 sqrt(n) eps S with S the
 *    sum of term magnitudes (as tests/test_kernels_matmul.c); plus an exact case (small integers,
 *    power-of-two scales: tol = 0) so an indexing or bit-field bug cannot hide in the tolerance.
 * The kernel half runs every ISA the CPU has (reference, AVX2, AVX-512 VNNI). */
#include <string.h>

#include "kernels/cpu/matmul_kernels.h"
#include "quant/quant_ref.h"
#include "quant/repack.h"
#include "tests/test.h"

static const enum qtype NAT[] = {QT_Q8_G64, QT_Q4_G64, QT_Q3_G64, QT_Q2_G64};

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) abort();
    return p;
}

static uint8_t *quantize(enum qtype nat, const float *w, int64_t n, int64_t d) {
    size_t rb = qtype_row_bytes(nat, n);
    uint8_t *q = xmalloc(rb * (size_t)d);
    for (int64_t i = 0; i < d; i++) qtype_traits[nat].quantize_row(q + rb * (size_t)i, w + i * n, n);
    return q;
}

static uint8_t *pack(enum qtype nat, const uint8_t *w, int64_t n, int64_t d) {
    enum qtype x8 = (enum qtype)qtype_x8_of(nat);
    size_t rb = qtype_row_bytes(nat, n);
    uint8_t *p = xmalloc(rb * (size_t)d);
    x8_pack_matrix(x8, p, w, n, d, (int)(d % 3) + 1);
    return p;
}

static void check_repack(struct rng *g, enum qtype nat, int64_t n, int64_t d) {
    enum qtype x8 = (enum qtype)qtype_x8_of(nat);
    CHECK(qtype_natural_of(x8) == (int)nat && qtype_is_x8(x8) && !qtype_is_x8(nat), "type mapping %s",
          qtype_traits[nat].name);
    CHECK(qtype_row_bytes(x8, n) == qtype_row_bytes(nat, n), "%s row bytes", qtype_traits[x8].name);
    float *wf = rng_f32(g, (size_t)(n * d), -1.f, 1.f);
    uint8_t *w = quantize(nat, wf, n, d), *p = pack(nat, w, n, d);
    size_t rb = qtype_row_bytes(nat, n);
    uint8_t *back = xmalloc(rb);
    float *a = xmalloc(sizeof(float) * (size_t)n), *b = xmalloc(sizeof(float) * (size_t)n);
    uint8_t *q2 = xmalloc(rb);
    for (int64_t i = 0; i < d; i++) {
        x8_unpack_row(x8, back, p + rb * (size_t)i, n);
        CHECK(memcmp(back, w + rb * (size_t)i, rb) == 0, "%s n=%lld row %lld: pack/unpack differs",
              qtype_traits[x8].name, (long long)n, (long long)i);
        qtype_traits[nat].dequantize_row(a, w + rb * (size_t)i, n);
        qtype_traits[x8].dequantize_row(b, p + rb * (size_t)i, n);
        CHECK(memcmp(a, b, sizeof(float) * (size_t)n) == 0, "%s n=%lld: dequantize differs", qtype_traits[x8].name,
              (long long)n);
        qtype_traits[x8].quantize_row(q2, wf + i * n, n);
        CHECK(memcmp(q2, p + rb * (size_t)i, rb) == 0, "%s n=%lld: quantize_row != quantize + pack",
              qtype_traits[x8].name, (long long)n);
    }
    free(wf); free(w); free(p); free(back); free(a); free(b); free(q2);
}

// S for (row i, token j) from the natural blocks: sum_g |d dx| sum|q xq| + |m dx sum xq|
static double abs_sum(enum qtype nat, const uint8_t *w, const struct xq8 *xq, int64_t n, int64_t i, int64_t j) {
    size_t rb = qtype_row_bytes(nat, n), bb = qtype_traits[nat].block_bytes;
    double s = 0;
    for (int64_t gi = 0; gi < n / QK_G64; gi++) {
        const uint8_t *b = w + rb * (size_t)i + bb * (size_t)gi;
        int q[QK_G64];
        float dd, mm = 0;
        if (nat == QT_Q8_G64) {
            const struct blk_q8_g64 *b8 = (const void *)b;
            dd = f16_to_f32(b8->d);
            for (int k = 0; k < QK_G64; k++) q[k] = b8->qs[k];
        } else {
            f16_t dh, mh;
            uint8_t u[QK_G64];
            quant_unpack_group(nat, b, &dh, &mh, u);
            dd = f16_to_f32(dh), mm = f16_to_f32(mh);
            for (int k = 0; k < QK_G64; k++) q[k] = u[k];
        }
        double sq = 0;
        for (int k = 0; k < QK_G64; k++) sq += fabs((double)q[k] * xq->q[j * n + gi * QK_G64 + k]);
        double dx = xq->dx[j * xq->ng + gi];
        s += fabs(dd * dx) * sq + fabs(mm * dx * xq->sum[j * xq->ng + gi]);
    }
    return s;
}

static void natural_ref(enum qtype nat, float *out, const float *x, const void *w, int64_t n, int64_t d, int64_t t) {
    switch (nat) {
    case QT_Q8_G64: matmul_q8_g64_ref(out, x, w, n, d, t); break;
    case QT_Q4_G64: matmul_q4_g64_ref(out, x, w, n, d, t); break;
    case QT_Q3_G64: matmul_q3_g64_ref(out, x, w, n, d, t); break;
    default: matmul_q2_g64_ref(out, x, w, n, d, t); break;
    }
}

static void check_kernel(struct rng *g, enum cpu_isa isa, enum qtype nat, int64_t n, int64_t d, int64_t t,
                         struct threadpool *tp) {
    enum qtype x8 = (enum qtype)qtype_x8_of(nat);
    float *x = rng_f32(g, (size_t)(n * t), -1.f, 1.f), *wf = rng_f32(g, (size_t)(n * d), -1.f, 1.f);
    if (t > 1) for (int64_t k = 0; k < n; k++) x[n + k] *= 1e-3f;
    for (int64_t k = 0; k < n * t; k += 7) x[k] *= 20.f;   // uneven magnitudes inside groups
    uint8_t *w = quantize(nat, wf, n, d), *p = pack(nat, w, n, d);
    float *ref = xmalloc(sizeof(float) * (size_t)(d * t)), *got = guarded_alloc_f32((size_t)(d * t));
    natural_ref(nat, ref, x, w, n, d, t);
    cpu_matmul(tp, isa, x8, got, x, p, n, d, t);
    struct xq8 xq = {0};
    void *buf = xmalloc(xq8_bytes(n, t));
    xq8_init(&xq, buf, n, t);
    xq8_quantize_ref(&xq, x, 0, t);
    for (int64_t j = 0; j < t; j++)
        for (int64_t i = 0; i < d; i++) {
            double tol = 1e-6 + 8.0 * sqrt((double)n) * FLT_EPSILON * abs_sum(nat, w, &xq, n, i, j);
            CHECK_NEAR(got[j * d + i], ref[j * d + i], tol, "%s %s n=%lld d=%lld t=%lld row=%lld tok=%lld",
                       qtype_traits[x8].name, cpu_isa_name(isa), (long long)n, (long long)d, (long long)t,
                       (long long)i, (long long)j);
        }
    CHECK(guard_intact(got, (size_t)(d * t)), "%s wrote past the output", qtype_traits[x8].name);
    free(x); free(wf); free(w); free(p); free(ref); free(buf); guarded_free(got);
}

// integers x in [-127,127] with 127 in every group (dx = 1, xq = x), d = 0.5, m in {-2..2}:
// every partial sum is a multiple of 0.5 below 2^24, exact in fp32 in any order
static void check_exact(struct rng *g, enum cpu_isa isa, enum qtype nat, int64_t n, int64_t d, int64_t t,
                        struct threadpool *tp) {
    enum qtype x8 = (enum qtype)qtype_x8_of(nat);
    size_t rb = qtype_row_bytes(nat, n), bb = qtype_traits[nat].block_bytes;
    float *x = xmalloc(sizeof(float) * (size_t)(n * t)), *wf = xmalloc(sizeof(float) * (size_t)(n * d));
    uint8_t *w = xmalloc(rb * (size_t)d);
    for (int64_t k = 0; k < n * t; k++) x[k] = (float)((int)(rng_u64(g) % 255) - 127);
    for (int64_t k = 0; k < n * t; k += QK_G64) x[k + (int64_t)(rng_u64(g) % QK_G64)] = (rng_u64(g) & 1) ? 127.f : -127.f;
    const int qmax = nat == QT_Q8_G64 ? 127 : nat == QT_Q4_G64 ? 15 : nat == QT_Q3_G64 ? 7 : 3;
    for (int64_t i = 0; i < d; i++)
        for (int64_t gi = 0; gi < n / QK_G64; gi++) {
            uint8_t *b = w + rb * (size_t)i + bb * (size_t)gi;
            f16_t dh = f32_to_f16(0.5f), mh = f32_to_f16((float)((int)(rng_u64(g) % 5) - 2));
            float *wr = wf + i * n + gi * QK_G64;
            if (nat == QT_Q8_G64) {
                struct blk_q8_g64 *b8 = (void *)b;
                b8->d = dh;
                for (int k = 0; k < QK_G64; k++) b8->qs[k] = (int8_t)((int)(rng_u64(g) % 255) - 127), wr[k] = 0.5f * b8->qs[k];
                continue;
            }
            uint8_t q[QK_G64];
            for (int k = 0; k < QK_G64; k++) q[k] = (uint8_t)(rng_u64(g) % (uint64_t)(qmax + 1));
            if (gi == 0) memset(q, qmax, 8), q[8] = 0;   // extreme codes in every bit field
            quant_pack_group(nat, b, dh, mh, q);
            for (int k = 0; k < QK_G64; k++) wr[k] = 0.5f * q[k] + f16_to_f32(mh);
        }
    uint8_t *p = pack(nat, w, n, d);
    float *got = guarded_alloc_f32((size_t)(d * t));
    cpu_matmul(tp, isa, x8, got, x, p, n, d, t);
    for (int64_t j = 0; j < t; j++)
        for (int64_t i = 0; i < d; i++) {
            double s = 0;
            for (int64_t k = 0; k < n; k++) s += (double)wf[i * n + k] * x[j * n + k];
            CHECK_NEAR(got[j * d + i], s, 0, "exact %s %s n=%lld d=%lld t=%lld row=%lld tok=%lld",
                       qtype_traits[x8].name, cpu_isa_name(isa), (long long)n, (long long)d, (long long)t,
                       (long long)i, (long long)j);
        }
    CHECK(guard_intact(got, (size_t)(d * t)), "exact: wrote past the output");
    free(x); free(wf); free(w); free(p); guarded_free(got);
}

// cpu_matmul_multi = cpu_matmul per part, bit for bit (same kernels, same activation quantization),
// with mixed types in one call (X8, natural int8, float: xq8, qil and x all needed)
static void check_multi(struct rng *g, enum cpu_isa isa, int64_t n, int64_t t, struct threadpool *tp) {
    const enum qtype types[4] = {QT_Q4_G64, QT_Q8_G64, QT_F16, QT_Q2_G64};
    const int64_t ds[4] = {300, 24, 17, 256};
    struct cpu_matmul_part parts[4];
    float *x = rng_f32(g, (size_t)(n * t), -1.f, 1.f), *sep[4];
    void *w[4];
    for (int i = 0; i < 4; i++) {
        float *wf = rng_f32(g, (size_t)(n * ds[i]), -1.f, 1.f);
        enum qtype wt = types[i];
        if (i != 1 && i != 2 && isa != CPU_ISA_REF) wt = (enum qtype)qtype_x8_of(types[i]);   // part 1 stays natural
        size_t rb = qtype_row_bytes(wt, n);
        w[i] = xmalloc(rb * (size_t)ds[i]);
        for (int64_t r = 0; r < ds[i]; r++) qtype_traits[wt].quantize_row((uint8_t *)w[i] + rb * (size_t)r, wf + r * n, n);
        parts[i] = (struct cpu_matmul_part){.wt = wt, .out = xmalloc(sizeof(float) * (size_t)(ds[i] * t)), .w = w[i], .d = ds[i]};
        sep[i] = xmalloc(sizeof(float) * (size_t)(ds[i] * t));
        cpu_matmul(tp, isa, wt, sep[i], x, w[i], n, ds[i], t);
        free(wf);
    }
    cpu_matmul_multi(tp, isa, 4, parts, x, n, t);
    for (int i = 0; i < 4; i++) {
        CHECK(memcmp(parts[i].out, sep[i], sizeof(float) * (size_t)(ds[i] * t)) == 0,
              "multi part %d (%s) n=%lld t=%lld differs from cpu_matmul", i, qtype_traits[parts[i].wt].name,
              (long long)n, (long long)t);
        free(parts[i].out), free(sep[i]), free(w[i]);
    }
    free(x);
}

int main(void) {
    test_begin("test_kernels_x8");
    struct rng g;
    rng_init(&g, 0);
    struct threadpool *tp = threadpool_create(2);
    static const int64_t NS[] = {512, 1024, 1536, 2048, 5632};
    for (int k = 0; k < 4; k++) {
        for (int ni = 0; ni < 5; ni++) check_repack(&g, NAT[k], NS[ni], 3);
    }
    // X8 is an in-memory layout only: no name lookup finds it, the file writer refuses it
    CHECK(qtype_from_name("q4_g64x8") < 0, "q4_g64x8 found by name");
    CHECK(qtype_traits[QT_Q4_X8].internal && !qtype_traits[QT_Q4_G64].internal, "internal flags");
    uint64_t nb;
    CHECK(!qtype_nbytes(QT_Q4_X8, 576, 1, &nb) && qtype_nbytes(QT_Q4_X8, 1024, 2, &nb) && nb == 2 * 16 * 36,
          "X8 sizes need n %% 512 == 0");

    enum cpu_isa best = cpu_isa_detect();
    static const int64_t DS[] = {1, 3, 8, 17, 64};
    static const int64_t TS[] = {1, 2, 3, 4, 5, 13};
    // every ISA up to the best: the AVX2 X8 kernels run on AVX-512 machines too
    enum cpu_isa isas[3];
    int nisa = 0;
    isas[nisa++] = CPU_ISA_REF;
    if (best >= CPU_ISA_AVX2) isas[nisa++] = CPU_ISA_AVX2;
    if (best >= CPU_ISA_AVX512) isas[nisa++] = CPU_ISA_AVX512;
    for (int ii = 0; ii < nisa; ii++) {
        const enum cpu_isa isa = isas[ii];
        for (int k = 0; k < 4; k++) {
            int before = test_failures;
            for (int ni = 0; ni < 3; ni++)
                for (int di = 0; di < 5; di++)
                    for (int tj = 0; tj < 6; tj++)
                        check_kernel(&g, isa, NAT[k], NS[ni], DS[di], TS[tj], (di + tj) % 2 ? tp : NULL);
            check_kernel(&g, isa, NAT[k], 2048, 5632, 1, tp);   // TinyLlama w1/w3 decode
            check_kernel(&g, isa, NAT[k], 5632, 40, 1, tp);     // w2 decode
            check_kernel(&g, isa, NAT[k], 2048, 40, 37, tp);    // prefill tiles
            check_exact(&g, isa, NAT[k], 1024, 17, 1, tp);
            check_exact(&g, isa, NAT[k], 2048, 9, 5, NULL);
            printf("%-9s %-6s %s\n", qtype_traits[qtype_x8_of(NAT[k])].name, cpu_isa_name(isa),
                   test_failures == before ? "ok" : "FAIL");
        }
    }
    for (int ii = 0; ii < nisa; ii++)
        for (int tj = 0; tj < 2; tj++) {
            check_multi(&g, isas[ii], 1024, tj ? 3 : 1, tp);
            check_multi(&g, isas[ii], 2048, 1, NULL);
        }
    if (best < CPU_ISA_AVX512) printf("note: no AVX-512 VNNI here, the AVX-512 X8 kernels not exercised\n");
    if (best < CPU_ISA_AVX2) printf("note: no AVX2 here, X8 kernels not exercised (reference only)\n");
    threadpool_destroy(tp);
    return test_end();
}
