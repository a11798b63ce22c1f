/* kernels/backend.h: the one interface the forward pass computes through (STYLE.md section 3).
 * Coarse ops on struct tensor, output first. The CPU backend (kernels/cpu/backend_cpu.c) is the
 * reference; the CUDA backend (kernels/cuda/backend_cuda.cu) implements the same ops.
 * Test: tests/test_backend.c (every backend against the CPU one). */
#ifndef KERNELS_BACKEND_H
#define KERNELS_BACKEND_H

#include "quant/qtypes.h"

struct tensor {
    enum qtype type;
    int64_t ne[2];     // ne[0] = row length (contiguous), ne[1] = rows (tokens for activations)
    void *data;        // host or device memory, owned by the backend that allocated it
    size_t nbytes;
    const char *name;  // for error messages
};

struct backend;

struct backend_ops {
    const char *name;
    /* Can matmul use weights of this type? Asked once at load time. */
    bool (*supports)(const struct backend *be, enum qtype weight_type);
    /* Optional: the in-memory layout matmul weights of type t with rows of n should be converted to
     * (the CPU backend's X8 repacking, quant/repack.h), or t itself. Asked once per matrix at load;
     * the engine converts with x8_pack_matrix and saves files in the natural layout. */
    enum qtype (*matrix_layout)(const struct backend *be, enum qtype t, int64_t n);
    void *(*alloc)(struct backend *be, size_t nbytes);                 // NULL on OOM
    void (*free)(struct backend *be, void *p);
    int (*upload)(struct backend *be, void *dst, const void *src, size_t nbytes, struct err *e);
    int (*download)(struct backend *be, void *dst, const void *src, size_t nbytes, struct err *e);
    int (*sync)(struct backend *be, struct err *e);                    // returns deferred errors
    void (*destroy)(struct backend *be);

    /* out(t, dim) = table[tokens[t], :] (table may be any type; rows dequantized to f32).
     * tokens is host memory. */
    void (*embed)(struct backend *be, struct tensor *out, const struct tensor *table,
                  const int32_t *tokens, int n_tokens);
    /* out(t, n) = x(t, n) / rms(x) * w(n) */
    void (*rmsnorm)(struct backend *be, struct tensor *out, const struct tensor *x,
                    const struct tensor *w, float eps);
    /* out(t, d) = x(t, n) @ w(d, n)^T; x, out f32, w any supported type */
    void (*matmul)(struct backend *be, struct tensor *out, const struct tensor *x,
                   const struct tensor *w);
    /* Optional: n matmuls of the same x (n <= 4), as n calls of matmul; a backend may share the
     * activation preparation and the synchronization between them (CPU decode). */
    void (*matmul_n)(struct backend *be, int n, struct tensor *const *outs, const struct tensor *x,
                     const struct tensor *const *ws);
    /* In place on x(t, n_heads * head_dim): token t sits at position pos0 + t.
     * style 0: pairs (2i, 2i+1); style 1 (NeoX/HF): pairs (i, i + head_dim/2).
     * freq_i = theta^(-2i/head_dim). */
    void (*rope)(struct backend *be, struct tensor *x, int n_heads, int head_dim, int pos0,
                 float theta, int style);
    /* dst rows [row0, row0 + src->ne[1]) = src (f32 -> dst->type). Used to append to the KV cache. */
    void (*set_rows)(struct backend *be, struct tensor *dst, int64_t row0, const struct tensor *src);
    /* Causal grouped-query attention. q(t, n_heads*hd); k_cache, v_cache(n_ctx, n_kv_heads*hd)
     * hold positions 0 .. pos0+t-1 (already written); query t attends to positions <= pos0 + t.
     * out(t, n_heads*hd). scale = 1/sqrt(hd). */
    void (*attention)(struct backend *be, struct tensor *out, const struct tensor *q,
                      const struct tensor *k_cache, const struct tensor *v_cache,
                      int n_heads, int n_kv_heads, int head_dim, int pos0);
    /* out = silu(gate) * up, elementwise */
    void (*swiglu)(struct backend *be, struct tensor *out, const struct tensor *gate,
                   const struct tensor *up);
    /* out = a + b, elementwise */
    void (*add)(struct backend *be, struct tensor *out, const struct tensor *a, const struct tensor *b);

    /* Optional (NULL when absent): record the compute ops between the two calls and replay them as
     * one unit (a CUDA graph), so a decode step costs one launch instead of ~300. Only compute ops
     * may be called in between; results are ready after end_capture. Return 0 or an enum err_code;
     * on failure the engine runs the step op by op instead. */
    int (*begin_capture)(struct backend *be);
    int (*end_capture)(struct backend *be);
};

struct backend {
    const struct backend_ops *ops;
    void *ctx;
    int n_threads;
    bool host_memory;   // tensors live in host memory: the engine may point weights into the mmap
    size_t copy_min_bytes;   // host_memory: copy weights of at least this size out of the mmap into
                             // alloc'd memory instead (CPU: onto huge pages); 0 = always point into it
};

/* CPU backend with a persistent thread pool of n_threads (0 = all cores). NULL on OOM. */
struct backend *backend_cpu_create(int n_threads, struct err *e);
/* The CPU backend's thread pool (kernels/cpu/threadpool.h), NULL for any other backend: tools that
 * time work next to the engine's (./llm-bench's paired read probe) run it on the same threads. */
struct threadpool *backend_cpu_pool(struct backend *be);
/* CUDA backend on device `device`; ERR_BACKEND with a clear message if no GPU or no CUDA build. */
struct backend *backend_cuda_create(int device, struct err *e);
bool backend_cuda_available(void);   // compiled with CUDA and a device is present

#endif
