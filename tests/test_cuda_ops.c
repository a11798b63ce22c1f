/* tests/test_cuda_ops.c: every op of the CUDA backend against scalar references written here from
 * the layouts in quant/qtypes.h and the op comments in kernels/backend.h (double accumulation),
 * with derived tolerances (STYLE section 5) and a canary band after every device output.
 * Prints SKIP and exits 77 without a device. Run: make cuda && build/tests/test_cuda_ops */
#include "kernels/backend.h"
#include "kernels/cuda/backend_cuda.h"
#include "tests/test.h"

#define EPS ((double)FLT_EPSILON)
#define EPS16 (1.0 / 2048.0)   // fp16 unit roundoff 2^-11
#define GUARD 256              // canary bytes after every device buffer
#define CANARY 0xA5

static struct backend *be;

// ------------------------------------------------------------------------------------------------
// Device helpers: a failure here is a test-harness failure, so exit.

static void die_err(const char *what, const struct err *e) {
    fprintf(stderr, "FATAL %s: %s (seed=%llu)\n", what, e->msg, (unsigned long long)test_seed);
    exit(1);
}

/* Device copy of host[0..nbytes) followed by GUARD canary bytes (host may be NULL: canary only). */
static void *dev_put(const void *host, size_t nbytes) {
    struct err e = {0};
    uint8_t *d = be->ops->alloc(be, nbytes + GUARD);
    if (!d) { fprintf(stderr, "FATAL device alloc of %zu bytes\n", nbytes + GUARD); exit(1); }
    uint8_t *tmp = malloc(nbytes + GUARD);
    if (!tmp) exit(2);
    if (host) memcpy(tmp, host, nbytes);
    else memset(tmp, 0x7f, nbytes);  // 0x7f7f7f7f: a huge float, never a plausible result
    memset(tmp + nbytes, CANARY, GUARD);
    if (be->ops->upload(be, d, tmp, nbytes + GUARD, &e)) die_err("upload", &e);
    free(tmp);
    return d;
}
static void dev_get(void *host, const void *dev, size_t nbytes) {
    struct err e = {0};
    if (be->ops->download(be, host, dev, nbytes, &e)) die_err("download", &e);
}
static int dev_guard_ok(const void *dev, size_t nbytes) {
    uint8_t g[GUARD];
    dev_get(g, (const uint8_t *)dev + nbytes, GUARD);
    for (int i = 0; i < GUARD; i++) if (g[i] != CANARY) return 0;
    return 1;
}
static struct tensor tens(enum qtype t, int64_t ne0, int64_t ne1, void *data, size_t nbytes) {
    struct tensor x = {.type = t, .ne = {ne0, ne1}, .data = data, .nbytes = nbytes, .name = "test"};
    return x;
}
static int sync_ok(const char *op) {
    struct err e = {0};
    int rc = be->ops->sync(be, &e);
    CHECK(rc == 0, "%s: sync returned %d: %s", op, rc, e.msg);
    if (rc) { fprintf(stderr, "backend errors are sticky: stopping\n"); exit(test_end()); }
    return rc == 0;
}

// ------------------------------------------------------------------------------------------------
// Weight formats, written from quant/qtypes.h

static size_t row_bytes(enum qtype t, int64_t n) {
    switch (t) {
    case QT_F32: return 4 * (size_t)n;
    case QT_F16: case QT_BF16: return 2 * (size_t)n;
    case QT_Q8_G64: return (size_t)n / 64 * 66;
    case QT_Q4_G64: return (size_t)n / 64 * 36;
    case QT_Q3_G64: return (size_t)n / 64 * 28;
    case QT_Q2_G64: return (size_t)n / 64 * 20;
    default: return 0;
    }
}
static bool is_quant(enum qtype t) { return t >= QT_Q8_G64 && t <= QT_Q2_G64; }
static const char *tname(enum qtype t) {
    static const char *nm[QT_COUNT] = {[QT_F32] = "f32", [QT_F16] = "f16", [QT_BF16] = "bf16",
        [QT_Q8_G64] = "q8", [QT_Q4_G64] = "q4", [QT_Q3_G64] = "q3", [QT_Q2_G64] = "q2"};
    return nm[t] ? nm[t] : "?";
}
static float h2f(const uint8_t *p) { return f16_to_f32((f16_t)(p[0] | p[1] << 8)); }

/* Weight i of a row; *mag = |d*q| + |m| (the terms the factored kernels round) or |w| for dense.
 * Computed in fp32 as written: d*q rounded, then + m rounded (C11, no contraction). */
