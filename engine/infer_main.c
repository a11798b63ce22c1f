/* engine/infer_main.c: ./infer, generate text from a prompt (llama.cpp's flag names).
 *   ./infer -m MODEL [-q 4] -p "Once upon a time" -n 128
 * Streams text to stdout; timings and memory to stderr at exit. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "engine/args.h"
#include "engine/chat.h"
#include "engine/engine.h"
#include "engine/sampler.h"
#include "engine/tokenizer.h"

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return 1e3 * (double)ts.tv_sec + 1e-6 * (double)ts.tv_nsec;
}

static volatile sig_atomic_t g_stop;
static void on_sigint(int sig) { g_stop = 1; }

static void usage(FILE *f) {
    fprintf(f,
        "usage: ./infer -m MODEL [options]\n"
        "Generate text with a Llama-architecture model (GGUF, llama2.c .bin, Hugging Face folder, or\n"
        "this engine's model.bin).\n\n"
        "model and hardware:\n"
        "  -m, --model PATH          model file or folder (required)\n"
        "  -z, --tokenizer PATH      tokenizer.bin for llama2.c models (default: next to the model)\n"
        "  -q, --quant N             quantize weights at load to N bits: 8, 4, 3 or 2 (group 64)\n"
        "      --bits PLAN           mixed precision plan, e.g. \"default=4,blk.0-1=8,output=8\"\n"
        "      --method rtn|opt      quantizer: round-to-nearest or optimized (default opt)\n"
        "  -t, --threads N           CPU threads (default: all cores)\n"
        "  -c, --ctx-size N          context size = KV cache length (default: model's, at most 4096)\n"
        "  -ngl, --n-gpu-layers N    N > 0 runs on the GPU (CUDA); all layers are offloaded\n"
        "      --device cpu|cuda     backend (default cpu)\n\n"
        "prompt and generation:\n"
        "  -p, --prompt TEXT         prompt (default: empty, generation starts from BOS)\n"
        "  -f, --file PATH           read the prompt from a file\n"
        "  -n, --n-predict N         tokens to generate (default 128; -1 = until the context is full)\n"
        "      --ignore-eos          do not stop at end-of-sequence tokens\n"
        "      --chat                wrap the prompt in the model's chat template (special tokens parsed)\n"
        "  -sys, --system-prompt T   system message for --chat\n"
        "      --no-display-prompt   do not echo the prompt\n"
        "      --verbose-prompt      print the prompt's token ids to stderr\n\n"
        "sampling (llama.cpp's defaults):\n"
        "  -s, --seed N              RNG seed (default -1 = from the clock)\n"
        "      --temp T              temperature (default 0.8; 0 = greedy)\n"
        "      --top-k K             (default 40; 0 = off)\n"
        "      --top-p P             (default 0.95; 1 = off)\n"
        "      --min-p P             (default 0.05; 0 = off)\n"
        "      --typical P           locally typical sampling (default 1 = off)\n"
        "      --tfs Z               tail-free sampling (default 1 = off)\n"
        "      --mirostat 0|1|2      mirostat sampling (default 0 = off)\n"
        "      --mirostat-lr ETA     mirostat learning rate (default 0.1)\n"
        "      --mirostat-ent TAU    mirostat target entropy (default 5.0)\n"
        "      --repeat-penalty R    (default 1.0 = off)\n"
        "      --repeat-last-n N     tokens the penalties look back on (default 64; 0 off; -1 all)\n"
        "      --presence-penalty P  (default 0)\n"
        "      --frequency-penalty P (default 0)\n"
        "  -h, --help                this help\n");
}

static char *read_text_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "error: cannot open prompt file %s\n", path); return NULL; }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    for (size_t r; buf && (r = fread(buf + n, 1, cap - n - 1, f)) > 0;) {
        n += r;
        if (n + 1 == cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) { free(buf); buf = NULL; }
            else buf = nb;
        }
    }
    fclose(f);
    if (!buf) { fprintf(stderr, "error: out of memory reading %s\n", path); return NULL; }
    buf[n] = 0;
    return buf;
}

int main(int argc, char **argv) {
    struct engine_opts o = {0};
    struct sampler_params sp;
    sampler_params_default(&sp);
    sp.seed = UINT64_MAX;
    const char *prompt = NULL, *prompt_file = NULL, *sys = NULL;
    int n_predict = 128;
    bool ignore_eos = false, chat = false, display_prompt = true, verbose_prompt = false;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define IS(x) (strcmp(a, x) == 0)
#define NEXT() (i++, v)
        bool ok = true;
        if (IS("-h") || IS("--help")) { usage(stdout); return 0; }
        else if (IS("-m") || IS("--model")) { if (!(o.model_path = NEXT())) ok = false; }
        else if (IS("-z") || IS("--tokenizer")) { if (!(o.tokenizer_path = NEXT())) ok = false; }
        else if (IS("-q") || IS("--quant")) {
            ok = arg_int(a, NEXT(), 2, 8, &o.quant_bits);
            if (ok && o.quant_bits != 2 && o.quant_bits != 3 && o.quant_bits != 4 && o.quant_bits != 8) {
                fprintf(stderr, "error: -q must be 8, 4, 3 or 2\n");
                ok = false;
            }
        }
        else if (IS("--bits")) { if (!(o.bits_plan = NEXT())) ok = false; }
        else if (IS("--method")) {
            o.quant_method = NEXT();
            ok = o.quant_method && (!strcmp(o.quant_method, "rtn") || !strcmp(o.quant_method, "opt"));
            if (!ok) { fprintf(stderr, "error: --method expects rtn or opt\n"); return 1; }
        }
        else if (IS("-t") || IS("--threads")) ok = arg_int(a, NEXT(), 1, 1024, &o.n_threads);
        else if (IS("-c") || IS("--ctx-size")) ok = arg_int(a, NEXT(), 1, 1 << 20, &o.n_ctx);
        else if (IS("-ngl") || IS("--n-gpu-layers") || IS("--gpu-layers")) ok = arg_int(a, NEXT(), 0, 100000, &o.n_gpu_layers);
        else if (IS("--device")) { if (!(o.device = NEXT())) ok = false; }
        else if (IS("-p") || IS("--prompt")) { if (!(prompt = NEXT())) ok = false; }
        else if (IS("-f") || IS("--file")) { if (!(prompt_file = NEXT())) ok = false; }
        else if (IS("-n") || IS("--n-predict")) ok = arg_int(a, NEXT(), -1, 1 << 24, &n_predict);
        else if (IS("--ignore-eos")) ignore_eos = true;
        else if (IS("--chat") || IS("-cnv") || IS("--conversation")) chat = true;
        else if (IS("-sys") || IS("--system-prompt")) { if (!(sys = NEXT())) ok = false; }
        else if (IS("--no-display-prompt")) display_prompt = false;
        else if (IS("--verbose-prompt")) verbose_prompt = true;
        else if (IS("-s") || IS("--seed")) ok = arg_u64(a, NEXT(), &sp.seed);
        else if (IS("--temp")) ok = arg_float(a, NEXT(), 0, 100, &sp.temp);
        else if (IS("--top-k")) ok = arg_int(a, NEXT(), 0, 1 << 30, &sp.top_k);
        else if (IS("--top-p")) ok = arg_float(a, NEXT(), 0, 1, &sp.top_p);
        else if (IS("--min-p")) ok = arg_float(a, NEXT(), 0, 1, &sp.min_p);
        else if (IS("--typical")) ok = arg_float(a, NEXT(), 0, 1, &sp.typical_p);
        else if (IS("--tfs")) ok = arg_float(a, NEXT(), 0, 1, &sp.tfs_z);
        else if (IS("--mirostat")) ok = arg_int(a, NEXT(), 0, 2, &sp.mirostat);
        else if (IS("--mirostat-lr")) ok = arg_float(a, NEXT(), 0, 10, &sp.mirostat_eta);
        else if (IS("--mirostat-ent")) ok = arg_float(a, NEXT(), 0, 100, &sp.mirostat_tau);
        else if (IS("--repeat-penalty")) ok = arg_float(a, NEXT(), 0.01, 100, &sp.repeat_penalty);
        else if (IS("--repeat-last-n")) ok = arg_int(a, NEXT(), -1, 1 << 24, &sp.repeat_last_n);
        else if (IS("--presence-penalty")) ok = arg_float(a, NEXT(), -100, 100, &sp.presence_penalty);
        else if (IS("--frequency-penalty")) ok = arg_float(a, NEXT(), -100, 100, &sp.frequency_penalty);
        else { fprintf(stderr, "error: unknown argument '%s' (see --help)\n", a); return 1; }
        if (!ok) {
            if (i >= argc) fprintf(stderr, "error: %s needs a value\n", a);
            return 1;
        }
#undef IS
#undef NEXT
    }
    if (!o.model_path) { fprintf(stderr, "error: no model given (-m MODEL); see --help\n"); return 1; }
    if (prompt && prompt_file) { fprintf(stderr, "error: give either -p or -f, not both\n"); return 1; }
    char *file_text = NULL;
    if (prompt_file) {
        if (!(file_text = read_text_file(prompt_file))) return 1;
        prompt = file_text;
    }
    if (!prompt) prompt = "";
    if (sp.seed == UINT64_MAX) sp.seed = (uint64_t)time(NULL);

    double t_start = now_ms();
    struct err e = {0};
    struct engine *en;
    if (engine_load(&en, &o, &e)) {
        fprintf(stderr, "error: %s\n", e.msg);
        free(file_text);
        return 1;
    }
    const struct model_config *cfg = engine_config(en);
    const struct vocab *voc = engine_vocab(en);
    struct tokenizer *tok = engine_tokenizer(en);
    const int n_ctx = engine_n_ctx(en);

    // ---- prompt -> tokens (chat template when asked)
    char *templated = NULL;
    const char *text = prompt;
    bool special = false;
    if (chat) {
        enum chat_style cs = chat_detect(voc->chat_template);
        if (cs == CHAT_NONE) {
            fprintf(stderr, "warning: %s has no chat template this engine recognises; using ChatML\n", o.model_path);
            cs = CHAT_CHATML;
        }
        struct chat_msg msgs[2];
        int nm = 0;
        if (sys) msgs[nm++] = (struct chat_msg){"system", sys};
        msgs[nm++] = (struct chat_msg){"user", prompt};
        templated = chat_apply(cs, msgs, nm, true);
        if (!templated) { fprintf(stderr, "error: out of memory\n"); return 1; }
        text = templated;
        special = true;
    }
    // every token covers at least one byte, plus BOS and a space prefix: this bound never overflows
    const size_t cap = strlen(text) + 8 > (size_t)n_ctx + 1 ? strlen(text) + 8 : (size_t)n_ctx + 1;
    int32_t *toks = malloc(sizeof(int32_t) * cap);
    if (!toks) { fprintf(stderr, "error: out of memory\n"); return 1; }
    int n_prompt = tokenizer_encode(tok, text, strlen(text), voc->add_bos, special, toks, (int)cap, &e);
    if (n_prompt < 0) {
        fprintf(stderr, "error: prompt: %s\n", e.msg);
        return 1;
    }
    if (n_prompt == 0) {   // a model without BOS and an empty prompt: nothing to condition on
        fprintf(stderr, "error: the prompt is empty and the model has no BOS token; give -p TEXT\n");
        return 1;
    }
    if (n_prompt >= n_ctx) {
        fprintf(stderr, "error: the prompt has %d tokens, the context only %d (use -c)\n", n_prompt, n_ctx);
        return 1;
    }
    if (verbose_prompt) {
        fprintf(stderr, "prompt: %d tokens:", n_prompt);
        for (int i = 0; i < n_prompt; i++) fprintf(stderr, " %d", toks[i]);
        fprintf(stderr, "\n");
    }

    struct sampler *smp = sampler_create(&sp, cfg->vocab_size);
    float *logits = malloc(sizeof(float) * (size_t)cfg->vocab_size);
    if (!smp || !logits) { fprintf(stderr, "error: out of memory\n"); return 1; }
    struct detok dt;
    detok_init(&dt);
    char piece[256];
    if (display_prompt && !chat)
        for (int i = 0; i < n_prompt; i++) {
            size_t k = tokenizer_decode_token(tok, &dt, toks[i], piece, sizeof piece);
            fwrite(piece, 1, k, stdout);
        }
    fflush(stdout);
    for (int i = 0; i < n_prompt; i++) sampler_accept(smp, toks[i]);

    signal(SIGINT, on_sigint);
    double t_load = now_ms() - t_start, t0 = now_ms();
    if (engine_forward(en, toks, n_prompt, 0, logits, false, &e)) {
        fprintf(stderr, "\nerror: %s\n", e.msg);
        return 1;
    }
    double t_prompt = now_ms() - t0;
    int pos = n_prompt, n_gen = 0;
    const int limit = n_predict < 0 ? n_ctx - n_prompt : n_predict;
    t0 = now_ms();
    int n_eval = 0;
    while (n_gen < limit && !g_stop) {
        int32_t next = sampler_sample(smp, logits);
        bool eog = next == voc->eos || (voc->eot >= 0 && next == voc->eot) || next == voc->bos;
        if (eog && !ignore_eos) break;
        n_gen++;
        sampler_accept(smp, next);
        size_t k = tokenizer_decode_token(tok, &dt, next, piece, sizeof piece);
        fwrite(piece, 1, k, stdout);
        fflush(stdout);
        if (n_gen == limit) break;
        if (pos >= n_ctx) { fprintf(stderr, "\n[context full: %d tokens]\n", n_ctx); break; }
        if (engine_forward(en, &next, 1, pos, logits, false, &e)) {
            fprintf(stderr, "\nerror: %s\n", e.msg);
            return 1;
        }
        n_eval++;
        pos++;
    }
    size_t k = detok_flush(&dt, piece, sizeof piece);
    fwrite(piece, 1, k, stdout);
    printf("\n");
    fflush(stdout);
    double t_eval = now_ms() - t0, t_total = now_ms() - t_start;

    const struct backend *be = engine_backend(en);
    fprintf(stderr, "\n");
    fprintf(stderr, "perf: backend = %s, threads = %d, model = %s\n", be->ops->name, be->n_threads, cfg->name);
    fprintf(stderr, "perf:        load time = %10.2f ms\n", t_load);
    fprintf(stderr, "perf: prompt eval time = %10.2f ms / %5d tokens (%8.2f ms per token, %8.2f tokens per second)\n",
            t_prompt, n_prompt, t_prompt / n_prompt, 1e3 * n_prompt / t_prompt);
    if (n_eval > 0)
        fprintf(stderr, "perf:        eval time = %10.2f ms / %5d runs   (%8.2f ms per token, %8.2f tokens per second)\n",
                t_eval, n_eval, t_eval / n_eval, 1e3 * n_eval / t_eval);
    else
        fprintf(stderr, "perf:        eval time = %10.2f ms / %5d runs\n", t_eval, n_eval);
    fprintf(stderr, "perf:       total time = %10.2f ms / %5d tokens\n", t_total, n_prompt + n_gen);
    fprintf(stderr, "memory: model %.2f MiB, KV cache %.2f MiB (%d x %d), compute %.2f MiB\n",
            engine_weight_bytes(en) / 1048576.0, engine_kv_bytes(en) / 1048576.0, n_ctx, cfg->n_layers,
            engine_scratch_bytes(en) / 1048576.0);
    if (g_stop) fprintf(stderr, "[interrupted]\n");
    sampler_free(smp);
    free(logits);
    free(toks);
    free(templated);
    free(file_text);
    engine_free(en);
    return 0;
}
