/* bench/bench_main.c: ./llm-bench, the command line. Four modes: -m MODEL (end-to-end, like
 * llama-bench),
 * --stream (bandwidth/FMA roofline, cached per machine), --kernels (cpu_matmul microbenchmarks) and
 * --make-model PRESET (synthetic GGUF). Every flag is in --help and docs/BENCH.md. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/bench.h"
#include "kernels/cpu/threadpool.h"

#define DEFAULT_VOCAB "../shared/data/models/llama2-tokenizer/ggml-vocab-llama-spm.gguf"

static void usage(FILE *f) {
    fprintf(f,
        "usage: ./llm-bench -m MODEL [options]               end-to-end prefill/decode speed\n"
        "       ./llm-bench --stream [-t LIST]               memory/FMA roofline (cached)\n"
        "       ./llm-bench --kernels [--filter S] [-t LIST] matmul microbenchmarks vs roofline\n"
        "       ./llm-bench --sweep [-q LIST] [--preset P]   decode matmuls vs reads of the same buffers\n"
        "       ./llm-bench --make-model PRESET -o FILE.gguf [--type T] [--vocab PATH] [--seed N]\n"
        "                   [--layers N]                     synthetic GGUF, random weights\n"
        "\n"
        "end-to-end (-m):\n"
        "  -m PATH           model file (GGUF, llama2.c .bin, HF folder, model.bin)\n"
        "  -q LIST           quantize at load to 8/4/3/2 bits (engine formats q8_g64..q2_g64);\n"
        "                    0 = keep the file's types (default 0), e.g. -q 0,8,4\n"
        "  -p LIST           prompt lengths for prefill tests (default 512; -p 0 skips pp)\n"
        "  -n LIST           tokens to generate for decode tests (default 128; -n 0 skips tg)\n"
        "  -d N              decode at depth N: N more tokens in the KV cache (prefilled, not\n"
        "                    timed) before each tg test, as llama-bench's -d (default 0)\n"
        "  -t LIST           thread counts (default: all %d cores)\n"
        "  -r N              repetitions per test, mean +- stddev (default 3)\n"
        "  --no-kv-cache     also time decode without a KV cache (re-run the prefix each token)\n"
        "  --roof paired|fresh|cached  decode %%roof against: a read pass over the model's own\n"
        "                    weights after every token (paired, default on the CPU backend: the\n"
        "                    shared host's bandwidth swings 2x within seconds); read probes before\n"
        "                    and after each rep (fresh); or the cached --stream result. Prefill\n"
        "                    uses FMA probes before and after the model's tests (cached: the cache)\n"
        "  --quant-method M  rtn or opt: how -q quantizes at load (default: the engine's, opt);\n"
        "                    speed does not depend on it, rtn loads faster\n"
        "  -ngl N            layers on the GPU; N > 0 selects the CUDA backend (default 0)\n"
        "  -o md|csv|json    output format (default md)\n"
        "  --seed N          seed of the random prompts (default 42)\n"
        "\n"
        "roofline (--stream):\n"
        "  -t LIST           thread counts (default 1,2,4,.. up to all cores)\n"
        "  -r N              passes over the buffer; 90th percentile of 64 MiB chunks (default 5)\n"
        "  --size-mib N      probe buffer in MiB (default: max(1024, 4 x the last-level cache))\n"
        "  result cached in $XDG_CACHE_HOME/llm-engine/stream-<host>.json\n"
        "                    (default ~/.cache/llm-engine/...); -m and --kernels read it\n"
        "\n"
        "kernels (--kernels):\n"
        "  --filter S        only rows whose op (matvec/matmul), type (q4_g64) or shape (2048x5632)\n"
        "                    contains S\n"
        "  -t LIST           thread counts (default: all cores)\n"
        "  --min-time S      seconds of timed reps per row (default 0.5, at least 0.5)\n"
        "  -o md|csv|json    output format (default md); --seed N for the random inputs\n"
        "\n"
        "decode sweep (--sweep): a preset's decode matmuls (all layers, random weights) interleaved\n"
        "pass by pass with plain and L2-prefetched reads of the same buffers, in one process\n"
        "  -q LIST           16 (f16), 8, 4, 3, 2 (default all)\n"
        "  --preset P        shapes: tinyllama (default), llama-3.2-1b, smollm2-135m, llama-2-7b\n"
        "  --layers N        first N layers only; -r N timed passes of each kind (default 10)\n"
        "  --matrix MB       instead one matrix, the preset's dim wide, ~MB megabytes: the plainest\n"
        "                    stream (one decode matmul per pass, the same guided chunks)\n"
        "  --by-regime       also each matmul pass vs the probes right after it, grouped by the\n"
        "                    probe's GB/s in 4 GB/s bins (the host's bandwidth regimes); use -r 200+\n"
        "  -t LIST           thread counts (default: all cores)\n"
        "\n"
        "synthetic models (--make-model):\n"
        "  PRESET            tinyllama, llama-3.2-1b, smollm2-135m, llama-2-7b\n"
        "  -o FILE.gguf      output path (required)\n"
        "  --type T          f32, f16 (default), q8_0, q4_0 (matrices; norms stay f32)\n"
        "  --vocab PATH      vocabulary source, any model file (default %s);\n"
        "                    padded with <extra_N> or truncated to the preset's vocab size\n"
        "  --seed N          weight seed (default 1)\n"
        "  --layers N        keep only the first N layers (default: the preset's)\n"
        "\n"
        "  -h, --help        this text\n",
        cpu_count(), DEFAULT_VOCAB);
}

static void die(const char *fmt, const char *arg) {
    fprintf(stderr, "bench: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (see ./llm-bench --help)\n");
    exit(2);
}

static const char *need_arg(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) die("flag %s needs a value", argv[*i]);
    return argv[++*i];
}

static long parse_long(const char *flag, const char *s, long lo, long hi) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end || errno || v < lo || v > hi) {
        char msg[160];
        snprintf(msg, sizeof msg, "bad value for %s: '%%s' (expected an integer in [%ld, %ld])", flag,
                 lo, hi);
        die(msg, s);
    }
    return v;
}

static int parse_list(const char *flag, const char *s, int *out, int lo, int hi) {
    int n = bench_parse_int_list(s, out, BENCH_MAX_LIST, lo, hi);
    if (n < 0) {
        char msg[200];
        snprintf(msg, sizeof msg, "bad list for %s: '%%s' (comma-separated integers in [%d, %d], at "
                 "most %d)", flag, lo, hi, BENCH_MAX_LIST);
        die(msg, s);
    }
    return n;
}

static enum bench_fmt parse_fmt(const char *s) {
    if (!strcmp(s, "md")) return FMT_MD;
    if (!strcmp(s, "csv")) return FMT_CSV;
    if (!strcmp(s, "json")) return FMT_JSON;
    die("bad output format '%s' (md, csv or json)", s);
    return FMT_MD;
}

/* Drops entries <= 0 (-p 0 / -n 0 disable a test). */
static int drop_zeros(int *v, int n) {
    int k = 0;
    for (int i = 0; i < n; i++)
        if (v[i] > 0) v[k++] = v[i];
    return k;
}

