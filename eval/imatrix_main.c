/* eval/imatrix_main.c: ./imatrix, calibration statistics for quantization (llama-imatrix's flags).
 * Runs the model over a calibration text in chunks of -c tokens and writes, for every matmul, the
 * mean of x_i^2 per input column and (unless --no-hessian) the input Gram matrix for GPTQ, as an
 * imatrix GGUF that llama-quantize also reads. Prints the calibration text's perplexity as it
 * goes (second half of each chunk, as llama-imatrix). docs/EVAL.md "Calibration". */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "eval/eval_common.h"
#include "eval/imatrix.h"
#include "loaders/imatrix.h"

static void usage(const char *argv0, int code) {
    fprintf(code ? stderr : stdout,
            "usage: %s -m MODEL -f CALIBRATION.txt [-o imatrix.gguf] [options]\n%s"
            "  -f FILE          calibration text (never the evaluation text; make calib writes the default,\n"
            "                   models/calib-arc-easy-test.txt)\n"
            "  -o FILE          output (default imatrix.gguf); GGUF imatrix format, llama-quantize reads it\n"
            "  -c N             tokens per chunk (default 512)\n"
            "  --chunks N       at most N chunks (default: the whole file)\n"
            "  --no-hessian     only the per-column mean of x^2 (llama.cpp's imatrix), no Gram matrices:\n"
            "                   small file, but ./quantize --method gptq needs them\n"
            "  --quiet          no progress\n",
            argv0, eval_model_flags_help);
    exit(code);
}

int main(int argc, char **argv) {
    struct eval_model_args ma = {0};
    const char *file = NULL, *out = "imatrix.gguf";
    int n_ctx = 512, max_chunks = 0;
    bool hessian = true, quiet = false;
    for (int i = 1; i < argc;) {
        int r = eval_parse_model_flag(&ma, argc, argv, &i);
        if (r < 0) usage(argv[0], 2);
        if (r > 0) continue;
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int used = 2;
        if (!strcmp(f, "-f") && v) file = v;
        else if ((!strcmp(f, "-o") || !strcmp(f, "--output")) && v) out = v;
        else if ((!strcmp(f, "-c") || !strcmp(f, "--ctx-size")) && v) n_ctx = eval_atoi(f, v);
        else if (!strcmp(f, "--chunks") && v) max_chunks = eval_atoi(f, v);
        else if (!strcmp(f, "--no-hessian")) hessian = false, used = 1;
        else if (!strcmp(f, "--quiet")) quiet = true, used = 1;
        else if (!strcmp(f, "-h") || !strcmp(f, "--help")) usage(argv[0], 0);
        else {
            fprintf(stderr, "error: unknown or incomplete flag '%s'\n", f);
            usage(argv[0], 2);
        }
        i += used;
    }
    if (!file || !ma.model) {
        fprintf(stderr, "error: need -m MODEL and -f CALIBRATION.txt\n");
        usage(argv[0], 2);
    }
    if (n_ctx < 8 || n_ctx > 65536) { fprintf(stderr, "error: -c %d out of range (8..65536)\n", n_ctx); return 2; }
    char *text = eval_read_file(file, NULL);
    if (!text) return 1;
    struct engine *en = eval_load(&ma, n_ctx, quiet);
    if (!en) { free(text); return 1; }
    if (engine_n_ctx(en) < n_ctx) {
        fprintf(stderr, "error: -c %d exceeds the engine's context %d\n", n_ctx, engine_n_ctx(en));
        return 1;
    }
    const struct vocab *vb = engine_vocab(en);
    int n_tok = 0;
    int32_t *tok = eval_tokenize_all(en, text, false, &n_tok);
    free(text);
    if (!tok) return 1;
    int n_chunks = n_tok / n_ctx;
    if (max_chunks > 0 && n_chunks > max_chunks) n_chunks = max_chunks;
    if (n_chunks < 1) {
        fprintf(stderr, "error: %s has %d tokens, fewer than one chunk of %d (-c)\n", file, n_tok, n_ctx);
        return 1;
    }
    const int vocab = engine_config(en)->vocab_size;
    float *logits = malloc((size_t)n_ctx * (size_t)vocab * sizeof(float));
    int32_t *chunk = malloc((size_t)n_ctx * sizeof *chunk);
    struct imatrix_acc *acc = imatrix_acc_new(hessian, ma.n_threads > 0 ? ma.n_threads : 2);
    struct err e = {0};
    if (!logits || !chunk || !acc) { fprintf(stderr, "error: out of memory\n"); return 1; }
    if (engine_set_matmul_observer(en, imatrix_acc_observe, acc, &e)) { fprintf(stderr, "error: %s\n", e.msg); return 1; }
    if (!quiet)
        fprintf(stderr, "imatrix: %d chunks of %d tokens from %s (%d tokens)%s\n", n_chunks, n_ctx,
                eval_basename(file), n_tok, hessian ? ", with Gram matrices" : "");
    struct eval_progress pr;
    eval_progress_start(&pr, "chunks", n_chunks, !quiet);
    struct nll_stats st = {0};
    for (int c = 0; c < n_chunks; c++) {
        memcpy(chunk, tok + (size_t)c * n_ctx, (size_t)n_ctx * sizeof *chunk);
        if (vb->add_bos && vb->bos >= 0) chunk[0] = vb->bos;   // as llama-imatrix
        if (engine_forward(en, chunk, n_ctx, 0, logits, true, &e)) { fprintf(stderr, "\nerror: %s\n", e.msg); return 1; }
        for (int t = n_ctx / 2; t < n_ctx - 1; t++)
            nll_stats_add(&st, eval_nll(logits + (size_t)t * vocab, vocab, tok[(size_t)c * n_ctx + t + 1]));
        eval_progress_update(&pr, c + 1, "ppl", nll_stats_ppl(&st));
    }
    eval_progress_end(&pr);
    struct calib cal;
    if (imatrix_acc_finish(acc, &cal, &e)) { fprintf(stderr, "error: %s\n", e.msg); return 1; }
    cal.chunks = n_chunks, cal.chunk_size = n_ctx;
    snprintf(cal.dataset, sizeof cal.dataset, "%s", eval_basename(file));
    int rc = imatrix_save(&cal, out, &e);
    if (rc) fprintf(stderr, "error: %s\n", e.msg);
    else if (!quiet)
        fprintf(stderr, "wrote %s: %d matrices, %d chunks x %d tokens, calibration PPL %.4f\n", out, cal.n,
                n_chunks, n_ctx, nll_stats_ppl(&st));
    calib_free(&cal);
    imatrix_acc_free(acc);
    free(logits), free(chunk), free(tok);
    engine_free(en);
    return rc ? 1 : 0;
}
