/* kernels/cpu/backend_cpu.c: the CPU backend, the reference every other backend is tested against.
 * Weights live in host memory (possibly the loader's mmap); matmul goes to cpu_matmul (ISA dispatch);
 * the small ops are plain C, threaded where the work grows with the context (attention).
 * Test: tests/test_backend_cpu.c */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_kernels.h"
#include "quant/repack.h"

struct cpu_ctx {
    struct threadpool *tp;
    enum cpu_isa isa;
    float *att_scratch;   // (n_threads, GQA group x n_ctx_max) attention scores
    size_t att_cap;       // floats per thread
    float *dec_scratch;   // decode attention (att_decode): per-thread scores and rows, per-chunk partials
    size_t dec_cap;       // floats
    bool oom;             // a deferred allocation failure, reported by sync()
};

static struct cpu_ctx *CTX(struct backend *be) { return (struct cpu_ctx *)be->ctx; }

// ------------------------------------------------------------------------------------------------
// memory

static bool cpu_supports(const struct backend *be, enum qtype t) { return cpu_matmul_supports(t); }

// X8 for the native int8 types when X8 kernels run here and a row is whole superblocks: by default
// on AVX-512 VNNI only; LLM_REPACK=1 also on AVX2 (the AVX2 X8 kernels measured ~2x SLOWER than the
// natural ones in a first ./llm-bench --sweep on a Zen 1 host, cause not yet found); LLM_REPACK=0
// keeps the natural layout (A/B benchmarks, docs/KERNELS.md)
static enum qtype cpu_matrix_layout(const struct backend *be, enum qtype t, int64_t n) {
    const char *env = getenv("LLM_REPACK");
    int x8 = qtype_x8_of(t);
    if (x8 < 0 || n % X8_WEIGHTS != 0 || (CTX((struct backend *)be)->isa != CPU_ISA_AVX512 && !(CTX((struct backend *)be)->isa == CPU_ISA_AVX2 && env && env[0] == '1')) || (env && env[0] == '0'))
        return t;
    return (enum qtype)x8;
}

// Buffers of >= 2 MiB (weight matrices) start on a 2 MiB boundary and ask for transparent huge pages
// on their whole 2 MiB extents (not the tail, so no page beyond the tensor is made resident). With
// THP in "madvise" mode (Debian's default) decode streams them with 512x fewer TLB misses and page
// walks: TinyLlama-shaped decode matmuls +3-6% in a same-process A/B (q2/q3/q4/q8, ./llm-bench
// --sweep style, 2 threads). LLM_HUGEPAGES=0 turns it off.
#define HUGE_BYTES ((size_t)2 << 20)
// transparent huge pages on request: /sys/kernel/mm/transparent_hugepage/enabled says [always] or
// [madvise] (not [never]), and LLM_HUGEPAGES is not 0. Then the engine copies large weights out of
// the file mapping (4 KiB page-cache pages) into cpu_alloc memory: f16/f32 files decode from huge
// pages too, for a one-off copy at load (~0.5 GB/s-bound by page faults of the mapping).
static bool thp_usable(void) {
    const char *env = getenv("LLM_HUGEPAGES");
    if (env && env[0] == '0') return false;
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    if (!f) return false;
    char buf[128] = {0};
    const bool ok = fgets(buf, sizeof buf, f) && !strstr(buf, "[never]");
    fclose(f);
    return ok;
}
static void *cpu_alloc(struct backend *be, size_t nbytes) {
    void *p = NULL;
    size_t n = (nbytes + 63) & ~(size_t)63;  // 64-byte aligned for AVX-512 loads
    const char *env = getenv("LLM_HUGEPAGES");
    const bool huge = n >= HUGE_BYTES && !(env && env[0] == '0');
    if (posix_memalign(&p, huge ? HUGE_BYTES : 64, n ? n : 64) != 0) return NULL;
#ifdef MADV_HUGEPAGE
    if (huge) (void)madvise(p, n & ~(HUGE_BYTES - 1), MADV_HUGEPAGE);   // advice only: failure is fine
#endif
    return p;
}
static void cpu_free(struct backend *be, void *p) { free(p); }
static int cpu_copy(struct backend *be, void *dst, const void *src, size_t n, struct err *e) {
    memcpy(dst, src, n);
    return ERR_OK;
}
static int cpu_sync(struct backend *be, struct err *e) {
    if (CTX(be)->oom) return ERR(e, ERR_OOM, "cpu backend: out of memory for attention scratch");
    return ERR_OK;
}
static void cpu_destroy(struct backend *be) {
    struct cpu_ctx *c = CTX(be);
    threadpool_destroy(c->tp);
    free(c->att_scratch);
    free(c->dec_scratch);
    free(c);
    free(be);
}

