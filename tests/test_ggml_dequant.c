/* tests/test_ggml_dequant.c: ggml load-only formats (quant/ggml_quants.c).
 * Without arguments: hand-built blocks with known values for Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K,
 * plus the Q8_0/Q4_0/Q4_1 RTN quantizer bounds. With --ref FILE: replays the records written by
 * tests/ggml_dequant_ref.py (gguf-py) - see tests/test_ggml_dequant_py.sh. */
#include "quant/ggml_quants.h"
#include "tests/test.h"

// fp16 bit patterns of exactly representable values
#define H_0_5 0x3800    // 0.5
#define H_0_25 0x3400   // 0.25
#define H_M1 0xbc00     // -1.0
#define H_0_125 0x3000  // 0.125
#define H_0_0625 0x2c00 // 0.0625

// ------------------------------------------------------------------------------------------------
// hand-built blocks: every expected value is a small multiple of a power of two, so fp32 is exact
// and the comparisons use tol = 0.

static void test_q8_0(void) {
    struct ggml_blk_q8_0 b[2];
    float out[64], want[64];
    for (int g = 0; g < 2; g++) {
        b[g].d = g ? H_0_25 : H_0_5;
        for (int i = 0; i < 32; i++) {
            b[g].qs[i] = (int8_t)(g ? 127 - 8 * i : i - 16);
            want[32 * g + i] = (g ? 0.25f : 0.5f) * (float)b[g].qs[i];
        }
    }
    b[1].qs[31] = -128;
    want[63] = 0.25f * -128.0f;
    ggml_dequantize_row_q8_0(out, b, 64);
    for (int i = 0; i < 64; i++) CHECK_NEAR(out[i], want[i], 0, "q8_0 i=%d", i);
}

static void test_q4_0_q4_1(void) {
    struct ggml_blk_q4_0 a;
    struct ggml_blk_q4_1 b;
    float out[32];
    a.d = H_0_25;
    b.d = H_0_5, b.m = H_M1;
    for (int j = 0; j < 16; j++) a.qs[j] = b.qs[j] = (uint8_t)(j | (15 - j) << 4);
    ggml_dequantize_row_q4_0(out, &a, 32);
    for (int j = 0; j < 16; j++) {   // weight j: low nibble j; weight j+16: high nibble 15-j
        CHECK_NEAR(out[j], 0.25f * (j - 8), 0, "q4_0 j=%d", j);
        CHECK_NEAR(out[j + 16], 0.25f * (7 - j), 0, "q4_0 j=%d", j + 16);
    }
    ggml_dequantize_row_q4_1(out, &b, 32);
    for (int j = 0; j < 16; j++) {
        CHECK_NEAR(out[j], 0.5f * j - 1.0f, 0, "q4_1 j=%d", j);
        CHECK_NEAR(out[j + 16], 0.5f * (15 - j) - 1.0f, 0, "q4_1 j=%d", j + 16);
    }
}

/* Pack 8 six-bit scales and mins the way the K-quant spec describes (inverse of the decoder). */
static void pack_k_scales(uint8_t s[12], const int sc[8], const int mn[8]) {
    for (int j = 0; j < 4; j++) {
        s[j] = (uint8_t)(sc[j] | (sc[j + 4] >> 4) << 6);
        s[j + 4] = (uint8_t)(mn[j] | (mn[j + 4] >> 4) << 6);
        s[j + 8] = (uint8_t)((sc[j + 4] & 15) | (mn[j + 4] & 15) << 4);
    }
}

