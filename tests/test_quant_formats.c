/* tests/test_quant_formats.c: the native formats Q8/Q4/Q3/Q2_G64 (quant/quant_ref.c) and the traits
 * table (quant/qtypes.c): per-element RTN error bounds, exact constant groups, extreme inputs,
 * hand-built blocks that pin the bit layouts documented in quant/qtypes.h, f16/bf16 rows. */
#include "quant/quant_ref.h"
#include "quant/quantize.h"
#include "tests/test.h"

static const enum qtype native[] = {QT_Q8_G64, QT_Q4_G64, QT_Q3_G64, QT_Q2_G64};
#define N_NATIVE 4

static int qmax_of(enum qtype t) { return t == QT_Q8_G64 ? 127 : (1 << qtype_traits[t].bits) - 1; }

// fp16 spacing around |v|: 2^(e-10) for normal numbers, 2^-24 for subnormals
static double f16_ulp(double v) {
    v = fabs(v);
    if (v < 0x1p-14) return 0x1p-24;
    int e;
    frexp(v, &e);   // v = f * 2^e, f in [0.5, 1)
    return ldexp(1.0, e - 11);
}

/* Quantize + dequantize x[n] with type t and check every element against the derived bound.
 *
 * Asymmetric (Q4/Q3/Q2): the quantizer rounds m = fp16_down(min) and d = fp16_up((max - m)/qmax),
 * so [m, m + qmax*d] contains every x and round-to-nearest never clamps:
 *     |x - (d*q + m)| <= d/2                                  (exact arithmetic)
 * The dequantizer evaluates d*q + m in fp32: two roundings of at most eps/2 relative each, on
 * |d*q| <= qmax*d and on |y| <= |m| + qmax*d, so we add eps*(|m| + qmax*d).
 * And d itself is within fp16 rounding of the ideal: d <= (max-min)/qmax + (min-m)/qmax + ulp16(d),
 * with min - m <= ulp16(min), which we check separately so the bound is tied to the data, not to
 * the stored d.
 * Symmetric (Q8): d = fp16_up(absmax/127), |x - d*q| <= d/2 + eps*|d*q|.
 * Returns the max |err| / bound seen (<= 1 passes). */
static double check_roundtrip(enum qtype t, const float *x, int64_t n, const char *what) {
    const struct qtype_traits *tr = &qtype_traits[t];
    const int qmax = qmax_of(t);
    size_t nb = quantize_nbytes(t, n, 1);
    void *q = malloc(nb);
    float *y = guarded_alloc_f32((size_t)n);
    tr->quantize_row(q, x, n);
    tr->dequantize_row(y, q, n);
    double worst = 0;
    for (int64_t g = 0; g < n / QK_G64; g++) {
        const float *xg = x + g * QK_G64;
        const char *blk = (const char *)q + (size_t)g * tr->block_bytes;
        f16_t dh, mh = 0;
        memcpy(&dh, blk, 2);
        if (t != QT_Q8_G64) memcpy(&mh, blk + 2, 2);
        double d = f16_to_f32(dh), m = f16_to_f32(mh);
        float mn = xg[0], mx = xg[0], amax = 0;
        for (int i = 0; i < QK_G64; i++)
            mn = fminf(mn, xg[i]), mx = fmaxf(mx, xg[i]), amax = fmaxf(amax, fabsf(xg[i]));
        CHECK(isfinite(d) && d >= 0 && isfinite(m), "%s %s g=%lld: d=%g m=%g", tr->name, what,
              (long long)g, d, m);
        // stored scales are the ideal ones up to one fp16 rounding step
        if (t == QT_Q8_G64) {
            // a constant group stores d = fp16(|x|) (nearest) with q = +-1 instead
            double ideal = amax / 127.0;
            if (mn == mx)
                CHECK(fabs(d - amax) <= f16_ulp(amax) / 2, "%s %s g=%lld: constant d=%g |x|=%g",
                      tr->name, what, (long long)g, d, (double)amax);
            else
                CHECK(d >= ideal && d <= ideal + f16_ulp(ideal), "%s %s g=%lld: d=%g ideal %g",
                      tr->name, what, (long long)g, d, ideal);
        } else {
            CHECK(m <= mn && mn - m <= f16_ulp(mn), "%s %s g=%lld: m=%g min %g", tr->name, what,
                  (long long)g, m, mn);
            double ideal = ((double)mx - m) / qmax;
            CHECK(d >= ideal && d <= ideal + f16_ulp(ideal), "%s %s g=%lld: d=%g ideal %g", tr->name,
                  what, (long long)g, d, ideal);
            CHECK(d <= ((double)mx - mn) / qmax + 2 * f16_ulp(mn) / qmax + f16_ulp(d),
                  "%s %s g=%lld: d=%g exceeds range/qmax + fp16 rounding", tr->name, what,
                  (long long)g, d);
        }
        double tol = d / 2 + FLT_EPSILON * (fabs(m) + qmax * d);
        for (int i = 0; i < QK_G64; i++) {
            double err = fabs((double)xg[i] - (double)y[g * QK_G64 + i]);
            CHECK(isfinite(y[g * QK_G64 + i]), "%s %s: non-finite output", tr->name, what);
            CHECK_NEAR(y[g * QK_G64 + i], xg[i], tol, "%s %s n=%lld g=%lld i=%d d=%g m=%g", tr->name,
                       what, (long long)n, (long long)g, i, d, m);
            if (tol > 0) worst = fmax(worst, err / tol);
            else CHECK(err == 0, "%s %s: tol 0 but err %g", tr->name, what, err);
        }
    }
    CHECK(guard_intact(y, (size_t)n), "%s %s: dequantize wrote past out[%lld]", tr->name, what,
          (long long)n);
    free(q), guarded_free(y);
    return worst;
}

