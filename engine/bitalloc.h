/* engine/bitalloc.h: --target-bpw B, a per-tensor bit plan for a size budget. Every matrix is
 * quantized at each candidate width (q2, q3, q4, q8_g64) with the method the load will use; its
 * damage is measured as the relative output error of the matmul over the calibration inputs,
 *   r(t, b) = sum_rows (w - q)^T H (w - q) / sum_rows w^T H w     (H = E[x x^T] from --imatrix;
 *   with only E[x^2], the diagonal of H; without calibration, H = I),
 * turned into predicted KL divergence on calibration text by measurements of the model with
 * only one kind (attn_q .. ffn_down) at q3, only one layer at q3, and the output head at each
 * width (engine/bitalloc.c scale_measured). The plan minimises the summed damage subject to the
 * file's size:
 *   sum bytes <= B * n_params / 8   (n_params counts every tensor once, norms and a tied
 *   embedding included; norms stay f32). Solved as a knapsack by dynamic programming over the
 *   budget in 1e5 units (bytes rounded up; the Lagrangian, per tensor argmin r + lambda * bytes,
 *   if that memory is not there), then a greedy pass that spends what is left on the best
 *   damage-per-byte upgrades and pairwise exchanges. docs/QUANT_FORMATS.md "Bit allocation". Test: tests/test_quant_gptq.c */
#ifndef ENGINE_BITALLOC_H
#define ENGINE_BITALLOC_H

#include "quant/calib.h"
#include "quant/gptq.h"
#include "quant/plan.h"
#include "quant/quantize.h"

#define BITALLOC_NCAND 5

/* One matrix's measured candidates (bytes and relative damage per width). */
struct bitalloc_item {
    char name[96];             // plan key: "blk.3.ffn_down" or "output"
    uint64_t bytes[BITALLOC_NCAND];
    double damage[BITALLOC_NCAND];
    int choice;                // index into the candidates
};
extern const enum qtype bitalloc_cand[BITALLOC_NCAND];   // q2, q3, q4, q8_g64, f16 (increasing size)

/* The choice for each item minimising the summed damage with sum bytes <= budget - fixed_bytes.
 * Returns false when even the smallest candidates do not fit. */
bool bitalloc_solve(struct bitalloc_item *items, int n, uint64_t budget, uint64_t fixed_bytes);

/* KL divergence (nats per token, calibration text) of the model quantized by the plan `spec`
 * against the source; provided by the engine (a temporary engine per call). */
typedef int (*bitalloc_kl_fn)(void *ctx, const char *spec, double *kl, struct err *e);

struct bitalloc_args {
    const struct model_file *mf;
    bool tied_output;
    const struct calib *calib;  // may be empty
    bool gptq;
    struct gptq_opts gptq_opts;
    enum quant_method method;
    double target_bpw;
    int n_threads;
    bool quiet;
    bitalloc_kl_fn kl;          // measures kinds', layers' and the head's KL (NULL: relative output error only)
    void *kl_ctx;
    const char *table;          // --alloc-table: measurements saved here, or read from it when they match
};

/* Measures every matrix of the model and adds the chosen plan's rules to *plan. Prints a
 * summary (and the plan as --bits rules) on stderr unless quiet. ERR_ARG when the target is
 * below the all-q2 size, ERR_OOM. */
int bitalloc_plan(const struct bitalloc_args *a, struct quant_plan *plan, struct err *e);

#endif
