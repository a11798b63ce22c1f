/* kernels/cuda/backend_cuda.cu: struct backend on one CUDA device and one stream. Decode matmul
 * (t == 1) uses the fused GEMV kernels (gemv.cu); prefill dequantizes W to f16 in row chunks and calls
 * cublasGemmEx (fp32 accumulate), or cublasSgemm for f32 W (TF32 off). Errors of asynchronous ops are
 * recorded (first one kept, sticky) and returned by sync. Design: docs/CUDA.md. Test: tests/test_cuda_ops.c */
#include <cublas_v2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_ops.cuh"
#include "kernels/cuda/gemv.cuh"

extern "C" {
#include "kernels/cuda/backend_cuda.h"
}

#define CU_ALLOC_ALIGN 256                     // allocation granule; also the GEMV over-read pad
#define CU_W16_SCRATCH_MAX (64u << 20)         // bytes of f16 weight scratch per prefill chunk

struct cu_alloc_rec { void *p; size_t bytes; };

struct cuda_ctx {
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    size_t mem_used, mem_peak;            // bytes, including padding and scratch
    struct cu_alloc_rec *recs;            // live allocations (linear search: a few hundred at most)
    size_t n_recs, cap_recs;
    enum err_code err_code;               // first deferred error, sticky
    char err_msg[400];
    void *w16; size_t w16_bytes;          // f16 dequantized weight rows (prefill)
    void *x16; size_t x16_bytes;          // f16 copy of x (prefill)
    int32_t *tok; size_t tok_bytes;       // token ids for embed of > CUDA_EMBED_MAX_INLINE tokens
    bool capturing;
    cudaGraphExec_t graph_exec;
};

#define CTX(be) ((struct cuda_ctx *)(be)->ctx)

// ------------------------------------------------------------------------------------------------
// Error recording

__attribute__((format(printf, 4, 5))) static void rec_err(struct cuda_ctx *c, enum err_code code,
                                                          const char *op, const char *fmt, ...) {
    if (c->err_code != ERR_OK) return;  // keep the first
    c->err_code = code;
    int k = snprintf(c->err_msg, sizeof c->err_msg, "cuda %s: ", op);
    if (k < 0 || (size_t)k >= sizeof c->err_msg) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err_msg + k, sizeof c->err_msg - (size_t)k, fmt, ap);
    va_end(ap);
}

// Records a CUDA error code from a launcher or runtime call; returns true when it was an error.
static bool rec_cuda(struct cuda_ctx *c, int cerr, const char *op) {
    if (cerr == (int)cudaSuccess) return false;
    rec_err(c, cerr == (int)cudaErrorMemoryAllocation ? ERR_OOM : ERR_BACKEND, op, "%s (%s)",
            cudaGetErrorString((cudaError_t)cerr), cudaGetErrorName((cudaError_t)cerr));
    return true;
}

static bool rec_blas(struct cuda_ctx *c, cublasStatus_t st, const char *op) {
    if (st == CUBLAS_STATUS_SUCCESS) return false;
    rec_err(c, st == CUBLAS_STATUS_ALLOC_FAILED ? ERR_OOM : ERR_BACKEND, op, "cuBLAS: %s",
            cublasGetStatusString(st));
    return true;
}

// ------------------------------------------------------------------------------------------------
// Memory

static size_t pad_bytes(size_t nbytes) {  // + 16: the GEMV may read < 16 bytes past a tensor
    return (nbytes + 16 + CU_ALLOC_ALIGN - 1) / CU_ALLOC_ALIGN * CU_ALLOC_ALIGN;
}

static void *cu_alloc(struct backend *be, size_t nbytes) {
    struct cuda_ctx *c = CTX(be);
    if (nbytes > ((size_t)1 << 50)) return NULL;
    if (c->n_recs == c->cap_recs) {
        size_t cap = c->cap_recs ? 2 * c->cap_recs : 64;
        struct cu_alloc_rec *r = (struct cu_alloc_rec *)realloc(c->recs, cap * sizeof *r);
        if (!r) return NULL;
        c->recs = r;
        c->cap_recs = cap;
    }
    const size_t bytes = pad_bytes(nbytes);
    void *p = NULL;
    if (cudaMalloc(&p, bytes) != cudaSuccess) {
        (void)cudaGetLastError();  // OOM is reported by the NULL return, not as a deferred error
        return NULL;
    }
    c->recs[c->n_recs++] = (struct cu_alloc_rec){p, bytes};
    c->mem_used += bytes;
    if (c->mem_used > c->mem_peak) c->mem_peak = c->mem_used;
    return p;
}

