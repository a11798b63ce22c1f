/* bench/bench.h: shared pieces of ./llm-bench (a llama-bench-like tool): CLOCK_MONOTONIC timer, summary
 * statistics, the roofline (measured bandwidth + FMA peak, cached per machine), synthetic models and
 * the bench modes (-m end-to-end, --stream, --kernels, --sweep, --make-model). Units: GB = 1e9 bytes, GiB = 2^30.
 * Docs: docs/BENCH.md. Test: tests/test_bench_synth.c */
#ifndef BENCH_BENCH_H
#define BENCH_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "loaders/loader.h"

#define BENCH_MAX_LIST 16    // entries in a -t / -p / -q list
#define BENCH_MAX_THREADS 256

// ------------------------------------------------------------------------------------------------
// Timer and statistics

/* Seconds on CLOCK_MONOTONIC (unaffected by wall-clock changes). */
static inline double bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#define BENCH_MAX_REPS 64   // -r

struct bench_stats {
    int n;
    double mean, stddev;   // stddev: sample (n - 1) standard deviation, 0 when n < 2
    double median, min, max;
};
/* Summary of x[0..n); sorts a private copy, x is untouched. n == 0 gives all zeros. */
struct bench_stats bench_stats_of(const double *x, int n);

/* Peak resident set size of this process in bytes (VmHWM, or getrusage ru_maxrss). */
size_t bench_peak_rss(void);
/* Resets the high-water mark that bench_peak_rss reads (Linux clear_refs; no-op elsewhere). */
void bench_reset_peak_rss(void);

/* Size in bytes of the largest CPU cache (the LLC: L3 on x86), from
 * /sys/devices/system/cpu/cpu0/cache/indexN/size; 32 MiB if unreadable. Cached. */
size_t bench_llc_bytes(void);

/* A write of max(64 MB, 2 x LLC) that evicts the last-level cache. */
void bench_flush_cache(void);

/* Parses "1,2,4" into out[0..max); returns the count, or -1 (bad number, empty entry, > max, value
 * outside [lo, hi]). */
int bench_parse_int_list(const char *s, int *out, int max, int lo, int hi);

/* xorshift64* PRNG used for synthetic weights and random prompts (deterministic per seed). */
struct bench_rng { uint64_t s; };
static inline void bench_rng_seed(struct bench_rng *g, uint64_t seed) {
    g->s = seed * 0x9E3779B97F4A7C15ULL ^ 0xD1B54A32D192ED03ULL;
    if (!g->s) g->s = 1;
}
static inline uint64_t bench_rng_u64(struct bench_rng *g) {
    uint64_t x = g->s;
    x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
    g->s = x;
    return x * 0x2545F4914F6CDD1DULL;
}
/* Standard normal (Box-Muller, one value per call). */
float bench_rng_normal(struct bench_rng *g);
static inline float bench_rng_uniform(struct bench_rng *g, float lo, float hi) {
    return lo + (hi - lo) * (float)((bench_rng_u64(g) >> 40) * (1.0 / 16777216.0));
}

// ------------------------------------------------------------------------------------------------
// Roofline: measured read/copy bandwidth and FMA peak, cached in
// $XDG_CACHE_HOME/llm-engine/stream-<hostname>.json (default ~/.cache/llm-engine/...)

struct roofline {
    double peak_gbs;      // read bandwidth, GB/s (the roof for decode: weights are only read)
    double peak_gflops;   // fp32 FMA peak, GFLOP/s
    double peak_gops;     // int8 dot-product peak (VPDPBUSD, else VPMADDUBSW+VPMADDWD), GOP/s; 0 = none
};