static void test_q4_K_q5_K(struct rng *g) {
    // sub-block s = i/32 has scale sc[s] and min mn[s]; the values exercise all 6 bits
    const int sc[8] = {1, 63, 17, 32, 48, 5, 60, 33}, mn[8] = {0, 62, 3, 41, 63, 16, 31, 1};
    struct ggml_blk_q4_K b4;
    struct ggml_blk_q5_K b5;
    uint8_t q[256];
    b4.d = b5.d = H_0_125;
    b4.dmin = b5.dmin = H_0_0625;
    pack_k_scales(b4.scales, sc, mn);
    pack_k_scales(b5.scales, sc, mn);
    memset(b4.qs, 0, sizeof b4.qs), memset(b5.qs, 0, sizeof b5.qs), memset(b5.qh, 0, sizeof b5.qh);
    for (int i = 0; i < 256; i++) {
        q[i] = (uint8_t)(rng_u64(g) & 31);
        int s = i / 32, l = i % 32;
        // 32-byte chunk s/2: sub-block 2c in the low nibbles, 2c+1 in the high nibbles
        b4.qs[32 * (s / 2) + l] |= (uint8_t)((q[i] & 15) << (4 * (s % 2)));
        b5.qs[32 * (s / 2) + l] |= (uint8_t)((q[i] & 15) << (4 * (s % 2)));
        b5.qh[l] |= (uint8_t)((q[i] >> 4) << s);   // fifth bit: bit s of qh[l]
    }
    float out[256];
    ggml_dequantize_row_q4_K(out, &b4, 256);
    for (int i = 0; i < 256; i++)
        CHECK_NEAR(out[i], 0.125f * sc[i / 32] * (q[i] & 15) - 0.0625f * mn[i / 32], 0,
                   "q4_K i=%d", i);
    ggml_dequantize_row_q5_K(out, &b5, 256);
    for (int i = 0; i < 256; i++)
        CHECK_NEAR(out[i], 0.125f * sc[i / 32] * q[i] - 0.0625f * mn[i / 32], 0, "q5_K i=%d", i);
}

static void test_q6_K(struct rng *g) {
    struct ggml_blk_q6_K b;
    int q[256];
    memset(&b, 0, sizeof b);
    b.d = H_0_25;
    for (int j = 0; j < 16; j++) b.scales[j] = (int8_t)(j % 2 ? -3 * j - 1 : 7 * j - 64);
    for (int i = 0; i < 256; i++) {
        q[i] = (int)(rng_u64(g) & 63);
        // i = 128h + 32k + l: low nibble in ql[64h + l + 32(k&1)] at shift 4(k>>1),
        // high 2 bits in qh[32h + l] at shift 2k; the scale of weight i is scales[i/16]
        int h = i / 128, k = (i % 128) / 32, l = i % 32;
        b.ql[64 * h + l + 32 * (k & 1)] |= (uint8_t)((q[i] & 15) << (4 * (k >> 1)));
        b.qh[32 * h + l] |= (uint8_t)((q[i] >> 4) << (2 * k));
    }
    float out[256];
    ggml_dequantize_row_q6_K(out, &b, 256);
    for (int i = 0; i < 256; i++)
        CHECK_NEAR(out[i], 0.25f * b.scales[i / 16] * (q[i] - 32), 0, "q6_K i=%d", i);
}

/* RTN quantizers: Q8_0 and Q4_1 are within d/2 (+ fp16 rounding of d and m, which moves every
 * reconstruction by at most |q| * |d - fp16(d)| + |m - fp16(m)|); Q4_0 clamps the extreme opposite
 * to the signed max at q=15, so its bound is d (ggml's documented behaviour). */
static void test_ggml_quantize(struct rng *g) {
    const int n = 32 * 64;
    float *x = rng_f32(g, n, -2.0f, 2.0f), *y = guarded_alloc_f32(n);
    for (int i = 0; i < 32; i++) x[i] = 0.0f, x[32 + i] = 0.5f, x[64 + i] = -1.0f - i;
    void *buf = malloc((size_t)n * 2);
    for (int t = 0; t < 3; t++) {
        if (t == 0) ggml_quantize_row_q8_0(buf, x, n), ggml_dequantize_row_q8_0(y, buf, n);
        if (t == 1) ggml_quantize_row_q4_0(buf, x, n), ggml_dequantize_row_q4_0(y, buf, n);
        if (t == 2) ggml_quantize_row_q4_1(buf, x, n), ggml_dequantize_row_q4_1(y, buf, n);
        for (int b = 0; b < n / 32; b++) {
            float amax = 0, mn = x[32 * b], mx = x[32 * b];
            for (int i = 0; i < 32; i++) {
                float v = x[32 * b + i];
                amax = fmaxf(amax, fabsf(v)), mn = fminf(mn, v), mx = fmaxf(mx, v);
            }
            double d = t == 0 ? amax / 127.0 : t == 1 ? amax / 8.0 : (mx - mn) / 15.0;
            // fp16 relative rounding 2^-11 of d (times max |q|) and of m, plus fp32 slack
            double qmax = t == 0 ? 127 : t == 1 ? 8 : 15;
            double slack = qmax * d * 0x1p-11 + fabs(mn) * 0x1p-11 + 4 * FLT_EPSILON * amax;
            double tol = (t == 1 ? d : d / 2) + slack;
            for (int i = 0; i < 32; i++)
                CHECK_NEAR(y[32 * b + i], x[32 * b + i], tol, "type %d block %d i=%d", t, b, i);
        }
        CHECK(guard_intact(y, n), "dequantize wrote past the end");
    }
    free(x), free(buf), guarded_free(y);
}

