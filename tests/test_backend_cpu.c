/* tests/test_backend_cpu.c: the CPU backend's attention (kernels/cpu/backend_cpu.c) against a double
 * precision reference: causal grouped-query attention over an f32 cache, several tokens after a
 * prefix (pos0 > 0), scores spread so that some softmax weights underflow (its exp clamps at -87).
 * Decode (one token) takes the chunked path (positions split, partials merged); it is also checked
 * on f16 / q8_0 caches and for the same bits on 1 and 2 threads.
 * Tolerance, per (token, head): a score s = q.k / sqrt(hd) is an fp32 dot of hd terms, off by at most
 * dS = hd eps A, A = max_p sum_i |q_i k_i| / sqrt(hd); a weight w_p = e^(s_p - max) / sum is then off
 * by a factor within e^(+-2 dS), the polynomial exp adds 3e-7 relative and the normalization and the
 * fp32 sum over the positions np eps. With |v| <= 1 and sum w = 1:
 *     |got - ref| <= 2 (e^(2 dS) - 1) + 3e-7 + 2 np eps + 1e-6  ~  4 dS + 2 np eps + 1.3e-6. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#include "tests/test.h"

/* kt: the cache type (f32, or f16 / q8_0 rows as -ctk/-ctv store them); the reference then uses the
 * cache's dequantized values, so the tolerance is the same */
static void check_t(struct backend *be, struct rng *g, int n_heads, int n_kv, int hd, int pos0, int nt, float spread,
                    enum qtype kt) {
    const int kv_dim = n_kv * hd, q_dim = n_heads * hd, n_ctx = pos0 + nt, grp = n_heads / n_kv;
    float *q = rng_f32(g, (size_t)nt * q_dim, -1.f, 1.f), *k = rng_f32(g, (size_t)n_ctx * kv_dim, -1.f, 1.f);
    float *v = rng_f32(g, (size_t)n_ctx * kv_dim, -1.f, 1.f), *out = guarded_alloc_f32((size_t)nt * q_dim);
    for (int i = 0; i < nt * q_dim; i++) q[i] *= spread;
    const size_t rb = qtype_row_bytes(kt, kv_dim);
    void *kq = k, *vq = v;
    if (kt != QT_F32) {   // store the rows as kt, and make k, v the values the cache holds
        kq = malloc(rb * (size_t)n_ctx), vq = malloc(rb * (size_t)n_ctx);
        for (int p = 0; p < n_ctx; p++) {
            float *kr = k + (size_t)p * kv_dim, *vr = v + (size_t)p * kv_dim;
            qtype_traits[kt].quantize_row((uint8_t *)kq + p * rb, kr, kv_dim);
            qtype_traits[kt].quantize_row((uint8_t *)vq + p * rb, vr, kv_dim);
            qtype_traits[kt].dequantize_row(kr, (uint8_t *)kq + p * rb, kv_dim);
            qtype_traits[kt].dequantize_row(vr, (uint8_t *)vq + p * rb, kv_dim);
        }
    }
    struct tensor tq = {QT_F32, {q_dim, nt}, q, sizeof(float) * (size_t)nt * q_dim, "q"};
    struct tensor tk = {kt, {kv_dim, n_ctx}, kq, rb * (size_t)n_ctx, "k"};
    struct tensor tv = {kt, {kv_dim, n_ctx}, vq, rb * (size_t)n_ctx, "v"};
    struct tensor to = {QT_F32, {q_dim, nt}, out, sizeof(float) * (size_t)nt * q_dim, "out"};
    be->ops->attention(be, &to, &tq, &tk, &tv, n_heads, n_kv, hd, pos0);
    double worst = 0;
    double *s = malloc(sizeof(double) * (size_t)n_ctx);
    for (int t = 0; t < nt; t++)
        for (int h = 0; h < n_heads; h++) {
            const int kvh = h / grp, np = pos0 + t + 1;
            double mx = -INFINITY, sum = 0, A = 0;
            for (int p = 0; p < np; p++) {
                double d = 0, a = 0;
                for (int i = 0; i < hd; i++) {
                    const double qk = (double)q[t * q_dim + h * hd + i] * k[p * kv_dim + kvh * hd + i];
                    d += qk, a += fabs(qk);
                }
                s[p] = d / sqrt((double)hd);
                mx = fmax(mx, s[p]);
                A = fmax(A, a / sqrt((double)hd));
            }
            const double tol = 4.0 * hd * FLT_EPSILON * A + 2.0 * np * FLT_EPSILON + 1.3e-6;
            for (int p = 0; p < np; p++) sum += (s[p] = exp(s[p] - mx));
            for (int i = 0; i < hd; i++) {
                double o = 0;
                for (int p = 0; p < np; p++) o += s[p] / sum * v[p * kv_dim + kvh * hd + i];
                const float got = out[t * q_dim + h * hd + i];
                worst = fmax(worst, fabs(got - o));
                CHECK_NEAR(got, o, tol, "attention heads %d/%d hd %d pos0 %d tok %d head %d i %d", n_heads, n_kv, hd,
                           pos0, t, h, i);
            }
        }
    CHECK(guard_intact(out, (size_t)nt * q_dim), "attention wrote past its output");
    printf("attention %2d/%d heads, hd %3d, pos0 %4d, %d tokens, scores x%-4g, %-4s cache: max |err| %.2e\n", n_heads,
           n_kv, hd, pos0, nt, spread, qtype_traits[kt].name, worst);
    if (kt != QT_F32) free(kq), free(vq);
    free(q), free(k), free(v), free(s), guarded_free(out);
}

