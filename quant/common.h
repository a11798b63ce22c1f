/* quant/common.h: error reporting and fp16/bf16 conversion shared by every module.
 * Library code never exits: it fills a struct err and returns the code (STYLE.md section 7). */
#ifndef QUANT_COMMON_H
#define QUANT_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum err_code { ERR_OK = 0, ERR_IO, ERR_FORMAT, ERR_UNSUPPORTED, ERR_OOM, ERR_BACKEND, ERR_ARG };

struct err {
    enum err_code code;
    char msg[512];
};

/* Writes "fn: message" into e (if non-NULL) and returns c. Never allocates. */
int err_set(struct err *e, enum err_code c, const char *fn, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
#define ERR(e, c, ...) err_set((e), (c), __func__, __VA_ARGS__)

const char *err_code_name(enum err_code c);

typedef uint16_t f16_t;   // IEEE binary16 bits
typedef uint16_t bf16_t;  // bfloat16 bits

/* Exact IEEE conversions (round-to-nearest-even on the way down), no SIMD. */
float f16_to_f32(f16_t h);
f16_t f32_to_f16(float f);
static inline float bf16_to_f32(bf16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
bf16_t f32_to_bf16(float f);

/* Checked size arithmetic: return false on overflow. */
static inline bool mul_ok_u64(uint64_t a, uint64_t b, uint64_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}
static inline bool add_ok_u64(uint64_t a, uint64_t b, uint64_t *out) {
    return !__builtin_add_overflow(a, b, out);
}

#endif