static void cu_free(struct backend *be, void *p) {
    struct cuda_ctx *c = CTX(be);
    if (!p) return;
    for (size_t i = 0; i < c->n_recs; i++) {
        if (c->recs[i].p != p) continue;
        rec_cuda(c, (int)cudaFree(p), "free");
        c->mem_used -= c->recs[i].bytes;
        c->recs[i] = c->recs[--c->n_recs];
        return;
    }
    rec_err(c, ERR_ARG, "free", "pointer %p was not allocated by this backend", p);
}

// Grows a scratch buffer to at least nbytes; false (error recorded) on OOM.
static bool scratch(struct backend *be, void **buf, size_t *cur, size_t nbytes, const char *op) {
    if (*cur >= nbytes) return true;
    cu_free(be, *buf);
    *buf = NULL;
    *cur = 0;
    *buf = cu_alloc(be, nbytes);
    if (!*buf) {
        rec_err(CTX(be), ERR_OOM, op, "cannot allocate %zu bytes of scratch", nbytes);
        return false;
    }
    *cur = nbytes;
    return true;
}

static int cu_copy(struct backend *be, void *dst, const void *src, size_t nbytes, cudaMemcpyKind kind,
                   const char *op, struct err *e) {
    struct cuda_ctx *c = CTX(be);
    if (c->capturing) return ERR(e, ERR_BACKEND, "cuda %s: not allowed during graph capture", op);
    if (nbytes == 0) return ERR_OK;
    cudaError_t err = cudaMemcpyAsync(dst, src, nbytes, kind, c->stream);
    if (err == cudaSuccess) err = cudaStreamSynchronize(c->stream);
    if (err != cudaSuccess) {
        (void)cudaGetLastError();
        rec_cuda(c, (int)err, op);
        return ERR(e, ERR_BACKEND, "cuda %s of %zu bytes: %s", op, nbytes, cudaGetErrorString(err));
    }
    return ERR_OK;
}

static int cu_upload(struct backend *be, void *dst, const void *src, size_t nbytes, struct err *e) {
    return cu_copy(be, dst, src, nbytes, cudaMemcpyHostToDevice, "upload", e);
}
static int cu_download(struct backend *be, void *dst, const void *src, size_t nbytes, struct err *e) {
    return cu_copy(be, dst, src, nbytes, cudaMemcpyDeviceToHost, "download", e);
}

static int cu_sync(struct backend *be, struct err *e) {
    struct cuda_ctx *c = CTX(be);
    if (c->capturing) return ERR(e, ERR_BACKEND, "cuda sync: not allowed during graph capture");
    rec_cuda(c, (int)cudaStreamSynchronize(c->stream), "sync");
    rec_cuda(c, (int)cudaGetLastError(), "sync");
    if (c->err_code != ERR_OK) return ERR(e, c->err_code, "%s", c->err_msg);
    return ERR_OK;
}

static bool cu_supports(const struct backend *be, enum qtype t) {
    (void)be;
    return t == QT_F32 || t == QT_F16 || t == QT_Q8_G64 || t == QT_Q4_G64 || t == QT_Q3_G64 ||
           t == QT_Q2_G64;
}

// ------------------------------------------------------------------------------------------------
// Argument checks: every failure is recorded (ERR_ARG / ERR_UNSUPPORTED) and the op does nothing.

static bool want_f32(struct cuda_ctx *c, const struct tensor *t, const char *op, const char *what) {
    if (t && t->data && t->type == QT_F32 && t->ne[0] > 0 && t->ne[1] > 0) return true;
    rec_err(c, ERR_ARG, op, "%s must be a non-empty f32 tensor on the device", what);
    return false;
}
static int64_t nel(const struct tensor *t) { return t->ne[0] * t->ne[1]; }

// ------------------------------------------------------------------------------------------------
// Ops

