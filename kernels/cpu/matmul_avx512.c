/* kernels/cpu/matmul_avx512.c: AVX-512 (F/BW/VL/DQ/VNNI) matmul kernels, selected by dispatch.c only
 * when __builtin_cpu_supports reports all five. Entries left NULL fall back to the AVX2 kernel.
 * Test: tests/test_kernels_matmul.c (skips this ISA on CPUs without AVX-512). */
#include <immintrin.h>

#include "kernels/cpu/matmul_kernels.h"

void xq8_quantize_avx512(struct xq8 *a, const float *x, int64_t j0, int64_t j1) {
    xq8_quantize_avx2(a, x, j0, j1);
}

const mm_rows_fn mm_rows_avx512[QT_COUNT] = {0};
