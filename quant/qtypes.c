/* quant/qtypes.c: the traits table (one row per enum qtype) and name/bit/ggml-id lookups.
 * All size math in the engine goes through qtype_traits. Test: tests/test_quant_formats.c */
#include "quant/qtypes.h"

#include <strings.h>

#include "quant/ggml_quants.h"
#include "quant/quant_ref.h"
#include "quant/repack.h"

#define BPW(bytes, group) (8.0 * (double)(bytes) / (double)(group))

const struct qtype_traits qtype_traits[QT_COUNT] = {
    [QT_F32] = {.name = "f32", .group = 1, .block_bytes = 4, .bpw = 32.0, .ggml_type = 0,
                .bits = 32, .native = false,
                .dequantize_row = dequantize_row_f32_ref, .quantize_row = quantize_row_f32_ref},
    [QT_F16] = {.name = "f16", .group = 1, .block_bytes = 2, .bpw = 16.0, .ggml_type = 1,
                .bits = 16, .native = false,
                .dequantize_row = dequantize_row_f16_ref, .quantize_row = quantize_row_f16_ref},
    [QT_BF16] = {.name = "bf16", .group = 1, .block_bytes = 2, .bpw = 16.0, .ggml_type = 30,
                 .bits = 16, .native = false,
                 .dequantize_row = dequantize_row_bf16_ref, .quantize_row = quantize_row_bf16_ref},
    // ggml formats: load-only for the engine; Q8_0/Q4_0/Q4_1 can also be written (synthetic GGUFs)
    [QT_GGML_Q8_0] = {.name = "q8_0", .group = GGML_QK8_0,
                      .block_bytes = sizeof(struct ggml_blk_q8_0),
                      .bpw = BPW(sizeof(struct ggml_blk_q8_0), GGML_QK8_0), .ggml_type = 8,
                      .bits = 8, .native = false,
                      .dequantize_row = ggml_dequantize_row_q8_0,
                      .quantize_row = ggml_quantize_row_q8_0},
    [QT_GGML_Q4_0] = {.name = "q4_0", .group = GGML_QK4_0,
                      .block_bytes = sizeof(struct ggml_blk_q4_0),
                      .bpw = BPW(sizeof(struct ggml_blk_q4_0), GGML_QK4_0), .ggml_type = 2,
                      .bits = 4, .native = false,
                      .dequantize_row = ggml_dequantize_row_q4_0,
                      .quantize_row = ggml_quantize_row_q4_0},
    [QT_GGML_Q4_1] = {.name = "q4_1", .group = GGML_QK4_1,
                      .block_bytes = sizeof(struct ggml_blk_q4_1),
                      .bpw = BPW(sizeof(struct ggml_blk_q4_1), GGML_QK4_1), .ggml_type = 3,
                      .bits = 4, .native = false,
                      .dequantize_row = ggml_dequantize_row_q4_1,
                      .quantize_row = ggml_quantize_row_q4_1},
    [QT_GGML_Q4_K] = {.name = "q4_K", .group = GGML_QK_K,
                      .block_bytes = sizeof(struct ggml_blk_q4_K),
                      .bpw = BPW(sizeof(struct ggml_blk_q4_K), GGML_QK_K), .ggml_type = 12,
                      .bits = 4, .native = false,
                      .dequantize_row = ggml_dequantize_row_q4_K, .quantize_row = NULL},
    [QT_GGML_Q5_K] = {.name = "q5_K", .group = GGML_QK_K,
                      .block_bytes = sizeof(struct ggml_blk_q5_K),
                      .bpw = BPW(sizeof(struct ggml_blk_q5_K), GGML_QK_K), .ggml_type = 13,
                      .bits = 5, .native = false,
                      .dequantize_row = ggml_dequantize_row_q5_K, .quantize_row = NULL},
    [QT_GGML_Q6_K] = {.name = "q6_K", .group = GGML_QK_K,
                      .block_bytes = sizeof(struct ggml_blk_q6_K),
                      .bpw = BPW(sizeof(struct ggml_blk_q6_K), GGML_QK_K), .ggml_type = 14,
                      .bits = 6, .native = false,
                      .dequantize_row = ggml_dequantize_row_q6_K, .quantize_row = NULL},
    // the engine's own group-64 formats (quant/quant_ref.c)
    [QT_Q8_G64] = {.name = "q8_g64", .group = QK_G64, .block_bytes = sizeof(struct blk_q8_g64),
                   .bpw = BPW(sizeof(struct blk_q8_g64), QK_G64), .ggml_type = -1, .bits = 8,
                   .native = true,
                   .dequantize_row = dequantize_row_q8_g64_ref,
                   .quantize_row = quantize_row_q8_g64_ref},
    [QT_Q4_G64] = {.name = "q4_g64", .group = QK_G64, .block_bytes = sizeof(struct blk_q4_g64),
                   .bpw = BPW(sizeof(struct blk_q4_g64), QK_G64), .ggml_type = -1, .bits = 4,
                   .native = true,
                   .dequantize_row = dequantize_row_q4_g64_ref,
                   .quantize_row = quantize_row_q4_g64_ref},
    [QT_Q3_G64] = {.name = "q3_g64", .group = QK_G64, .block_bytes = sizeof(struct blk_q3_g64),
                   .bpw = BPW(sizeof(struct blk_q3_g64), QK_G64), .ggml_type = -1, .bits = 3,
                   .native = true,
                   .dequantize_row = dequantize_row_q3_g64_ref,
                   .quantize_row = quantize_row_q3_g64_ref},
    [QT_Q2_G64] = {.name = "q2_g64", .group = QK_G64, .block_bytes = sizeof(struct blk_q2_g64),
                   .bpw = BPW(sizeof(struct blk_q2_g64), QK_G64), .ggml_type = -1, .bits = 2,
                   .native = true,
                   .dequantize_row = dequantize_row_q2_g64_ref,
                   .quantize_row = quantize_row_q2_g64_ref},
#define X8_TRAITS(T, nm, NAT, blk, b)                                                           \
    [T] = {.name = nm, .group = X8_WEIGHTS, .block_bytes = X8_GROUPS * sizeof(struct blk),   \
           .bpw = BPW(sizeof(struct blk), QK_G64),                                              \
           .ggml_type = -1, .bits = b, .native = false, .internal = true,                       \
           .dequantize_row = dequantize_row_##NAT##_ref, .quantize_row = quantize_row_##NAT##_ref}
    X8_TRAITS(QT_Q8_X8, "q8_g64x8", q8_x8, blk_q8_g64, 8),
    X8_TRAITS(QT_Q4_X8, "q4_g64x8", q4_x8, blk_q4_g64, 4),
    X8_TRAITS(QT_Q3_X8, "q3_g64x8", q3_x8, blk_q3_g64, 3),
    X8_TRAITS(QT_Q2_X8, "q2_g64x8", q2_x8, blk_q2_g64, 2),
#undef X8_TRAITS
};

bool qtype_nbytes(enum qtype t, int64_t n, int64_t rows, uint64_t *out) {
    if ((unsigned)t >= QT_COUNT || n < 0 || rows < 0) return false;
    const struct qtype_traits *tr = &qtype_traits[t];
    if (n % tr->group != 0) return false;
    uint64_t row_bytes, total;
    if (!mul_ok_u64((uint64_t)(n / tr->group), tr->block_bytes, &row_bytes)) return false;
    if (!mul_ok_u64(row_bytes, (uint64_t)rows, &total)) return false;
    *out = total;
    return true;
}

int qtype_from_name(const char *name) {
    if (!name) return -1;
    for (int t = 0; t < QT_COUNT; t++)   // case-insensitive: "Q4_K", "q4_k", "F16" all match
        if (!qtype_traits[t].internal && strcasecmp(name, qtype_traits[t].name) == 0) return t;
    static const struct { const char *s; enum qtype t; } alias[] = {
        {"q8", QT_Q8_G64}, {"q4", QT_Q4_G64}, {"q3", QT_Q3_G64}, {"q2", QT_Q2_G64},
        {"fp32", QT_F32},  {"fp16", QT_F16},  {"float32", QT_F32}, {"float16", QT_F16},
    };
    for (size_t i = 0; i < sizeof alias / sizeof alias[0]; i++)
        if (strcasecmp(name, alias[i].s) == 0) return alias[i].t;
    return -1;
}

int qtype_for_bits(int bits) {
    switch (bits) {
    case 32: return QT_F32;
    case 16: return QT_F16;
    case 8: return QT_Q8_G64;
    case 4: return QT_Q4_G64;
    case 3: return QT_Q3_G64;
    case 2: return QT_Q2_G64;
    default: return -1;
    }
}

int qtype_from_ggml(int ggml_type) {
    if (ggml_type < 0) return -1;
    for (int t = 0; t < QT_COUNT; t++)
        if (qtype_traits[t].ggml_type == ggml_type) return t;
    return -1;
}
