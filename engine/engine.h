/* engine/engine.h: the public API. Load a model (any format), tokenize, run the forward pass with a
 * KV cache, sample. Used by ./infer, ./ppl, ./bench, ./eval and the tests. Not thread-safe per engine. */
#ifndef ENGINE_ENGINE_H
#define ENGINE_ENGINE_H

#include "kernels/backend.h"
#include "loaders/loader.h"

struct engine_opts {
    const char *model_path;
    const char *tokenizer_path;  // llama2.c .bin only; NULL = tokenizer.bin next to the model
    int n_ctx;                   // KV cache length; 0 = min(model seq_len, 4096)
    int n_threads;               // 0 = all cores
    int quant_bits;              // 0 = keep the file's types; 8/4/3/2 = quantize at load
    const char *bits_plan;       // e.g. "default=4,blk.0-1=8,output=8", a plan file, or "auto:B" (= target_bpw B)
    double target_bpw;           // > 0: per-tensor widths chosen for B bits per weight (engine/bitalloc.h)
    const char *calib_text;      // target_bpw: calibration text for the KL measurements
    const char *alloc_table;     // target_bpw: save the measurements here / reuse them when they match
    const char *quant_method;    // "rtn", "opt" or "gptq" (NULL = "opt"); gptq needs imatrix_path
    const char *imatrix_path;    // calibration statistics (./imatrix, or llama-imatrix's GGUF/.dat):
                                 // opt weights each group's error by E[x^2]; gptq uses the Gram matrices
    float gptq_damp;             // GPTQ damping, fraction of mean(diag H) (0 = the default 0.1)
    bool gptq_no_act_order;      // GPTQ columns in their own order (default: decreasing E[x^2], static groups)
    const char *device;          // "cpu" (default) or "cuda"
    int n_gpu_layers;            // -ngl: > 0 selects cuda
    enum qtype cache_type_k;     // -ctk: KV cache key type: QT_F32 (0, default), QT_F16, QT_GGML_Q8_0, QT_GGML_Q4_0
    enum qtype cache_type_v;     // -ctv: value type, same choices
    int n_seq;                   // -np: independent sequences, each with its own KV cache (0 = 1)
    bool quiet;                  // no progress output on stderr
    bool vocab_only;             // tokenizer only
};

struct engine;

int engine_load(struct engine **out, const struct engine_opts *o, struct err *e);
void engine_free(struct engine *en);

const struct model_config *engine_config(const struct engine *en);
const struct vocab *engine_vocab(const struct engine *en);
const struct model_file *engine_model_file(const struct engine *en);
struct backend *engine_backend(struct engine *en);
int engine_n_ctx(const struct engine *en);
struct tokenizer *engine_tokenizer(struct engine *en);   // see engine/tokenizer.h

/* Tokenize UTF-8 text. Returns the number of tokens (<= max), or -1 with e set (invalid UTF-8,
 * too many tokens). parse_special: "<|im_start|>" etc. become their control token ids. */
int engine_tokenize(struct engine *en, const char *text, bool add_bos, bool parse_special,
                    int32_t *out, int max, struct err *e);

/* Run tokens[0..n) at positions pos..pos+n-1 (prefill when n > 1), appending to the KV cache.
 * logits: NULL, or (all_logits ? n : 1) x vocab_size floats (the last position only unless all_logits).
 * Requires pos + n <= n_ctx. */
int engine_forward(struct engine *en, const int32_t *tokens, int n, int pos, float *logits,
                   bool all_logits, struct err *e);

/* Sequence seq (0 .. engine_n_seq-1) of an engine loaded with n_seq > 1: the same as engine_forward
 * on that sequence's own KV cache (engine_forward is sequence 0). */
int engine_forward_seq(struct engine *en, int seq, const int32_t *tokens, int n, int pos, float *logits,
                       bool all_logits, struct err *e);
int engine_n_seq(const struct engine *en);
/* One decode step for n distinct sequences at once: token i goes to sequence seq[i] at position
 * pos[i]. The matmuls run once over all n rows (matrix-matrix); RoPE, the cache append and
 * attention run per sequence. logits: n x vocab_size. n <= engine_n_seq. */
int engine_decode_multi(struct engine *en, const int32_t *tokens, const int *seq, const int *pos, int n,
                        float *logits, struct err *e);
/* Context shift of sequence seq: drop positions [keep, keep + n_discard), move [keep + n_discard,
 * n_past) down by n_discard, re-rotating the cached keys (RoPE by -n_discard). The caller then
 * continues at position n_past - n_discard. Host-memory backends (ERR_UNSUPPORTED otherwise). */
int engine_kv_shift(struct engine *en, int seq, int keep, int n_discard, int n_past, struct err *e);

/* Memory accounting (bytes). */
size_t engine_weight_bytes(const struct engine *en);   // weights as stored for compute
size_t engine_kv_bytes(const struct engine *en);       // KV cache, allocated (all sequences)
enum qtype engine_kv_type(const struct engine *en, int which);   // 0 = keys, 1 = values
size_t engine_scratch_bytes(const struct engine *en);  // activations
/* Bytes of weights read per decoded token (every matrix once, embedding row excluded). */
size_t engine_weight_bytes_per_token(const struct engine *en);
double engine_load_seconds(const struct engine *en);

/* The weights as the engine computes with them (after conversion / quantization), as tensor views
 * with GGUF names; *out is malloc'd (caller frees), data points into the engine. Host backends only. */
int engine_tensor_views(struct engine *en, struct tensor_view **out, int *n_out, struct err *e);
/* The same views of the compute buffers themselves, with no copy: a type may be a CPU-only
 * in-memory layout (quant/repack.h X8), and data points at what the kernels read. Host backends only. */
int engine_compute_views(struct engine *en, struct tensor_view **out, int *n_out, struct err *e);
/* Calibration hook (./imatrix): fn is called before every matmul of engine_forward with the
 * matmul's f32 input x (x->ne[1] rows = tokens, x->ne[0] = the weights' row length, host memory)
 * and the GGUF names of the n_w weights that multiply it: q, k and v share one input, gate and up
 * one; the output head is named "output.weight" even when tied to the embedding. fn NULL removes
 * it. Host-memory backends only (ERR_UNSUPPORTED otherwise). */
typedef void (*engine_matmul_observer)(void *ctx, const char *const *weight_names, int n_w,
                                       const struct tensor *x);
int engine_set_matmul_observer(struct engine *en, engine_matmul_observer fn, void *ctx, struct err *e);

/* Writes the prepared weights, config and vocabulary as our native model.bin (loaders/native.c). */
int engine_save(struct engine *en, const char *path, struct err *e);

#endif