static void cu_embed(struct backend *be, struct tensor *out, const struct tensor *table,
                     const int32_t *tokens, int n_tokens) {
    struct cuda_ctx *c = CTX(be);
    if (!want_f32(c, out, "embed", "out") || !table || !table->data || !tokens || n_tokens <= 0) {
        rec_err(c, ERR_ARG, "embed", "bad arguments");
        return;
    }
    const int64_t n = table->ne[0];
    const int64_t rb = cu_row_bytes(table->type, n);
    if (rb < 0) {
        rec_err(c, ERR_UNSUPPORTED, "embed", "table type %d with row length %lld", (int)table->type,
                (long long)n);
        return;
    }
    if (out->ne[0] != n || out->ne[1] < n_tokens) {
        rec_err(c, ERR_ARG, "embed", "out is (%lld, %lld), need (%d, %lld)", (long long)out->ne[1],
                (long long)out->ne[0], n_tokens, (long long)n);
        return;
    }
    for (int i = 0; i < n_tokens; i++)
        if (tokens[i] < 0 || tokens[i] >= table->ne[1]) {
            rec_err(c, ERR_ARG, "embed", "token %d = %d outside [0, %lld)", i, tokens[i],
                    (long long)table->ne[1]);
            return;
        }
    if (n_tokens <= CUDA_EMBED_MAX_INLINE) {  // ids by value: no copy, graph-capturable
        struct cuda_row_list l;
        memset(&l, 0, sizeof l);
        memcpy(l.idx, tokens, (size_t)n_tokens * sizeof *tokens);
        rec_cuda(c, cuda_dequant_rows(out->data, false, table->data, table->type, rb, n, 0, NULL, &l,
                                      n_tokens, c->stream), "embed");
        return;
    }
    if (c->capturing) {
        rec_err(c, ERR_ARG, "embed", "%d tokens > %d cannot be captured in a graph", n_tokens,
                CUDA_EMBED_MAX_INLINE);
        return;
    }
    const size_t tb = (size_t)n_tokens * sizeof *tokens;
    if (!scratch(be, (void **)&c->tok, &c->tok_bytes, tb, "embed")) return;
    // From pageable memory this returns once `tokens` is staged, so the caller may reuse it.
    if (rec_cuda(c, (int)cudaMemcpyAsync(c->tok, tokens, tb, cudaMemcpyHostToDevice, c->stream), "embed"))
        return;
    rec_cuda(c, cuda_dequant_rows(out->data, false, table->data, table->type, rb, n, 0, c->tok, NULL,
                                  n_tokens, c->stream), "embed");
}

static void cu_rmsnorm(struct backend *be, struct tensor *out, const struct tensor *x,
                       const struct tensor *w, float eps) {
    struct cuda_ctx *c = CTX(be);
    if (!want_f32(c, out, "rmsnorm", "out") || !want_f32(c, x, "rmsnorm", "x") ||
        !want_f32(c, w, "rmsnorm", "w"))
        return;
    const int64_t n = x->ne[0], t = x->ne[1];
    if (out->ne[0] != n || out->ne[1] < t || nel(w) < n) {
        rec_err(c, ERR_ARG, "rmsnorm", "shape mismatch: x (%lld, %lld), out row %lld, w %lld",
                (long long)t, (long long)n, (long long)out->ne[0], (long long)nel(w));
        return;
    }
    rec_cuda(c, cuda_rmsnorm((float *)out->data, (const float *)x->data, (const float *)w->data, n, t,
                             eps, c->stream), "rmsnorm");
}

typedef int (*matvec_fn)(float *, const float *, const void *, int64_t, int64_t, cudaStream_t);

static matvec_fn matvec_for(enum qtype t) {
    switch (t) {
    case QT_F32: return cuda_matvec_f32;
    case QT_F16: return cuda_matvec_f16;
    case QT_Q8_G64: return cuda_matvec_q8_g64;
    case QT_Q4_G64: return cuda_matvec_q4_g64;
    case QT_Q3_G64: return cuda_matvec_q3_g64;
    case QT_Q2_G64: return cuda_matvec_q2_g64;
    default: return NULL;
    }
}

