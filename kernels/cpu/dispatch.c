/* kernels/cpu/dispatch.c: run-time ISA selection and the threaded cpu_matmul driver.
 * cpu_matmul quantizes x once per call into a scratch buffer (int8 types), then splits the d rows
 * across the pool's threads in 8-row-aligned contiguous chunks (each thread streams one contiguous
 * slice of W). The scratch is a per-calling-thread (_Thread_local) growable buffer: no malloc in the
 * steady-state decode path, and two threads may call cpu_matmul concurrently on different pools.
 * With OpenBLAS (HAVE_OPENBLAS) f32 prefill (t >= BLAS_MIN_T) goes to one cblas_sgemm from the calling
 * thread (OpenBLAS threads itself). On AVX-512 CPUs with AMX, int8-activation prefill (t >= AMX_MIN_T)
 * runs the AMX tile kernels (matmul_amx.c) on 16-row-aligned chunks.
 * Test: tests/test_kernels_matmul.c, tests/test_kernels_amx.c */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/matmul_kernels.h"

#ifdef HAVE_OPENBLAS
#include <cblas.h>
#define BLAS_MIN_T 16    // below this our register-tiled kernels win (memory-bound on W)
#endif

// ------------------------------------------------------------------------------------------------
// ISA detection

static _Atomic int isa_cached = -1;

enum cpu_isa cpu_isa_detect(void) {
    int c = atomic_load_explicit(&isa_cached, memory_order_relaxed);
    if (c >= 0) return (enum cpu_isa)c;
    __builtin_cpu_init();
    enum cpu_isa best = CPU_ISA_REF;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) {
        best = CPU_ISA_AVX2;
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
            __builtin_cpu_supports("avx512vnni"))
            best = CPU_ISA_AVX512;
    }
    const char *env = getenv("LLM_ISA");   // caps, never raises
    if (env) {
        enum cpu_isa cap = best;
        if (!strcmp(env, "ref")) cap = CPU_ISA_REF;
        else if (!strcmp(env, "avx2")) cap = CPU_ISA_AVX2;
        else if (!strcmp(env, "avx512")) cap = CPU_ISA_AVX512;
        if (cap < best) best = cap;
    }
    atomic_store_explicit(&isa_cached, (int)best, memory_order_relaxed);
    return best;
}

const char *cpu_isa_name(enum cpu_isa isa) {
    switch (isa) {
    case CPU_ISA_REF: return "ref";
    case CPU_ISA_AVX2: return "avx2";
    case CPU_ISA_AVX512: return "avx512";
    }
    return "?";
}

bool cpu_matmul_supports(enum qtype wt) { return wt >= 0 && wt < QT_COUNT && mm_rows_ref[wt] != NULL; }

// ------------------------------------------------------------------------------------------------
// scratch: one growable, 64-byte aligned buffer per calling thread

static _Thread_local void *scratch;
static _Thread_local size_t scratch_cap;

static void *scratch_get(size_t bytes) {
    if (bytes <= scratch_cap) return scratch;
    size_t cap = (bytes + bytes / 2 + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, cap);
    if (!p) return NULL;
    free(scratch);
    scratch = p;
    scratch_cap = cap;
    return p;
}

// ------------------------------------------------------------------------------------------------
// threaded driver

typedef void (*xq8_quantize_fn)(struct xq8 *a, const float *x, int64_t j0, int64_t j1);

struct mm_job {
    mm_rows_fn fn;
    xq8_quantize_fn quant;   // phase 0 only
    bool interleave;         // also fill xq->qil (X8 weights)
    float *out;
    const float *x;
    struct xq8 *xq;
    const void *w;
    int64_t n, d, t;
    int64_t align;           // rows per thread chunk are a multiple of this (AMX: one 16-row tile)
};

static void range_of(int64_t total, int64_t align, int ith, int nth, int64_t *a, int64_t *b) {
    int64_t chunk = (total + nth - 1) / nth;
    chunk = (chunk + align - 1) / align * align;
    *a = (int64_t)ith * chunk;
    *b = *a + chunk;
    if (*a > total) *a = total;
    if (*b > total) *b = total;
}

static void job_quantize(void *arg, int ith, int nth) {
    struct mm_job *jb = arg;
    int64_t a, b;
    range_of(jb->t, 1, ith, nth, &a, &b);
    if (a < b) {
        jb->quant(jb->xq, jb->x, a, b);
        if (jb->interleave) xq8_interleave(jb->xq, a, b);
    }
}

