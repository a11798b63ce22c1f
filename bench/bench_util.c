/* bench/bench_util.c: statistics, peak RSS, cache flush, list parsing and the PRNG normal sampler
 * shared by the ./llm-bench modes. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "bench/bench.h"

// ------------------------------------------------------------------------------------------------
// Statistics

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

struct bench_stats bench_stats_of(const double *x, int n) {
    struct bench_stats s = {0};
    if (n <= 0) return s;
    double *c = malloc((size_t)n * sizeof *c);
    if (!c) return s;
    memcpy(c, x, (size_t)n * sizeof *c);
    qsort(c, (size_t)n, sizeof *c, cmp_double);
    double sum = 0;
    for (int i = 0; i < n; i++) sum += c[i];
    s.n = n;
    s.mean = sum / n;
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (c[i] - s.mean) * (c[i] - s.mean);
    s.stddev = n > 1 ? sqrt(ss / (n - 1)) : 0.0;
    s.median = n % 2 ? c[n / 2] : 0.5 * (c[n / 2 - 1] + c[n / 2]);
    s.min = c[0];
    s.max = c[n - 1];
    free(c);
    return s;
}

// ------------------------------------------------------------------------------------------------
// Memory

void bench_reset_peak_rss(void) {
    // Linux >= 4.0: writing 5 to clear_refs resets VmHWM to the current RSS
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f) return;
    fputs("5", f);
    fclose(f);
}

size_t bench_peak_rss(void) {
    // VmHWM is the kernel's high-water mark of resident memory, in kB
    FILE *f = fopen("/proc/self/status", "r");
    if (f) {
        char line[256];
        while (fgets(line, sizeof line, f)) {
            unsigned long long kb;
            if (sscanf(line, "VmHWM: %llu kB", &kb) == 1) {
                fclose(f);
                return (size_t)kb * 1024;
            }
        }
        fclose(f);
    }
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0) return (size_t)ru.ru_maxrss * 1024;   // Linux: kB
    return 0;
}

size_t bench_llc_bytes(void) {
    static size_t cached;
    if (cached) return cached;
    size_t best = 0;
    for (int i = 0; i < 8; i++) {
        char path[96];
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/size", i);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        unsigned long v = 0;
        char unit = 0;
        if (fscanf(f, "%lu%c", &v, &unit) >= 1) {
            size_t b = (size_t)v * (unit == 'K' ? 1024 : unit == 'M' ? 1024 * 1024 : unit == 'G' ? 1024ul << 20 : 1);
            if (b > best) best = b;
        }
        fclose(f);
    }
    cached = best ? best : (size_t)32 << 20;
    return cached;
}

void bench_flush_cache(void) {
    static volatile unsigned char *buf;
    static size_t bytes;
    static unsigned char gen;
    if (!buf) {
        bytes = 2 * bench_llc_bytes();
        if (bytes < (64u << 20)) bytes = 64u << 20;
        buf = malloc(bytes);
        if (!buf) return;
    }
    gen++;
    // one write per 64-byte line is enough to claim every line of the buffer
    for (size_t i = 0; i < bytes; i += 64) buf[i] = gen;
}

// ------------------------------------------------------------------------------------------------
// Parsing

int bench_parse_int_list(const char *s, int *out, int max, int lo, int hi) {
    int n = 0;
    const char *p = s;
    if (!s || !*s) return -1;
    for (;;) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < lo || v > hi || n >= max) return -1;
        out[n++] = (int)v;
        if (*end == '\0') return n;
        if (*end != ',') return -1;
        p = end + 1;
    }
}

// ------------------------------------------------------------------------------------------------
// PRNG

float bench_rng_normal(struct bench_rng *g) {
    // Box-Muller; u1 in (0, 1] so log(u1) is finite
    double u1 = ((bench_rng_u64(g) >> 11) + 1) * (1.0 / 9007199254740992.0);
    double u2 = (bench_rng_u64(g) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}