// ------------------------------------------------------------------------------------------------
// elementwise and row ops

static void cpu_embed(struct backend *be, struct tensor *out, const struct tensor *table,
                      const int32_t *tokens, int n_tokens) {
    const int64_t dim = table->ne[0];
    const size_t row_bytes = qtype_row_bytes(table->type, dim);
    float *o = out->data;
    for (int t = 0; t < n_tokens; t++) {
        const uint8_t *row = (const uint8_t *)table->data + (size_t)tokens[t] * row_bytes;
        qtype_traits[table->type].dequantize_row(o + (size_t)t * dim, row, dim);
    }
}


static void cpu_op_matmul(struct backend *be, struct tensor *out, const struct tensor *x,
                       const struct tensor *w) {
    struct cpu_ctx *c = CTX(be);
    cpu_matmul(c->tp, c->isa, w->type, out->data, x->data, w->data, w->ne[0], w->ne[1], x->ne[1]);
}

static void cpu_op_matmul_n(struct backend *be, int n, struct tensor *const *outs, const struct tensor *x,
                            const struct tensor *const *ws) {
    struct cpu_ctx *c = CTX(be);
    struct cpu_matmul_part parts[CPU_MATMUL_MAX_PARTS];
    if (n > CPU_MATMUL_MAX_PARTS) {
        for (int i = 0; i < n; i++) cpu_op_matmul(be, outs[i], x, ws[i]);
        return;
    }
    for (int i = 0; i < n; i++)
        parts[i] = (struct cpu_matmul_part){.wt = ws[i]->type, .out = outs[i]->data, .w = ws[i]->data, .d = ws[i]->ne[1]};
    cpu_matmul_multi(c->tp, c->isa, n, parts, x->data, x->ne[0], x->ne[1]);
}

static void cpu_rope(struct backend *be, struct tensor *x, int n_heads, int head_dim, int pos0,
                     float theta, int style) {
    const int64_t row = x->ne[0];
    const int half = head_dim / 2;
    for (int64_t t = 0; t < x->ne[1]; t++) {
        const float pos = (float)(pos0 + t);
        for (int i = 0; i < half; i++) {
            // freq_i = theta^(-2i/head_dim), in float as llama2.c computes it
            float freq = 1.0f / powf(theta, (float)(2 * i) / (float)head_dim);
            float val = pos * freq, fcr = cosf(val), fci = sinf(val);
            for (int h = 0; h < n_heads; h++) {
                float *v = (float *)x->data + t * row + (int64_t)h * head_dim;
                int a = style == 0 ? 2 * i : i, b = style == 0 ? 2 * i + 1 : i + half;
                float v0 = v[a], v1 = v[b];
                v[a] = v0 * fcr - v1 * fci;
                v[b] = v0 * fci + v1 * fcr;
            }
        }
    }
}

static void cpu_set_rows(struct backend *be, struct tensor *dst, int64_t row0, const struct tensor *src) {
    const int64_t n = src->ne[0];
    const size_t rb = qtype_row_bytes(dst->type, n);
    for (int64_t t = 0; t < src->ne[1]; t++) {
        uint8_t *d = (uint8_t *)dst->data + (size_t)(row0 + t) * rb;
        const float *s = (const float *)src->data + t * n;
        if (dst->type == QT_F32) memcpy(d, s, (size_t)n * sizeof(float));
        else qtype_traits[dst->type].quantize_row(d, s, n);
    }
}

// ------------------------------------------------------------------------------------------------
// attention: one task per (token, head), split over threads

struct att_job {
    struct cpu_ctx *c;
    float *out;
    const float *q;
    const struct tensor *kc, *vc;
    int n_heads, n_kv_heads, head_dim, pos0, n_tokens;
};

/* q.k over hd elements with 16 partial sums (lane l sums i = l mod 16, then the lanes in order): the
 * compiler vectorizes it, where a single running sum is a serial chain of fp adds (4 cycles each);
 * this was ~8% of TinyLlama q2 decode at 256 positions. Fixed order, so results are deterministic. */
typedef float v16f __attribute__((vector_size(64)));   // GCC vector extension: lowered per ISA clone
typedef int v16i __attribute__((vector_size(64)));
// (macros, not functions: a vector passed or returned by value has an ISA-dependent ABI)
#define LD16F(v, p) memcpy(&(v), (p), sizeof(v16f))
#define ST16F(p, v) memcpy((p), &(v), sizeof(v16f))
static inline float dot16(const float *a, const float *b, int n) {
    v16f acc = {0}, va, vb;
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        LD16F(va, a + i);
        LD16F(vb, b + i);
        acc += va * vb;
    }
    // the tree in vector form (lanes l and l + 8, then l + 4, then (0 + 2) + (1 + 3)): the same adds
    // as the scalar tree it replaced, without its scalar shuffles
    acc += __builtin_shuffle(acc, (v16i){8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7});
    acc += __builtin_shuffle(acc, (v16i){4, 5, 6, 7, 0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15});
    acc += __builtin_shuffle(acc, (v16i){2, 3, 0, 1, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15});
    float s = acc[0] + acc[1];
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

