/* engine/quantize_main.c: ./quantize, convert any supported model to the engine's native model.bin
 * with n-bit group-64 weights (the same code path as `./infer -q N`, which quantizes at load).
 *   ./quantize -m model.gguf -o model-q4.bin -q 4 [--method rtn|opt|gptq] [--imatrix F] [--bits PLAN] [-t N] */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "engine/args.h"
#include "engine/engine.h"

static void usage(FILE *f) {
    fprintf(f,
        "usage: ./quantize -m IN -o OUT.bin -q {8,4,3,2} [options]\n"
        "Quantize a model (GGUF, safetensors folder, llama2.c .bin, or model.bin) to the engine's\n"
        "native single-file format, group size 64, and print a per-tensor table.\n\n"
        "  -m, --model PATH      input model\n"
        "  -o, --output PATH     output file (model.bin)\n"
        "  -q, --quant N         default bits for matrices: 8, 4, 3, 2 (or 16 = f16, 32 = f32)\n"
        "      --bits PLAN       mixed precision, e.g. \"default=4,blk.0-1=8,output=8\" or a plan file\n"
        "      --method M        rtn (round-to-nearest), opt (optimized, default) or gptq (needs --imatrix)\n"
        "      --imatrix FILE    calibration statistics from ./imatrix (or llama-imatrix's GGUF/.dat):\n"
        "                        opt weights each error by E[x^2]; gptq uses the Gram matrices\n"
        "      --gptq-damp F     GPTQ damping, fraction of the mean Hessian diagonal (default 0.1)\n"
        "      --no-act-order    GPTQ: columns in file order (default: decreasing E[x^2], --act-order)\n"
        "      --target-bpw B    choose each matrix's width (q2/q3/q4/q8) for a file of B bits per weight\n"
        "                        (all parameters counted), least predicted KL divergence (also --bits auto:B);\n"
        "                        needs --calib-text, best with --imatrix (engine/bitalloc.h)\n"
        "      --calib-text FILE text for --target-bpw's KL measurements (never the evaluation text;\n"
        "                        make calib writes models/calib-arc-easy-test.txt)\n"
        "      --alloc-table F   --target-bpw: save the measurements (per matrix and width: bytes and\n"
        "                        predicted KL) as CSV, or reuse them from F for another budget\n"
        "  -z, --tokenizer PATH  tokenizer.bin for llama2.c inputs\n"
        "  -t, --threads N       threads (default: all cores)\n"
        "  -h, --help\n");
}

int main(int argc, char **argv) {
    struct engine_opts o = {.n_ctx = 1};
    const char *out = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool ok = true;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) ok = (o.model_path = v) != NULL, i++;
        else if (!strcmp(a, "-o") || !strcmp(a, "--output")) ok = (out = v) != NULL, i++;
        else if (!strcmp(a, "-z") || !strcmp(a, "--tokenizer")) ok = (o.tokenizer_path = v) != NULL, i++;
        else if (!strcmp(a, "--bits")) ok = (o.bits_plan = v) != NULL, i++;
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) ok = arg_int(a, v, 1, 1024, &o.n_threads), i++;
        else if (!strcmp(a, "-q") || !strcmp(a, "--quant")) {
            ok = arg_int(a, v, 2, 32, &o.quant_bits), i++;
            int b = o.quant_bits;
            if (ok && b != 2 && b != 3 && b != 4 && b != 8 && b != 16 && b != 32) {
                fprintf(stderr, "error: -q must be 8, 4, 3, 2, 16 or 32\n");
                return 1;
            }
        } else if (!strcmp(a, "--method")) {
            o.quant_method = v, i++;
            if (!v || (strcmp(v, "rtn") && strcmp(v, "opt") && strcmp(v, "gptq"))) { fprintf(stderr, "error: --method expects rtn, opt or gptq\n"); return 1; }
        } else if (!strcmp(a, "--imatrix")) ok = (o.imatrix_path = v) != NULL, i++;
        else if (!strcmp(a, "--gptq-damp")) ok = arg_float(a, v, 1e-6, 10, &o.gptq_damp), i++;
        else if (!strcmp(a, "--act-order")) o.gptq_no_act_order = false;
        else if (!strcmp(a, "--no-act-order")) o.gptq_no_act_order = true;
        else if (!strcmp(a, "--calib-text")) ok = (o.calib_text = v) != NULL, i++;
        else if (!strcmp(a, "--alloc-table")) ok = (o.alloc_table = v) != NULL, i++;
        else if (!strcmp(a, "--target-bpw")) {
            float b = 0;
            ok = arg_float(a, v, 2, 16, &b), i++;
            o.target_bpw = b;
        } else { fprintf(stderr, "error: unknown argument '%s' (see --help)\n", a); return 1; }
        if (!ok) { fprintf(stderr, "error: %s needs a value\n", a); return 1; }
    }
    if (!o.model_path || !out) { fprintf(stderr, "error: need -m IN and -o OUT (see --help)\n"); return 1; }
    if (o.quant_bits == 0 && !o.bits_plan && !(o.target_bpw > 0)) { fprintf(stderr, "error: need -q N, --bits PLAN or --target-bpw B\n"); return 1; }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct err e = {0};
    struct engine *en;
    if (engine_load(&en, &o, &e)) { fprintf(stderr, "error: %s\n", e.msg); return 1; }
    struct tensor_view *v;
    int n;
    if (engine_tensor_views(en, &v, &n, &e)) { fprintf(stderr, "error: %s\n", e.msg); return 1; }
    uint64_t total = 0, params = 0;
    printf("%-28s %-8s %14s %10s %6s\n", "tensor", "type", "shape", "MiB", "bpw");
    for (int i = 0; i < n; i++) {
        char shape[32];
        snprintf(shape, sizeof shape, "%lld x %lld", (long long)v[i].ne[0], (long long)v[i].ne[1]);
        uint64_t cnt = (uint64_t)v[i].ne[0] * (uint64_t)v[i].ne[1];
        printf("%-28s %-8s %14s %10.3f %6.2f\n", v[i].name, qtype_traits[v[i].type].name, shape,
               v[i].nbytes / 1048576.0, 8.0 * v[i].nbytes / cnt);
        total += v[i].nbytes;
        params += cnt;
    }
    printf("total: %d tensors, %.2f M parameters, %.2f MiB, %.3f bits/weight\n", n, params / 1e6,
           total / 1048576.0, 8.0 * total / params);
    if (engine_save(en, out, &e)) { fprintf(stderr, "error: %s\n", e.msg); return 1; }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("wrote %s in %.1f s\n", out, (t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec));
    free(v);
    engine_free(en);
    return 0;
}