// Prefill: out(t, d) = x(t, n) @ W(d, n)^T through cuBLAS (column-major: out^T = W^T' x^T).
static void matmul_blas(struct backend *be, float *out, const float *x, const struct tensor *w,
                        int64_t n, int64_t d, int64_t t) {
    struct cuda_ctx *c = CTX(be);
    if (n > INT32_MAX || d > INT32_MAX || t > INT32_MAX) {
        rec_err(c, ERR_ARG, "matmul", "dimensions exceed cuBLAS int range");
        return;
    }
    const float one = 1.0f, zero = 0.0f;
    if (w->type == QT_F32) {  // plain fp32 SGEMM; math mode is CUBLAS_DEFAULT_MATH (no TF32)
        rec_blas(c, cublasSgemm(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)d, (int)t, (int)n, &one,
                                (const float *)w->data, (int)n, x, (int)n, &zero, out, (int)d),
                 "matmul");
        return;
    }
    // x -> f16 (relative error 2^-11 per element; see docs/CUDA.md for the tolerance)
    if (!scratch(be, &c->x16, &c->x16_bytes, (size_t)(n * t) * 2, "matmul")) return;
    if (rec_cuda(c, cuda_convert_f32(c->x16, QT_F16, x, n * t, c->stream), "matmul")) return;
    const int64_t rb = cu_row_bytes(w->type, n);
    int64_t rows = w->type == QT_F16 ? d : (int64_t)(CU_W16_SCRATCH_MAX / (2 * (size_t)n));
    if (rows < 1) rows = 1;
    if (rows > d) rows = d;
    if (w->type != QT_F16 && !scratch(be, &c->w16, &c->w16_bytes, (size_t)(rows * n) * 2, "matmul"))
        return;
    for (int64_t r0 = 0; r0 < d; r0 += rows) {
        const int64_t dc = r0 + rows <= d ? rows : d - r0;
        const void *a = (const uint8_t *)w->data + r0 * rb;  // f16 weights are used in place
        if (w->type != QT_F16) {
            if (rec_cuda(c, cuda_dequant_rows(c->w16, true, w->data, w->type, rb, n, r0, NULL, NULL, dc,
                                              c->stream), "matmul"))
                return;
            a = c->w16;
        }
        // Stream order keeps the next chunk's dequant behind this GEMM's reads of w16.
        if (rec_blas(c, cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)dc, (int)t, (int)n, &one,
                                     a, CUDA_R_16F, (int)n, c->x16, CUDA_R_16F, (int)n, &zero, out + r0,
                                     CUDA_R_32F, (int)d, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                     "matmul"))
            return;
    }
}

static void cu_matmul(struct backend *be, struct tensor *out, const struct tensor *x,
                      const struct tensor *w) {
    struct cuda_ctx *c = CTX(be);
    if (!want_f32(c, out, "matmul", "out") || !want_f32(c, x, "matmul", "x")) return;
    if (!w || !w->data || !cu_supports(be, w->type)) {
        rec_err(c, ERR_UNSUPPORTED, "matmul", "weight %s: type %d not supported",
                w && w->name ? w->name : "?", w ? (int)w->type : -1);
        return;
    }
    const int64_t n = w->ne[0], d = w->ne[1], t = x->ne[1];
    if (x->ne[0] != n || out->ne[0] != d || out->ne[1] < t || cu_row_bytes(w->type, n) < 0) {
        rec_err(c, ERR_ARG, "matmul", "%s: x (%lld, %lld) @ W (%lld, %lld)^T -> out (%lld, %lld)",
                w->name ? w->name : "?", (long long)t, (long long)x->ne[0], (long long)d, (long long)n,
                (long long)out->ne[1], (long long)out->ne[0]);
        return;
    }
    if (w->type != QT_F32 && w->type != QT_F16 && ((uintptr_t)w->data & 15)) {
        rec_err(c, ERR_ARG, "matmul", "%s: quantized weights must be 16-byte aligned",
                w->name ? w->name : "?");
        return;
    }
    if (t == 1)
        rec_cuda(c, matvec_for(w->type)((float *)out->data, (const float *)x->data, w->data, n, d,
                                        c->stream), "matmul");
    else
        matmul_blas(be, (float *)out->data, (const float *)x->data, w, n, d, t);
}