/* rmsnorm of one row: the sum of squares by dot16 (16 lanes, a fixed tree: the same bits in every
 * ISA clone) instead of llama2.c's one serial float chain, which was a 2048-add latency chain: 3.5 us
 * per TinyLlama row, 45 rows per decoded token (~0.9% of q4 decode at 2 threads); now ~0.3 us.
 * The result differs from the serial order by float rounding only (~1e-7 relative). */
__attribute__((target_clones("avx512f", "avx2", "default")))
static void rmsnorm_row(float *o, const float *xr, const float *wd, int64_t n, float eps) {
    float ss = dot16(xr, xr, (int)n);
    ss = 1.0f / sqrtf(ss / (float)n + eps);
    for (int64_t i = 0; i < n; i++) o[i] = wd[i] * (ss * xr[i]);
}

static void cpu_rmsnorm(struct backend *be, struct tensor *out, const struct tensor *x,
                        const struct tensor *w, float eps) {
    const int64_t n = x->ne[0];
    for (int64_t t = 0; t < x->ne[1]; t++)
        rmsnorm_row((float *)out->data + t * n, (const float *)x->data + t * n, w->data, n, eps);
}

/* dot16 of 8 rows a + r * hd (r < 8) with one b, hd a multiple of 16, out[r]: the same per-lane
 * products and the same tree pairs as dot16 (l + 8, l + 4, then (0 + 2) + (1 + 3)), but the 8 trees
 * are reduced together by 2-vector shuffles (24 vector ops instead of ~64), so the bits are dot16's. */
static inline void dot16x8(const float *a, int hd, const float *b, float *out) {
    v16f acc[8] = {{0}}, va, vb;
    for (int i = 0; i < hd; i += 16) {
        LD16F(vb, b + i);
        for (int r = 0; r < 8; r++) {
            LD16F(va, a + (size_t)r * hd + i);
            acc[r] += va * vb;
        }
    }
    const v16i lo = {0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23},
               hi = {8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31};
    v16f d[4];   // d[k]: lanes 0-7 row 2k, 8-15 row 2k+1, each lane l = acc[l] + acc[l + 8]
    for (int k = 0; k < 4; k++)
        d[k] = __builtin_shuffle(acc[2 * k], acc[2 * k + 1], lo) + __builtin_shuffle(acc[2 * k], acc[2 * k + 1], hi);
    const v16i q0 = {0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27},
               q1 = {4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31};
    // quarters: rows 0, 2, 1, 3 (e[0]) and 4, 6, 5, 7 (e[1]), lane l < 4 = d[l] + d[l + 4] of its half
    const v16f e0 = __builtin_shuffle(d[0], d[1], q0) + __builtin_shuffle(d[0], d[1], q1),
               e1 = __builtin_shuffle(d[2], d[3], q0) + __builtin_shuffle(d[2], d[3], q1);
    const v16i p0 = {0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29},
               p1 = {2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31};
    const v16f f = __builtin_shuffle(e0, e1, p0) + __builtin_shuffle(e0, e1, p1);   // pairs (0 + 2), (1 + 3)
    // f lanes 2m, 2m + 1 belong to row order 0, 2, 1, 3, 4, 6, 5, 7
    static const int row_of[8] = {0, 2, 1, 3, 4, 6, 5, 7};
    for (int m = 0; m < 8; m++) out[row_of[m]] = f[2 * m] + f[2 * m + 1];
}

/* e^x for the softmax (x <= 0 after subtracting the max), written so the compiler vectorizes the
 * loop over positions (a libm expf call per score was ~25% of TinyLlama pp512): n = round(x log2 e)
 * by the 1.5 * 2^23 trick, r = x - n ln2 in two parts (Cody-Waite), e^r by its degree-6 Taylor
 * polynomial (|r| <= ln2/2: truncation < 1.2e-7 relative), times 2^n built in the exponent bits.
 * x < -87 returns e^-87 (~1.6e-38, a weight of 0 next to the max's 1). Max relative error vs expf
 * ~2e-7; tests/test_backend_cpu.c checks attention against a double reference. Same ops in every
 * ISA clone: identical results. TinyLlama q4 pp512 2 threads: 283 -> 292 t/s. */