static void test_random_shapes(struct rng *g) {
    const int64_t ns[] = {64, 128, 192, 2048, 5632};
    for (int k = 0; k < N_NATIVE; k++) {
        double worst = 0;
        for (size_t s = 0; s < sizeof ns / sizeof ns[0]; s++) {
            int64_t n = ns[s];
            float *x = rng_f32(g, (size_t)n, -1.0f, 1.0f);
            worst = fmax(worst, check_roundtrip(native[k], x, n, "uniform"));
            for (int64_t i = 0; i < n; i++) x[i] = 0.02f * rng_normal(g);   // weight-like
            for (int64_t i = 0; i < n; i += 97) x[i] *= 30.0f;              // outliers
            worst = fmax(worst, check_roundtrip(native[k], x, n, "normal+outliers"));
            free(x);
        }
        printf("%-7s worst |err| / bound = %.3f\n", qtype_traits[native[k]].name, worst);
    }
}

static void test_extremes(struct rng *g) {
    float x[QK_G64 * 8];
    const int n = QK_G64 * 8;
    for (int k = 0; k < N_NATIVE; k++) {
        enum qtype t = native[k];
        const struct qtype_traits *tr = &qtype_traits[t];
        for (int i = 0; i < n; i++) {
            int grp = i / QK_G64;
            float u = rng_uniform(g, -1, 1);
            x[i] = grp == 0 ? 0.0f                       // zeros
                 : grp == 1 ? 0.375f                     // constant, fp16-exact
                 : grp == 2 ? -3.0f                      // constant negative
                 : grp == 3 ? u * 60000.0f               // huge range (fp16 max is 65504)
                 : grp == 4 ? u * 1e-6f                  // tiny: d in fp16 subnormals
                 : grp == 5 ? -fabsf(u) - 2.0f           // negative-only
                 : grp == 6 ? (i % 2 ? 60000.0f : -60000.0f)   // two-valued extreme
                 : 0.1f;                                 // constant, not fp16-exact
        }
        check_roundtrip(t, x, n, "extremes");
        // constant groups whose value is an fp16 number round-trip exactly (d = 0)
        void *q = malloc(quantize_nbytes(t, n, 1));
        float y[QK_G64 * 8];
        tr->quantize_row(q, x, n);
        tr->dequantize_row(y, q, n);
        for (int i = 0; i < 3 * QK_G64; i++)
            CHECK(y[i] == x[i], "%s: constant group not exact: x=%g y=%g", tr->name, x[i], y[i]);
        // a constant that fp16 cannot hold: error at most half a subnormal-scale step, far below
        // fp16's own rounding of 0.1 (2^-14 / 2 here)
        for (int i = 7 * QK_G64; i < 8 * QK_G64; i++)
            CHECK(fabsf(y[i] - x[i]) <= 0x1p-15f, "%s: constant 0.1 -> %.9g", tr->name, y[i]);
        free(q);
    }
}