static void cu_rope(struct backend *be, struct tensor *x, int n_heads, int head_dim, int pos0,
                    float theta, int style) {
    struct cuda_ctx *c = CTX(be);
    if (!want_f32(c, x, "rope", "x")) return;
    if (n_heads <= 0 || head_dim <= 0 || head_dim % 2 || pos0 < 0 || (style != 0 && style != 1) ||
        x->ne[0] < (int64_t)n_heads * head_dim) {
        rec_err(c, ERR_ARG, "rope", "n_heads %d head_dim %d pos0 %d style %d on rows of %lld", n_heads,
                head_dim, pos0, style, (long long)x->ne[0]);
        return;
    }
    rec_cuda(c, cuda_rope((float *)x->data, x->ne[0], x->ne[1], n_heads, head_dim, pos0, theta, style,
                          c->stream), "rope");
}

static size_t kv_elem_bytes(enum qtype t) {
    return t == QT_F32 ? 4 : (t == QT_F16 || t == QT_BF16) ? 2 : 0;
}

static void cu_set_rows(struct backend *be, struct tensor *dst, int64_t row0, const struct tensor *src) {
    struct cuda_ctx *c = CTX(be);
    if (!want_f32(c, src, "set_rows", "src")) return;
    const size_t es = dst ? kv_elem_bytes(dst->type) : 0;
    if (!dst || !dst->data || !es) {
        rec_err(c, ERR_UNSUPPORTED, "set_rows", "dst must be f32, f16 or bf16");
        return;
    }
    if (src->ne[0] != dst->ne[0] || row0 < 0 || row0 > dst->ne[1] - src->ne[1]) {
        rec_err(c, ERR_ARG, "set_rows", "rows [%lld, %lld) of %lld, row length %lld vs %lld",
                (long long)row0, (long long)(row0 + src->ne[1]), (long long)dst->ne[1],
                (long long)src->ne[0], (long long)dst->ne[0]);
        return;
    }
    uint8_t *d0 = (uint8_t *)dst->data + (size_t)row0 * (size_t)dst->ne[0] * es;
    rec_cuda(c, cuda_convert_f32(d0, dst->type, (const float *)src->data, nel(src), c->stream),
             "set_rows");
}

static void cu_attention(struct backend *be, struct tensor *out, const struct tensor *q,
                         const struct tensor *k_cache, const struct tensor *v_cache, int n_heads,
                         int n_kv_heads, int head_dim, int pos0) {
    struct cuda_ctx *c = CTX(be);
    if (!want_f32(c, out, "attention", "out") || !want_f32(c, q, "attention", "q")) return;
    if (!k_cache || !v_cache || !k_cache->data || !v_cache->data || k_cache->type != v_cache->type ||
        !kv_elem_bytes(k_cache->type) || k_cache->ne[0] != v_cache->ne[0] ||
        k_cache->ne[1] != v_cache->ne[1]) {
        rec_err(c, ERR_UNSUPPORTED, "attention", "k/v caches must have one shape and type f32/f16/bf16");
        return;
    }
    const int64_t t = q->ne[1], qd = (int64_t)n_heads * head_dim;
    if (n_heads <= 0 || n_kv_heads <= 0 || n_heads % n_kv_heads || head_dim <= 0 || head_dim > 256 ||
        pos0 < 0 || q->ne[0] < qd || out->ne[0] < qd || out->ne[1] < t ||
        k_cache->ne[0] < (int64_t)n_kv_heads * head_dim || pos0 + t > k_cache->ne[1] || t > 65535) {
        rec_err(c, ERR_ARG, "attention",
                "heads %d/%d head_dim %d pos0 %d t %lld: q row %lld, out row %lld, cache (%lld, %lld)",
                n_heads, n_kv_heads, head_dim, pos0, (long long)t, (long long)q->ne[0],
                (long long)out->ne[0], (long long)k_cache->ne[1], (long long)k_cache->ne[0]);
        return;
    }
    rec_cuda(c, cuda_attention((float *)out->data, out->ne[0], (const float *)q->data, q->ne[0],
                               k_cache->data, v_cache->data, k_cache->ne[0], k_cache->type, t, n_heads,
                               n_kv_heads, head_dim, pos0, c->stream), "attention");
}

