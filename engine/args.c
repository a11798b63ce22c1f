/* engine/args.c: number parsing for command-line flags, strict (no trailing junk, range checked). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/args.h"

bool arg_int(const char *flag, const char *s, long lo, long hi, int *out) {
    if (!s) { fprintf(stderr, "error: %s needs a value\n", flag); return false; }
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "error: %s expects an integer in [%ld, %ld], got '%s'\n", flag, lo, hi, s);
        return false;
    }
    *out = (int)v;
    return true;
}

bool arg_float(const char *flag, const char *s, double lo, double hi, float *out) {
    if (!s) { fprintf(stderr, "error: %s needs a value\n", flag); return false; }
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi) {
        fprintf(stderr, "error: %s expects a number in [%g, %g], got '%s'\n", flag, lo, hi, s);
        return false;
    }
    *out = (float)v;
    return true;
}

bool arg_u64(const char *flag, const char *s, uint64_t *out) {
    if (!s) { fprintf(stderr, "error: %s needs a value\n", flag); return false; }
    char *end;
    errno = 0;
    if (*s == '-') {   // llama.cpp: -1 = random seed
        long v = strtol(s, &end, 10);
        if (errno || *end || v != -1) { fprintf(stderr, "error: %s expects a non-negative integer or -1, got '%s'\n", flag, s); return false; }
        *out = UINT64_MAX;
        return true;
    }
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end) {
        fprintf(stderr, "error: %s expects a non-negative integer, got '%s'\n", flag, s);
        return false;
    }
    *out = v;
    return true;
}

int arg_int_list(const char *flag, const char *s, long lo, long hi, int *out, int max) {
    if (!s) { fprintf(stderr, "error: %s needs a value\n", flag); return -1; }
    int n = 0;
    char buf[256];
    if (strlen(s) >= sizeof buf) { fprintf(stderr, "error: %s: list too long\n", flag); return -1; }
    strcpy(buf, s);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        if (n == max) { fprintf(stderr, "error: %s: at most %d values\n", flag, max); return -1; }
        if (!arg_int(flag, tok, lo, hi, &out[n])) return -1;
        n++;
    }
    if (n == 0) { fprintf(stderr, "error: %s: empty list\n", flag); return -1; }
    return n;
}
