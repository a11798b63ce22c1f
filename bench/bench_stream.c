/* bench/bench_stream.c: the machine's roofline. Read bandwidth (sum of a 1 GiB buffer), copy bandwidth
 * (STREAM convention: read + written bytes) and the fp32 FMA peak, for 1..N threads on the project's
 * thread pool; 64 MiB chunks timed alone, 90th percentile over several passes (robust on a shared
 * machine, see docs/BENCH.md); cached per host as JSON. Run: ./llm-bench --stream -t 1,2 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench.h"
#include "kernels/cpu/threadpool.h"

// ------------------------------------------------------------------------------------------------
// Thread-pool jobs: each thread works on its own contiguous slice

enum stream_op { OP_INIT, OP_READ, OP_READ_PF, OP_READ_PF_L2, OP_READ_PF_L2L1, OP_COPY, OP_FMA, OP_DP };

struct stream_job {
    enum stream_op op;
    uint64_t *buf;           // n_words 64-bit words
    size_t n_words;
    size_t c0, c1;           // READ: words [c0, c1); COPY: words [c0, c1) -> [c0, c1) + n_words/2
    uint64_t sums[BENCH_MAX_THREADS * 8];   // per-thread results, 64 B apart (no false sharing)
    double gflops[BENCH_MAX_THREADS * 8];
    double fma_seconds;
    bool avx2;               // 256-bit loads (a little faster than the compiler's 128-bit loop)
};

static void slice(size_t n, int ith, int nth, size_t *lo, size_t *hi) {
    size_t per = (n / (size_t)nth) & ~(size_t)7;   // keep slices 64-byte aligned
    *lo = per * (size_t)ith;
    *hi = ith == nth - 1 ? n : *lo + per;
}

static uint64_t sum_words(const uint64_t *p, size_t n) {
    // 4 accumulators so the adds do not serialize; the compiler vectorizes this loop
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += p[i];
        s1 += p[i + 1];
        s2 += p[i + 2];
        s3 += p[i + 3];
    }
    for (; i < n; i++) s0 += p[i];
    return s0 + s1 + s2 + s3;
}

static double fma_peak_scalar(double seconds) {
    float a[8] = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f, 0.7f, 0.8f};
    double t0 = bench_now(), t1 = t0, best = 0;
    do {   // best block: a block in which the thread was descheduled is slow, not representative
        double tb = t1;
        for (int i = 0; i < 1 << 14; i++)
            for (int k = 0; k < 8; k++) a[k] = fmaf(a[k], 0.999999f, 1e-7f);
        t1 = bench_now();
        double g = (double)(1 << 14) * 8 * 2 / (t1 - tb) / 1e9;
        if (g > best) best = g;
    } while (t1 - t0 < seconds);
    volatile float sink = a[0] + a[7];
    (void)sink;
    return best;
}

double fma_peak_one_thread(double seconds) {
    if (__builtin_cpu_supports("avx512f")) return fma_peak_avx512(seconds);
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return fma_peak_avx2(seconds);
    return fma_peak_scalar(seconds);
}

double dp_peak_one_thread(double seconds) {
    if (__builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw")) return dp_peak_avx512(seconds);
    if (__builtin_cpu_supports("avx2")) return dp_peak_avx2(seconds);
    return 0;
}

static void stream_worker(void *arg, int ith, int nth) {
    struct stream_job *j = arg;
    size_t lo, hi;
    if (j->op == OP_FMA) {
        j->gflops[ith * 8] = fma_peak_one_thread(j->fma_seconds);
        return;
    }
    if (j->op == OP_DP) {
        j->gflops[ith * 8] = dp_peak_one_thread(j->fma_seconds);
        return;
    }
    if (j->op == OP_INIT) {   // first touch
        slice(j->n_words, ith, nth, &lo, &hi);
        for (size_t i = lo; i < hi; i++) j->buf[i] = i * 0x9E3779B97F4A7C15ULL;
        return;
    }
    slice(j->c1 - j->c0, ith, nth, &lo, &hi);
    lo += j->c0;
    hi += j->c0;
    if (j->op == OP_COPY) {   // first half -> second half
        memcpy(j->buf + j->n_words / 2 + lo, j->buf + lo, (hi - lo) * sizeof(uint64_t));
    } else {
        const uint64_t *p = j->buf + lo;
        if (j->op == OP_READ_PF && j->avx2) j->sums[ith * 8] += read_sum_pf_avx2(p, hi - lo);
        else if (j->op == OP_READ_PF_L2 && j->avx2) j->sums[ith * 8] += read_sum_pf_l2_avx2(p, hi - lo);
        else if (j->op == OP_READ_PF_L2L1 && j->avx2) j->sums[ith * 8] += read_sum_pf_l2l1_avx2(p, hi - lo);
        else j->sums[ith * 8] += j->avx2 ? read_sum_avx2(p, hi - lo) : sum_words(p, hi - lo);
    }
}

/* Runs op over [lo, hi) words in CHUNK_WORDS pieces, each timed alone; appends the GB/s of each
 * piece to rates (bytes_per_word: 8 for a read, 16 for a copy, which reads and writes). */