/* Hand-built blocks following the layout comments in quant/qtypes.h (independent of the packer). */
static void test_layouts(struct rng *g) {
    uint8_t q[QK_G64];
    float y[QK_G64];
    const f16_t d = 0x3800 /* 0.5 */, m = 0xc000 /* -2 */;
    // Q8: | d | 64 x int8 |
    struct blk_q8_g64 b8 = {.d = d};
    for (int i = 0; i < 64; i++) b8.qs[i] = (int8_t)(i * 4 - 127);
    dequantize_row_q8_g64_ref(y, &b8, 64);
    for (int i = 0; i < 64; i++) CHECK_NEAR(y[i], 0.5 * (i * 4 - 127), 0, "q8 layout i=%d", i);
    // Q4: qs[i] low nibble = q[i], high nibble = q[i+32]
    struct blk_q4_g64 b4 = {.d = d, .m = m};
    for (int i = 0; i < 64; i++) q[i] = (uint8_t)(rng_u64(g) & 15);
    for (int i = 0; i < 32; i++) b4.qs[i] = (uint8_t)(q[i] | q[i + 32] << 4);
    dequantize_row_q4_g64_ref(y, &b4, 64);
    for (int i = 0; i < 64; i++) CHECK_NEAR(y[i], 0.5 * q[i] - 2, 0, "q4 layout i=%d", i);
    // Q3: low 2 bits ql[i % 16] >> 2*(i/16), high bit qh[i%8] >> (i/8)
    struct blk_q3_g64 b3 = {.d = d, .m = m};
    for (int i = 0; i < 64; i++) {
        q[i] = (uint8_t)(rng_u64(g) & 7);
        b3.ql[i % 16] |= (uint8_t)((q[i] & 3) << (2 * (i / 16)));
        b3.qh[i % 8] |= (uint8_t)((q[i] >> 2) << (i / 8));
    }
    dequantize_row_q3_g64_ref(y, &b3, 64);
    for (int i = 0; i < 64; i++) CHECK_NEAR(y[i], 0.5 * q[i] - 2, 0, "q3 layout i=%d", i);
    // Q2: same order as Q3's ql
    struct blk_q2_g64 b2 = {.d = d, .m = m};
    for (int i = 0; i < 64; i++) {
        q[i] = (uint8_t)(rng_u64(g) & 3);
        b2.qs[i % 16] |= (uint8_t)(q[i] << (2 * (i / 16)));
    }
    dequantize_row_q2_g64_ref(y, &b2, 64);
    for (int i = 0; i < 64; i++) CHECK_NEAR(y[i], 0.5 * q[i] - 2, 0, "q2 layout i=%d", i);
    // pack/unpack round trip
    for (int k = 1; k < N_NATIVE; k++) {
        uint8_t blk[64], q2[64];
        f16_t d2, m2;
        for (int i = 0; i < 64; i++) q[i] = (uint8_t)(rng_u64(g) & (uint64_t)qmax_of(native[k]));
        quant_pack_group(native[k], blk, d, m, q);
        quant_unpack_group(native[k], blk, &d2, &m2, q2);
        CHECK(d2 == d && m2 == m && memcmp(q, q2, 64) == 0, "%s pack/unpack", qtype_traits[native[k]].name);
    }
}

static void test_float_rows(struct rng *g) {
    const int n = 1000;
    float *x = rng_f32(g, n, -100.0f, 100.0f), *y = guarded_alloc_f32(n);
    uint16_t h[1000];
    quantize_row_f16_ref(h, x, n), dequantize_row_f16_ref(y, h, n);
    for (int i = 0; i < n; i++)   // round to nearest: relative error <= 2^-11
        CHECK_NEAR(y[i], x[i], fabsf(x[i]) * 0x1p-11f, "f16 i=%d", i);
    quantize_row_bf16_ref(h, x, n), dequantize_row_bf16_ref(y, h, n);
    for (int i = 0; i < n; i++) CHECK_NEAR(y[i], x[i], fabsf(x[i]) * 0x1p-8f, "bf16 i=%d", i);
    float z[1000];
    quantize_row_f32_ref(z, x, n), dequantize_row_f32_ref(y, z, n);
    CHECK(memcmp(x, y, sizeof z) == 0, "f32 copy");
    CHECK(guard_intact(y, n), "f32/f16 rows wrote past the end");
    free(x), guarded_free(y);
    // directed rounding helpers
    const float vals[] = {0.1f, -0.1f, 1e-9f, -1e-9f, 65504.f, 70000.f, -70000.f, 0.f, 3.0f};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        float v = vals[i], lo = f16_to_f32(f16_round_down(v)), hi = f16_to_f32(f16_round_up(v));
        float vc = fminf(fmaxf(v, -65504.f), 65504.f);
        CHECK(lo <= vc && hi >= vc && isfinite(lo) && isfinite(hi), "directed rounding of %g: %g %g", v, lo, hi);
        CHECK(hi - lo <= f16_ulp(vc) * 1.0001, "directed rounding of %g too wide: %g %g", v, lo, hi);
    }
}

