/* engine/gen_opts.c: ./infer's option table (see gen_opts.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/args.h"
#include "engine/chat.h"
#include "engine/gen_opts.h"
#include "engine/kv_cache.h"

void run_opts_default(struct run_opts *r) {
    memset(r, 0, sizeof *r);
    gen_params_default(&r->g);
    r->g.sp.seed = UINT64_MAX;   // -1: from the clock
    r->n_draft = 5;
    r->n_parallel = 1;
    r->grp_attn_n = 1;
    r->grp_attn_w = 512;
    r->display_prompt = true;
}

void run_opts_usage(FILE *f) {
    fprintf(f,
        "usage: ./infer -m MODEL [options]\n"
        "       ./infer -m MODEL --grid GRID_FILE -f PROMPTS [-o DIR] [options]\n"
        "Generate text with a Llama-architecture model (GGUF, llama2.c .bin, Hugging Face folder, or\n"
        "this engine's model.bin). Every flag is described in docs/GENERATION.md.\n\n"
        "model and hardware:\n"
        "  -m, --model PATH          model file or folder (required)\n"
        "  -z, --tokenizer PATH      tokenizer.bin for llama2.c models (default: next to the model)\n"
        "  -q, --quant N             quantize weights at load to N bits: 8, 4, 3 or 2 (group 64)\n"
        "      --bits PLAN           mixed precision plan, e.g. \"default=4,blk.0-1=8,output=8\"\n"
        "      --method rtn|opt|gptq quantizer: round-to-nearest, optimized (default) or GPTQ (needs --imatrix)\n"
        "      --imatrix FILE        calibration statistics from ./imatrix for -q/--bits (opt: E[x^2] weights)\n"
        "      --gptq-damp F         GPTQ damping (default 0.1)   --no-act-order  GPTQ columns in file order\n"
        "      --calib-text FILE     text for --bits auto:B's KL measurements\n"
        "  -t, --threads N           CPU threads (default: all cores)\n"
        "  -c, --ctx-size N          context size = KV cache length (default: model's, at most 4096)\n"
        "  -ctk, --cache-type-k T    KV cache key type: f32 (default), f16, q8_0, q4_0\n"
        "  -ctv, --cache-type-v T    KV cache value type: f32 (default), f16, q8_0, q4_0\n"
        "  -nkvo, --no-kv-offload    keep the KV cache on the host (no-op: the CPU backend always does)\n"
        "  -ngl, --n-gpu-layers N    N > 0 runs on the GPU (CUDA); all layers are offloaded\n"
        "      --device cpu|cuda     backend (default cpu)\n\n"
        "prompt and generation:\n"
        "  -p, --prompt TEXT         prompt (default: empty, generation starts from BOS)\n"
        "  -f, --file PATH           read the prompt from a file (with --grid or -np: one prompt a line)\n"
        "  -n, --n-predict N         tokens to generate (default 128; -1 = until end of text, shifting\n"
        "                            the context; -2 = until the context is full)\n"
        "      --keep N              tokens of the prompt kept when the context shifts (default 0; -1 = all)\n"
        "      --no-context-shift    stop when the context is full instead of shifting it\n"
        "      --grp-attn-n N, --grp-attn-w W   self-extend (not supported yet: only N = 1)\n"
        "      --ignore-eos          do not stop at end-of-sequence tokens\n"
        "      --chat                wrap the prompt in the model's chat template (special tokens parsed)\n"
        "  -i, --interactive         chat REPL on stdin (history kept in the KV cache; Ctrl-C stops the\n"
        "                            answer, Ctrl-D exits)\n"
        "  -sys, --system-prompt T   system message for --chat / -i\n"
        "      --no-display-prompt   do not echo the prompt\n"
        "      --verbose-prompt      print the prompt's token ids to stderr\n"
        "  -np, --parallel N         decode N sequences in one batch (prompts: the lines of -p/-f, cycled;\n"
        "                            sequence i uses seed + i)\n"
        "  -md, --model-draft PATH   speculative decoding with this draft model (same vocabulary)\n"
        "      --draft N             tokens drafted per step (default 5)\n"
        "      --draft-quant N       quantize the draft at load to N bits (8, 4, 3, 2)\n"
        "      --grid FILE           run every option set in FILE (one per line) over the prompts of -f\n"
        "  -o, --output-dir DIR      where --grid writes its logs and CSVs (default grid-out)\n\n"
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

static bool cache_type(const char *flag, const char *v, enum qtype *out) {
    if (!v) { fprintf(stderr, "error: %s needs a value\n", flag); return false; }
    if (kv_cache_type_parse(v, out)) return true;
    fprintf(stderr, "error: %s expects f32, f16, q8_0 or q4_0, got '%s'\n", flag, v);
    return false;
}

static bool str_arg(const char *flag, const char *v, const char **out) {
    if (!v) { fprintf(stderr, "error: %s needs a value\n", flag); return false; }
    *out = v;
    return true;
}

int run_opts_parse(struct run_opts *r, const char *a, const char *v) {
#define IS(x) (strcmp(a, x) == 0)
#define VAL(expr) return (expr) ? 2 : -1
#define ENG(expr) do { r->engine_changed = true; VAL(expr); } while (0)
    struct sampler_params *sp = &r->g.sp;
    if (IS("-h") || IS("--help")) return 0;
    if (IS("-m") || IS("--model")) ENG(str_arg(a, v, &r->o.model_path));
    if (IS("-z") || IS("--tokenizer")) ENG(str_arg(a, v, &r->o.tokenizer_path));
    if (IS("-q") || IS("--quant")) {
        r->engine_changed = true;
        if (!arg_int(a, v, 2, 8, &r->o.quant_bits)) return -1;
        if (r->o.quant_bits != 2 && r->o.quant_bits != 3 && r->o.quant_bits != 4 && r->o.quant_bits != 8) {
            fprintf(stderr, "error: -q must be 8, 4, 3 or 2\n");
            return -1;
        }
        return 2;
    }
    if (IS("--bits")) ENG(str_arg(a, v, &r->o.bits_plan));
    if (IS("--method")) {
        r->engine_changed = true;
        if (!v || (strcmp(v, "rtn") && strcmp(v, "opt") && strcmp(v, "gptq"))) { fprintf(stderr, "error: --method expects rtn, opt or gptq\n"); return -1; }
        r->o.quant_method = v;
        return 2;
    }
    if (IS("--imatrix")) ENG(str_arg(a, v, &r->o.imatrix_path));
    if (IS("--calib-text")) ENG(str_arg(a, v, &r->o.calib_text));
    if (IS("--gptq-damp")) ENG(arg_float(a, v, 1e-6, 10, &r->o.gptq_damp));
    if (IS("--act-order") || IS("--no-act-order")) { r->engine_changed = true; r->o.gptq_no_act_order = a[2] == 'n'; return 1; }
    if (IS("-t") || IS("--threads")) ENG(arg_int(a, v, 1, 1024, &r->o.n_threads));
    if (IS("-c") || IS("--ctx-size")) ENG(arg_int(a, v, 1, 1 << 20, &r->o.n_ctx));
    if (IS("-ctk") || IS("--cache-type-k")) ENG(cache_type(a, v, &r->o.cache_type_k));
    if (IS("-ctv") || IS("--cache-type-v")) ENG(cache_type(a, v, &r->o.cache_type_v));
    if (IS("-nkvo") || IS("--no-kv-offload")) { r->no_kv_offload = true; return 1; }
    if (IS("-ngl") || IS("--n-gpu-layers") || IS("--gpu-layers")) ENG(arg_int(a, v, 0, 100000, &r->o.n_gpu_layers));
    if (IS("--device")) ENG(str_arg(a, v, &r->o.device));
    if (IS("-p") || IS("--prompt")) VAL(str_arg(a, v, &r->prompt));
    if (IS("-f") || IS("--file")) VAL(str_arg(a, v, &r->prompt_file));
    if (IS("-n") || IS("--n-predict")) VAL(arg_int(a, v, -2, 1 << 24, &r->g.n_predict));
    if (IS("--keep")) VAL(arg_int(a, v, -1, 1 << 24, &r->g.n_keep));
    if (IS("--no-context-shift")) { r->g.ctx_shift = false; return 1; }
    if (IS("--grp-attn-n") || IS("-gan")) VAL(arg_int(a, v, 1, 1 << 16, &r->grp_attn_n));
    if (IS("--grp-attn-w") || IS("-gaw")) VAL(arg_int(a, v, 1, 1 << 24, &r->grp_attn_w));
    if (IS("--ignore-eos")) { r->g.ignore_eos = true; return 1; }
    if (IS("--chat") || IS("-cnv") || IS("--conversation")) { r->chat = true; return 1; }
    if (IS("-i") || IS("--interactive")) { r->interactive = true; return 1; }
    if (IS("-sys") || IS("--system-prompt")) VAL(str_arg(a, v, &r->sys));
    if (IS("--no-display-prompt")) { r->display_prompt = false; return 1; }
    if (IS("--verbose-prompt")) { r->verbose_prompt = true; return 1; }
    if (IS("-np") || IS("--parallel")) ENG(arg_int(a, v, 1, 256, &r->n_parallel));
    if (IS("-md") || IS("--model-draft")) VAL(str_arg(a, v, &r->draft_path));
    if (IS("--draft") || IS("--draft-max")) VAL(arg_int(a, v, 1, 64, &r->n_draft));
    if (IS("--draft-quant")) {
        if (!arg_int(a, v, 2, 8, &r->draft_quant)) return -1;
        if (r->draft_quant == 5 || r->draft_quant == 6 || r->draft_quant == 7) {
            fprintf(stderr, "error: --draft-quant must be 8, 4, 3 or 2\n");
            return -1;
        }
        return 2;
    }
    if (IS("--grid")) VAL(str_arg(a, v, &r->grid_file));
    if (IS("-o") || IS("--output-dir")) VAL(str_arg(a, v, &r->out_dir));
    if (IS("-s") || IS("--seed")) VAL(arg_u64(a, v, &sp->seed));
    if (IS("--temp")) VAL(arg_float(a, v, 0, 100, &sp->temp));
    if (IS("--top-k")) VAL(arg_int(a, v, 0, 1 << 30, &sp->top_k));
    if (IS("--top-p")) VAL(arg_float(a, v, 0, 1, &sp->top_p));
    if (IS("--min-p")) VAL(arg_float(a, v, 0, 1, &sp->min_p));
    if (IS("--typical")) VAL(arg_float(a, v, 0, 1, &sp->typical_p));
    if (IS("--tfs")) VAL(arg_float(a, v, 0, 1, &sp->tfs_z));
    if (IS("--mirostat")) VAL(arg_int(a, v, 0, 2, &sp->mirostat));
    if (IS("--mirostat-lr")) VAL(arg_float(a, v, 0, 10, &sp->mirostat_eta));
    if (IS("--mirostat-ent")) VAL(arg_float(a, v, 0, 100, &sp->mirostat_tau));
    if (IS("--repeat-penalty")) VAL(arg_float(a, v, 0.01, 100, &sp->repeat_penalty));
    if (IS("--repeat-last-n")) VAL(arg_int(a, v, -1, 1 << 24, &sp->repeat_last_n));
    if (IS("--presence-penalty")) VAL(arg_float(a, v, -100, 100, &sp->presence_penalty));
    if (IS("--frequency-penalty")) VAL(arg_float(a, v, -100, 100, &sp->frequency_penalty));
    fprintf(stderr, "error: unknown argument '%s' (see --help)\n", a);
    return -1;
#undef IS
#undef VAL
#undef ENG
}

int run_tokenize_prompt(struct engine *en, const char *text, bool chat, const char *sys, int32_t **out,
                        struct err *e) {
    const struct vocab *voc = engine_vocab(en);
    char *templated = NULL;
    if (chat) {
        enum chat_style cs = chat_detect(voc->chat_template);
        if (cs == CHAT_NONE) cs = CHAT_CHATML;
        struct chat_msg msgs[2];
        int nm = 0;
        if (sys) msgs[nm++] = (struct chat_msg){"system", sys};
        msgs[nm++] = (struct chat_msg){"user", text};
        if (!(templated = chat_apply(cs, msgs, nm, true))) return ERR(e, ERR_OOM, "out of memory"), -1;
        text = templated;
    }
    // every token covers at least one byte, plus BOS and a space prefix
    const size_t cap = strlen(text) + 8;
    int32_t *toks = malloc(sizeof(int32_t) * cap);
    if (!toks) { free(templated); ERR(e, ERR_OOM, "out of memory"); return -1; }
    int n = tokenizer_encode(engine_tokenizer(en), text, strlen(text), voc->add_bos, chat, toks, (int)cap, e);
    free(templated);
    if (n == 0) {
        ERR(e, ERR_ARG, "the prompt is empty and the model has no BOS token; give -p TEXT");
        n = -1;
    }
    if (n < 0) { free(toks); return -1; }
    *out = toks;
    return n;
}

char *run_read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "error: cannot open %s\n", path); return NULL; }
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
