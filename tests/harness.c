/* tests/harness.c: test harness implementation (see test.h). */
#include <stdarg.h>
#include <sys/stat.h>

#include "tests/test.h"

int test_failures, test_checks;
uint64_t test_seed = 0x5eed1234abcdULL;
static const char *test_name = "?";

void rng_init(struct rng *g, uint64_t seed) {
    g->seed = seed ? seed : test_seed;
    g->s = g->seed * 0x9E3779B97F4A7C15ULL + 1;
}
uint64_t rng_u64(struct rng *g) {
    uint64_t x = g->s;
    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
    return g->s = x;
}
float rng_uniform(struct rng *g, float lo, float hi) {
    return lo + (hi - lo) * (float)((rng_u64(g) >> 40) * (1.0 / 16777216.0));
}
float rng_normal(struct rng *g) {
    double u1 = ((rng_u64(g) >> 11) + 1) * (1.0 / 9007199254740993.0);
    double u2 = (rng_u64(g) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}
float *rng_f32(struct rng *g, size_t n, float lo, float hi) {
    float *p = malloc((n ? n : 1) * sizeof *p);
    if (!p) { fprintf(stderr, "rng_f32: out of memory\n"); exit(2); }
    for (size_t i = 0; i < n; i++) p[i] = rng_uniform(g, lo, hi);
    return p;
}

#define CANARY 64
static const float canary_val = -1234.5f;
float *guarded_alloc_f32(size_t n) {
    float *p = malloc((n + CANARY) * sizeof *p);
    if (!p) { fprintf(stderr, "guarded_alloc_f32: out of memory\n"); exit(2); }
    for (size_t i = 0; i < n; i++) p[i] = NAN;   // poison: unwritten outputs fail the NaN-safe checks
    for (size_t i = 0; i < CANARY; i++) p[n + i] = canary_val;
    return p;
}
int guard_intact(const float *p, size_t n) {
    for (size_t i = 0; i < CANARY; i++)
        if (memcmp(&p[n + i], &canary_val, sizeof(float)) != 0) return 0;
    return 1;
}
void guarded_free(float *p) { free(p); }

const char *test_data(const char *rel) {
    static char buf[8][1024];
    static int k;
    const char *root = getenv("TEST_DATA");
    if (!root) root = "../shared/data";
    char *b = buf[k++ & 7];
    snprintf(b, 1024, "%s/%s", root, rel);
    return b;
}
int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}
char *read_file_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *p = malloc((size_t)n + 1);
    if (!p || fread(p, 1, (size_t)n, f) != (size_t)n) { fclose(f); free(p); return NULL; }
    fclose(f);
    p[n] = 0;
    if (len) *len = (size_t)n;
    return p;
}

void test_begin(const char *name) {
    test_name = name;
    const char *s = getenv("TEST_SEED");
    if (s && *s) test_seed = strtoull(s, NULL, 0);
}
int test_end(void) {
    if (test_failures) {
        fprintf(stderr, "%s: %d of %d checks FAILED (seed=%llu)\n", test_name, test_failures,
                test_checks, (unsigned long long)test_seed);
        return 1;
    }
    printf("%s: %d checks passed\n", test_name, test_checks);
    return 0;
}
void test_skip(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("%s: SKIP: ", test_name);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    exit(TEST_SKIP_CODE);
}