static float deq(enum qtype t, const uint8_t *row, int64_t i, double *mag) {
    const uint8_t *p;
    int j = (int)(i % 64), q;
    float d, m, w;
    switch (t) {
    case QT_F32: memcpy(&w, row + 4 * i, 4); *mag = fabs(w); return w;
    case QT_F16: w = h2f(row + 2 * i); *mag = fabs(w); return w;
    case QT_BF16: w = bf16_to_f32((bf16_t)(row[2 * i] | row[2 * i + 1] << 8)); *mag = fabs(w); return w;
    case QT_Q8_G64:
        p = row + i / 64 * 66; d = h2f(p);
        w = d * (float)(int8_t)p[2 + j]; *mag = fabs(w); return w;
    case QT_Q4_G64:
        p = row + i / 64 * 36; d = h2f(p); m = h2f(p + 2);
        q = j < 32 ? (p[4 + j] & 15) : (p[4 + j - 32] >> 4);
        break;
    case QT_Q3_G64:
        p = row + i / 64 * 28; d = h2f(p); m = h2f(p + 2);
        q = ((p[4 + j % 16] >> (2 * (j / 16))) & 3) | (((p[20 + j % 8] >> (j / 8)) & 1) << 2);
        break;
    case QT_Q2_G64:
        p = row + i / 64 * 20; d = h2f(p); m = h2f(p + 2);
        q = (p[4 + j % 16] >> (2 * (j / 16))) & 3;
        break;
    default: *mag = 0; return NAN;
    }
    float dq = d * (float)q;
    *mag = fabs(dq) + fabs(m);
    return dq + m;
}

/* Random rows of type t. ints: every weight is a small integer or half-integer (d = 0.5, m = -4,
 * dense values in [-8, 8]) so that fp32 and fp16 sums are exact. */
static uint8_t *make_weights(struct rng *g, enum qtype t, int64_t n, int64_t rows, bool ints) {
    size_t rb = row_bytes(t, n), nb = rb * (size_t)rows;
    uint8_t *w = malloc(nb ? nb : 1);
    if (!w) exit(2);
    if (!is_quant(t)) {
        for (int64_t i = 0; i < n * rows; i++) {
            float v = ints ? (float)((int)(rng_u64(g) % 17) - 8) : rng_uniform(g, -1.f, 1.f);
            if (t == QT_F32) memcpy(w + 4 * i, &v, 4);
            else {
                uint16_t h = t == QT_F16 ? f32_to_f16(v) : f32_to_bf16(v);
                w[2 * i] = (uint8_t)h; w[2 * i + 1] = (uint8_t)(h >> 8);
            }
        }
        return w;
    }
    for (size_t i = 0; i < nb; i++) w[i] = (uint8_t)rng_u64(g);  // every code pattern
    size_t bb = row_bytes(t, 64);
    for (size_t b = 0; b < nb / bb; b++) {
        uint8_t *p = w + b * bb;
        f16_t d = ints ? f32_to_f16(0.5f) : f32_to_f16(rng_uniform(g, 0.001f, t == QT_Q8_G64 ? 0.01f : 0.1f));
        f16_t m = ints ? f32_to_f16(-4.f) : f32_to_f16(rng_uniform(g, -0.5f, 0.f));
        p[0] = (uint8_t)d; p[1] = (uint8_t)(d >> 8);
        if (t != QT_Q8_G64) { p[2] = (uint8_t)m; p[3] = (uint8_t)(m >> 8); }
    }
    return w;
}

// ------------------------------------------------------------------------------------------------
// matmul: out(t, d) = x(t, n) @ W(d, n)^T

