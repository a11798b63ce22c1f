/* kernels/cuda/backend_cuda_stub.c: the CUDA backend entry points for builds without nvcc
 * (compiled only then; see the Makefile). Everything reports "not available". */
#include "kernels/cuda/backend_cuda.h"

struct backend *backend_cuda_create(int device, struct err *e) {
    (void)device;
    ERR(e, ERR_BACKEND, "built without CUDA (install nvcc and run make cuda)");
    return NULL;
}
bool backend_cuda_available(void) { return false; }
size_t backend_cuda_mem_used(struct backend *be) { (void)be; return 0; }
size_t backend_cuda_mem_peak(struct backend *be) { (void)be; return 0; }
int backend_cuda_graph_begin(struct backend *be) { (void)be; return ERR_BACKEND; }
int backend_cuda_graph_end_and_launch(struct backend *be) { (void)be; return ERR_BACKEND; }
