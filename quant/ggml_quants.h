/* quant/ggml_quants.h: ggml/GGUF block formats the engine can load (dequantized at load time):
 * Q8_0, Q4_0, Q4_1 (32 weights per block) and the K-quants Q4_K, Q5_K, Q6_K (256 per super-block).
 * Layouts written from the GGUF spec; checked against gguf-py in tests/test_ggml_dequant_py.sh.
 * Test: tests/test_ggml_dequant.c (hand-built blocks). */
#ifndef QUANT_GGML_QUANTS_H
#define QUANT_GGML_QUANTS_H

#include "quant/qtypes.h"

/* Q8_0: | fp16 d | 32 x int8 q |  w = d * q.  34 B = 8.5 bits/weight */
struct ggml_blk_q8_0 { f16_t d; int8_t qs[32]; };
static_assert(sizeof(struct ggml_blk_q8_0) == 34, "ggml q8_0 block must be 34 bytes");

/* Q4_0: | fp16 d | 16 B: low nibble = q[j], high nibble = q[j+16] |  w = d * (q - 8).  18 B */
struct ggml_blk_q4_0 { f16_t d; uint8_t qs[16]; };
static_assert(sizeof(struct ggml_blk_q4_0) == 18, "ggml q4_0 block must be 18 bytes");

/* Q4_1: | fp16 d | fp16 m | 16 B nibbles as Q4_0 |  w = d * q + m.  20 B */
struct ggml_blk_q4_1 { f16_t d, m; uint8_t qs[16]; };
static_assert(sizeof(struct ggml_blk_q4_1) == 20, "ggml q4_1 block must be 20 bytes");

/* Q4_K: 256 weights = 8 sub-blocks of 32, each with a 6-bit scale and a 6-bit min.
 * | fp16 d | fp16 dmin | scales: 12 B (8 x 6-bit sc, 8 x 6-bit mn) | qs: 128 B nibbles |
 * w = d*sc[j] * q - dmin*mn[j]. 144 B = 4.5 bits/weight */
struct ggml_blk_q4_K { f16_t d, dmin; uint8_t scales[12]; uint8_t qs[128]; };
static_assert(sizeof(struct ggml_blk_q4_K) == 144, "ggml q4_K block must be 144 bytes");

/* Q5_K: as Q4_K plus a fifth bit plane qh (32 B). 176 B = 5.5 bits/weight */
struct ggml_blk_q5_K { f16_t d, dmin; uint8_t scales[12]; uint8_t qh[32]; uint8_t qs[128]; };
static_assert(sizeof(struct ggml_blk_q5_K) == 176, "ggml q5_K block must be 176 bytes");

/* Q6_K: 16 sub-blocks of 16, int8 scales. | ql: 128 B low nibbles | qh: 64 B 2-bit high parts |
 * scales: 16 x int8 | fp16 d |  w = d * sc[j] * (q - 32), q in [0,63]. 210 B = 6.5625 bits/weight */
struct ggml_blk_q6_K { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; f16_t d; };
static_assert(sizeof(struct ggml_blk_q6_K) == 210, "ggml q6_K block must be 210 bytes");

/* Dequantize n weights (n a multiple of the block size) from src into out. Thread-safe. */
void ggml_dequantize_row_q8_0(float *restrict out, const void *restrict src, int64_t n);
void ggml_dequantize_row_q4_0(float *restrict out, const void *restrict src, int64_t n);
void ggml_dequantize_row_q4_1(float *restrict out, const void *restrict src, int64_t n);
void ggml_dequantize_row_q4_K(float *restrict out, const void *restrict src, int64_t n);
void ggml_dequantize_row_q5_K(float *restrict out, const void *restrict src, int64_t n);
void ggml_dequantize_row_q6_K(float *restrict out, const void *restrict src, int64_t n);

/* Round-to-nearest quantizers matching ggml's reference (used to write synthetic GGUF files).
 * Q8_0: d = absmax/127, q = round(x/d). Q4_0: d = signed_max/-8 (the value of largest magnitude),
 * q = min(15, (int)(x/d + 8.5)): the extreme maps to q=0 exactly, the opposite extreme may clamp
 * at q=15 (error up to d). Q4_1: d = (max-min)/15, m = min, q = min(15, (int)((x-m)/d + 0.5)). */
void ggml_quantize_row_q8_0(void *restrict dst, const float *restrict src, int64_t n);
void ggml_quantize_row_q4_0(void *restrict dst, const float *restrict src, int64_t n);
void ggml_quantize_row_q4_1(void *restrict dst, const float *restrict src, int64_t n);

#endif