static void test_matmul(struct rng *g, enum qtype wt, int64_t n, int64_t d, int64_t t, bool ints) {
    uint8_t *w = make_weights(g, wt, n, d, ints);
    float *x = malloc(sizeof(float) * (size_t)(n * t));
    float *wrow = malloc(sizeof(float) * (size_t)n);
    double *mag = malloc(sizeof(double) * (size_t)n);
    float *got = malloc(sizeof(float) * (size_t)(d * t));
    if (!x || !wrow || !mag || !got) exit(2);
    for (int64_t i = 0; i < n * t; i++)
        x[i] = ints ? (float)((int)(rng_u64(g) % 17) - 8) : rng_uniform(g, -1.f, 1.f);
    size_t wb = row_bytes(wt, n) * (size_t)d, xb = sizeof(float) * (size_t)(n * t),
           ob = sizeof(float) * (size_t)(d * t);
    void *dw = dev_put(w, wb), *dx = dev_put(x, xb), *dout = dev_put(NULL, ob);
    struct tensor tw = tens(wt, n, d, dw, wb), tx = tens(QT_F32, n, t, dx, xb),
                  to = tens(QT_F32, d, t, dout, ob);
    be->ops->matmul(be, &to, &tx, &tw);
    sync_ok("matmul");
    dev_get(got, dout, ob);
    CHECK(dev_guard_ok(dout, ob), "matmul %s wrote past out (n=%lld d=%lld t=%lld)", tname(wt),
          (long long)n, (long long)d, (long long)t);
    /* Tolerance (reduction rule, S = sum |x| * mag):
     *  t == 1 (fused GEMV, fp32): 8 sqrt(n) eps S, plus 2 eps S for quant types because the kernel
     *    computes d*sum(x q) + m*sum(x) exactly where the reference rounds each d*q + m.
     *  t > 1 via cuBLAS: f32 W is plain SGEMM (8 sqrt(n) eps S); otherwise x (and the dequantized
     *    W) are rounded to fp16 (2^-11 relative each) and tensor cores accumulate in fp32
     *    (16 sqrt(n) eps S allows for their truncating adds).
     *  ints: every product and partial sum is an integer or half-integer < 2^24: exact, tol 0. */
    double rel;
    if (t == 1) rel = 8 * sqrt((double)n) * EPS + (is_quant(wt) ? 2 * EPS : 0);
    else if (wt == QT_F32) rel = 8 * sqrt((double)n) * EPS;
    else rel = (wt == QT_F16 ? 1 : 2) * EPS16 + 16 * sqrt((double)n) * EPS;
    for (int64_t r = 0; r < d; r++) {
        const uint8_t *row = w + (size_t)r * row_bytes(wt, n);
        for (int64_t i = 0; i < n; i++) wrow[i] = deq(wt, row, i, &mag[i]);
        for (int64_t k = 0; k < t; k++) {
            double ref = 0, s = 0;
            const float *xk = x + k * n;
            for (int64_t i = 0; i < n; i++) { ref += (double)xk[i] * wrow[i]; s += fabs(xk[i]) * mag[i]; }
            double tol = ints ? 0.0 : rel * s;
            CHECK_NEAR(got[k * d + r], ref, tol, "matmul %s n=%lld d=%lld t=%lld%s row=%lld tok=%lld",
                       tname(wt), (long long)n, (long long)d, (long long)t, ints ? " ints" : "",
                       (long long)r, (long long)k);
        }
    }
    be->ops->free(be, dw); be->ops->free(be, dx); be->ops->free(be, dout);
    free(w); free(x); free(wrow); free(mag); free(got);
}

static void test_matmuls(struct rng *g) {
    static const enum qtype types[] = {QT_F32, QT_F16, QT_Q8_G64, QT_Q4_G64, QT_Q3_G64, QT_Q2_G64};
    static const int64_t qn[] = {64, 128, 192, 2112, 4160};  // 1, 2, 3, 33 and 65 blocks per row
    static const int64_t dn[] = {1, 3, 7, 17, 33, 63, 127, 129, 2048};
    static const int64_t ds[] = {1, 5, 9, 17};
    static const int64_t ts[] = {1, 2, 7};
    for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++) {
        enum qtype wt = types[ti];
        const int64_t *ns = is_quant(wt) ? qn : dn;
        size_t nn = is_quant(wt) ? sizeof qn / sizeof *qn : sizeof dn / sizeof *dn;
        for (size_t a = 0; a < nn; a++)
            for (size_t b = 0; b < sizeof ds / sizeof *ds; b++)
                for (size_t c = 0; c < sizeof ts / sizeof *ts; c++) test_matmul(g, wt, ns[a], ds[b], ts[c], false);
        // exact small-integer runs: an indexing bug cannot hide in the tolerance
        test_matmul(g, wt, is_quant(wt) ? 2112 : 129, 33, 1, true);
        test_matmul(g, wt, is_quant(wt) ? 2112 : 129, 33, 7, true);
        // TinyLlama shapes: wq/wo (2048 -> 2048), wk/wv (2048 -> 256), w1/w3 (2048 -> 5632), w2 (5632 -> 2048)
        static const int64_t tiny[][2] = {{2048, 2048}, {2048, 256}, {2048, 5632}, {5632, 2048}};
        for (size_t s = 0; s < 4; s++) {
            test_matmul(g, wt, tiny[s][0], tiny[s][1], 1, false);
            test_matmul(g, wt, tiny[s][0], tiny[s][1], 7, false);
        }
    }
    // output head (2048 -> 32000) and a row long enough to need > 48 KB of shared memory
    test_matmul(g, QT_Q4_G64, 2048, 32000, 1, false);
    test_matmul(g, QT_Q4_G64, 2048, 32000, 7, false);
    test_matmul(g, QT_F16, 2048, 32000, 1, false);
    test_matmul(g, QT_Q4_G64, 16000, 3, 1, false);
    test_matmul(g, QT_Q8_G64, 16000, 3, 1, false);
    test_matmul(g, QT_Q2_G64, 16000, 3, 1, true);
}