struct stream_result {
    char host[64];
    char cpu[128];                        // "model name" from /proc/cpuinfo
    int n;                                // entries below, for thread counts threads[i]
    int threads[BENCH_MAX_LIST];
    double read_gbs[BENCH_MAX_LIST];      // p90 of 64 MiB chunks over reps: bytes read / s
    double copy_gbs[BENCH_MAX_LIST];      // same: (bytes read + bytes written) / s
    double fma_gflops[BENCH_MAX_LIST];    // best short block, summed over threads; 2 flops/lane
    double int8_gops[BENCH_MAX_LIST];     // same for the int8 dot loop; 2 ops per u8 x s8 product
    size_t buf_bytes;                     // probe buffer size
};

/* Measures read/copy bandwidth and FMA peak for each thread count (progress on stderr).
 * buf_bytes = 0 uses 1 GiB. Returns 0, or -1 on OOM. */
int stream_measure(struct stream_result *r, const int *threads, int n_threads, size_t buf_bytes,
                   int reps, bool verbose);
/* The read roof alone (best of the four read loops, one pass over the stream_measure buffer) for
 * `threads` threads, GB/s; -1 on OOM. About a second: for probes between timed repetitions. */
double stream_read_roof(int threads);
/* Cache file path; returns false if no home directory. */
bool stream_cache_path(char *buf, size_t cap);
int stream_cache_save(const struct stream_result *r);                 // 0 or -1
int stream_cache_load(struct stream_result *r);                       // 0, or -1 if absent/bad
/* Roof for t threads: the entry with that thread count, else the largest measured. */
struct roofline stream_roofline(const struct stream_result *r, int threads);
/* Loads the cache, measuring (1..max_threads, and saving) if absent, with a note on stderr. */
int stream_get(struct stream_result *r, int max_threads);
/* CPU model string ("AMD EPYC ...") from /proc/cpuinfo, or "unknown". */
void bench_cpu_model(char *buf, size_t cap);

/* fp32 FMA peak of one thread, GFLOP/s (the widest of the AVX-512, AVX2+FMA and scalar loops the CPU runs). */
double fma_peak_one_thread(double seconds);
/* int8 dot-product peak of one thread, GOP/s: VPDPBUSD (AVX-512 VNNI) or the AVX2 VPMADDUBSW +
 * VPMADDWD + VPADDD step the int8 kernels use; 0 without AVX2. (AMX, where present, is far above.) */
double dp_peak_one_thread(double seconds);
double dp_peak_avx2(double seconds);
double dp_peak_avx512(double seconds);   // only with avx512vnni
// bench/bench_simd_avx2.c: only call these if the CPU has AVX2 and FMA
double fma_peak_avx2(double seconds);
uint64_t read_sum_avx2(const uint64_t *p, size_t n);
#define READ_PF_BYTES 1024
uint64_t read_sum_pf_avx2(const uint64_t *p, size_t n);   // + software prefetch READ_PF_BYTES ahead
#define READ_PF_L2_BYTES 8192
uint64_t read_sum_pf_l2_avx2(const uint64_t *p, size_t n);   // + prefetch to L2 (T1) READ_PF_L2_BYTES ahead
#define READ_PF_NEAR_BYTES 3072
uint64_t read_sum_pf_l2l1_avx2(const uint64_t *p, size_t n);   // + T1 as above and T0 READ_PF_NEAR_BYTES ahead
// bench/bench_simd_avx512.c: only call if the CPU has AVX-512F
double fma_peak_avx512(double seconds);

// ------------------------------------------------------------------------------------------------
// Synthetic models (bench/bench_synth.c)

struct synth_preset {
    const char *name;
    struct model_config cfg;
};
/* NULL if unknown. The list ends with a NULL name. */
const struct synth_preset *synth_preset_find(const char *name);
extern const struct synth_preset synth_presets[];

struct synth_opts {
    const char *out_path;
    struct model_config cfg;   // shapes; cfg.n_layers may be reduced by --layers
    enum qtype type;           // matrices: QT_F32, QT_F16, QT_GGML_Q8_0, QT_GGML_Q4_0; norms are f32
    const char *vocab_path;    // GGUF/tokenizer file with a real vocabulary
    uint64_t seed;
    bool verbose;              // progress on stderr
};