#define CHUNK_WORDS ((size_t)8 << 20)   // 64 MiB, ~2 ms at 30 GB/s: short enough to fit between preemptions
static int run_chunks(struct threadpool *tp, struct stream_job *j, enum stream_op op, size_t lo,
                      size_t hi, double bytes_per_word, double *rates, int n, int cap) {
    j->op = op;
    for (size_t c = lo; c < hi && n < cap; c += CHUNK_WORDS) {
        j->c0 = c;
        j->c1 = c + CHUNK_WORDS < hi ? c + CHUNK_WORDS : hi;
        double t0 = bench_now();
        threadpool_run(tp, stream_worker, j);
        double dt = bench_now() - t0;
        rates[n++] = (double)(j->c1 - j->c0) * bytes_per_word / dt / 1e9;
    }
    return n;
}

/* 90th percentile of the chunk rates. On a shared machine a chunk during which a thread was
 * descheduled reads slow; the top decile is what the memory system delivers while the threads
 * actually run (the maximum would reward timer noise). */
static double p90(double *x, int n) {
    double *c = malloc((size_t)n * sizeof *c);
    if (!c || n == 0) {
        free(c);
        return 0;
    }
    memcpy(c, x, (size_t)n * sizeof *c);
    for (int i = 1; i < n; i++)   // insertion sort: n is a few hundred
        for (int k = i; k > 0 && c[k - 1] > c[k]; k--) {
            double t = c[k];
            c[k] = c[k - 1];
            c[k - 1] = t;
        }
    double v = c[(int)(0.9 * (n - 1))];
    free(c);
    return v;
}

// ------------------------------------------------------------------------------------------------
// Measurement

void bench_cpu_model(char *buf, size_t cap) {
    snprintf(buf, cap, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) != 0) continue;
        char *c = strchr(line, ':');
        if (!c) continue;
        c++;
        while (*c == ' ' || *c == '\t') c++;
        c[strcspn(c, "\n")] = 0;
        // quotes and backslashes would break the JSON cache; the model string has none in practice
        for (char *q = c; *q; q++)
            if (*q == '"' || *q == '\\') *q = ' ';
        snprintf(buf, cap, "%s", c);
        break;
    }
    fclose(f);
}

