/* engine/tokenize_main.c: ./tokenize, print the token ids of a text (like llama.cpp's llama-tokenize).
 *   ./tokenize -m MODEL -p "Hello world" [--ids] [--no-bos] [--no-parse-special]
 * MODEL: any file model_file_open reads (vocab-only GGUFs too), or a bare tokenizer:
 * a SentencePiece tokenizer.model, a llama2.c tokenizer.bin, or a Hugging Face tokenizer.json. */
#include <stdio.h>
#include <stdlib.h>

#include "engine/tokenizer.h"

static void usage(FILE *f) {
    fprintf(f,
        "usage: ./tokenize -m MODEL (-p TEXT | -f FILE) [options]\n"
        "Print the tokens of a text, one per line as \"id -> 'piece'\".\n\n"
        "  -m, --model PATH        model (GGUF incl. vocab-only, llama2.c .bin, HF folder), or a\n"
        "                          tokenizer.model / tokenizer.bin / tokenizer.json\n"
        "  -z, --tokenizer PATH    tokenizer.bin for a llama2.c model (default: next to the model)\n"
        "  -p, --prompt TEXT       text to tokenize\n"
        "  -f, --file PATH         read the text from a file (instead of -p)\n"
        "      --ids               print only the ids, as [1, 15043, 3186]\n"
        "      --no-bos            do not add BOS (default: as the vocabulary says)\n"
        "      --no-parse-special  tokenize \"<s>\", \"<|im_start|>\"... as plain text\n"
        "  -h, --help              this help\n");
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

// Prints a piece between quotes with control bytes escaped.
static void print_piece(const char *p) {
    putchar('\'');
    for (const unsigned char *c = (const unsigned char *)p; *c; c++) {
        if (*c == '\n') fputs("\\n", stdout);
        else if (*c == '\t') fputs("\\t", stdout);
        else if (*c == '\r') fputs("\\r", stdout);
        else if (*c < 0x20 || *c == 0x7F) printf("\\x%02X", *c);
        else putchar(*c);
    }
    putchar('\'');
}

static char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    for (size_t got; buf && (got = fread(buf + n, 1, cap - n, f)) > 0;) {
        n += got;
        if (n == cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) { free(buf); buf = NULL; }
            buf = nb;
        }
    }
    fclose(f);
    if (buf) *len = n;
    return buf;
}

int main(int argc, char **argv) {
    const char *model = NULL, *tok_path = NULL, *prompt = NULL, *file = NULL;
    bool ids_only = false, no_bos = false, parse_special = true;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has_val = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        else if (!strcmp(a, "--ids")) ids_only = true;
        else if (!strcmp(a, "--no-bos")) no_bos = true;
        else if (!strcmp(a, "--no-parse-special")) parse_special = false;
        else if ((!strcmp(a, "-m") || !strcmp(a, "--model")) && has_val) model = argv[++i];
        else if ((!strcmp(a, "-z") || !strcmp(a, "--tokenizer")) && has_val) tok_path = argv[++i];
        else if ((!strcmp(a, "-p") || !strcmp(a, "--prompt")) && has_val) prompt = argv[++i];
        else if ((!strcmp(a, "-f") || !strcmp(a, "--file")) && has_val) file = argv[++i];
        else {
            bool known = !strcmp(a, "-m") || !strcmp(a, "--model") || !strcmp(a, "-p") ||
                         !strcmp(a, "--prompt") || !strcmp(a, "-f") || !strcmp(a, "--file") ||
                         !strcmp(a, "-z") || !strcmp(a, "--tokenizer");
            fprintf(stderr, known ? "tokenize: %s needs a value\n" : "tokenize: unknown option '%s'\n", a);
            fprintf(stderr, "try ./tokenize --help\n");
            return 1;
        }
    }
    if (!model) {
        fprintf(stderr, "tokenize: no model given (-m PATH); try ./tokenize --help\n");
        return 1;
    }
    if (!prompt && !file) {
        fprintf(stderr, "tokenize: no text given (-p TEXT or -f FILE)\n");
        return 1;
    }

    // Load the vocabulary: a model file, else a bare tokenizer file by its extension.
    struct model_file mf;
    struct vocab bare = {0};
    const struct vocab *v = &mf.vocab;
    struct err e = {0};
    int rc;
    bool is_bare = ends_with(model, ".model") || ends_with(model, ".json") ||
                   (ends_with(model, "tokenizer.bin") || ends_with(model, "tok512.bin"));
    if (is_bare) {
        bare.bos = bare.eos = bare.unk = bare.pad = bare.eot = -1;
        if (ends_with(model, ".model")) rc = spm_model_load(&bare, model, &e);
        else if (ends_with(model, ".json")) rc = hf_tokenizer_json_load(&bare, model, &e);
        else rc = llama2c_tokenizer_load(&bare, model, 0, &e);
        v = &bare;
    } else {
        rc = model_file_open(&mf, model, tok_path, &e);
    }
    if (rc) {
        fprintf(stderr, "tokenize: cannot load %s: %s\n", model, e.msg);
        return 1;
    }
    struct tokenizer *t = tokenizer_create(v, &e);
    if (!t) {
        fprintf(stderr, "tokenize: %s: %s\n", model, e.msg);
        return 1;
    }

    size_t len;
    char *text = NULL;
    if (file) {
        text = read_all(file, &len);
        if (!text) {
            fprintf(stderr, "tokenize: cannot read %s\n", file);
            return 1;
        }
    } else {
        len = strlen(prompt);
    }
    const char *src = text ? text : prompt;
    int max = (int)(len < (1u << 30) ? len : (1u << 30)) + 8;
    int32_t *ids = malloc((size_t)max * sizeof *ids);
    int n = ids ? tokenizer_encode(t, src, len, v->add_bos && !no_bos, parse_special, ids, max, &e) : -1;
    if (n < 0) {
        fprintf(stderr, "tokenize: %s\n", ids ? e.msg : "out of memory");
        return 1;
    }
    if (ids_only) {
        putchar('[');
        for (int i = 0; i < n; i++) printf(i ? ", %d" : "%d", ids[i]);
        printf("]\n");
    } else {
        for (int i = 0; i < n; i++) {
            printf("%6d -> ", ids[i]);
            print_piece(tokenizer_piece(t, ids[i]));
            putchar('\n');
        }
    }
    free(ids);
    free(text);
    tokenizer_free(t);
    if (is_bare) vocab_free(&bare);
    else model_file_close(&mf);
    return 0;
}