/* GGUF type names accepted by --type: f32, f16, q8_0, q4_0. Returns -1 if unknown. */
int synth_type_from_name(const char *s);

/* Writes a standard GGUF with cfg's exact shapes, a real vocabulary (padded with "<extra_N>" or
 * truncated to cfg.vocab_size) and random weights: matrices N(0, (0.5/sqrt(fan_in))^2), embedding
 * N(0, 1), norms 1 (approximately normal: Irwin-Hall of 4 uniforms), one tensor at a time.
 * Returns ERR_OK or an error in e. */
int synth_make_model(const struct synth_opts *o, struct err *e);

/* Builds the vocabulary for cfg.vocab_size tokens from vocab_path into v (caller frees with
 * vocab_free). */
int synth_vocab(struct vocab *v, const char *vocab_path, int vocab_size, struct err *e);

/* Names, types and shapes of every tensor of a Llama model with config cfg (GGUF names), in file
 * order. views[i].data = NULL, nbytes filled. Returns the count (<= cap), or -1 if cap is too small. */
int synth_tensor_layout(const struct model_config *cfg, enum qtype type, struct tensor_view *views,
                        int cap);

/* Weight bytes read to decode one token: every matrix once, the embedding table one row
 * (dim elements) instead of vocab_size rows; a tied output head is read in full as the head. */
uint64_t bench_bytes_per_token(const struct tensor_view *views, int n, bool tied_output);

// ------------------------------------------------------------------------------------------------
// Modes

enum bench_fmt { FMT_MD = 0, FMT_CSV, FMT_JSON };

struct bench_e2e_opts {
    const char *model_path;
    int quant_bits[BENCH_MAX_LIST], n_quant;   // -q list; 0 = the file's types
    int pp[BENCH_MAX_LIST], n_pp;              // prompt lengths
    int tg[BENCH_MAX_LIST], n_tg;              // generated tokens
    int threads[BENCH_MAX_LIST], n_threads;
    int reps;
    bool no_kv_cache;                          // also run the naive (re-prefill) decode
    int depth;                                 // tg: tokens already in the KV cache (-d)
    bool roof_cached;                          // --roof cached: the cached probe, not a fresh one
    bool roof_paired;                          // --roof paired (default): tg vs read passes between tokens
    int n_gpu_layers;
    const char *quant_method;                  // "rtn" or "opt" for -q; NULL = engine default
    enum bench_fmt fmt;
    uint64_t seed;
};
int bench_e2e_run(const struct bench_e2e_opts *o);

struct bench_kernel_opts {
    const char *filter;        // substring of "matvec"/"matmul"/type name/shape, NULL = all
    int threads[BENCH_MAX_LIST], n_threads;
    double min_seconds;        // per row, >= 0.5
    enum bench_fmt fmt;
    uint64_t seed;
};
int bench_kernels_run(const struct bench_kernel_opts *o);

// ------------------------------------------------------------------------------------------------
// Decode sweep (bench/bench_sweep.c): a preset's decode matmuls interleaved with reads of the same
// buffers in one process, so the ratio is immune to the host's bandwidth drift

struct bench_sweep_opts {
    const char *preset;                        // synth preset for the shapes (tinyllama)
    int bits[BENCH_MAX_LIST], n_bits;          // 16 (f16), 8, 4, 3, 2
    int threads[BENCH_MAX_LIST], n_threads;
    int layers;                                // 0 = the preset's
    int passes;                                // timed passes of each kind
    int matrix_mb;                             // > 0: one dim-wide matrix of about this many MB instead
    bool by_regime;                            // also: pass pairs grouped by their probe's GB/s
    uint64_t seed;
};
int bench_sweep_run(const struct bench_sweep_opts *o);

#endif