// ------------------------------------------------------------------------------------------------
// embed: rows dequantized to f32 exactly as the scalar reference does, so tol = 0

static void test_embed(struct rng *g, enum qtype tt, int64_t n, int n_tok) {
    const int64_t vocab = 37;
    uint8_t *w = make_weights(g, tt, n, vocab, false);
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)n_tok);
    float *got = malloc(sizeof(float) * (size_t)(n * n_tok));
    if (!tok || !got) exit(2);
    for (int i = 0; i < n_tok; i++) tok[i] = i == 0 ? 0 : i == 1 ? (int32_t)vocab - 1 : (int32_t)(rng_u64(g) % vocab);
    size_t wb = row_bytes(tt, n) * (size_t)vocab, ob = sizeof(float) * (size_t)(n * n_tok);
    void *dw = dev_put(w, wb), *dout = dev_put(NULL, ob);
    struct tensor tw = tens(tt, n, vocab, dw, wb), to = tens(QT_F32, n, n_tok, dout, ob);
    be->ops->embed(be, &to, &tw, tok, n_tok);
    sync_ok("embed");
    dev_get(got, dout, ob);
    CHECK(dev_guard_ok(dout, ob), "embed %s wrote past out", tname(tt));
    for (int k = 0; k < n_tok; k++)
        for (int64_t i = 0; i < n; i++) {
            double mag;
            float ref = deq(tt, w + (size_t)tok[k] * row_bytes(tt, n), i, &mag);
            CHECK(memcmp(&got[k * n + i], &ref, 4) == 0, "embed %s n=%lld tok %d (id %d) i=%lld: got %.9g ref %.9g",
                  tname(tt), (long long)n, k, tok[k], (long long)i, got[k * n + i], ref);
        }
    be->ops->free(be, dw); be->ops->free(be, dout);
    free(w); free(tok); free(got);
}

// ------------------------------------------------------------------------------------------------
// rmsnorm, swiglu, add

static void test_rmsnorm(struct rng *g, int64_t n, int64_t t, bool in_place) {
    float *x = rng_f32(g, (size_t)(n * t), -2.f, 2.f), *w = rng_f32(g, (size_t)n, 0.5f, 1.5f);
    float *got = malloc(sizeof(float) * (size_t)(n * t));
    const float eps = 1e-5f;
    size_t xb = sizeof(float) * (size_t)(n * t);
    void *dx = dev_put(x, xb), *dw = dev_put(w, sizeof(float) * (size_t)n);
    void *dout = in_place ? dx : dev_put(NULL, xb);
    struct tensor tx = tens(QT_F32, n, t, dx, xb), tw = tens(QT_F32, n, 1, dw, 4 * (size_t)n),
                  to = tens(QT_F32, n, t, dout, xb);
    be->ops->rmsnorm(be, &to, &tx, &tw, eps);
    sync_ok("rmsnorm");
    dev_get(got, dout, xb);
    CHECK(dev_guard_ok(dout, xb), "rmsnorm wrote past out");
    for (int64_t k = 0; k < t; k++) {
        double ss = 0;
        for (int64_t i = 0; i < n; i++) ss += (double)x[k * n + i] * x[k * n + i];
        double inv = 1.0 / sqrt(ss / n + eps);
        for (int64_t i = 0; i < n; i++) {
            double ref = w[i] * (x[k * n + i] * inv);
            // sum of n squares (no cancellation): 8 sqrt(n) eps relative; sqrt, divide, 2 products: 8 eps
            double tol = (8 * sqrt((double)n) + 8) * EPS * fabs(ref);
            CHECK_NEAR(got[k * n + i], ref, tol, "rmsnorm n=%lld t=%lld%s i=%lld", (long long)n,
                       (long long)t, in_place ? " in place" : "", (long long)i);
        }
    }
    be->ops->free(be, dx); be->ops->free(be, dw);
    if (!in_place) be->ops->free(be, dout);
    free(x); free(w); free(got);
}