int main(int argc, char **argv) {
    enum { MODE_NONE, MODE_E2E, MODE_STREAM, MODE_KERNELS, MODE_SWEEP, MODE_MAKE } mode = MODE_NONE;
    struct bench_e2e_opts eo = {.n_quant = 1, .pp = {512}, .n_pp = 1, .tg = {128}, .n_tg = 1, .roof_paired = true,
                                .reps = 3, .seed = 42};
    struct bench_kernel_opts ko = {.min_seconds = 0.5, .seed = 42};
    bool q_given = false;
    const char *preset = NULL, *sweep_preset = "tinyllama", *out_arg = NULL, *vocab = DEFAULT_VOCAB, *type = "f16";
    int threads[BENCH_MAX_LIST], n_threads = 0, layers = 0, reps = -1, matrix_mb = 0;
    bool by_regime = false;
    long size_mib = 0;   // 0: max(1024, 4 x LLC)
    uint64_t seed = 0;
    bool seed_set = false;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
#define NEXT_ARG need_arg(argc, argv, &i)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        else if (!strcmp(a, "-m")) { mode = MODE_E2E; eo.model_path = NEXT_ARG; }
        else if (!strcmp(a, "--stream")) mode = MODE_STREAM;
        else if (!strcmp(a, "--kernels")) mode = MODE_KERNELS;
        else if (!strcmp(a, "--sweep")) mode = MODE_SWEEP;
        else if (!strcmp(a, "--preset")) sweep_preset = NEXT_ARG;
        else if (!strcmp(a, "--make-model")) { mode = MODE_MAKE; preset = NEXT_ARG; }
        else if (!strcmp(a, "-q")) {
            eo.n_quant = parse_list(a, NEXT_ARG, eo.quant_bits, 0, 32);
            q_given = true;
        }
        else if (!strcmp(a, "-p")) eo.n_pp = parse_list(a, NEXT_ARG, eo.pp, 0, 1 << 20);
        else if (!strcmp(a, "-n")) eo.n_tg = parse_list(a, NEXT_ARG, eo.tg, 0, 1 << 20);
        else if (!strcmp(a, "-t")) n_threads = parse_list(a, NEXT_ARG, threads, 1, BENCH_MAX_THREADS);
        else if (!strcmp(a, "-r")) reps = (int)parse_long(a, NEXT_ARG, 1, 10000);   // > 64: --sweep only (checked below)
        else if (!strcmp(a, "--no-kv-cache")) eo.no_kv_cache = true;
        else if (!strcmp(a, "-d") || !strcmp(a, "--n-depth")) eo.depth = (int)parse_long(a, NEXT_ARG, 0, 1 << 20);
        else if (!strcmp(a, "--roof")) {
            const char *v = NEXT_ARG;
            if (strcmp(v, "paired") && strcmp(v, "fresh") && strcmp(v, "cached"))
                die("bad --roof '%s' (paired, fresh or cached)", v);
            eo.roof_cached = !strcmp(v, "cached");
            eo.roof_paired = !strcmp(v, "paired");
        }
        else if (!strcmp(a, "--quant-method")) {
            eo.quant_method = NEXT_ARG;
            if (strcmp(eo.quant_method, "rtn") && strcmp(eo.quant_method, "opt"))
                die("bad --quant-method '%s' (rtn or opt)", eo.quant_method);
        }
        else if (!strcmp(a, "-ngl")) eo.n_gpu_layers = (int)parse_long(a, NEXT_ARG, 0, 100000);
        else if (!strcmp(a, "-o")) out_arg = NEXT_ARG;
        else if (!strcmp(a, "--seed")) {
            seed = (uint64_t)parse_long(a, NEXT_ARG, 0, 0x7fffffffL);
            seed_set = true;
        }
        else if (!strcmp(a, "--filter")) ko.filter = NEXT_ARG;
        else if (!strcmp(a, "--min-time")) {
            const char *s = NEXT_ARG;
            char *end;
            ko.min_seconds = strtod(s, &end);
            if (end == s || *end || !(ko.min_seconds >= 0.5) || ko.min_seconds > 600)
                die("bad value for --min-time: '%s' (seconds, 0.5 .. 600)", s);
        }
        else if (!strcmp(a, "--size-mib")) size_mib = parse_long(a, NEXT_ARG, 16, 1 << 20);
        else if (!strcmp(a, "--vocab")) vocab = NEXT_ARG;
        else if (!strcmp(a, "--type")) type = NEXT_ARG;
        else if (!strcmp(a, "--by-regime")) by_regime = true;
        else if (!strcmp(a, "--matrix")) matrix_mb = (int)parse_long(a, NEXT_ARG, 1, 65536);
        else if (!strcmp(a, "--layers")) layers = (int)parse_long(a, NEXT_ARG, 1, LOADER_MAX_LAYERS);
        else die("unknown flag '%s'", a);
#undef NEXT_ARG
    }
    if (mode == MODE_NONE) {
        usage(stderr);
        fprintf(stderr, "\nbench: choose a mode: -m MODEL, --stream, --kernels or --make-model\n");
        return 2;
    }
    if (by_regime && mode != MODE_SWEEP) die("%s only applies to --sweep", "--by-regime");
    if (reps > 64 && mode != MODE_SWEEP) die("bad value for -r: at most 64 reps %s", "(up to 10000 with --sweep)");
    if (n_threads == 0 && mode != MODE_STREAM) {
        threads[0] = cpu_count();
        n_threads = 1;
    }

    if (mode == MODE_MAKE) {
        const struct synth_preset *p = synth_preset_find(preset);
        if (!p) die("unknown preset '%s' (tinyllama, llama-3.2-1b, smollm2-135m, llama-2-7b)", preset);
        if (!out_arg) die("%s: --make-model needs -o FILE.gguf", preset);
        int qt = synth_type_from_name(type);
        if (qt < 0) die("bad --type '%s' (f32, f16, q8_0 or q4_0)", type);
        if (access(vocab, R_OK) != 0)
            die("cannot read the vocabulary file '%s' (use --vocab PATH)", vocab);
        struct synth_opts so = {.out_path = out_arg, .cfg = p->cfg, .type = (enum qtype)qt,
                                .vocab_path = vocab, .seed = seed_set ? seed : 1, .verbose = true};
        if (layers) {
            if (layers > so.cfg.n_layers) die("--layers exceeds the layer count of %s", preset);
            so.cfg.n_layers = layers;
        }
        struct err e = {0};
        if (synth_make_model(&so, &e)) {
            fprintf(stderr, "bench --make-model: %s\n", e.msg);
            return 1;
        }
        return 0;
    }
    if (mode == MODE_STREAM) {
        if (n_threads == 0)
            for (int t = 1; n_threads < BENCH_MAX_LIST; t *= 2) {
                threads[n_threads++] = t < cpu_count() ? t : cpu_count();
                if (t >= cpu_count()) break;
            }
        struct stream_result r;
        if (stream_measure(&r, threads, n_threads, (size_t)size_mib << 20, reps > 0 ? reps : 5, true))
            return 1;
        printf("| threads | read GB/s | copy GB/s | FMA GFLOP/s | int8 GOP/s |\n| ------: | --------: | --------: | "
               "----------: | ---------: |\n");
        for (int i = 0; i < r.n; i++)
            printf("| %d | %.1f | %.1f | %.1f | %.1f |\n", r.threads[i], r.read_gbs[i], r.copy_gbs[i],
                   r.fma_gflops[i], r.int8_gops[i]);
        char path[1024] = "?";
        stream_cache_path(path, sizeof path);
        printf("\ncpu: %s; buffer %.2f GiB; GB = 1e9 bytes; copy counts read + written bytes\n", r.cpu,
               r.buf_bytes / 1073741824.0);
        if (stream_cache_save(&r) == 0) printf("cached in %s\n", path);
        else fprintf(stderr, "warning: cannot write %s\n", path);
        return 0;
    }
    if (mode == MODE_SWEEP) {
        struct bench_sweep_opts so = {.preset = sweep_preset, .layers = layers, .passes = reps > 0 ? reps : 10,
                                      .matrix_mb = matrix_mb, .by_regime = by_regime, .seed = seed_set ? seed : 1};
        if (!synth_preset_find(sweep_preset))
            die("unknown preset '%s' (tinyllama, llama-3.2-1b, smollm2-135m, llama-2-7b)", sweep_preset);
        if (!q_given) {
            static const int def[] = {16, 8, 4, 3, 2};
            memcpy(so.bits, def, sizeof def);
            so.n_bits = 5;
        } else {
            for (int i = 0; i < eo.n_quant; i++) {
                const int b = eo.quant_bits[i];
                char v[16];
                snprintf(v, sizeof v, "%d", b);
                if (b != 16 && b != 8 && b != 4 && b != 3 && b != 2)
                    die("--sweep: -q values are 16 (f16), 8, 4, 3 or 2, not %s", v);
                so.bits[i] = b;
            }
            so.n_bits = eo.n_quant;
        }
        memcpy(so.threads, threads, sizeof threads);
        so.n_threads = n_threads;
        return bench_sweep_run(&so);
    }
    if (mode == MODE_KERNELS) {
        memcpy(ko.threads, threads, sizeof threads);
        ko.n_threads = n_threads;
        if (out_arg) ko.fmt = parse_fmt(out_arg);
        if (seed_set) ko.seed = seed;
        return bench_kernels_run(&ko);
    }
    memcpy(eo.threads, threads, sizeof threads);
    eo.n_threads = n_threads;
    if (out_arg) eo.fmt = parse_fmt(out_arg);
    if (reps > 0) eo.reps = reps;
    if (seed_set) eo.seed = seed;
    eo.n_pp = drop_zeros(eo.pp, eo.n_pp);
    eo.n_tg = drop_zeros(eo.tg, eo.n_tg);
    if (eo.n_pp + eo.n_tg == 0) die("%s: nothing to run (-p 0 and -n 0)", eo.model_path);
    for (int i = 0; i < eo.n_quant; i++)
        if (eo.quant_bits[i] && eo.quant_bits[i] != 8 && eo.quant_bits[i] != 4 &&
            eo.quant_bits[i] != 3 && eo.quant_bits[i] != 2)
            die("-q takes 0, 8, 4, 3 or 2 (%s)", "bits per weight");
    return bench_e2e_run(&eo);
}
