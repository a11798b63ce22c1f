/* quant/common.c: struct err helpers and exact fp16/bf16 conversions. */
#include "quant/common.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>

int err_set(struct err *e, enum err_code c, const char *fn, const char *fmt, ...) {
    if (!e) return c;
    e->code = c;
    int n = snprintf(e->msg, sizeof e->msg, "%s: ", fn);
    if (n < 0 || (size_t)n >= sizeof e->msg) return c;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg + n, sizeof e->msg - (size_t)n, fmt, ap);
    va_end(ap);
    return c;
}

const char *err_code_name(enum err_code c) {
    switch (c) {
    case ERR_OK: return "ok";
    case ERR_IO: return "io";
    case ERR_FORMAT: return "format";
    case ERR_UNSUPPORTED: return "unsupported";
    case ERR_OOM: return "out of memory";
    case ERR_BACKEND: return "backend";
    case ERR_ARG: return "argument";
    }
    return "?";
}

float f16_to_f32(f16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else {  // subnormal: value = man * 2^-24
            float f = (float)man * 5.9604644775390625e-8f;
            memcpy(&u, &f, 4);
            u |= sign;
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 112) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

f16_t f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000;
    uint32_t absu = u & 0x7fffffffu;
    if (absu >= 0x7f800000u) return (f16_t)(sign | 0x7c00 | (absu > 0x7f800000u ? 0x200 : 0));
    if (absu >= 0x477ff000u) return (f16_t)(sign | 0x7c00);  // rounds to >= 65520: inf
    if (absu < 0x38800000u) {                                 // below 2^-14: subnormal or zero
        float a;
        memcpy(&a, &absu, 4);
        // round-to-nearest-even of a / 2^-24 via the fp32 adder
        float r = a * 16777216.0f;
        return (f16_t)(sign | (uint32_t)lrintf(r));
    }
    uint32_t mant = absu & 0x7fffff, exp = (absu >> 23) - 112;
    uint32_t h = (exp << 10) | (mant >> 13);
    uint32_t rest = mant & 0x1fff;
    if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) h++;
    return (f16_t)(sign | h);
}

bf16_t f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16_t)((u >> 16) | 0x40);
    u += 0x7fff + ((u >> 16) & 1);
    return (bf16_t)(u >> 16);
}
