/* quant/quant_ref.h: scalar reference quantizers for the engine's own group-64 formats and the
 * f32/f16/bf16 row converters. Layouts: quant/qtypes.h and docs/QUANT_FORMATS.md.
 * Test: tests/test_quant_formats.c */
#ifndef QUANT_QUANT_REF_H
#define QUANT_QUANT_REF_H

#include "quant/qtypes.h"

/* Row converters. n is any count; dst/out are caller-owned. */
void quantize_row_f32_ref(void *restrict dst, const float *restrict src, int64_t n);
void dequantize_row_f32_ref(float *restrict out, const void *restrict src, int64_t n);
void quantize_row_f16_ref(void *restrict dst, const float *restrict src, int64_t n);
void dequantize_row_f16_ref(float *restrict out, const void *restrict src, int64_t n);
void quantize_row_bf16_ref(void *restrict dst, const float *restrict src, int64_t n);
void dequantize_row_bf16_ref(float *restrict out, const void *restrict src, int64_t n);

/* Round-to-nearest (RTN) quantizers, n a multiple of 64. Q8_G64 is symmetric (d = absmax/127,
 * rounded UP to fp16 so no q is clamped); Q4/Q3/Q2 are min-max asymmetric with m = min rounded
 * DOWN to fp16 and d = (max - m)/(2^b - 1) rounded UP, so every x lies in [m, m + qmax*d] and
 * |x - deq(q(x))| <= d/2 (+ fp32 rounding of d*q + m). Thread-safe, no allocation. */
void quantize_row_q8_g64_ref(void *restrict dst, const float *restrict src, int64_t n);
void quantize_row_q4_g64_ref(void *restrict dst, const float *restrict src, int64_t n);
void quantize_row_q3_g64_ref(void *restrict dst, const float *restrict src, int64_t n);
void quantize_row_q2_g64_ref(void *restrict dst, const float *restrict src, int64_t n);

/* out[i] = d * q[i] (Q8) or d * q[i] + m (Q4/Q3/Q2), computed in fp32 exactly as written. */
void dequantize_row_q8_g64_ref(float *restrict out, const void *restrict src, int64_t n);
void dequantize_row_q4_g64_ref(float *restrict out, const void *restrict src, int64_t n);
void dequantize_row_q3_g64_ref(float *restrict out, const void *restrict src, int64_t n);
void dequantize_row_q2_g64_ref(float *restrict out, const void *restrict src, int64_t n);

/* Block-level helpers shared with the optimized quantizer (quant/quantize.c).
 * q64[i] in [0, 2^bits-1]: packs one group of 64 codes into the block of type t (Q4/Q3/Q2_G64). */
void quant_pack_group(enum qtype t, void *blk, f16_t d, f16_t m, const uint8_t *q64);
/* Unpacks the 64 codes and the fp16 d, m of one block of type t (Q4/Q3/Q2_G64). */
void quant_unpack_group(enum qtype t, const void *blk, f16_t *d, f16_t *m, uint8_t *q64);

/* fp16 with directed rounding (finite results, saturating at +-65504). */
f16_t f16_round_down(float x);
f16_t f16_round_up(float x);

#endif