static void test_elementwise(struct rng *g, int64_t n, bool in_place) {
    float *a = rng_f32(g, (size_t)n, -8.f, 8.f), *b = rng_f32(g, (size_t)n, -3.f, 3.f);
    float *got = malloc(sizeof(float) * (size_t)n);
    size_t nb = sizeof(float) * (size_t)n;
    for (int op = 0; op < 2; op++) {
        void *da = dev_put(a, nb), *db = dev_put(b, nb), *dout = in_place ? da : dev_put(NULL, nb);
        struct tensor ta = tens(QT_F32, n, 1, da, nb), tb = tens(QT_F32, n, 1, db, nb),
                      to = tens(QT_F32, n, 1, dout, nb);
        if (op == 0) be->ops->swiglu(be, &to, &ta, &tb);
        else be->ops->add(be, &to, &ta, &tb);
        sync_ok(op ? "add" : "swiglu");
        dev_get(got, dout, nb);
        CHECK(dev_guard_ok(dout, nb), "%s wrote past out", op ? "add" : "swiglu");
        for (int64_t i = 0; i < n; i++) {
            if (op == 0) {  // expf (2 ulp), 1 + e, divide, multiply: 8 eps relative
                double ref = a[i] / (1.0 + exp(-(double)a[i])) * b[i];
                CHECK_NEAR(got[i], ref, 8 * EPS * fabs(ref), "swiglu n=%lld i=%lld", (long long)n, (long long)i);
            } else {  // one IEEE fp32 add on both sides: exact match
                float ref = a[i] + b[i];
                CHECK_NEAR(got[i], ref, 0.0, "add n=%lld i=%lld", (long long)n, (long long)i);
            }
        }
        be->ops->free(be, da); be->ops->free(be, db);
        if (!in_place) be->ops->free(be, dout);
    }
    free(a); free(b); free(got);
}

// ------------------------------------------------------------------------------------------------
// rope: the reference computes cos/sin in double like the kernel; rotation in fp32 as written

static void test_rope(struct rng *g, int64_t t, int nh, int hd, int pos0, float theta, int style) {
    int64_t rs = (int64_t)nh * hd + 8;  // rows longer than the heads: the tail must stay untouched
    float *x = rng_f32(g, (size_t)(rs * t), -1.f, 1.f), *got = malloc(sizeof(float) * (size_t)(rs * t));
    size_t xb = sizeof(float) * (size_t)(rs * t);
    void *dx = dev_put(x, xb);
    struct tensor tx = tens(QT_F32, rs, t, dx, xb);
    be->ops->rope(be, &tx, nh, hd, pos0, theta, style);
    sync_ok("rope");
    dev_get(got, dx, xb);
    CHECK(dev_guard_ok(dx, xb), "rope wrote past x");
    for (int64_t k = 0; k < t; k++) {
        for (int h = 0; h < nh; h++)
            for (int i = 0; i < hd / 2; i++) {
                double ang = (double)(pos0 + k) * pow((double)theta, -2.0 * i / hd);
                float c = (float)cos(ang), s = (float)sin(ang);
                int a = style == 0 ? 2 * i : i, b = style == 0 ? 2 * i + 1 : i + hd / 2;
                float x0 = x[k * rs + h * hd + a], x1 = x[k * rs + h * hd + b];
                float p = x0 * c, q = x1 * s, r0 = p - q, u = x0 * s, v = x1 * c, r1 = u + v;
                // identical math; 4 eps covers a 1-ulp difference of cos/sin between libms
                double tol = 4 * EPS * (fabs(x0) + fabs(x1));
                CHECK_NEAR(got[k * rs + h * hd + a], r0, tol, "rope style %d pos0 %d hd %d t %lld h %d i %d",
                           style, pos0, hd, (long long)k, h, i);
                CHECK_NEAR(got[k * rs + h * hd + b], r1, tol, "rope style %d pos0 %d hd %d t %lld h %d i %d",
                           style, pos0, hd, (long long)k, h, i);
            }
        for (int64_t i = (int64_t)nh * hd; i < rs; i++)
            CHECK(memcmp(&got[k * rs + i], &x[k * rs + i], 4) == 0, "rope touched the row tail");
    }
    be->ops->free(be, dx);
    free(x); free(got);
}

// ------------------------------------------------------------------------------------------------
// set_rows: f32 -> f32/f16/bf16 with round-to-nearest-even, other rows untouched