static void job_rows(void *arg, int ith, int nth) {
    struct mm_job *jb = arg;
    int64_t a, b;
    range_of(jb->d, jb->align, ith, nth, &a, &b);
    if (a < b) jb->fn(jb->out, jb->d, jb->x, jb->xq, jb->w, jb->n, a, b, jb->t);
}

static void run(struct threadpool *tp, threadpool_fn fn, void *arg) {
    if (tp) threadpool_run(tp, fn, arg);
    else fn(arg, 0, 1);
}

#ifdef HAVE_OPENBLAS
// true when handled by OpenBLAS (f32 prefill only: converting f16/bf16 panels and handing them to a
// second, spinning thread team measured far slower than our own tiles on the loaded 2-core box)
static bool matmul_blas(enum qtype wt, float *out, const float *x, const void *w, int64_t n, int64_t d,
                        int64_t t) {
    if (t < BLAS_MIN_T || wt != QT_F32) return false;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)t, (int)d, (int)n, 1.f, x, (int)n, w, (int)n, 0.f,
                out, (int)d);
    return true;
}
#endif

// the kernel for (isa, wt, t) and the row alignment of its thread chunks
static mm_rows_fn select_fn(enum cpu_isa isa, enum qtype wt, int64_t t, int64_t *align) {
    const mm_rows_fn *tab = isa == CPU_ISA_AVX512 ? mm_rows_avx512 : isa == CPU_ISA_AVX2 ? mm_rows_avx2 : mm_rows_ref;
    mm_rows_fn fn = tab[wt];
    if (!fn) fn = mm_rows_avx2[wt];   // an AVX-512 table entry may be missing: AVX2 runs there too
    if (isa == CPU_ISA_AVX512 && mm_rows_x8[wt]) fn = mm_rows_x8[wt];
    if (isa == CPU_ISA_AVX2 && mm_rows_x8_avx2[wt]) fn = mm_rows_x8_avx2[wt];
    if (!fn || isa == CPU_ISA_REF) fn = mm_rows_ref[wt];
    *align = 8;
    if (isa == CPU_ISA_AVX512 && mm_uses_xq8(wt) && t >= AMX_MIN_T && mm_rows_amx[wt] && cpu_amx_available()) {
        fn = mm_rows_amx[wt];
        *align = 16;
    }
    return fn;
}

void cpu_matmul(struct threadpool *tp, enum cpu_isa isa, enum qtype wt, float *out, const float *x,
                const void *w, int64_t n, int64_t d, int64_t t) {
    if (d <= 0 || t <= 0) return;
    int64_t align;
    mm_rows_fn fn = select_fn(isa, wt, t, &align);
#ifdef HAVE_OPENBLAS
    if (isa != CPU_ISA_REF && matmul_blas(wt, out, x, w, n, d, t)) return;
#endif
    struct xq8 xq = {0};
    struct mm_job jb = {.fn = fn, .out = out, .x = x, .xq = &xq, .w = w, .n = n, .d = d, .t = t, .align = align};
    int nth_all = tp ? threadpool_size(tp) : 1;
    if (t == 1 && nth_all > 1) {   // decode: guided row chunks (cpu_matmul_multi)
        const struct cpu_matmul_part part = {.wt = wt, .out = out, .w = w, .d = d};
        cpu_matmul_multi(tp, isa, 1, &part, x, n, 1);
        return;
    }
    if (mm_uses_xq8(wt)) {
        void *buf = scratch_get(xq8_bytes(n, t));
        if (!buf) {   // out of memory: no way to report through this API, so poison the output
            for (int64_t i = 0; i < d * t; i++) out[i] = __builtin_nanf("");
            return;
        }
        xq8_init(&xq, buf, n, t);
        jb.quant = isa == CPU_ISA_AVX512 ? xq8_quantize_avx512
                 : isa == CPU_ISA_AVX2   ? xq8_quantize_avx2
                                         : xq8_quantize_ref;
        jb.interleave = mm_uses_qil(wt) && fn != mm_rows_ref[wt];
        int nth = tp ? threadpool_size(tp) : 1;
        if (nth > 1 && t >= 2 * nth) run(tp, job_quantize, &jb);
        else {
            jb.quant(&xq, x, 0, t);
            if (jb.interleave) xq8_interleave(&xq, 0, t);
        }
    }
    run(tp, job_rows, &jb);
}

