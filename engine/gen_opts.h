/* engine/gen_opts.h: ./infer's options (llama.cpp's flag names), parsed by one function that both
 * the command line and each line of a --grid file go through. Flags: docs/GENERATION.md. */
#ifndef ENGINE_GEN_OPTS_H
#define ENGINE_GEN_OPTS_H

#include <stdio.h>

#include "engine/generate.h"

struct run_opts {
    struct engine_opts o;
    struct gen_params g;
    const char *prompt, *prompt_file, *sys;
    const char *draft_path;   // -md
    int n_draft;              // --draft (default 5)
    int draft_quant;          // --draft-quant N: quantize the draft at load (0 = keep)
    int n_parallel;           // -np (default 1)
    int grp_attn_n, grp_attn_w;
    const char *grid_file, *out_dir;
    bool chat, interactive, display_prompt, verbose_prompt, no_kv_offload;
    bool engine_changed;      // set when an option that needs a model reload was parsed
};

void run_opts_default(struct run_opts *r);
/* Parses one option: a = the flag, v = the next argument (or NULL). Returns the number of
 * arguments consumed (1 or 2), 0 for -h/--help, or -1 after printing a one-line error. */
int run_opts_parse(struct run_opts *r, const char *a, const char *v);
/* The usage text. */
void run_opts_usage(FILE *f);

/* Tokenizes a prompt (wrapped in the model's chat template when chat; BOS as the vocabulary
 * says). *out is malloc'd. Returns the count, or -1 with e set (an empty prompt without BOS too). */
int run_tokenize_prompt(struct engine *en, const char *text, bool chat, const char *sys, int32_t **out,
                        struct err *e);
/* Reads a whole text file (malloc'd), or NULL after printing an error. */
char *run_read_file(const char *path);

#endif