static inline float exp_poly(float x) {   // x in [-87, 88]
    const float t = x * 1.44269504f;
    const float n = (t + 12582912.0f) - 12582912.0f;   // round to nearest
    const float r = (x - n * 0.693145752f) - n * 1.42860677e-06f;   // ln2 = hi + lo, hi exact in 16 bits
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const int32_t e = ((int32_t)n + 127) << 23;
    float two_n;
    memcpy(&two_n, &e, sizeof two_n);
    return p * two_n;
}
static inline float exp_neg(float x) { return exp_poly(x < -87.0f ? -87.0f : x); }

// One task = one (token, kv head): the K/V rows of that kv head are read (and, for an f16/q8/q4 cache,
// dequantized) once per position for all n_heads/n_kv_heads query heads of the group, not once per
// query head: 8x fewer row reads and conversions with TinyLlama's 32/4 heads. With the ISA clones
// below, TinyLlama q4 pp512 (f32 cache) went from 222 to 275 t/s at 2 threads.
// Cloned per ISA (GCC picks one at load time through an ifunc): the 16-lane dot16 and the 64-wide
// V accumulation vectorize to one zmm / two ymm per step instead of four xmm. No FMA contraction
// (-std=c11), and every lane does the same adds in the same order, so all clones give identical bits.
// The cache rows of one KV head are kv_dim floats apart (1 KiB for TinyLlama), so the hardware
// prefetcher, which stays within a 4 KiB page, restarts every few positions, and the weight stream of
// decode has evicted the cache from L2/L3 by the next layer: without help each row is a DRAM miss.
#ifndef ATT_PF
#define ATT_PF 8   // positions ahead
#endif
#define ATT_VB 16   // positions per block of the V accumulation
// A second prefetch, to L2 (PREFETCHT1: L2 on Zen 4), ATT_PF_FAR positions ahead: the T0 prefetch 8
// ahead is ~70 ns of work ahead, less than a DRAM miss, and more T0 lines in flight only stall on L1
// miss buffers (ATT_PF 16 / 32 measured no better). TinyLlama q4 tg256, 2 threads, the attention
// call's time on the calling thread, 3 alternating runs: none 30.4 / 35.2 / 29.6 us, 32: 29.0 / 23.5 /
// 31.8, 64: 26.1 / 27.5 / 27.5 us per layer (attention is ~3% of decode there).
#ifndef ATT_PF_FAR
#define ATT_PF_FAR 64   // positions ahead (0: none)
#endif
static inline void prefetch_row(const float *p, int n) {
    for (int i = 0; i < n; i += 16) __builtin_prefetch(p + i, 0, 3);
}
static inline void prefetch_row_l2(const float *p, int n) {
    for (int i = 0; i < n; i += 16) __builtin_prefetch(p + i, 0, 2);
}

/* o[0, hd) += sum over k < np of a[k] vr[k][0, hd), positions ascending per element; o is held in
 * registers across the np rows (one load and store of o per block instead of per position: the
 * per-position read-modify-write made every step wait on store forwarding, 15% of the attention
 * samples were that vaddps). Same adds in the same order as the plain loop, so the same bits. */
static inline void v_accumulate(float *o, const float *const *vr, const float *a, int np, int hd) {
    int i = 0;
    for (; i + 64 <= hd; i += 64) {
        v16f t0, t1, t2, t3, v0, v1, v2, v3;
        LD16F(t0, o + i);
        LD16F(t1, o + i + 16);
        LD16F(t2, o + i + 32);
        LD16F(t3, o + i + 48);
        for (int k = 0; k < np; k++) {
            const float *v = vr[k] + i;
            LD16F(v0, v);
            LD16F(v1, v + 16);
            LD16F(v2, v + 32);
            LD16F(v3, v + 48);
            t0 += a[k] * v0;
            t1 += a[k] * v1;
            t2 += a[k] * v2;
            t3 += a[k] * v3;
        }
        ST16F(o + i, t0);
        ST16F(o + i + 16, t1);
        ST16F(o + i + 32, t2);
        ST16F(o + i + 48, t3);
    }
    for (; i + 16 <= hd; i += 16) {
        v16f t0, v0;
        LD16F(t0, o + i);
        for (int k = 0; k < np; k++) {
            LD16F(v0, vr[k] + i);
            t0 += a[k] * v0;
        }
        ST16F(o + i, t0);
    }
    for (; i < hd; i++) {
        float t0 = o[i];
        for (int k = 0; k < np; k++) t0 += a[k] * vr[k][i];
        o[i] = t0;
    }
}