// ------------------------------------------------------------------------------------------------
// several matrices on the same input (q/k/v, gate/up): one activation quantization and, for decode,
// one pass of the pool over all their row chunks, so no thread waits at a barrier between them

struct mm_multi_job {
    int np, nth;
    const struct cpu_matmul_part *p;
    mm_rows_fn fn[CPU_MATMUL_MAX_PARTS];
    int64_t first[CPU_MATMUL_MAX_PARTS + 1];   // part i = rows [first[i], first[i+1]) of the concatenation
    const float *x;
    const struct xq8 *xq;
    int64_t n;
    _Atomic int64_t next;
};

// Guided self-scheduling over the concatenated rows: a thread takes 1/(2 nth) of what is left
// (a multiple of 8, >= 16 rows, never across a part's end), so the first chunks are long streams
// and the last ones short, and no thread waits long for the last one at the end. Dynamic, because a
// static split waits for the slowest thread at every matmul: on the shared 2-vCPU VM that wait was
// 25% of TinyLlama q2 decode. (Before: fixed chunks of d/16 rows; 4 or 16 per thread measured the
// same / 3-12% slower.)
static void job_multi(void *arg, int ith, int nth) {
    struct mm_multi_job *jb = arg;
    const int64_t total = jb->first[jb->np];
    int i = 0;
    for (;;) {
        int64_t a = atomic_load_explicit(&jb->next, memory_order_relaxed), b;
        do {
            if (a >= total) return;
            int64_t c = ((total - a) / (2 * jb->nth) + 7) & ~(int64_t)7;
            if (c < 16) c = 16;
            while (a >= jb->first[i + 1]) i++;
            b = a + c < jb->first[i + 1] ? a + c : jb->first[i + 1];
        } while (!atomic_compare_exchange_weak_explicit(&jb->next, &a, b, memory_order_relaxed, memory_order_relaxed));
        while (a >= jb->first[i + 1]) i++;   // a may have moved on in a failed exchange
        const struct cpu_matmul_part *p = &jb->p[i];
        jb->fn[i](p->out, p->d, jb->x, jb->xq, p->w, jb->n, a - jb->first[i], b - jb->first[i], 1);
    }
}

void cpu_matmul_multi(struct threadpool *tp, enum cpu_isa isa, int np, const struct cpu_matmul_part *parts,
                      const float *x, int64_t n, int64_t t) {
    const int nth = tp ? threadpool_size(tp) : 1;
    if (t != 1 || nth < 2 || np < 1 || np > CPU_MATMUL_MAX_PARTS) {
        for (int i = 0; i < np; i++) cpu_matmul(tp, isa, parts[i].wt, parts[i].out, x, parts[i].w, n, parts[i].d, t);
        return;
    }
    struct mm_multi_job jb = {.np = np, .nth = nth, .p = parts, .x = x, .n = n};
    atomic_init(&jb.next, 0);
    bool xq8 = false, qil = false;
    jb.first[0] = 0;
    for (int i = 0; i < np; i++) {
        int64_t align;
        jb.fn[i] = select_fn(isa, parts[i].wt, 1, &align);
        xq8 |= mm_uses_xq8(parts[i].wt);
        qil |= mm_uses_qil(parts[i].wt) && jb.fn[i] != mm_rows_ref[parts[i].wt];
        jb.first[i + 1] = jb.first[i] + parts[i].d;
    }
    struct xq8 xq = {0};
    if (xq8) {
        void *buf = scratch_get(xq8_bytes(n, 1));
        if (!buf) {   // out of memory: poison the outputs, as cpu_matmul does
            for (int i = 0; i < np; i++)
                for (int64_t k = 0; k < parts[i].d; k++) parts[i].out[k] = __builtin_nanf("");
            return;
        }
        xq8_init(&xq, buf, n, 1);
        (isa == CPU_ISA_AVX512 ? xq8_quantize_avx512 : isa == CPU_ISA_AVX2 ? xq8_quantize_avx2 : xq8_quantize_ref)(&xq, x, 0, 1);
        if (qil) xq8_interleave(&xq, 0, 1);
    }
    jb.xq = &xq;
    run(tp, job_multi, &jb);
}
