/* kernels/cuda/backend_cuda.h: CUDA-backend extras beyond struct backend_ops (kernels/backend.h):
 * memory statistics and CUDA-graph capture hooks. Plain C; without nvcc the stub
 * (backend_cuda_stub.c) provides them as no-ops. Design: docs/CUDA.md. Test: tests/test_cuda_ops.c */
#ifndef KERNELS_CUDA_BACKEND_CUDA_H
#define KERNELS_CUDA_BACKEND_CUDA_H

#include <stddef.h>

#include "kernels/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Device bytes currently allocated through be->ops->alloc (including padding) and the peak since
 * creation. 0 for NULL or the stub. Not thread-safe. */
size_t backend_cuda_mem_used(struct backend *be);
size_t backend_cuda_mem_peak(struct backend *be);

/* CUDA-graph capture of a sequence of ops (e.g. one decode step). Between begin and
 * end_and_launch call only compute ops (embed with <= 16 tokens, rmsnorm, matmul with t == 1,
 * rope, set_rows, attention, swiglu, add); alloc/upload/download/sync are refused while capturing.
 * Ops capture their scalar arguments (token ids, pos0) by value, so capture every step again:
 * end_and_launch updates the previous executable graph in place when the topology is unchanged
 * (cheap) and re-instantiates otherwise, then launches it. Results are ready after sync.
 * Both return 0 or an enum err_code; errors are also recorded for the next sync. */
int backend_cuda_graph_begin(struct backend *be);
int backend_cuda_graph_end_and_launch(struct backend *be);

#ifdef __cplusplus
}
#endif

#endif
