/* loaders/loader.h: one in-memory description of a model file, whatever its format.
 * GGUF (gguf.c), llama2.c .bin (llama2c.c), Hugging Face folder (safetensors.c), our model.bin (native.c).
 * Weights stay in a read-only mmap; tensor views point into it. Every loader is hostile-input safe:
 * errors name the file, the field and the byte offset. Tests: tests/test_loader_*.c, tests/fuzz_*.c */
#ifndef LOADERS_LOADER_H
#define LOADERS_LOADER_H

#include "quant/qtypes.h"

/* Hard limits: anything beyond is rejected as corrupt, before any allocation. */
#define LOADER_MAX_TENSORS  65536
#define LOADER_MAX_DIM      (1LL << 32)      // per dimension
#define LOADER_MAX_STRING   (1u << 24)       // 16 MiB per string (chat templates are long)
#define LOADER_MAX_ARRAY    (1u << 24)       // elements per metadata array
#define LOADER_MAX_KV       65536
#define LOADER_MAX_VOCAB    (1 << 22)
#define LOADER_MAX_LAYERS   1024
#define LOADER_MAX_MAPS     64

/* RoPE pairing. GGUF llama weights (permuted at conversion) and llama2.c rotate (x[2i], x[2i+1]);
 * Hugging Face checkpoints rotate (x[i], x[i + head_dim/2]). */
enum rope_style { ROPE_INTERLEAVED = 0, ROPE_NEOX = 1 };

struct model_config {
    int dim;          // model width (embedding length)
    int hidden_dim;   // FFN inner width
    int n_layers;
    int n_heads;
    int n_kv_heads;
    int vocab_size;
    int seq_len;      // trained context length
    int head_dim;     // dim / n_heads unless the file says otherwise
    float rope_theta; // 10000 for Llama-2
    float norm_eps;   // RMSNorm epsilon
    enum rope_style rope;
    bool tied_output; // output head shares token_embd.weight
    char arch[32];    // "llama"
    char name[128];   // general.name or the file stem
};

/* A view of one tensor inside the mapping (or inside loader-owned memory).
 * Names are normalised to GGUF's: token_embd.weight, output_norm.weight, output.weight,
 * blk.N.{attn_norm,attn_q,attn_k,attn_v,attn_output,ffn_norm,ffn_gate,ffn_up,ffn_down}.weight */
struct tensor_view {
    char name[96];
    enum qtype type;
    int n_dims;
    int64_t ne[4];     // ne[0] = contiguous row length, ne[1] = rows (GGUF order)
    const void *data;  // into the mmap, or into an owned buffer
    uint64_t nbytes;
    uint64_t offset;   // byte offset in its file (for error messages)
};

/* GGUF token types (also used for every other vocabulary source). */
enum token_type {
    TOK_UNDEFINED = 0, TOK_NORMAL = 1, TOK_UNKNOWN = 2, TOK_CONTROL = 3,
    TOK_USER_DEFINED = 4, TOK_UNUSED = 5, TOK_BYTE = 6
};

enum vocab_kind {
    VOCAB_NONE = 0,
    VOCAB_SPM,   // SentencePiece BPE over scores, "▁" for space, <0xNN> byte fallback (Llama-2, TinyLlama)
    VOCAB_BPE,   // GPT-2 byte-level BPE with merges and a pre-tokenizer regex (SmolLM2, Llama-3)
};

struct vocab {
    enum vocab_kind kind;
    int32_t n_tokens;
    char **tokens;       // n_tokens NUL-terminated strings (as stored: "▁the", "Ġthe", "<0x0A>")
    uint32_t *lens;      // byte length of each token string
    float *scores;       // n_tokens (SPM merge priority), NULL-free: zeros when absent
    int32_t *types;      // n_tokens enum token_type
    int32_t n_merges;
    char **merges;       // "a b" pairs in rank order (BPE only)
    int32_t bos, eos, unk, pad, eot;  // -1 when absent; eot = <|im_end|>/<|eot_id|> if present
    bool add_bos;
    bool add_space_prefix; // SPM: prepend "▁" to the text (Llama-2 true)
    bool llama2c_style;    // tokens use ' ' not '▁' (llama2.c tokenizer.bin)
    char pre[32];          // BPE pre-tokenizer name: "smollm", "llama-bpe", "gpt2", ...
    char *chat_template;   // NULL if none
    void *arena;           // owner of all the above strings/arrays (freed by vocab_free)
};
/* Zeroed memory owned by v (a chunked bump arena hung off v->arena), freed by vocab_free.
 * Every string and array in struct vocab comes from here. NULL on OOM. */
void *vocab_alloc(struct vocab *v, size_t nbytes);
char *vocab_strdup(struct vocab *v, const char *s, size_t len);  // NUL-terminated copy
void vocab_free(struct vocab *v);

enum model_format { MF_NONE = 0, MF_GGUF, MF_LLAMA2C, MF_SAFETENSORS, MF_NATIVE };

struct model_file {
    char path[1024];
    enum model_format format;
    struct model_config cfg;
    bool has_weights;            // false for vocab-only files
    struct tensor_view *tensors;
    int n_tensors;
    struct vocab vocab;
    int file_type;               // GGUF general.file_type or -1
    struct { void *addr; size_t size; } maps[LOADER_MAX_MAPS];
    int n_maps;
    void **owned;                // buffers owned by the loader (freed on close)
    int n_owned, cap_owned;
};

/* Opens any supported model: a .gguf, a llama2.c .bin (tokenizer_path names its tokenizer.bin;
 * NULL looks for tokenizer.bin next to it), a Hugging Face folder, or our model.bin.
 * Returns ERR_OK or an error code with e->msg = "<file>: <field> at byte <off>: <problem>". */
int model_file_open(struct model_file *mf, const char *path, const char *tokenizer_path, struct err *e);
void model_file_close(struct model_file *mf);
const struct tensor_view *model_file_find(const struct model_file *mf, const char *name);
/* Checks that every tensor a Llama forward pass needs is present with the right shape/type support. */
int model_file_validate(const struct model_file *mf, struct err *e);

/* Per-format entry points (used by model_file_open and the tests). */
int gguf_open(struct model_file *mf, const char *path, struct err *e);
/* A GGUF's tensors only (no model config or vocabulary required): for imatrix files. */
int gguf_open_tensors(struct model_file *mf, const char *path, struct err *e);
int llama2c_open(struct model_file *mf, const char *path, const char *tokenizer_path, struct err *e);
int safetensors_open(struct model_file *mf, const char *dir, struct err *e);
int native_open(struct model_file *mf, const char *path, struct err *e);

/* Vocabulary-only sources */
int llama2c_tokenizer_load(struct vocab *v, const char *path, int32_t vocab_size, struct err *e);
int spm_model_load(struct vocab *v, const char *path, struct err *e);       // sentencepiece tokenizer.model
int hf_tokenizer_json_load(struct vocab *v, const char *path, struct err *e);

/* Internal helpers shared by loaders (loader.c) */
int loader_map_file(struct model_file *mf, const char *path, const void **addr, size_t *size, struct err *e);
void *loader_own(struct model_file *mf, size_t nbytes);   // zeroed, freed on close; NULL on OOM

/* Writers: used by ./quantize, ./bench --make-model and the tests.  A writer takes a config,
 * a vocabulary and tensor views (data in memory) and writes the file; returns ERR_*. */
/* The GGUF writer is in loaders/gguf_write.h; safetensors and llama2.c writers in loaders/writers.h. */
int native_write(const char *path, const struct model_config *cfg, const struct vocab *v,
                 const struct tensor_view *tensors, int n_tensors, struct err *e);

#endif