static void check(struct backend *be, struct rng *g, int n_heads, int n_kv, int hd, int pos0, int nt, float spread) {
    check_t(be, g, n_heads, n_kv, hd, pos0, nt, spread, QT_F32);
}

// decode attention's chunks depend on the positions only: the same bits on 1 and on 2 threads
static void check_threads(struct backend *b2, struct backend *b1, struct rng *g, int n_pos) {
    const int nh = 32, nkv = 4, hd = 64, kv_dim = nkv * hd, q_dim = nh * hd;
    float *q = rng_f32(g, q_dim, -1.f, 1.f), *k = rng_f32(g, (size_t)n_pos * kv_dim, -1.f, 1.f);
    float *v = rng_f32(g, (size_t)n_pos * kv_dim, -1.f, 1.f);
    float *o1 = malloc(sizeof(float) * q_dim), *o2 = malloc(sizeof(float) * q_dim);
    struct tensor tq = {QT_F32, {q_dim, 1}, q, sizeof(float) * (size_t)q_dim, "q"};
    struct tensor tk = {QT_F32, {kv_dim, n_pos}, k, sizeof(float) * (size_t)n_pos * kv_dim, "k"};
    struct tensor tv = {QT_F32, {kv_dim, n_pos}, v, sizeof(float) * (size_t)n_pos * kv_dim, "v"};
    struct tensor t1 = {QT_F32, {q_dim, 1}, o1, sizeof(float) * (size_t)q_dim, "o1"}, t2 = t1;
    t2.data = o2;
    b1->ops->attention(b1, &t1, &tq, &tk, &tv, nh, nkv, hd, n_pos - 1);
    b2->ops->attention(b2, &t2, &tq, &tk, &tv, nh, nkv, hd, n_pos - 1);
    CHECK(memcmp(o1, o2, sizeof(float) * q_dim) == 0, "decode attention over %d positions: 1 and 2 threads differ", n_pos);
    free(q), free(k), free(v), free(o1), free(o2);
}

int main(void) {
    test_begin("test_backend_cpu");
    struct rng g;
    rng_init(&g, 0);
    struct err e = {0};
    struct backend *be = backend_cpu_create(2, &e);
    CHECK(be != NULL, "backend: %s", e.msg);
    if (!be) return test_end();
    check(be, &g, 32, 4, 64, 0, 5, 1.f);     // TinyLlama's GQA, prefill from 0
    check(be, &g, 32, 4, 64, 60, 1, 1.f);    // decode after 60 positions
    check(be, &g, 9, 3, 64, 17, 4, 1.f);     // SmolLM2's 9/3 heads
    check(be, &g, 8, 8, 48, 33, 3, 1.f);     // no GQA, head_dim not a multiple of 16
    check(be, &g, 4, 2, 64, 40, 2, 12.f);    // scores up to ~+-100 apart: weights underflow to 0
    // decode (one token): positions split in chunks (32, doubled up to <= 8 chunks), merged
    check(be, &g, 32, 4, 64, 0, 1, 1.f);     // a single position
    check(be, &g, 32, 4, 64, 31, 1, 1.f);    // exactly one chunk
    check(be, &g, 32, 4, 64, 32, 1, 1.f);    // one chunk and one position
    check(be, &g, 32, 4, 64, 300, 1, 1.f);   // 64-position chunks, the last one short
    check(be, &g, 9, 3, 64, 1000, 1, 1.f);   // 128-position chunks
    check(be, &g, 8, 8, 48, 500, 1, 1.f);    // no GQA, head_dim 48
    check(be, &g, 4, 2, 64, 700, 1, 12.f);   // whole chunks whose weights underflow next to the max
    check_t(be, &g, 32, 4, 64, 200, 1, 1.f, QT_F16);
    check_t(be, &g, 32, 4, 64, 200, 1, 1.f, QT_GGML_Q8_0);
    check_t(be, &g, 32, 4, 64, 20, 3, 1.f, QT_GGML_Q8_0);   // prefill path, quantized cache
    struct backend *be1 = backend_cpu_create(1, &e);
    CHECK(be1 != NULL, "backend: %s", e.msg);
    if (be1) {
        for (int n = 1; n <= 1100; n = n * 3 + 7) check_threads(be, be1, &g, n);
        be1->ops->destroy(be1);
    }
    be->ops->destroy(be);
    return test_end();
}