static int measure_ex(struct stream_result *r, const int *threads, int n_threads, size_t buf_bytes,
                      int reps, bool verbose, bool read_only) {
    memset(r, 0, sizeof *r);
    if (gethostname(r->host, sizeof r->host - 1) != 0) snprintf(r->host, sizeof r->host, "unknown");
    bench_cpu_model(r->cpu, sizeof r->cpu);
    if (!buf_bytes) {   // max(1 GiB, 4 x LLC): every chunk was last read > 3 LLC sizes ago
        buf_bytes = 4 * bench_llc_bytes();
        buf_bytes = (buf_bytes + ((size_t)1 << 20) - 1) & ~(((size_t)1 << 20) - 1);
        if (buf_bytes < ((size_t)1 << 30)) buf_bytes = (size_t)1 << 30;
    }
    if (reps < 1) reps = 1;
    struct stream_job *j = calloc(1, sizeof *j);
    // 2 MiB aligned and on transparent huge pages where the kernel allows (madvise mode), as the
    // CPU backend's weight buffers are (kernels/cpu/backend_cpu.c): the roof must not lose TLB
    // misses that the kernels do not pay
    buf_bytes = (buf_bytes + ((size_t)2 << 20) - 1) & ~(((size_t)2 << 20) - 1);
    uint64_t *buf = aligned_alloc((size_t)2 << 20, buf_bytes);
#ifdef MADV_HUGEPAGE
    if (buf) (void)madvise(buf, buf_bytes, MADV_HUGEPAGE);
#endif
    if (!j || !buf) {
        free(j);
        free(buf);
        fprintf(stderr, "bench --stream: cannot allocate %zu bytes\n", buf_bytes);
        return -1;
    }
    j->buf = buf;
    j->n_words = buf_bytes / sizeof(uint64_t);
    j->fma_seconds = 0.3;
    j->avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    r->buf_bytes = buf_bytes;
    for (int k = 0; k < n_threads && k < BENCH_MAX_LIST; k++) {
        int nt = threads[k] < 1 ? 1 : threads[k] > BENCH_MAX_THREADS ? BENCH_MAX_THREADS : threads[k];
        struct threadpool *tp = threadpool_create(nt);
        if (!tp) {
            free(j);
            free(buf);
            return -1;
        }
        if (k == 0) {
            j->op = OP_INIT;
            threadpool_run(tp, stream_worker, j);
        }
        // every rep walks the whole buffer in order, so no chunk is still in cache when read
        int cap = reps * (int)(j->n_words / CHUNK_WORDS + 1), n_rd = 0, n_rp = 0, n_r2 = 0, n_r3 = 0, n_cp = 0;
        double *rd = malloc((size_t)cap * sizeof *rd), *rp = malloc((size_t)cap * sizeof *rp),
               *r2 = malloc((size_t)cap * sizeof *r2), *r3 = malloc((size_t)cap * sizeof *r3),
               *cp = malloc((size_t)cap * sizeof *cp);
        if (!rd || !rp || !r2 || !r3 || !cp) {
            free(rd);
            free(rp);
            free(r2);
            free(r3);
            free(cp);
            threadpool_destroy(tp);
            free(j);
            free(buf);
            return -1;
        }
        for (int rep = 0; rep < reps; rep++) {
            n_rd = run_chunks(tp, j, OP_READ, 0, j->n_words, 8.0, rd, n_rd, cap);
            n_rp = run_chunks(tp, j, OP_READ_PF, 0, j->n_words, 8.0, rp, n_rp, cap);
            n_r2 = run_chunks(tp, j, OP_READ_PF_L2, 0, j->n_words, 8.0, r2, n_r2, cap);
            n_r3 = run_chunks(tp, j, OP_READ_PF_L2L1, 0, j->n_words, 8.0, r3, n_r3, cap);
            if (!read_only) n_cp = run_chunks(tp, j, OP_COPY, 0, j->n_words / 2, 16.0, cp, n_cp, cap);
        }
        // read roof: the best of the plain loop and the three software-prefetched ones (all are reads
        // the kernels do; a kernel that beats the roof would mean the roof is too low)
        double best_read = p90(rd, n_rd), best_rpf = p90(rp, n_rp), best_r2 = p90(r2, n_r2), best_r3 = p90(r3, n_r3),
               best_copy = p90(cp, n_cp), best_fma = 0;
        if (verbose)
            fprintf(stderr, "stream: %d thread(s): read %.1f GB/s plain, %.1f GB/s prefetch to L1, %.1f GB/s to L2, "
                    "%.1f GB/s to L2 and L1\n", nt, best_read, best_rpf, best_r2, best_r3);
        if (best_rpf > best_read) best_read = best_rpf;
        if (best_r2 > best_read) best_read = best_r2;
        if (best_r3 > best_read) best_read = best_r3;
        free(rd);
        free(rp);
        free(r2);
        free(r3);
        free(cp);
        double best_dp = 0;
        for (int rep = 0; rep < 2 && !read_only; rep++) {
            j->op = OP_FMA;
            threadpool_run(tp, stream_worker, j);
            double g = 0;
            for (int i = 0; i < nt; i++) g += j->gflops[i * 8];
            if (g > best_fma) best_fma = g;
            j->op = OP_DP;
            threadpool_run(tp, stream_worker, j);
            g = 0;
            for (int i = 0; i < nt; i++) g += j->gflops[i * 8];
            if (g > best_dp) best_dp = g;
        }
        threadpool_destroy(tp);
        r->threads[r->n] = nt;
        r->read_gbs[r->n] = best_read;
        r->copy_gbs[r->n] = best_copy;
        r->fma_gflops[r->n] = best_fma;
        r->int8_gops[r->n] = best_dp;
        r->n++;
        if (verbose)
            fprintf(stderr, "stream: %d thread(s): read %.1f GB/s, copy %.1f GB/s, fma %.1f GFLOP/s, int8 %.1f GOP/s\n",
                    nt, best_read, best_copy, best_fma, best_dp);
    }
    volatile uint64_t sink = j->sums[0];
    (void)sink;
    free(j);
    free(buf);
    return 0;
}

