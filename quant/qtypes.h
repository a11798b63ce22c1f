/* quant/qtypes.h: every weight type the engine knows, its block layout and one traits table.
 * ggml's types: Q8_0 and Q4_0 have CPU kernels (kernels/cpu); Q4_1, Q4_K, Q5_K, Q6_K are expanded
 * (dequantized) at load; the engine's own n-bit types (QT_Q8_G64 .. QT_Q2_G64) have fast kernels. Layouts: docs/QUANT_FORMATS.md.
 * Test: tests/test_quant_*.c */
#ifndef QUANT_QTYPES_H
#define QUANT_QTYPES_H

#include <assert.h>
#include "quant/common.h"

enum qtype {
    QT_F32 = 0,
    QT_F16,
    QT_BF16,
    // ggml formats, load-only (dequantized to f32/f16 at load)
    QT_GGML_Q8_0,
    QT_GGML_Q4_0,
    QT_GGML_Q4_1,
    QT_GGML_Q4_K,
    QT_GGML_Q5_K,
    QT_GGML_Q6_K,
    // the engine's own group-64 formats
    QT_Q8_G64,
    QT_Q4_G64,
    QT_Q3_G64,
    QT_Q2_G64,
    // CPU-internal repackings of the four above for the AVX-512 VNNI kernels (quant/repack.h):
    // same bytes, interleaved order; never in a file, on the command line or in a bit plan
    QT_Q8_X8,
    QT_Q4_X8,
    QT_Q3_X8,
    QT_Q2_X8,
    QT_COUNT
};

#define QK_G64 64

/* Q8_G64: symmetric. | fp16 d | 64 x int8 q | ; w[i] ~= d * q[i], q in [-127,127]. 66 B = 8.25 bits/weight */
struct blk_q8_g64 { f16_t d; int8_t qs[64]; };
static_assert(sizeof(struct blk_q8_g64) == 66, "q8_g64 block must be 66 bytes");

/* Q4_G64: asymmetric. | fp16 d | fp16 m | 32 B: qs[i] low nibble = q[i], high nibble = q[i+32] |
 * w[i] ~= d * q[i] + m, q in [0,15]. 36 B = 4.5 bits/weight */
struct blk_q4_g64 { f16_t d, m; uint8_t qs[32]; };
static_assert(sizeof(struct blk_q4_g64) == 36, "q4_g64 block must be 36 bytes");

/* Q3_G64: asymmetric, q in [0,7] split in a 2-bit plane and a 1-bit plane.
 * | fp16 d | fp16 m | ql: 16 B | qh: 8 B |
 * low 2 bits of q[i]: ql[i % 16] >> (2 * (i / 16)) & 3   (byte j holds q[j], q[j+16], q[j+32], q[j+48])
 * high bit of q[i]:   qh[i % 8] >> (i / 8) & 1            (byte j holds q[j], q[j+8], ..., q[j+56])
 * The high plane is the bit transpose of a 64-bit mask: read as a little-endian u64, bit 8*j + b
 * is the high bit of q[j + 8*b], so each 64-bit quarter of a broadcast gives 8 consecutive codes
 * one shift away from place (docs/KERNELS.md, Q3).
 * w[i] ~= d * q[i] + m. 28 B = 3.5 bits/weight */
struct blk_q3_g64 { f16_t d, m; uint8_t ql[16]; uint8_t qh[8]; };
static_assert(sizeof(struct blk_q3_g64) == 28, "q3_g64 block must be 28 bytes");

/* Q2_G64: asymmetric, q in [0,3]. | fp16 d | fp16 m | qs: 16 B, same order as Q3's ql plane |
 * w[i] ~= d * q[i] + m. 20 B = 2.5 bits/weight */
struct blk_q2_g64 { f16_t d, m; uint8_t qs[16]; };
static_assert(sizeof(struct blk_q2_g64) == 20, "q2_g64 block must be 20 bytes");

/* ggml load-only block sizes (see quant/ggml_quants.c for the layouts, documented from the GGUF spec) */
#define GGML_QK8_0 32
#define GGML_QK4_0 32
#define GGML_QK4_1 32
#define GGML_QK_K 256

typedef void (*dequantize_row_fn)(float *restrict out, const void *restrict src, int64_t n);
typedef void (*quantize_row_fn)(void *restrict dst, const float *restrict src, int64_t n);

struct qtype_traits {
    const char *name;          // "q4_g64", also used on the command line and in files
    int group;                 // weights per block
    size_t block_bytes;        // bytes per block
    double bpw;                // bits per weight including scales = 8 * block_bytes / group
    int ggml_type;             // GGUF/ggml type id, -1 if the type does not exist in ggml
    int bits;                  // nominal bits (32, 16, 8, 4, 3, 2)
    bool native;               // the engine's own quantized format (a -q target)
    bool internal;             // an in-memory layout only (X8): loaders and name lookups reject it
    dequantize_row_fn dequantize_row;  // scalar reference, n a multiple of group
    quantize_row_fn quantize_row;      // round-to-nearest reference; NULL for load-only types
};

extern const struct qtype_traits qtype_traits[QT_COUNT];

static inline size_t qtype_row_bytes(enum qtype t, int64_t n) {   // n must be a multiple of .group
    return (size_t)(n / qtype_traits[t].group) * qtype_traits[t].block_bytes;
}
/* Bytes of an (rows x n) matrix; returns false on overflow or when n is not a multiple of .group. */
bool qtype_nbytes(enum qtype t, int64_t n, int64_t rows, uint64_t *out);
/* The type whose name is `name` ("q4_g64", "q4", "f16", ...) or -1. */
int qtype_from_name(const char *name);
/* Our native type for a bit width (8,4,3,2; 16 -> F16, 32 -> F32) or -1. */
int qtype_for_bits(int bits);
/* Map a ggml type id to ours, -1 if unknown. */
int qtype_from_ggml(int ggml_type);

#endif