static void cu_swiglu(struct backend *be, struct tensor *out, const struct tensor *gate,
                      const struct tensor *up) {
    struct cuda_ctx *c = CTX(be);
    if (!want_f32(c, out, "swiglu", "out") || !want_f32(c, gate, "swiglu", "gate") ||
        !want_f32(c, up, "swiglu", "up"))
        return;
    if (nel(up) != nel(gate) || nel(out) < nel(gate)) {
        rec_err(c, ERR_ARG, "swiglu", "sizes out %lld gate %lld up %lld", (long long)nel(out),
                (long long)nel(gate), (long long)nel(up));
        return;
    }
    rec_cuda(c, cuda_swiglu((float *)out->data, (const float *)gate->data, (const float *)up->data,
                            nel(gate), c->stream), "swiglu");
}

static void cu_add(struct backend *be, struct tensor *out, const struct tensor *a, const struct tensor *b) {
    struct cuda_ctx *c = CTX(be);
    if (!want_f32(c, out, "add", "out") || !want_f32(c, a, "add", "a") || !want_f32(c, b, "add", "b"))
        return;
    if (nel(a) != nel(b) || nel(out) < nel(a)) {
        rec_err(c, ERR_ARG, "add", "sizes out %lld a %lld b %lld", (long long)nel(out),
                (long long)nel(a), (long long)nel(b));
        return;
    }
    rec_cuda(c, cuda_add((float *)out->data, (const float *)a->data, (const float *)b->data, nel(a),
                         c->stream), "add");
}

// ------------------------------------------------------------------------------------------------
// Lifetime

static void cu_destroy(struct backend *be) {
    if (!be) return;
    struct cuda_ctx *c = CTX(be);
    if (c) {
        if (c->capturing) {
            cudaGraph_t g = NULL;
            if (cudaStreamEndCapture(c->stream, &g) == cudaSuccess && g) cudaGraphDestroy(g);
        }
        if (c->stream) cudaStreamSynchronize(c->stream);
        for (size_t i = 0; i < c->n_recs; i++) cudaFree(c->recs[i].p);
        if (c->graph_exec) cudaGraphExecDestroy(c->graph_exec);
        if (c->blas) cublasDestroy(c->blas);
        if (c->stream) cudaStreamDestroy(c->stream);
        (void)cudaGetLastError();
        free(c->recs);
        free(c);
    }
    free(be);
}

static const struct backend_ops cuda_ops = {
    .name = "cuda",
    .supports = cu_supports,
    .alloc = cu_alloc,
    .free = cu_free,
    .upload = cu_upload,
    .download = cu_download,
    .sync = cu_sync,
    .destroy = cu_destroy,
    .embed = cu_embed,
    .rmsnorm = cu_rmsnorm,
    .matmul = cu_matmul,
    .rope = cu_rope,
    .set_rows = cu_set_rows,
    .attention = cu_attention,
    .swiglu = cu_swiglu,
    .add = cu_add,
    .begin_capture = backend_cuda_graph_begin,
    .end_capture = backend_cuda_graph_end_and_launch,
};

__global__ void k_probe(int *flag) {
    if (flag) *flag = 1;
}

extern "C" bool backend_cuda_available(void) {
    int n = 0;
    const cudaError_t err = cudaGetDeviceCount(&n);
    (void)cudaGetLastError();  // "no device" / "no driver" must not linger as a sticky last error
    return err == cudaSuccess && n > 0;
}