__attribute__((target_clones("avx512f", "avx2", "default")))
static void att_worker(void *arg, int ith, int nth) {
    struct att_job *j = arg;
    const int hd = j->head_dim, kv_dim = j->n_kv_heads * hd, q_dim = j->n_heads * hd;
    const int grp = j->n_heads / j->n_kv_heads;
    const float scale = 1.0f / sqrtf((float)hd);
    float *att0 = j->c->att_scratch + (size_t)ith * j->c->att_cap;   // grp rows of att_cap / grp scores
    const size_t stride = j->c->att_cap / (size_t)grp;
    const int64_t n_tasks = (int64_t)j->n_tokens * j->n_kv_heads;
    const bool f32 = j->kc->type == QT_F32;
    const float *krow = NULL;
    float tmpk[1024], tmpv[4096];   // dequantized cache rows when the cache is not f32 (hd <= 1024; V: a block)
    for (int64_t task = ith; task < n_tasks; task += nth) {
        const int t = (int)(task / j->n_kv_heads), kvh = (int)(task % j->n_kv_heads);
        const int n_pos = j->pos0 + t + 1;  // causal: positions 0 .. pos0 + t
        const float *q0 = j->q + (size_t)t * q_dim + (size_t)kvh * grp * hd;   // grp consecutive heads
        if (f32)   // the first rows, which the in-loop prefetch does not cover
            for (int p = 0; p < n_pos && p < ATT_PF; p++) {
                prefetch_row((const float *)j->kc->data + (size_t)p * kv_dim + (size_t)kvh * hd, hd);
                prefetch_row((const float *)j->vc->data + (size_t)p * kv_dim + (size_t)kvh * hd, hd);
            }
        for (int p = 0; p < n_pos; p++) {
            if (f32) {
                krow = (const float *)j->kc->data + (size_t)p * kv_dim + (size_t)kvh * hd;
                if (p + ATT_PF < n_pos) prefetch_row(krow + (size_t)ATT_PF * kv_dim, hd);
                if (ATT_PF_FAR && p + ATT_PF_FAR < n_pos) prefetch_row_l2(krow + (size_t)ATT_PF_FAR * kv_dim, hd);
            } else {
                const uint8_t *kr = (const uint8_t *)j->kc->data + (size_t)p * qtype_row_bytes(j->kc->type, kv_dim);
                qtype_traits[j->kc->type].dequantize_row(tmpk, kr + qtype_row_bytes(j->kc->type, (int64_t)kvh * hd), hd);
                krow = tmpk;
            }
            int g = 0;
            if (hd % 16 == 0)
                for (; g + 8 <= grp; g += 8) {
                    float s8[8];
                    dot16x8(q0 + (size_t)g * hd, hd, krow, s8);
                    for (int r = 0; r < 8; r++) att0[(g + r) * stride + p] = s8[r] * scale;
                }
            for (; g < grp; g++) att0[g * stride + p] = dot16(q0 + (size_t)g * hd, krow, hd) * scale;
        }
        float inv[64];   // grp <= 64 (checked by the caller)
        for (int g = 0; g < grp; g++) {
            float *att = att0 + g * stride;
            float mx = att[0];
            for (int p = 1; p < n_pos; p++) mx = att[p] > mx ? att[p] : mx;
            float sum = 0.0f;
            for (int p = 0; p < n_pos; p++) att[p] = exp_neg(att[p] - mx);
            for (int p = 0; p < n_pos; p++) sum += att[p];
            inv[g] = 1.0f / sum;
        }
        float *o0 = j->out + (size_t)t * q_dim + (size_t)kvh * grp * hd;
        for (int i = 0; i < grp * hd; i++) o0[i] = 0.0f;
        // blocks of positions, each head's output accumulated in registers across a block (v_accumulate)
        const int vb = f32 || 4096 / hd >= ATT_VB ? ATT_VB : 4096 / hd;
        for (int p0 = 0; p0 < n_pos; p0 += vb) {
            const int np = n_pos - p0 < vb ? n_pos - p0 : vb;
            const float *vr[ATT_VB];
            for (int k = 0; k < np; k++) {
                const int p = p0 + k;
                if (f32) {
                    vr[k] = (const float *)j->vc->data + (size_t)p * kv_dim + (size_t)kvh * hd;
                    if (p + ATT_PF < n_pos) prefetch_row(vr[k] + (size_t)ATT_PF * kv_dim, hd);
                    if (ATT_PF_FAR && p + ATT_PF_FAR < n_pos) prefetch_row_l2(vr[k] + (size_t)ATT_PF_FAR * kv_dim, hd);
                } else {
                    const uint8_t *row = (const uint8_t *)j->vc->data + (size_t)p * qtype_row_bytes(j->vc->type, kv_dim);
                    qtype_traits[j->vc->type].dequantize_row(tmpv + (size_t)k * hd,
                                                              row + qtype_row_bytes(j->vc->type, (int64_t)kvh * hd), hd);
                    vr[k] = tmpv + (size_t)k * hd;
                }
            }
            for (int g = 0; g < grp; g++) {
                float a[ATT_VB];
                for (int k = 0; k < np; k++) a[k] = att0[g * stride + p0 + k] * inv[g];
                v_accumulate(o0 + (size_t)g * hd, vr, a, np, hd);
            }
        }
    }
}