static void test_set_rows(struct rng *g, enum qtype dt) {
    const int64_t n = 96, n_ctx = 10, row0 = 4, k = 3;
    size_t es = dt == QT_F32 ? 4 : 2, db = es * (size_t)(n * n_ctx), sb = 4 * (size_t)(n * k);
    uint8_t *init = malloc(db), *got = malloc(db);
    float *src = rng_f32(g, (size_t)(n * k), -4.f, 4.f);
    for (size_t i = 0; i < db; i++) init[i] = (uint8_t)rng_u64(g);
    const float special[] = {0.f, -0.f, 1e-6f, -3e-7f, 65504.f, 65519.f, 65520.f, 7e4f, -1e30f, 1.0009765625f};
    for (size_t i = 0; i < sizeof special / sizeof *special; i++) src[i] = special[i];
    void *dd = dev_put(init, db), *ds = dev_put(src, sb);
    struct tensor td = tens(dt, n, n_ctx, dd, db), ts = tens(QT_F32, n, k, ds, sb);
    be->ops->set_rows(be, &td, row0, &ts);
    sync_ok("set_rows");
    dev_get(got, dd, db);
    CHECK(dev_guard_ok(dd, db), "set_rows wrote past dst");
    for (int64_t r = 0; r < n_ctx; r++)
        for (int64_t i = 0; i < n; i++) {
            size_t off = es * (size_t)(r * n + i);
            uint8_t want[4];
            if (r < row0 || r >= row0 + k) memcpy(want, init + off, es);
            else {
                float v = src[(r - row0) * n + i];
                if (dt == QT_F32) memcpy(want, &v, 4);
                else {
                    uint16_t h = dt == QT_F16 ? f32_to_f16(v) : f32_to_bf16(v);
                    want[0] = (uint8_t)h; want[1] = (uint8_t)(h >> 8);
                }
            }
            CHECK(memcmp(got + off, want, es) == 0, "set_rows %s row %lld i %lld", tname(dt), (long long)r,
                  (long long)i);
        }
    be->ops->free(be, dd); be->ops->free(be, ds);
    free(init); free(got); free(src);
}

// ------------------------------------------------------------------------------------------------
// attention: double softmax reference; cache rows past pos0 + t are NaN, so reading them fails

static void store_kv(uint8_t *dst, enum qtype kt, size_t i, float v) {
    if (kt == QT_F32) { memcpy(dst + 4 * i, &v, 4); return; }
    uint16_t h = kt == QT_F16 ? f32_to_f16(v) : f32_to_bf16(v);
    if (isnan(v)) h = kt == QT_F16 ? 0x7e00 : 0x7fc0;
    dst[2 * i] = (uint8_t)h; dst[2 * i + 1] = (uint8_t)(h >> 8);
}
static float load_kv(const uint8_t *src, enum qtype kt, size_t i) {
    double mag;
    return deq(kt, src, (int64_t)i, &mag);
}

static void test_attention(struct rng *g, enum qtype kt, int nh, int nkv, int hd, int64_t t, int pos0) {
    const int64_t n_ctx = pos0 + t + 3, qd = (int64_t)nh * hd, kd = (int64_t)nkv * hd;
    size_t es = kt == QT_F32 ? 4 : 2, kb = es * (size_t)(n_ctx * kd), qb = 4 * (size_t)(t * qd);
    float *q = rng_f32(g, (size_t)(t * qd), -1.f, 1.f), *got = malloc(qb);
    uint8_t *k = malloc(kb), *v = malloc(kb);
    double *sc = malloc(sizeof(double) * (size_t)n_ctx);
    for (int64_t p = 0; p < n_ctx; p++)
        for (int64_t i = 0; i < kd; i++) {
            bool unwritten = p >= pos0 + t;
            store_kv(k, kt, (size_t)(p * kd + i), unwritten ? NAN : rng_uniform(g, -1.f, 1.f));
            store_kv(v, kt, (size_t)(p * kd + i), unwritten ? NAN : rng_uniform(g, -1.f, 1.f));
        }
    void *dq = dev_put(q, qb), *dk = dev_put(k, kb), *dv = dev_put(v, kb), *dout = dev_put(NULL, qb);
    struct tensor tq = tens(QT_F32, qd, t, dq, qb), tk = tens(kt, kd, n_ctx, dk, kb),
                  tv = tens(kt, kd, n_ctx, dv, kb), to = tens(QT_F32, qd, t, dout, qb);
    be->ops->attention(be, &to, &tq, &tk, &tv, nh, nkv, hd, pos0);
    sync_ok("attention");
    dev_get(got, dout, qb);
    CHECK(dev_guard_ok(dout, qb), "attention wrote past out");
    const double scale = 1.0 / sqrt((double)hd);
    for (int64_t tq_ = 0; tq_ < t; tq_++)
        for (int h = 0; h < nh; h++) {
            int kvh = h / (nh / nkv);
            int64_t np = pos0 + tq_ + 1;
            const float *qh = q + tq_ * qd + (int64_t)h * hd;
            double mx = -INFINITY, dmax = 0, smax = 0, sum = 0;
            for (int64_t p = 0; p < np; p++) {
                double s = 0, sa = 0;
                for (int i = 0; i < hd; i++) {
                    double kv = load_kv(k, kt, (size_t)(p * kd + (int64_t)kvh * hd + i));
                    s += qh[i] * kv; sa += fabs(qh[i] * kv);
                }
                sc[p] = s * scale;
                if (sc[p] > mx) mx = sc[p];
                if (sa * scale > dmax) dmax = sa * scale;
                if (fabs(sc[p]) > smax) smax = fabs(sc[p]);
            }
            for (int64_t p = 0; p < np; p++) { sc[p] = exp(sc[p] - mx); sum += sc[p]; }
            // score error delta: fp32 dot (8 sqrt(hd) eps sum|q k|) + scale and s - max (4 eps |s|);
            // softmax is 2-Lipschitz in relative terms, then the weighted sum over np positions.
            double delta = 8 * sqrt((double)hd) * EPS * dmax + 4 * EPS * smax;
            for (int i = 0; i < hd; i++) {
                double ref = 0, pv = 0;
                for (int64_t p = 0; p < np; p++) {
                    double vv = load_kv(v, kt, (size_t)(p * kd + (int64_t)kvh * hd + i));
                    ref += sc[p] / sum * vv; pv += sc[p] / sum * fabs(vv);
                }
                double tol = (2 * delta + (8 * sqrt((double)np) + 8) * EPS) * pv;
                CHECK_NEAR(got[tq_ * qd + (int64_t)h * hd + i], ref, tol,
                           "attention %s heads %d/%d hd %d t %lld pos0 %d: tok %lld head %d dim %d", tname(kt),
                           nh, nkv, hd, (long long)t, pos0, (long long)tq_, h, i);
            }
        }
    be->ops->free(be, dq); be->ops->free(be, dk); be->ops->free(be, dv); be->ops->free(be, dout);
    free(q); free(got); free(k); free(v); free(sc);
}