extern "C" struct backend *backend_cuda_create(int device, struct err *e) {
    int n = 0;
    cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess || n == 0) {
        (void)cudaGetLastError();
        ERR(e, ERR_BACKEND, "no CUDA device: %s",
            err != cudaSuccess ? cudaGetErrorString(err) : "device count is 0");
        return NULL;
    }
    if (device < 0 || device >= n) {
        ERR(e, ERR_ARG, "CUDA device %d does not exist (%d present)", device, n);
        return NULL;
    }
    struct backend *be = (struct backend *)calloc(1, sizeof *be);
    struct cuda_ctx *c = (struct cuda_ctx *)calloc(1, sizeof *c);
    if (!be || !c) {
        free(be);
        free(c);
        ERR(e, ERR_OOM, "out of host memory");
        return NULL;
    }
    be->ops = &cuda_ops;
    be->ctx = c;
    be->n_threads = 1;
    c->device = device;
    cudaDeviceProp prop;
    memset(&prop, 0, sizeof prop);
    const char *step = "cudaSetDevice";
    if ((err = cudaSetDevice(device)) != cudaSuccess) goto fail;
    step = "cudaGetDeviceProperties";
    if ((err = cudaGetDeviceProperties(&prop, device)) != cudaSuccess) goto fail;
    step = "cudaStreamCreate";
    if ((err = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking)) != cudaSuccess) goto fail;
    // A tiny kernel proves the binary has code for this GPU (the build is -arch=$(CUDA_ARCH)).
    k_probe<<<1, 1, 0, c->stream>>>(NULL);
    step = "probe kernel (was this built for this GPU? make cuda CUDA_ARCH=sm_XY)";
    if ((err = cudaGetLastError()) != cudaSuccess) goto fail;
    if ((err = cudaStreamSynchronize(c->stream)) != cudaSuccess) goto fail;
    {
        cublasStatus_t st = cublasCreate(&c->blas);
        if (st == CUBLAS_STATUS_SUCCESS) st = cublasSetStream(c->blas, c->stream);
        if (st == CUBLAS_STATUS_SUCCESS) st = cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH);
        if (st != CUBLAS_STATUS_SUCCESS) {
            ERR(e, ERR_BACKEND, "cuBLAS init on device %d (%s): %s", device, prop.name,
                cublasGetStatusString(st));
            cu_destroy(be);
            return NULL;
        }
    }
    return be;
fail:
    (void)cudaGetLastError();
    ERR(e, ERR_BACKEND, "device %d (%s, sm_%d%d): %s: %s", device, prop.name[0] ? prop.name : "?",
        prop.major, prop.minor, step, cudaGetErrorString(err));
    cu_destroy(be);
    return NULL;
}

// ------------------------------------------------------------------------------------------------
// Extras (kernels/cuda/backend_cuda.h)

extern "C" size_t backend_cuda_mem_used(struct backend *be) { return be ? CTX(be)->mem_used : 0; }
extern "C" size_t backend_cuda_mem_peak(struct backend *be) { return be ? CTX(be)->mem_peak : 0; }

extern "C" int backend_cuda_graph_begin(struct backend *be) {
    struct cuda_ctx *c = CTX(be);
    if (c->capturing) {
        rec_err(c, ERR_ARG, "graph_begin", "already capturing");
        return ERR_ARG;
    }
    // Relaxed: lets scratch growth (cudaMalloc) happen inside a captured prefill matmul.
    if (rec_cuda(c, (int)cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeRelaxed), "graph_begin"))
        return c->err_code;
    c->capturing = true;
    return ERR_OK;
}

extern "C" int backend_cuda_graph_end_and_launch(struct backend *be) {
    struct cuda_ctx *c = CTX(be);
    if (!c->capturing) {
        rec_err(c, ERR_ARG, "graph_end_and_launch", "not capturing");
        return ERR_ARG;
    }
    c->capturing = false;
    cudaGraph_t g = NULL;
    if (rec_cuda(c, (int)cudaStreamEndCapture(c->stream, &g), "graph_end_and_launch")) return c->err_code;
    if (c->graph_exec) {  // same topology as last step: patch kernel arguments in place
        cudaGraphExecUpdateResultInfo info;
        if (cudaGraphExecUpdate(c->graph_exec, g, &info) != cudaSuccess) {
            (void)cudaGetLastError();
            cudaGraphExecDestroy(c->graph_exec);
            c->graph_exec = NULL;
        }
    }
    int rc = ERR_OK;
    if (!c->graph_exec && rec_cuda(c, (int)cudaGraphInstantiate(&c->graph_exec, g, 0), "graph_instantiate")) {
        c->graph_exec = NULL;
        rc = c->err_code;
    }
    if (rc == ERR_OK && rec_cuda(c, (int)cudaGraphLaunch(c->graph_exec, c->stream), "graph_launch"))
        rc = c->err_code;
    cudaGraphDestroy(g);
    return rc;
}