/* Decode (one query token): the positions are split into chunks (split-K, "flash decoding"), and
 * each task reads its chunk's whole cache rows (all kv heads, kv_dim floats) in order, so both K and
 * V are read as sequential streams that the hardware prefetchers follow; the per-(token, kv head)
 * tasks above read 256-byte pieces of rows 1 KiB apart (TinyLlama), a pattern the prefetchers lose.
 * Each chunk leaves, per query head, its max score m, its sum l of e^(s - m) and o = sum e^(s - m) v;
 * the calling thread merges the chunks in chunk order. The chunk size depends on n_pos only (32
 * positions, doubled until there are at most 8 chunks), never on the thread count, so the result is
 * the same for any -t (tests/test_backend_cpu.c checks 1 vs 2 threads bit for bit). TinyLlama q4
 * tg256, 2 threads, attention per layer on the calling thread incl. its wait for the other: per-head
 * tasks 32 / 39 us, chunks 26 / 27 us (two alternating runs; ~1% of decode at this depth, more with
 * longer contexts, where attention's share grows linearly). */
#ifndef ATTD_NEAR
#define ATTD_NEAR 8    // rows ahead, to L1
#endif
#ifndef ATTD_FAR
#define ATTD_FAR 32    // rows ahead, to L2
#endif
struct attd_job {
    const float *q;
    const struct tensor *kc, *vc;
    int n_heads, n_kv_heads, head_dim, n_pos, ch, n_ch;
    float *part;    // n_ch x (q_dim o, n_heads m, n_heads l)
    float *sc;      // per thread: n_heads x ch scores, then ATT_VB + 1 dequantized rows of kv_dim
    size_t sc_per_thread;
};

static inline const float *cache_row(const struct tensor *t, int p, int kv_dim, float *tmp) {
    if (t->type == QT_F32) return (const float *)t->data + (size_t)p * kv_dim;
    qtype_traits[t->type].dequantize_row(tmp, (const uint8_t *)t->data + (size_t)p * qtype_row_bytes(t->type, kv_dim), kv_dim);
    return tmp;
}

__attribute__((target_clones("avx512f", "avx2", "default")))
static void attd_worker(void *arg, int ith, int nth) {
    const struct attd_job *j = arg;
    const int hd = j->head_dim, n_kv = j->n_kv_heads, kv_dim = n_kv * hd, q_dim = j->n_heads * hd;
    const int grp = j->n_heads / n_kv, ch = j->ch;
    const float scale = 1.0f / sqrtf((float)hd);
    float *sc = j->sc + (size_t)ith * j->sc_per_thread, *rows = sc + (size_t)j->n_heads * ch;
    const bool f32 = j->kc->type == QT_F32 && j->vc->type == QT_F32;
    const int c0 = (int)((int64_t)j->n_ch * ith / nth), c1 = (int)((int64_t)j->n_ch * (ith + 1) / nth);
    for (int ci = c0; ci < c1; ci++) {
        const int p0 = ci * ch, p1 = p0 + ch < j->n_pos ? p0 + ch : j->n_pos;
        float *o = j->part + (size_t)ci * (q_dim + 2 * j->n_heads), *m = o + q_dim, *l = m + j->n_heads;
        if (f32)
            for (int p = p0; p < p1 && p < p0 + ATTD_NEAR; p++) prefetch_row((const float *)j->kc->data + (size_t)p * kv_dim, kv_dim);
        for (int p = p0; p < p1; p++) {   // scores: sc[qh * ch + p - p0]
            if (f32) {   // K rows: to L1 ATTD_NEAR ahead, to L2 ATTD_FAR ahead; this V row to L2
                const float *kb = (const float *)j->kc->data, *vb = (const float *)j->vc->data;
                if (p + ATTD_NEAR < j->n_pos) prefetch_row(kb + (size_t)(p + ATTD_NEAR) * kv_dim, kv_dim);
                if (p + ATTD_FAR < j->n_pos) prefetch_row_l2(kb + (size_t)(p + ATTD_FAR) * kv_dim, kv_dim);
                prefetch_row_l2(vb + (size_t)p * kv_dim, kv_dim);
            }
            const float *kr = cache_row(j->kc, p, kv_dim, rows);
            for (int h = 0; h < n_kv; h++) {
                const float *q0 = j->q + (size_t)h * grp * hd, *krow = kr + (size_t)h * hd;
                int g = 0;
                if (hd % 16 == 0)
                    for (; g + 8 <= grp; g += 8) {
                        float s8[8];
                        dot16x8(q0 + (size_t)g * hd, hd, krow, s8);
                        for (int r = 0; r < 8; r++) sc[(size_t)(h * grp + g + r) * ch + (p - p0)] = s8[r] * scale;
                    }
                for (; g < grp; g++) sc[(size_t)(h * grp + g) * ch + (p - p0)] = dot16(q0 + (size_t)g * hd, krow, hd) * scale;
            }
        }
        const int np = p1 - p0;
        for (int qh = 0; qh < j->n_heads; qh++) {
            float *a = sc + (size_t)qh * ch, mx = a[0], sum = 0.0f;
            for (int p = 1; p < np; p++) mx = a[p] > mx ? a[p] : mx;
            for (int p = 0; p < np; p++) a[p] = exp_neg(a[p] - mx);
            for (int p = 0; p < np; p++) sum += a[p];
            m[qh] = mx;
            l[qh] = sum;
        }
        for (int i = 0; i < q_dim; i++) o[i] = 0.0f;
        for (int b0 = p0; b0 < p1; b0 += ATT_VB) {
            const int nb = p1 - b0 < ATT_VB ? p1 - b0 : ATT_VB;
            const float *vr[ATT_VB];
            for (int k = 0; k < nb; k++) vr[k] = cache_row(j->vc, b0 + k, kv_dim, rows + (size_t)k * kv_dim);
            if (f32)   // the next block's V rows, L2 -> L1
                for (int p = b0 + ATT_VB; p < p1 && p < b0 + 2 * ATT_VB; p++)
                    prefetch_row((const float *)j->vc->data + (size_t)p * kv_dim, kv_dim);
            for (int h = 0; h < n_kv; h++) {
                const float *vh[ATT_VB];
                for (int k = 0; k < nb; k++) vh[k] = vr[k] + (size_t)h * hd;
                for (int g = 0; g < grp; g++) {
                    const int qh = h * grp + g;
                    v_accumulate(o + (size_t)qh * hd, vh, sc + (size_t)qh * ch + (b0 - p0), nb, hd);
                }
            }
        }
    }
}