// ------------------------------------------------------------------------------------------------
// memory accounting, error reporting, graph capture

static void test_memory_and_errors(void) {
    size_t used0 = backend_cuda_mem_used(be);
    void *p = be->ops->alloc(be, 1000);
    CHECK(p != NULL, "alloc(1000) failed");
    CHECK(backend_cuda_mem_used(be) == used0 + 1024, "mem_used %zu, expected %zu (1000 B padded to 1024)",
          backend_cuda_mem_used(be), used0 + 1024);
    CHECK(backend_cuda_mem_peak(be) >= backend_cuda_mem_used(be), "peak below used");
    be->ops->free(be, p);
    CHECK(backend_cuda_mem_used(be) == used0, "free did not return the bytes");
    CHECK(be->ops->alloc(be, (size_t)1 << 46) == NULL, "alloc of 64 TiB succeeded?");
    sync_ok("after failed alloc");  // a failed alloc is reported by NULL, not as a deferred error

    // A second backend: its errors are sticky, so they must not poison `be`.
    struct err e = {0};
    struct backend *b2 = backend_cuda_create(0, &e);
    CHECK(b2 != NULL, "second backend: %s", e.msg);
    if (!b2) return;
    void *m = b2->ops->alloc(b2, 4096);
    struct tensor x = tens(QT_F32, 64, 1, m, 256), w = tens(QT_Q4_G64, 128, 4, m, 4 * 72),
                  o = tens(QT_F32, 4, 1, m, 16);
    b2->ops->matmul(b2, &o, &x, &w);  // x has 64 columns, W has 128: shape error
    int rc = b2->ops->sync(b2, &e);
    CHECK(rc == ERR_ARG && strstr(e.msg, "matmul"), "shape error: sync returned %d (%s)", rc, e.msg);
    struct tensor bad = tens(QT_GGML_Q4_K, 256, 1, m, 144);
    CHECK(!b2->ops->supports(b2, QT_GGML_Q4_K) && b2->ops->supports(b2, QT_Q3_G64), "supports()");
    b2->ops->matmul(b2, &o, &x, &bad);
    rc = b2->ops->sync(b2, &e);
    CHECK(rc == ERR_ARG, "errors must stay sticky (first kept): got %d", rc);
    b2->ops->free(b2, m);
    b2->ops->destroy(b2);
}

/* rmsnorm -> matmul (q4, t = 1) -> add, captured twice (instantiate, then in-place update), must
 * equal the same ops run eagerly, bit for bit (same kernels, same order). */
