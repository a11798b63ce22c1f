/* engine/grid.c: the option-grid runner (see grid.h). Each line of the grid is parsed by the same
 * run_opts_parse as the command line; the model is reloaded only when a line changes a load-time
 * option (context size, cache types, quantization, threads). Generation goes through generate.c. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "engine/grid.h"

static const char *const short_flags[] = {"c", "n", "s", "t", "q", "m", "p", "f", "z", "ctk", "ctv", "ngl",
                                          "np", "md", "nkvo", "sys", "gan", "gaw"};

static const char *flag_of(const char *key, char *buf, size_t cap) {
    for (size_t i = 0; i < sizeof short_flags / sizeof short_flags[0]; i++)
        if (strcmp(key, short_flags[i]) == 0) { snprintf(buf, cap, "-%s", key); return buf; }
    snprintf(buf, cap, "--%s", key);
    return buf;
}

int grid_split_line(const char *line, char *buf, size_t buf_len, const char **argv, int max) {
    static char flags[64][40];   // --key strings built from key=value
    int n = 0, nf = 0;
    if (strlen(line) + 1 > buf_len) return -1;
    strcpy(buf, line);
    for (char *save = NULL, *tok = strtok_r(buf, " \t\r\n", &save); tok; tok = strtok_r(NULL, " \t\r\n", &save)) {
        char *eq = strchr(tok, '=');
        if (tok[0] == '-' || !eq) {
            if (n == max) return -1;
            argv[n++] = tok;
            continue;
        }
        // key=value, possibly a comma-separated list of them
        for (char *s2 = NULL, *kv = strtok_r(tok, ",", &s2); kv; kv = strtok_r(NULL, ",", &s2)) {
            char *e2 = strchr(kv, '=');
            if (!e2 || n + 2 > max || nf == 64) return -1;
            *e2 = 0;
            argv[n++] = flag_of(kv, flags[nf], sizeof flags[nf]);
            nf++;
            argv[n++] = e2 + 1;
        }
    }
    return n;
}

static void load_key(const struct engine_opts *o, char *buf, size_t cap) {
    snprintf(buf, cap, "%s|%s|%d|%d|%s|%s|%d|%d|%d|%s|%d", o->model_path, o->tokenizer_path ? o->tokenizer_path : "",
             o->n_ctx, o->quant_bits, o->bits_plan ? o->bits_plan : "", o->quant_method ? o->quant_method : "",
             o->n_threads, (int)o->cache_type_k, (int)o->cache_type_v, o->device ? o->device : "", o->n_gpu_layers);
}

struct text { char *buf; size_t len, cap; };
static void emit_text(void *user, const char *s, size_t len) {
    struct text *t = user;
    if (t->len + len + 1 > t->cap) {
        size_t cap = (t->len + len + 1) * 2;
        char *nb = realloc(t->buf, cap);
        if (!nb) return;
        t->buf = nb;
        t->cap = cap;
    }
    memcpy(t->buf + t->len, s, len);
    t->len += len;
    t->buf[t->len] = 0;
}

static void csv_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

// option names already given a CSV in this run (the first row truncates the file and writes a header)
static char seen[64][48];
static int n_seen;
static FILE *option_csv(const char *dir, const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s.csv", dir, name);
    for (int i = 0; i < n_seen; i++)
        if (strcmp(seen[i], name) == 0) return fopen(path, "a");
    FILE *f = fopen(path, "w");
    if (f) {
        fprintf(f, "value,line,prompt_eval_tps,eval_tps,prompt_tokens,gen_tokens,memory_mib,hash\n");
        if (n_seen < 64) snprintf(seen[n_seen++], sizeof seen[0], "%s", name);
    }
    return f;
}

int grid_main(const struct run_opts *base) {
    if (!base->prompt_file) { fprintf(stderr, "error: --grid needs -f PROMPTS (one prompt a line)\n"); return 1; }
    const char *dir = base->out_dir ? base->out_dir : "grid-out";
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) { fprintf(stderr, "error: cannot create %s: %s\n", dir, strerror(errno)); return 1; }
    char *grid = run_read_file(base->grid_file), *ptext = run_read_file(base->prompt_file);
    if (!grid || !ptext) { free(grid); free(ptext); return 1; }
    char *prompts[1024];
    int n_prompts = 0;
    for (char *save = NULL, *s = strtok_r(ptext, "\n", &save); s && n_prompts < 1024; s = strtok_r(NULL, "\n", &save))
        if (*s) prompts[n_prompts++] = s;
    if (n_prompts == 0) { fprintf(stderr, "error: %s has no prompts\n", base->prompt_file); free(grid); free(ptext); return 1; }
    char path[1024];
    snprintf(path, sizeof path, "%s/summary.csv", dir);
    FILE *sum = fopen(path, "w");
    if (!sum) { fprintf(stderr, "error: cannot write %s\n", path); free(grid); free(ptext); return 1; }
    fprintf(sum, "line,options,prompts,prompt_tokens,gen_tokens,prompt_eval_tps,eval_tps,kv_mib,memory_mib,hash,log\n");
    n_seen = 0;
    struct engine *en = NULL;
    char key[2048] = "", k2[2048];
    int rc = 0, line_no = 0;
    struct err e = {0};
    for (char *save = NULL, *line = strtok_r(grid, "\n", &save); line && !rc; line = strtok_r(NULL, "\n", &save)) {
        while (*line == ' ' || *line == '\t') line++;
        if (!*line || *line == '#') continue;
        line_no++;
        struct run_opts r = *base;
        r.engine_changed = false;
        char buf[4096];
        const char *av[128];
        int ac = strcmp(line, "base") == 0 ? 0 : grid_split_line(line, buf, sizeof buf, av, 128);
        if (ac < 0) { fprintf(stderr, "error: %s line %d: cannot parse '%s'\n", base->grid_file, line_no, line); rc = 1; break; }
        int opt_at[128], opt_k[128], n_opt = 0;   // where each option starts, and its argument count
        for (int i = 0; i < ac && !rc;) {
            int k = run_opts_parse(&r, av[i], i + 1 < ac ? av[i + 1] : NULL);
            if (k <= 0) { fprintf(stderr, "error: %s line %d: bad option '%s'\n", base->grid_file, line_no, av[i]); rc = 1; break; }
            opt_at[n_opt] = i;
            opt_k[n_opt++] = k;
            i += k;
        }
        if (rc) break;
        if (r.n_parallel > 1 || r.draft_path || r.interactive || r.grid_file != base->grid_file || r.grp_attn_n != 1) {
            fprintf(stderr, "error: %s line %d: -np, -md, -i, --grid and --grp-attn-n are not grid options\n",
                    base->grid_file, line_no);
            rc = 1;
            break;
        }
        r.o.quiet = true;
        r.o.n_seq = 1;
        load_key(&r.o, k2, sizeof k2);
        if (!en || strcmp(k2, key) != 0) {
            engine_free(en);
            en = NULL;
            if (engine_load(&en, &r.o, &e)) { fprintf(stderr, "error: line %d: %s\n", line_no, e.msg); rc = 1; break; }
            strcpy(key, k2);
        }
        snprintf(path, sizeof path, "%s/run_%03d.log", dir, line_no);
        FILE *log = fopen(path, "w");
        if (!log) { fprintf(stderr, "error: cannot write %s\n", path); rc = 1; break; }
        fprintf(log, "# line %d: %s\n# model %s, seed %llu\n", line_no, line, r.o.model_path, (unsigned long long)r.g.sp.seed);
        struct gen_stats tot = {.hash = GEN_HASH_INIT};
        for (int p = 0; p < n_prompts && !rc; p++) {
            struct text out = {0};
            struct gen g;
            struct gen_stats st = {.hash = GEN_HASH_INIT};
            int32_t *toks = NULL;
            int nt = run_tokenize_prompt(en, prompts[p], r.chat, r.sys, &toks, &e);
            if (nt < 0 || gen_init(&g, en, 0, &r.g, emit_text, &out, &e)) {
                fprintf(stderr, "error: line %d prompt %d: %s\n", line_no, p + 1, e.msg);
                free(toks);
                rc = 1;
                break;
            }
            if (gen_feed(&g, toks, nt, &st, &e) || gen_run(&g, NULL, &st, &e)) {
                fprintf(stderr, "error: line %d prompt %d: %s\n", line_no, p + 1, e.msg);
                rc = 1;
            }
            gen_free(&g);
            free(toks);
            fprintf(log, "\n## prompt %d: %s\n%s\n## %d prompt tokens in %.2f ms, %d generated (%d evals in %.2f ms: %.2f tok/s), hash %016llx\n",
                    p + 1, prompts[p], out.buf ? out.buf : "", st.n_prompt, st.t_prompt_ms, st.n_gen, st.n_eval,
                    st.t_eval_ms, st.n_eval ? 1e3 * st.n_eval / st.t_eval_ms : 0.0, (unsigned long long)st.hash);
            free(out.buf);
            tot.n_prompt += st.n_prompt;
            tot.n_gen += st.n_gen;
            tot.n_eval += st.n_eval;
            tot.t_prompt_ms += st.t_prompt_ms;
            tot.t_eval_ms += st.t_eval_ms;
            tot.hash = gen_hash(tot.hash, &st.hash, sizeof st.hash);
        }
        fclose(log);
        if (rc) break;
        const double ptps = tot.t_prompt_ms > 0 ? 1e3 * tot.n_prompt / tot.t_prompt_ms : 0;
        const double etps = tot.t_eval_ms > 0 ? 1e3 * tot.n_eval / tot.t_eval_ms : 0;
        const double kv = engine_kv_bytes(en) / 1048576.0;
        const double mem = (engine_weight_bytes(en) + engine_kv_bytes(en) + engine_scratch_bytes(en)) / 1048576.0;
        fprintf(sum, "%d,", line_no);
        csv_str(sum, line);
        fprintf(sum, ",%d,%d,%d,%.2f,%.2f,%.3f,%.2f,%016llx,run_%03d.log\n", n_prompts, tot.n_prompt, tot.n_gen, ptps,
                etps, kv, mem, (unsigned long long)tot.hash, line_no);
        fflush(sum);
        for (int j = 0; j < n_opt; j++) {   // one row in each named option's CSV
            const char *fl = av[opt_at[j]];
            const char *name = fl + (fl[1] == '-' ? 2 : 1);
            const char *val = opt_k[j] == 2 ? av[opt_at[j] + 1] : "true";
            FILE *f = option_csv(dir, name);
            if (!f) continue;
            csv_str(f, val);
            fprintf(f, ",%d,%.2f,%.2f,%d,%d,%.2f,%016llx\n", line_no, ptps, etps, tot.n_prompt, tot.n_gen, mem,
                    (unsigned long long)tot.hash);
            fclose(f);
        }
        fprintf(stderr, "grid line %d: %-40s %6.1f tok/s eval, %d tokens, hash %016llx\n", line_no, line, etps,
                tot.n_gen, (unsigned long long)tot.hash);
    }
    fclose(sum);
    engine_free(en);
    free(grid);
    free(ptext);
    if (!rc) fprintf(stderr, "grid: %d lines, results in %s/summary.csv\n", line_no, dir);
    return rc;
}
