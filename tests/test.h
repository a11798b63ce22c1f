/* tests/test.h: the test harness. Each tests/test_*.c is one program; it exits 0 on pass, 1 on
 * failure, 77 on SKIP (missing data or device). Seeded xorshift RNG: TEST_SEED=n overrides the seed,
 * and every failure prints it. Data is read from ../shared/data (TEST_DATA overrides). */
#ifndef TESTS_TEST_H
#define TESTS_TEST_H

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern int test_failures;
extern int test_checks;
extern uint64_t test_seed;

#define TEST_SKIP_CODE 77

#define CHECK(cond, ...)                                                                    \
    do {                                                                                    \
        test_checks++;                                                                      \
        if (!(cond)) {                                                                      \
            test_failures++;                                                                \
            if (test_failures <= 20) {                                                      \
                fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);             \
                fprintf(stderr, __VA_ARGS__);                                               \
                fprintf(stderr, " (seed=%llu)\n", (unsigned long long)test_seed);         \
            }                                                                               \
        }                                                                                   \
    } while (0)

/* NaN-safe: fails when |got-ref| > tol or either is NaN. */
#define CHECK_NEAR(got, ref, tol, ...)                                                      \
    do {                                                                                    \
        double g_ = (double)(got), r_ = (double)(ref), t_ = (double)(tol);                  \
        test_checks++;                                                                      \
        if (!(fabs(g_ - r_) <= t_)) {                                                       \
            test_failures++;                                                                \
            if (test_failures <= 20) {                                                      \
                fprintf(stderr, "FAIL %s:%d: got %.9g ref %.9g |diff| %.3g > tol %.3g: ",   \
                        __FILE__, __LINE__, g_, r_, fabs(g_ - r_), t_);                     \
                fprintf(stderr, __VA_ARGS__);                                               \
                fprintf(stderr, " (seed=%llu)\n", (unsigned long long)test_seed);         \
            }                                                                               \
        }                                                                                   \
    } while (0)

struct rng { uint64_t s; uint64_t seed; };
void rng_init(struct rng *g, uint64_t seed);          // seed 0: test_seed
uint64_t rng_u64(struct rng *g);
float rng_uniform(struct rng *g, float lo, float hi);
float rng_normal(struct rng *g);
float *rng_f32(struct rng *g, size_t n, float lo, float hi);   // malloc'd

/* Output buffer with 64 canary floats after the end. */
float *guarded_alloc_f32(size_t n);
int guard_intact(const float *p, size_t n);
void guarded_free(float *p);

/* Path under the shared data dir ("models/stories260K/stories260K.gguf"); static buffer. */
const char *test_data(const char *rel);
int file_exists(const char *path);
char *read_file_all(const char *path, size_t *len);   // malloc'd, NUL-terminated; NULL on error

/* Call at start (parses TEST_SEED) and end (prints summary, returns exit code). */
void test_begin(const char *name);
int test_end(void);
/* Print SKIP with a reason and exit 77. */
void test_skip(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

#endif