static void test_graph(struct rng *g) {
    const int64_t n = 256, d = 256;
    uint8_t *w = make_weights(g, QT_Q4_G64, n, d, false);
    float *nw = rng_f32(g, n, 0.5f, 1.5f), *emb = rng_f32(g, (size_t)(n * 5), -1.f, 1.f);
    float eager[256], graphed[256];
    size_t wb = row_bytes(QT_Q4_G64, n) * d, xb = 4 * (size_t)n;
    void *dw = dev_put(w, wb), *dnw = dev_put(nw, xb), *demb = dev_put(emb, 5 * xb);
    void *dx = dev_put(NULL, xb), *dh = dev_put(NULL, xb), *dy = dev_put(NULL, xb);
    struct tensor tw = tens(QT_Q4_G64, n, d, dw, wb), tnw = tens(QT_F32, n, 1, dnw, xb),
                  temb = tens(QT_F32, n, 5, demb, 5 * xb), tx = tens(QT_F32, n, 1, dx, xb),
                  th = tens(QT_F32, n, 1, dh, xb), ty = tens(QT_F32, d, 1, dy, xb);
    for (int step = 0; step < 3; step++) {
        int32_t tok = (int32_t)(rng_u64(g) % 5);
        for (int mode = 0; mode < 2; mode++) {
            if (mode == 1) CHECK(backend_cuda_graph_begin(be) == 0, "graph_begin");
            be->ops->embed(be, &tx, &temb, &tok, 1);
            be->ops->rmsnorm(be, &th, &tx, &tnw, 1e-5f);
            be->ops->matmul(be, &ty, &th, &tw);
            be->ops->add(be, &ty, &ty, &tx);
            if (mode == 1) CHECK(backend_cuda_graph_end_and_launch(be) == 0, "graph_end_and_launch");
            sync_ok("graph");
            dev_get(mode ? graphed : eager, dy, xb);
        }
        CHECK(memcmp(eager, graphed, sizeof eager) == 0, "graph step %d differs from eager ops", step);
    }
    void *bufs[] = {dw, dnw, demb, dx, dh, dy};
    for (int i = 0; i < 6; i++) be->ops->free(be, bufs[i]);
    free(w); free(nw); free(emb);
}

int main(void) {
    test_begin("test_cuda_ops");
    if (!backend_cuda_available()) test_skip("no CUDA device (or built without CUDA)");
    struct err e = {0};
    be = backend_cuda_create(0, &e);
    if (!be) { fprintf(stderr, "FAIL backend_cuda_create: %s\n", e.msg); return 1; }
    struct rng g;
    rng_init(&g, 0);

    static const enum qtype et[] = {QT_F32, QT_F16, QT_BF16, QT_Q8_G64, QT_Q4_G64, QT_Q3_G64, QT_Q2_G64};
    for (size_t i = 0; i < sizeof et / sizeof *et; i++)
        for (int64_t n = 64; n <= 2048; n *= 32) {
            test_embed(&g, et[i], n, 1);
            test_embed(&g, et[i], n, 5);
            test_embed(&g, et[i], n, 40);  // > 16 ids: copied to the device
        }
    static const int64_t rn[] = {1, 7, 64, 2048, 5632};
    for (size_t i = 0; i < 5; i++) { test_rmsnorm(&g, rn[i], 3, false); test_rmsnorm(&g, rn[i], 3, true); }
    static const int64_t en[] = {1, 7, 3 * 5632};
    for (size_t i = 0; i < 3; i++) { test_elementwise(&g, en[i], false); test_elementwise(&g, en[i], true); }
    for (int style = 0; style < 2; style++) {
        test_rope(&g, 3, 4, 64, 0, 10000.f, style);
        test_rope(&g, 3, 4, 128, 5000, 500000.f, style);
        test_rope(&g, 1, 32, 64, 2047, 10000.f, style);
    }
    test_set_rows(&g, QT_F32);
    test_set_rows(&g, QT_F16);
    test_set_rows(&g, QT_BF16);
    static const enum qtype kts[] = {QT_F32, QT_F16, QT_BF16};
    for (size_t i = 0; i < 3; i++) {
        test_attention(&g, kts[i], 8, 2, 64, 1, 0);     // decode, first token
        test_attention(&g, kts[i], 8, 2, 64, 1, 7);
        test_attention(&g, kts[i], 32, 4, 64, 1, 600);  // TinyLlama heads, 3 softmax chunks
        test_attention(&g, kts[i], 8, 2, 128, 7, 0);    // prefill
        test_attention(&g, kts[i], 4, 1, 256, 5, 300);  // head_dim 256, prefill after a prefix
        test_attention(&g, kts[i], 4, 4, 80, 3, 254);   // MHA, positions 255..257 cross a chunk
    }
    test_matmuls(&g);
    test_graph(&g);
    test_memory_and_errors();
    be->ops->destroy(be);
    return test_end();
}
