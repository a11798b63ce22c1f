/* quant/repack.h: the X8 ("8-group interleaved") in-memory layouts of the native types, a CPU-only
 * repacking of Q8/Q4/Q3/Q2_G64 that the AVX-512 VNNI kernels read (kernels/cpu/matmul_x8.c).
 * Same bytes per row as the natural type; never written to or read from a file.
 *
 * A row of n weights (n a multiple of 512, the X8 traits' "group") is n/512 superblocks of 8
 * natural groups. A superblock holds its 8 groups' scales first (fp16 d[8],
 * then fp16 m[8] for the asymmetric types), then the codes in "code vector" order: 8 vectors of 64
 * bytes, vector k byte 4L + b (lane L = 0..15, b = 0..3) is weight 8k + 4(L >> 3) + b of group L & 7,
 * so one VPDPBUSD per vector adds 4 products per group-lane and lanes l, l + 8 hold group l.
 * The vectors are bit-packed (bytes per superblock = 8 natural blocks):
 *   Q8 (528 B): d[8] | 8 x 64 B int8 codes
 *   Q4 (288 B): d[8] m[8] | 4 x 64 B: byte p of packed j = cv[2j][p] | cv[2j+1][p] << 4
 *   Q2 (160 B): d[8] m[8] | 2 x 64 B: byte p of packed j = sum_c cv[4j+c][p] << 2c
 *   Q3 (224 B): d[8] m[8] | 3 x 64 B, three 3-bit fields per byte, bits 0-2 | 3-5 | 6-7:
 *               P0 = cv0 | cv1 << 3 | (cv2 & 3) << 6,  P1 = cv3 | cv4 << 3 | (cv5 & 3) << 6,
 *               P2 = cv6 | cv7 << 3 | (cv2 >> 2) << 6 | (cv5 >> 2) << 7
 * Docs: docs/QUANT_FORMATS.md (X8). Test: tests/test_quant_repack.c */
#ifndef QUANT_REPACK_H
#define QUANT_REPACK_H

#include "quant/qtypes.h"

#define X8_GROUPS 8                       // groups per superblock
#define X8_WEIGHTS (X8_GROUPS * QK_G64)   // 512 weights per superblock

/* QT_Q*_X8 for a native QT_Q*_G64 type, and back; -1 for any other type. */
int qtype_x8_of(enum qtype natural);
int qtype_natural_of(enum qtype x8);
static inline bool qtype_is_x8(enum qtype t) { return qtype_natural_of(t) >= 0; }

/* One row of n weights (n a multiple of 64) between the natural layout and X8 (dst != src). */
void x8_pack_row(enum qtype x8, void *restrict dst, const void *restrict natural, int64_t n);
void x8_unpack_row(enum qtype x8, void *restrict natural, const void *restrict src, int64_t n);
/* rows rows, n weights each, split across up to n_threads threads (<= 1: the calling thread). */
void x8_pack_matrix(enum qtype x8, void *restrict dst, const void *restrict natural, int64_t n, int64_t rows,
                    int n_threads);

/* Byte offset of weight i of group l (l < 8) in the code-vector order. */
static inline int x8_pos(int l, int i) { return 64 * (i >> 3) + 4 * (l + 8 * ((i >> 2) & 1)) + (i & 3); }

/* Traits rows (quant/qtypes.c): the natural type's reference after unpacking one superblock. */
void dequantize_row_x8_ref(enum qtype x8, float *restrict out, const void *restrict src, int64_t n);
void quantize_row_x8_ref(enum qtype x8, void *restrict dst, const float *restrict src, int64_t n);
void dequantize_row_q8_x8_ref(float *restrict out, const void *restrict src, int64_t n);
void dequantize_row_q4_x8_ref(float *restrict out, const void *restrict src, int64_t n);
void dequantize_row_q3_x8_ref(float *restrict out, const void *restrict src, int64_t n);
void dequantize_row_q2_x8_ref(float *restrict out, const void *restrict src, int64_t n);
void quantize_row_q8_x8_ref(void *restrict dst, const float *restrict src, int64_t n);
void quantize_row_q4_x8_ref(void *restrict dst, const float *restrict src, int64_t n);
void quantize_row_q3_x8_ref(void *restrict dst, const float *restrict src, int64_t n);
void quantize_row_q2_x8_ref(void *restrict dst, const float *restrict src, int64_t n);

#endif