// the chunks' partials merged in chunk order: out = sum_c e^(m_c - M) o_c / sum_c e^(m_c - M) l_c
static void attd_merge(const struct attd_job *j, float *out) {
    const int hd = j->head_dim, q_dim = j->n_heads * hd;
    const size_t stride = (size_t)q_dim + 2 * (size_t)j->n_heads;
    for (int qh = 0; qh < j->n_heads; qh++) {
        float mx = j->part[q_dim + qh];
        for (int c = 1; c < j->n_ch; c++) {
            const float mc = j->part[c * stride + q_dim + qh];
            mx = mc > mx ? mc : mx;
        }
        float f[64], sum = 0.0f;   // n_ch <= 8
        for (int c = 0; c < j->n_ch; c++) {
            f[c] = exp_neg(j->part[c * stride + q_dim + qh] - mx);
            sum += f[c] * j->part[c * stride + q_dim + j->n_heads + qh];
        }
        const float inv = 1.0f / sum;
        float *o = out + (size_t)qh * hd;
        for (int i = 0; i < hd; i++) o[i] = 0.0f;
        for (int c = 0; c < j->n_ch; c++) {
            const float w = f[c] * inv, *oc = j->part + c * stride + (size_t)qh * hd;
            for (int i = 0; i < hd; i++) o[i] += w * oc[i];
        }
    }
}

static void att_decode(struct cpu_ctx *c, float *out, const float *q, const struct tensor *kc, const struct tensor *vc,
                       int n_heads, int n_kv_heads, int head_dim, int n_pos) {
    int ch = 32;
    while ((n_pos + ch - 1) / ch > 8) ch *= 2;
    const int n_ch = (n_pos + ch - 1) / ch, nth = threadpool_size(c->tp);
    const int kv_dim = n_kv_heads * head_dim, q_dim = n_heads * head_dim;
    const size_t per_thread = (size_t)n_heads * ch + (size_t)(ATT_VB + 1) * kv_dim;
    const size_t need = per_thread * nth + (size_t)n_ch * (q_dim + 2 * (size_t)n_heads);
    if (need > c->dec_cap) {   // grows with the chunk size (a few times per context), then stays
        free(c->dec_scratch);
        c->dec_scratch = malloc(need * sizeof(float));
        c->dec_cap = c->dec_scratch ? need : 0;
        if (!c->dec_scratch) { c->oom = true; return; }   // reported by sync()
    }
    struct attd_job j = {q, kc, vc, n_heads, n_kv_heads, head_dim, n_pos, ch, n_ch,
                         c->dec_scratch + per_thread * nth, c->dec_scratch, per_thread};
    threadpool_run(c->tp, attd_worker, &j);
    attd_merge(&j, out);
}