int stream_measure(struct stream_result *r, const int *threads, int n_threads, size_t buf_bytes,
                   int reps, bool verbose) {
    return measure_ex(r, threads, n_threads, buf_bytes, reps, verbose, false);
}

double stream_read_roof(int threads) {
    struct stream_result r;
    if (measure_ex(&r, &threads, 1, 0, 1, false, true) != 0) return -1;
    return r.read_gbs[0];
}

struct roofline stream_roofline(const struct stream_result *r, int threads) {
    struct roofline rf = {0};
    int best = -1;
    for (int i = 0; i < r->n; i++) {
        if (r->threads[i] == threads) { best = i; break; }
        if (best < 0 || r->threads[i] > r->threads[best]) best = i;
    }
    if (best >= 0) {
        rf.peak_gbs = r->read_gbs[best];
        rf.peak_gflops = r->fma_gflops[best];
        rf.peak_gops = r->int8_gops[best];
    }
    return rf;
}

// ------------------------------------------------------------------------------------------------
// Cache file: a small JSON object written and read only by this file

bool stream_cache_path(char *buf, size_t cap) {
    char host[64] = "unknown";
    if (gethostname(host, sizeof host - 1) != 0) snprintf(host, sizeof host, "unknown");
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    int n;
    if (xdg && *xdg) n = snprintf(buf, cap, "%s/llm-engine/stream-%s.json", xdg, host);
    else if (home && *home) n = snprintf(buf, cap, "%s/.cache/llm-engine/stream-%s.json", home, host);
    else return false;
    return n > 0 && (size_t)n < cap;
}

static void mkdir_parents(const char *path) {
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        mkdir(tmp, 0755);   // EEXIST is fine; a real failure shows up at fopen
        *p = '/';
    }
}

static void write_array(FILE *f, const char *key, const double *v, int n, bool last) {
    fprintf(f, "  \"%s\": [", key);
    for (int i = 0; i < n; i++) fprintf(f, "%s%.3f", i ? ", " : "", v[i]);
    fprintf(f, "]%s\n", last ? "" : ",");
}

