/* engine/args.h: small helpers for command-line parsing with clear errors (used by every tool). */
#ifndef ENGINE_ARGS_H
#define ENGINE_ARGS_H

#include <stdbool.h>
#include <stdint.h>

/* Parse a whole string as a number within [lo, hi]; false (and a message on stderr naming the
 * flag) when it is not one. */
bool arg_int(const char *flag, const char *s, long lo, long hi, int *out);
bool arg_float(const char *flag, const char *s, double lo, double hi, float *out);
bool arg_u64(const char *flag, const char *s, uint64_t *out);
/* Parse "1,2,4" into out[0..max); returns count or -1. */
int arg_int_list(const char *flag, const char *s, long lo, long hi, int *out, int max);

#endif
