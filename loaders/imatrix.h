/* loaders/imatrix.h: importance-matrix files <-> struct calib (quant/calib.h).
 * Reads llama.cpp's two formats and writes the GGUF one, so files move both ways:
 *   GGUF (llama-imatrix's default): general.type = "imatrix", imatrix.datasets / chunk_count /
 *     chunk_size, and per weight "<name>.in_sum2" (f32 [n, 1]: the sum of x_i^2 over the tokens)
 *     and "<name>.counts" (f32 [1, 1]: the token count). Ours adds "<name>.in_xtx" (f32, 1-D,
 *     n(n+1)/2: the sum of x_i x_j, j >= i, packed by rows), which llama.cpp ignores; in a Llama
 *     block q/k/v and gate/up share one input, so attn_k, attn_v and ffn_up carry none and use
 *     attn_q's and ffn_gate's.
 *   legacy .dat: int32 n_entries, then per entry int32 len, name, int32 ncall, int32 nval,
 *     f32[nval] = mean(x_i^2) * ncall; then int32 chunk count, int32 len, dataset name.
 * Entries with several matrices (MoE experts: counts with more than one element) are refused.
 * Test: tests/test_loader_imatrix.c */
#ifndef LOADERS_IMATRIX_H
#define LOADERS_IMATRIX_H

#include "quant/calib.h"

/* Reads either format (told apart by the GGUF magic) into *c (zeroed first; calib_free it).
 * ERR_IO, ERR_FORMAT (with the offending entry), ERR_OOM. */
int imatrix_load(struct calib *c, const char *path, struct err *e);

/* Writes c as an imatrix GGUF (with the xtx tensors where c has them) through a temporary file
 * renamed over path, so a failed write never leaves a partial file or destroys one. */
int imatrix_save(const struct calib *c, const char *path, struct err *e);

#endif