static void test_traits(void) {
    for (int t = 0; t < QT_COUNT; t++) {
        const struct qtype_traits *tr = &qtype_traits[t];
        CHECK(tr->name && tr->group > 0 && tr->block_bytes > 0 && tr->dequantize_row, "row %d", t);
        CHECK(fabs(tr->bpw - 8.0 * (double)tr->block_bytes / tr->group) < 1e-12, "%s bpw", tr->name);
        // internal layouts (X8) have no name a user, a file or a bit plan can give
        CHECK(qtype_from_name(tr->name) == (tr->internal ? -1 : t), "%s from_name", tr->name);
        if (tr->ggml_type >= 0) CHECK(qtype_from_ggml(tr->ggml_type) == t, "%s from_ggml", tr->name);
        CHECK(!tr->native || tr->quantize_row, "%s native but no quantizer", tr->name);
    }
    CHECK(qtype_traits[QT_Q8_G64].block_bytes == 66 && qtype_traits[QT_Q4_G64].block_bytes == 36 &&
          qtype_traits[QT_Q3_G64].block_bytes == 28 && qtype_traits[QT_Q2_G64].block_bytes == 20,
          "native block sizes");
    CHECK(qtype_traits[QT_GGML_Q8_0].block_bytes == 34 && qtype_traits[QT_GGML_Q4_0].block_bytes == 18 &&
          qtype_traits[QT_GGML_Q4_1].block_bytes == 20 && qtype_traits[QT_GGML_Q4_K].block_bytes == 144 &&
          qtype_traits[QT_GGML_Q5_K].block_bytes == 176 && qtype_traits[QT_GGML_Q6_K].block_bytes == 210,
          "ggml block sizes");
    CHECK(qtype_traits[QT_Q4_G64].bpw == 4.5 && qtype_traits[QT_Q3_G64].bpw == 3.5 &&
          qtype_traits[QT_Q2_G64].bpw == 2.5 && qtype_traits[QT_Q8_G64].bpw == 8.25, "bpw");
    CHECK(qtype_from_name("q4") == QT_Q4_G64 && qtype_from_name("Q8") == QT_Q8_G64 &&
          qtype_from_name("q3") == QT_Q3_G64 && qtype_from_name("q2") == QT_Q2_G64 &&
          qtype_from_name("Q4_K") == QT_GGML_Q4_K && qtype_from_name("q6_k") == QT_GGML_Q6_K &&
          qtype_from_name("F16") == QT_F16 && qtype_from_name("q5") == -1 &&
          qtype_from_name("") == -1 && qtype_from_name(NULL) == -1, "qtype_from_name");
    CHECK(qtype_for_bits(4) == QT_Q4_G64 && qtype_for_bits(16) == QT_F16 &&
          qtype_for_bits(32) == QT_F32 && qtype_for_bits(5) == -1, "qtype_for_bits");
    CHECK(qtype_from_ggml(0) == QT_F32 && qtype_from_ggml(1) == QT_F16 && qtype_from_ggml(2) == QT_GGML_Q4_0 &&
          qtype_from_ggml(3) == QT_GGML_Q4_1 && qtype_from_ggml(8) == QT_GGML_Q8_0 &&
          qtype_from_ggml(12) == QT_GGML_Q4_K && qtype_from_ggml(13) == QT_GGML_Q5_K &&
          qtype_from_ggml(14) == QT_GGML_Q6_K && qtype_from_ggml(30) == QT_BF16 &&
          qtype_from_ggml(6) == -1 && qtype_from_ggml(-1) == -1, "qtype_from_ggml");
    uint64_t nb = 0;
    CHECK(qtype_nbytes(QT_Q4_G64, 2048, 5632, &nb) && nb == 2048ull / 64 * 36 * 5632, "nbytes");
    CHECK(!qtype_nbytes(QT_Q4_G64, 100, 2, &nb), "nbytes accepts n not multiple of 64");
    CHECK(!qtype_nbytes(QT_F32, INT64_MAX / 2, INT64_MAX / 2, &nb), "nbytes overflow not caught");
    CHECK(quantize_nbytes(QT_GGML_Q4_K, 256, 3) == 3 * 144, "quantize_nbytes");
}

int main(void) {
    test_begin("quant_formats");
    struct rng g;
    rng_init(&g, 0);
    test_traits();
    test_layouts(&g);
    test_float_rows(&g);
    test_random_shapes(&g);
    test_extremes(&g);
    return test_end();
}
