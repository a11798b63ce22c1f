/* loaders/writers.h: writers for the non-GGUF formats, used by the tests and tools
 * (./quantize writes our native format with native_write, declared in loader.h).
 * Input tensor views use GGUF names and GGUF/llama2.c (interleaved) RoPE row order; data may be
 * F32, F16 or BF16 (converted to f32). Test: tests/test_loader_llama2c.c, test_loader_safetensors.c */
#ifndef LOADERS_WRITERS_H
#define LOADERS_WRITERS_H

#include "loaders/loader.h"

/* Writes a Hugging Face Llama folder: dir/config.json, dir/model.safetensors (F16 when f16, else
 * F32; HF names; attn_q/attn_k rows permuted to HF's half-split RoPE order) and, when v has tokens,
 * dir/tokenizer.json + dir/tokenizer_config.json. Creates dir if needed. Returns ERR_*. */
int safetensors_write_folder(const char *dir, const struct model_config *cfg, const struct vocab *v,
                             const struct tensor_view *t, int n, bool f16, struct err *e);

/* Writes a llama2.c checkpoint: version 0 = legacy 28-byte header (+ freq_cis tail, as run.c
 * expects), 1 = "ak42" v1 fp32, 2 = "ak42" v2 int8 groups (group 64, halved until it divides dim).
 * cfg->tied_output selects the shared classifier. Returns ERR_*. */
int llama2c_write(const char *path, const struct model_config *cfg, const struct tensor_view *t, int n,
                  int version, struct err *e);

/* Writes a llama2.c tokenizer.bin (scores, "▁" -> ' ', bos/eos as "\n<s>\n"/"\n</s>\n"). */
int llama2c_tokenizer_write(const char *path, const struct vocab *v, struct err *e);

/* The HF row order of a q/k projection: hf row (h*hd + j*hd/2 + i) = gguf row (h*hd + 2i + j).
 * dst/src are (n_heads*hd) x row_len f32 matrices; inverse=true maps HF back to GGUF order. */
void writers_permute_qk(float *dst, const float *src, int n_heads, int head_dim, int64_t row_len,
                        bool inverse);

#endif