static void cpu_attention(struct backend *be, struct tensor *out, const struct tensor *q,
                          const struct tensor *k_cache, const struct tensor *v_cache,
                          int n_heads, int n_kv_heads, int head_dim, int pos0) {
    struct cpu_ctx *c = CTX(be);
    const int n_tokens = (int)q->ne[1];
    const int grp = n_heads / n_kv_heads;
    if (grp > 64) { c->oom = true; return; }   // never for real models (GQA groups are <= 16)
    if (n_tokens == 1) {
        att_decode(c, out->data, q->data, k_cache, v_cache, n_heads, n_kv_heads, head_dim, pos0 + 1);
        return;
    }
    size_t need = (size_t)k_cache->ne[1] * (size_t)grp;   // grp score rows of the cache length
    if (need > c->att_cap) {   // grows once to the cache length; engine calls attention serially
        free(c->att_scratch);
        c->att_scratch = malloc(need * sizeof(float) * (size_t)threadpool_size(c->tp));
        c->att_cap = c->att_scratch ? need : 0;
        if (!c->att_scratch) { c->oom = true; return; }   // reported by sync()
    }
    struct att_job j = {c, out->data, q->data, k_cache, v_cache, n_heads, n_kv_heads, head_dim, pos0, n_tokens};
    threadpool_run(c->tp, att_worker, &j);
}

struct swiglu_job { float *o; const float *g, *u; int64_t n; };

// silu(g) * u with the polynomial exp (e^-g clamped to [e^-87, e^88]: silu underflows to -0 below
// g = -88 and is g itself above 87), vectorized per ISA clone: libm expf per element was 0.44 ms of a
// 27 ms TinyLlama q4 token at 2 threads
__attribute__((target_clones("avx512f", "avx2", "default")))
static void swiglu_worker(void *arg, int ith, int nth) {   // contiguous 16-aligned slices
    struct swiglu_job *j = arg;
    int64_t per = (j->n / nth + 15) & ~(int64_t)15, a = per * ith, b = a + per < j->n ? a + per : j->n;
    for (int64_t i = a; i < b; i++) {
        const float v = j->g[i];
        float m = -v;
        m = m < -87.0f ? -87.0f : m > 88.0f ? 88.0f : m;
        j->o[i] = v / (1.0f + exp_poly(m)) * j->u[i];
    }
}

// threaded: 5632 expf per token and layer took ~1 ms per TinyLlama token on the caller alone while
// the other threads spun
static void cpu_swiglu(struct backend *be, struct tensor *out, const struct tensor *gate,
                       const struct tensor *up) {
    struct swiglu_job j = {out->data, gate->data, up->data, gate->ne[0] * gate->ne[1]};
    if (j.n >= 4096) threadpool_run(CTX(be)->tp, swiglu_worker, &j);
    else swiglu_worker(&j, 0, 1);
}

static void cpu_add(struct backend *be, struct tensor *out, const struct tensor *a, const struct tensor *b) {
    const int64_t n = a->ne[0] * a->ne[1];
    float *o = out->data;
    const float *x = a->data, *y = b->data;
    for (int64_t i = 0; i < n; i++) o[i] = x[i] + y[i];
}

static const struct backend_ops cpu_ops = {
    .name = "cpu",
    .supports = cpu_supports,
    .matrix_layout = cpu_matrix_layout,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .sync = cpu_sync,
    .destroy = cpu_destroy,
    .embed = cpu_embed,
    .rmsnorm = cpu_rmsnorm,
    .matmul = cpu_op_matmul,
    .matmul_n = cpu_op_matmul_n,
    .rope = cpu_rope,
    .set_rows = cpu_set_rows,
    .attention = cpu_attention,
    .swiglu = cpu_swiglu,
    .add = cpu_add,
};

struct threadpool *backend_cpu_pool(struct backend *be) { return be && be->ops == &cpu_ops ? CTX(be)->tp : NULL; }

struct backend *backend_cpu_create(int n_threads, struct err *e) {
    if (n_threads <= 0) n_threads = cpu_count();
    struct backend *be = calloc(1, sizeof *be);
    struct cpu_ctx *c = calloc(1, sizeof *c);
    if (!be || !c) {
        free(be); free(c);
        ERR(e, ERR_OOM, "out of memory");
        return NULL;
    }
    c->tp = threadpool_create(n_threads);
    if (!c->tp) {
        free(be); free(c);
        ERR(e, ERR_BACKEND, "cannot start %d threads", n_threads);
        return NULL;
    }
    c->isa = cpu_isa_detect();
    be->ops = &cpu_ops;
    be->ctx = c;
    be->n_threads = n_threads;
    be->host_memory = true;
    be->copy_min_bytes = thp_usable() ? HUGE_BYTES : 0;
    return be;
}
