/* loaders/gguf_write.h: a streaming GGUF v3 writer (metadata + tensors, 32-byte alignment).
 * Used by the tests, ./bench --make-model and ./quantize. Test: tests/test_loader_gguf.c */
#ifndef LOADERS_GGUF_WRITE_H
#define LOADERS_GGUF_WRITE_H

#include "loaders/loader.h"

/* GGUF metadata value types (the numbers stored in the file). */
enum gguf_value_type {
    GGUF_U8 = 0, GGUF_I8 = 1, GGUF_U16 = 2, GGUF_I16 = 3, GGUF_U32 = 4, GGUF_I32 = 5, GGUF_F32 = 6,
    GGUF_BOOL = 7, GGUF_STRING = 8, GGUF_ARRAY = 9, GGUF_U64 = 10, GGUF_I64 = 11, GGUF_F64 = 12
};

struct gguf_writer;

/* An empty writer; NULL on OOM. Not thread-safe; one writer per thread. */
struct gguf_writer *gguf_writer_create(void);
void gguf_writer_free(struct gguf_writer *w);

/* Metadata setters. Keys and values are copied. Setting a key again replaces its value (keeping its
 * position). Return ERR_OK, ERR_OOM or ERR_ARG; the first error is also kept and reported by
 * gguf_writer_write, so callers may ignore these return values. */
int gguf_writer_set_u32(struct gguf_writer *w, const char *key, uint32_t v);
int gguf_writer_set_i32(struct gguf_writer *w, const char *key, int32_t v);
int gguf_writer_set_f32(struct gguf_writer *w, const char *key, float v);
int gguf_writer_set_bool(struct gguf_writer *w, const char *key, bool v);
int gguf_writer_set_str(struct gguf_writer *w, const char *key, const char *v);
/* Any fixed-size scalar kind (u8 .. f64, bool): v holds gguf_value_type's size in bytes, little-endian. */
int gguf_writer_set_scalar(struct gguf_writer *w, const char *key, enum gguf_value_type type,
                           const void *v);
/* n strings; lens NULL means strlen of each (pass lens for strings holding NUL bytes). */
int gguf_writer_set_arr_str(struct gguf_writer *w, const char *key, const char *const *strs,
                            const uint32_t *lens, int64_t n);
int gguf_writer_set_arr_f32(struct gguf_writer *w, const char *key, const float *v, int64_t n);
int gguf_writer_set_arr_i32(struct gguf_writer *w, const char *key, const int32_t *v, int64_t n);
/* An array of n fixed-size elements of elem_type (u8 .. f64, bool), packed little-endian. */
int gguf_writer_set_arr(struct gguf_writer *w, const char *key, enum gguf_value_type elem_type,
                        const void *v, int64_t n);
/* A value of any type given as its encoded bytes (after the type word): for building nested
 * arrays or deliberately odd files in tests. */
int gguf_writer_set_raw(struct gguf_writer *w, const char *key, enum gguf_value_type type,
                        const void *bytes, size_t nbytes);

/* Adds a tensor. ne[0] is the contiguous row length (GGUF order), 1 <= n_dims <= 4; type must
 * exist in ggml (qtype_traits[type].ggml_type >= 0) and nbytes must equal its size. data is
 * referenced, not copied: it must stay valid until gguf_writer_write returns. */
int gguf_writer_add_tensor(struct gguf_writer *w, const char *name, enum qtype type, int n_dims,
                           const int64_t *ne, const void *data, size_t nbytes);

/* Streams the file to path (header, metadata, tensor infos, zero padding to 32 bytes, data).
 * ERR_IO on any write/close failure (e.g. disk full; the partial file is removed), or the first
 * setter error. The writer can be written again or freed afterwards. */
int gguf_writer_write(struct gguf_writer *w, const char *path, struct err *e);

/* Writes a complete llama GGUF: general.*, llama.* hyper-parameters from cfg and the full
 * tokenizer.ggml.* set from v (NULL: no tokenizer). Tensors are written in the given order, with
 * their names as given (GGUF names: token_embd.weight, blk.N.attn_q.weight, ...).
 * cfg->rope must be ROPE_INTERLEAVED (GGUF llama's convention), else ERR_UNSUPPORTED. */
int gguf_write_model(const char *path, const struct model_config *cfg, const struct vocab *v,
                     const struct tensor_view *t, int n_tensors, struct err *e);

#endif
