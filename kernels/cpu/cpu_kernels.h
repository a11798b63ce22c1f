/* kernels/cpu/cpu_kernels.h: the CPU matmul for every weight type, with run-time ISA dispatch.
 * Each format has <op>_<wtype>_ref (scalar, the spec), _avx2 and _avx512 variants; see docs/KERNELS.md.
 * Test: tests/test_kernels_matmul.c. Bench: ./bench --kernels */
#ifndef KERNELS_CPU_CPU_KERNELS_H
#define KERNELS_CPU_CPU_KERNELS_H

#include "kernels/cpu/threadpool.h"
#include "quant/qtypes.h"

enum cpu_isa { CPU_ISA_REF = 0, CPU_ISA_AVX2 = 1, CPU_ISA_AVX512 = 2 };

/* Best ISA this CPU supports (cached); LLM_ISA=ref|avx2|avx512 in the environment caps it. */
enum cpu_isa cpu_isa_detect(void);
const char *cpu_isa_name(enum cpu_isa isa);
bool cpu_matmul_supports(enum qtype wt);

/* out(t, d) = x(t, n) @ W(d, n)^T, f32 in and out, W of type wt stored row-major
 * (row i = qtype_row_bytes(wt, n) bytes). Splits rows (and tokens) across the pool's threads.
 * Quantizes x to 8 bits internally where the kernel for wt uses int8 dot products.
 * isa selects the implementation (use cpu_isa_detect()); CPU_ISA_REF runs the scalar reference. */
void cpu_matmul(struct threadpool *tp, enum cpu_isa isa, enum qtype wt, float *out, const float *x,
                const void *w, int64_t n, int64_t d, int64_t t);

/* Several matmuls of the same x (t tokens of n): out_i(t, d_i) = x @ W_i^T, e.g. q/k/v or gate/up.
 * For decode (t == 1) x is quantized once and all the matrices' row chunks go through the pool in
 * one pass (no barrier between the matrices); otherwise the same as cpu_matmul per part. */
#define CPU_MATMUL_MAX_PARTS 4
struct cpu_matmul_part {
    enum qtype wt;
    float *out;
    const void *w;
    int64_t d;
};
void cpu_matmul_multi(struct threadpool *tp, enum cpu_isa isa, int np, const struct cpu_matmul_part *parts,
                      const float *x, int64_t n, int64_t t);

#endif