// ------------------------------------------------------------------------------------------------
// gguf-py replay (--ref FILE)

static dequantize_row_fn deq_for(int ggml_type) {
    int t = qtype_from_ggml(ggml_type);
    return t < 0 ? NULL : qtype_traits[t].dequantize_row;
}

static int replay(const char *path) {
    size_t len;
    char *buf = read_file_all(path, &len);
    if (!buf) test_skip("cannot read %s", path);
    size_t off = 0;
    int n_rec = 0;
    while (off + 32 <= len) {
        char kind[9] = {0};
        int32_t type, pad;
        int64_t n, nbytes;
        memcpy(kind, buf + off, 8), memcpy(&type, buf + off + 8, 4), memcpy(&pad, buf + off + 12, 4);
        memcpy(&n, buf + off + 16, 8), memcpy(&nbytes, buf + off + 24, 8);
        off += 32;
        if (n <= 0 || nbytes <= 0 || off + (size_t)nbytes + 4 * (size_t)n > len) {
            CHECK(0, "corrupt record %d", n_rec);
            break;
        }
        const uint8_t *raw = (const uint8_t *)buf + off;
        float *vals = malloc((size_t)n * 4);
        memcpy(vals, buf + off + nbytes, (size_t)n * 4);
        off += (size_t)nbytes + 4 * (size_t)n;
        int qt = qtype_from_ggml(type);
        CHECK(qt >= 0, "record %d: unknown ggml type %d", n_rec, type);
        if (qt < 0) { free(vals); continue; }
        const struct qtype_traits *tr = &qtype_traits[qt];
        CHECK(qtype_row_bytes(qt, n) == (size_t)nbytes, "record %d: size", n_rec);
        if (strcmp(kind, "deq") == 0) {
            float *got = guarded_alloc_f32((size_t)n);
            deq_for(type)(got, raw, n);
            int bad = 0;
            for (int64_t b = 0; b < n / tr->group; b++) {
                // same formula, possibly different fp32 association: a few ulps of the block max
                float amax = 0;
                for (int i = 0; i < tr->group; i++) amax = fmaxf(amax, fabsf(vals[b * tr->group + i]));
                for (int i = 0; i < tr->group; i++) {
                    int64_t k = b * tr->group + i;
                    if (!(fabsf(got[k] - vals[k]) <= 4 * FLT_EPSILON * amax)) {
                        if (bad++ < 5)
                            CHECK_NEAR(got[k], vals[k], 4 * FLT_EPSILON * amax, "%s deq rec %d i=%lld",
                                       tr->name, n_rec, (long long)k);
                    }
                }
            }
            test_checks++;
            if (bad) test_failures++;
            CHECK(guard_intact(got, (size_t)n), "%s wrote past the end", tr->name);
            printf("%-5s deq   n=%-8lld %s\n", tr->name, (long long)n, bad ? "MISMATCH" : "ok");
            guarded_free(got);
        } else {
            uint8_t *mine = malloc((size_t)nbytes);
            tr->quantize_row(mine, vals, n);
            int64_t bad = 0;
            for (int64_t b = 0; b < n / tr->group; b++)
                bad += memcmp(mine + b * tr->block_bytes, raw + b * tr->block_bytes,
                              tr->block_bytes) != 0;
            CHECK(bad == 0, "%s quantize: %lld of %lld blocks differ from gguf-py", tr->name,
                  (long long)bad, (long long)(n / tr->group));
            printf("%-5s quant n=%-8lld %lld blocks differ\n", tr->name, (long long)n, (long long)bad);
            free(mine);
        }
        free(vals);
        n_rec++;
    }
    CHECK(n_rec > 0, "no records in %s", path);
    free(buf);
    return n_rec;
}

int main(int argc, char **argv) {
    test_begin("ggml_dequant");
    if (argc == 3 && strcmp(argv[1], "--ref") == 0) {
        printf("replayed %d gguf-py records\n", replay(argv[2]));
        return test_end();
    }
    struct rng g;
    rng_init(&g, 0);
    test_q8_0();
    test_q4_0_q4_1();
    test_q4_K_q5_K(&g);
    test_q6_K(&g);
    test_ggml_quantize(&g);
    return test_end();
}