int stream_cache_save(const struct stream_result *r) {
    char path[1024];
    if (!stream_cache_path(path, sizeof path)) return -1;
    mkdir_parents(path);
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    double th[BENCH_MAX_LIST];
    for (int i = 0; i < r->n; i++) th[i] = r->threads[i];
    fprintf(f, "{\n  \"host\": \"%s\",\n  \"cpu\": \"%s\",\n  \"buf_bytes\": %zu,\n  \"time\": %lld,\n",
            r->host, r->cpu, r->buf_bytes, (long long)time(NULL));
    write_array(f, "threads", th, r->n, false);
    write_array(f, "read_gbs", r->read_gbs, r->n, false);
    write_array(f, "copy_gbs", r->copy_gbs, r->n, false);
    write_array(f, "fma_gflops", r->fma_gflops, r->n, false);
    write_array(f, "int8_gops", r->int8_gops, r->n, true);
    fprintf(f, "}\n");
    return fclose(f) == 0 ? 0 : -1;
}

static const char *find_key(const char *s, const char *key) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\"", key);
    const char *p = strstr(s, pat);
    if (!p) return NULL;
    p = strchr(p + strlen(pat), ':');
    return p ? p + 1 : NULL;
}

static int read_array(const char *s, const char *key, double *v, int max) {
    const char *p = find_key(s, key);
    if (!p || !(p = strchr(p, '['))) return -1;
    p++;
    int n = 0;
    for (;;) {
        char *end;
        while (*p == ' ' || *p == '\n') p++;
        if (*p == ']') return n;
        double x = strtod(p, &end);
        if (end == p || n >= max) return -1;
        v[n++] = x;
        p = end;
        while (*p == ' ' || *p == '\n') p++;
        if (*p == ',') p++;
    }
}

static void read_string(const char *s, const char *key, char *out, size_t cap) {
    const char *p = find_key(s, key);
    if (!p || !(p = strchr(p, '"'))) return;
    p++;
    size_t n = strcspn(p, "\"");
    if (n >= cap) n = cap - 1;
    memcpy(out, p, n);
    out[n] = 0;
}

int stream_cache_load(struct stream_result *r) {
    char path[1024], text[8192];
    memset(r, 0, sizeof *r);
    if (!stream_cache_path(path, sizeof path)) return -1;
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t len = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[len] = 0;
    double th[BENCH_MAX_LIST];
    int n = read_array(text, "threads", th, BENCH_MAX_LIST);
    if (n <= 0 || read_array(text, "read_gbs", r->read_gbs, BENCH_MAX_LIST) != n ||
        read_array(text, "copy_gbs", r->copy_gbs, BENCH_MAX_LIST) != n ||
        read_array(text, "fma_gflops", r->fma_gflops, BENCH_MAX_LIST) != n ||
        read_array(text, "int8_gops", r->int8_gops, BENCH_MAX_LIST) != n)   // older caches lack it: re-measure
        return -1;
    r->n = n;
    for (int i = 0; i < n; i++) r->threads[i] = (int)th[i];
    read_string(text, "host", r->host, sizeof r->host);
    read_string(text, "cpu", r->cpu, sizeof r->cpu);
    const char *b = find_key(text, "buf_bytes");
    if (b) r->buf_bytes = (size_t)strtoull(b, NULL, 10);
    return 0;
}

int stream_get(struct stream_result *r, int max_threads) {
    if (stream_cache_load(r) == 0) {
        // a cache measured with fewer threads than asked for is refreshed
        for (int i = 0; i < r->n; i++)
            if (r->threads[i] >= max_threads) return 0;
    }
    char path[1024] = "(no cache path)";
    stream_cache_path(path, sizeof path);
    fprintf(stderr, "note: no bandwidth roofline cached for this machine (%s); measuring it now "
                    "(./llm-bench --stream re-measures)\n", path);
    int th[BENCH_MAX_LIST], n = 0;
    for (int t = 1; t <= max_threads && n < BENCH_MAX_LIST; t *= 2) th[n++] = t;
    if (th[n - 1] != max_threads && n < BENCH_MAX_LIST) th[n++] = max_threads;
    if (stream_measure(r, th, n, 0, 5, true) != 0) return -1;
    if (stream_cache_save(r) != 0) fprintf(stderr, "warning: cannot write %s\n", path);
    return 0;
}
