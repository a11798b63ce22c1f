/* engine/infer_main.c: ./infer, generate text from a prompt (llama.cpp's flag names).
 *   ./infer -m MODEL [-q 4] -p "Once upon a time" -n 128
 *   ./infer -m MODEL -np 4 -f prompts.txt          (four sequences decoded in one batch)
 *   ./infer -m MODEL -md DRAFT --draft 5 -p ...    (speculative decoding)
 *   ./infer -m MODEL -i                            (chat REPL)
 *   ./infer -m MODEL --grid GRID -f PROMPTS -o DIR (option grid -> logs and CSVs, engine/grid.c)
 * Streams text to stdout; timings and memory to stderr at exit. Flags: docs/GENERATION.md. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "engine/chat.h"
#include "engine/gen_opts.h"
#include "engine/grid.h"

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return 1e3 * (double)ts.tv_sec + 1e-6 * (double)ts.tv_nsec;
}

static volatile sig_atomic_t g_stop;
static void on_sigint(int sig) { g_stop = 1; }

static void emit_stdout(void *user, const char *text, size_t len) {
    fwrite(text, 1, len, stdout);
    fflush(stdout);
}

static void print_perf(struct engine *en, const struct gen_stats *st, double t_load, double t_total) {
    const struct backend *be = engine_backend(en);
    const struct model_config *cfg = engine_config(en);
    fprintf(stderr, "\n");
    fprintf(stderr, "perf: backend = %s, threads = %d, model = %s\n", be->ops->name, be->n_threads, cfg->name);
    fprintf(stderr, "perf:        load time = %10.2f ms\n", t_load);
    if (st->n_prompt > 0)
        fprintf(stderr, "perf: prompt eval time = %10.2f ms / %5d tokens (%8.2f ms per token, %8.2f tokens per second)\n",
                st->t_prompt_ms, st->n_prompt, st->t_prompt_ms / st->n_prompt, 1e3 * st->n_prompt / st->t_prompt_ms);
    if (st->n_eval > 0)
        fprintf(stderr, "perf:        eval time = %10.2f ms / %5d runs   (%8.2f ms per token, %8.2f tokens per second)\n",
                st->t_eval_ms, st->n_eval, st->t_eval_ms / st->n_eval, 1e3 * st->n_eval / st->t_eval_ms);
    else
        fprintf(stderr, "perf:        eval time = %10.2f ms / %5d runs\n", st->t_eval_ms, st->n_eval);
    fprintf(stderr, "perf:       total time = %10.2f ms / %5d tokens\n", t_total, st->n_prompt + st->n_gen);
    if (st->n_shift) fprintf(stderr, "context: %d shifts\n", st->n_shift);
    fprintf(stderr, "memory: model %.2f MiB, KV cache %.2f MiB (K %s, V %s; %d x %d layers x %d seq), compute %.2f MiB\n",
            engine_weight_bytes(en) / 1048576.0, engine_kv_bytes(en) / 1048576.0,
            qtype_traits[engine_kv_type(en, 0)].name, qtype_traits[engine_kv_type(en, 1)].name, engine_n_ctx(en),
            cfg->n_layers, engine_n_seq(en), engine_scratch_bytes(en) / 1048576.0);
}

/* Prints the prompt's text (as the tokenizer reads it back). */
static void echo_prompt(struct engine *en, const int32_t *toks, int n) {
    struct detok dt;
    detok_init(&dt);
    char piece[256];
    for (int i = 0; i < n; i++) {
        size_t k = tokenizer_decode_token(engine_tokenizer(en), &dt, toks[i], piece, sizeof piece);
        fwrite(piece, 1, k, stdout);
    }
    fflush(stdout);
}

// ------------------------------------------------------------------------------------------------
// -np: N sequences in one batch. Prompts are the non-empty lines of the prompt text, cycled.

struct seq_out { char *buf; size_t len, cap; };
static void emit_buf(void *user, const char *text, size_t len) {
    struct seq_out *o = user;
    if (o->len + len + 1 > o->cap) {
        size_t cap = (o->len + len + 1) * 2;
        char *nb = realloc(o->buf, cap);
        if (!nb) return;
        o->buf = nb;
        o->cap = cap;
    }
    memcpy(o->buf + o->len, text, len);
    o->len += len;
    o->buf[o->len] = 0;
}

static void emit_tee(void *user, const char *text, size_t len) {
    emit_buf(user, text, len);
    emit_stdout(NULL, text, len);
}

static int run_parallel(struct engine *en, const struct run_opts *r, const char *text, struct gen_stats *st,
                        struct err *e) {
    const int n = r->n_parallel;
    char *copy = strdup(text);
    char *lines[256];
    int n_lines = 0;
    for (char *s = strtok(copy, "\n"); s && n_lines < 256; s = strtok(NULL, "\n"))
        if (*s) lines[n_lines++] = s;
    if (n_lines == 0) lines[n_lines++] = "";
    struct gen *gens = calloc((size_t)n, sizeof *gens);
    struct seq_out *outs = calloc((size_t)n, sizeof *outs);
    int rc = (!gens || !outs) ? ERR(e, ERR_OOM, "out of memory") : ERR_OK;
    for (int i = 0; i < n && !rc; i++) {
        struct gen_params gp = r->g;
        gp.sp.seed = r->g.sp.seed + (uint64_t)i;
        int32_t *toks = NULL;
        int nt = run_tokenize_prompt(en, lines[i % n_lines], r->chat, r->sys, &toks, e);
        if (nt < 0) { rc = e->code; break; }
        if ((rc = gen_init(&gens[i], en, i, &gp, emit_buf, &outs[i], e)) == ERR_OK) {
            if (r->display_prompt) emit_buf(&outs[i], lines[i % n_lines], strlen(lines[i % n_lines]));
            rc = gen_feed(&gens[i], toks, nt, st, e);
        }
        free(toks);
    }
    if (!rc) rc = gen_run_parallel(gens, n, &g_stop, st, e);
    for (int i = 0; i < n; i++) {
        if (!rc) printf("=== sequence %d ===\n%s\n", i, outs[i].buf ? outs[i].buf : "");
        gen_free(&gens[i]);
        free(outs[i].buf);
    }
    fflush(stdout);
    free(gens);
    free(outs);
    free(copy);
    return rc;
}

// ------------------------------------------------------------------------------------------------
// -i: chat REPL. Each turn renders the whole conversation with the chat template and feeds only the
// text after what the cache already holds (the previous reply's tokens are in the cache; its end
// marker, e.g. <|im_end|>, is not: the model sampled it but it was never decoded).

static char *read_line(FILE *in, bool *eof) {
    size_t cap = 256, n = 0;
    char *buf = malloc(cap);
    *eof = false;
    for (int c; buf;) {
        errno = 0;
        c = fgetc(in);
        if (c == EOF) {
            if (errno == EINTR && !g_stop) { clearerr(in); continue; }
            *eof = true;
            break;
        }
        if (c == '\n') break;
        if (n + 2 > cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) { free(buf); return NULL; }
            buf = nb;
        }
        buf[n++] = (char)c;
    }
    if (buf) buf[n] = 0;
    if (buf && *eof && n == 0) { free(buf); return NULL; }
    return buf;
}

static int run_interactive(struct engine *en, const struct run_opts *r, struct gen_stats *st, struct err *e) {
    const struct vocab *voc = engine_vocab(en);
    enum chat_style cs = chat_detect(voc->chat_template);
    struct gen g;
    int rc = gen_init(&g, en, 0, &r->g, emit_stdout, NULL, e);
    if (rc) return rc;
    struct chat_msg *msgs = NULL;
    int n_msgs = 0, cap_msgs = 0;
    char *prev_open = strdup("");   // rendered conversation up to the last assistant header
    struct seq_out reply = {0};
    if (r->sys) {
        cap_msgs = 8;
        msgs = malloc(sizeof *msgs * (size_t)cap_msgs);
        msgs[n_msgs++] = (struct chat_msg){"system", strdup(r->sys)};
    }
    fprintf(stderr, "interactive chat (%s template): type a message; Ctrl-C stops an answer, Ctrl-D exits\n",
            chat_style_name(cs));
    for (;;) {
        fprintf(stdout, "\n> ");
        fflush(stdout);
        g_stop = 0;
        bool eof;
        char *line = read_line(stdin, &eof);
        if (!line || g_stop) { free(line); break; }
        if (n_msgs + 2 > cap_msgs) {
            cap_msgs = cap_msgs ? 2 * cap_msgs : 8;
            msgs = realloc(msgs, sizeof *msgs * (size_t)cap_msgs);
        }
        if (reply.buf) msgs[n_msgs++] = (struct chat_msg){"assistant", strdup(reply.buf)};
        msgs[n_msgs++] = (struct chat_msg){"user", line};
        char *full = chat_apply(cs, msgs, n_msgs, true);
        if (!full) { rc = ERR(e, ERR_OOM, "out of memory"); break; }
        // the new text: after the previous assistant header and the reply the cache holds
        size_t skip = strlen(prev_open) + reply.len;
        const char *feed = full;
        if (g.n_past > 0 && strncmp(full, prev_open, strlen(prev_open)) == 0 && skip <= strlen(full) &&
            (reply.len == 0 || strncmp(full + strlen(prev_open), reply.buf, reply.len) == 0))
            feed = full + skip;
        int32_t *toks = malloc(sizeof(int32_t) * (strlen(feed) + 8));
        int nt = toks ? tokenizer_encode(engine_tokenizer(en), feed, strlen(feed), g.n_past == 0 && voc->add_bos,
                                         true, toks, (int)strlen(feed) + 8, e) : -1;
        if (nt < 0) { free(toks); free(full); rc = e->code ? e->code : ERR_OOM; break; }
        if ((rc = gen_feed(&g, toks, nt, st, e))) { free(toks); free(full); break; }
        free(toks);
        free(prev_open);
        prev_open = full;
        reply.len = 0;
        if (reply.buf) reply.buf[0] = 0;
        g.emit = emit_tee;   // stream the reply and keep its text for the next turn's diff
        g.user = &reply;
        struct gen_stats turn = {.hash = GEN_HASH_INIT};
        rc = gen_run(&g, &g_stop, &turn, e);
        st->n_gen += turn.n_gen;
        st->n_eval += turn.n_eval;
        st->t_eval_ms += turn.t_eval_ms;
        st->n_shift += turn.n_shift;
        if (turn.interrupted) fprintf(stderr, "\n[stopped]");
        if (rc || eof) break;
    }
    printf("\n");
    for (int i = 0; i < n_msgs; i++) free((char *)msgs[i].content);
    free(msgs);
    free(prev_open);
    free(reply.buf);
    gen_free(&g);
    return rc;
}

// ------------------------------------------------------------------------------------------------

int main(int argc, char **argv) {
    struct run_opts r;
    run_opts_default(&r);
    for (int i = 1; i < argc;) {
        int k = run_opts_parse(&r, argv[i], i + 1 < argc ? argv[i + 1] : NULL);
        if (k == 0) { run_opts_usage(stdout); return 0; }
        if (k < 0) return 1;
        i += k;
    }
    if (!r.o.model_path) { fprintf(stderr, "error: no model given (-m MODEL); see --help\n"); return 1; }
    if (r.prompt && r.prompt_file) { fprintf(stderr, "error: give either -p or -f, not both\n"); return 1; }
    if (r.grp_attn_n != 1) {
        fprintf(stderr, "error: --grp-attn-n/--grp-attn-w (self-extend) is not supported yet\n");
        return 1;
    }
    if (r.draft_path && (r.n_parallel > 1 || r.interactive)) {
        fprintf(stderr, "error: -md works with a single sequence, not with -np or -i\n");
        return 1;
    }
    if (r.interactive && r.n_parallel > 1) { fprintf(stderr, "error: -i and -np do not combine\n"); return 1; }
    if (r.g.sp.seed == UINT64_MAX) r.g.sp.seed = (uint64_t)time(NULL);
    if (r.grid_file) return grid_main(&r) ? 1 : 0;

    char *file_text = NULL;
    if (r.prompt_file) {
        if (!(file_text = run_read_file(r.prompt_file))) return 1;
        r.prompt = file_text;
    }
    if (!r.prompt) r.prompt = "";

    double t_start = now_ms();
    struct err e = {0};
    struct engine *en = NULL, *draft = NULL;
    r.o.n_seq = r.n_parallel;
    if (engine_load(&en, &r.o, &e)) {
        fprintf(stderr, "error: %s\n", e.msg);
        free(file_text);
        return 1;
    }
    if (r.draft_path) {
        struct engine_opts d = r.o;
        d.model_path = r.draft_path;
        d.tokenizer_path = NULL;
        d.quant_bits = r.draft_quant;
        d.bits_plan = NULL;
        d.n_seq = 1;
        d.quiet = true;
        d.n_ctx = engine_n_ctx(en);
        if (engine_load(&draft, &d, &e)) {
            fprintf(stderr, "error: draft model: %s\n", e.msg);
            engine_free(en);
            free(file_text);
            return 1;
        }
    }
    signal(SIGINT, on_sigint);
    struct gen_stats st = {.hash = GEN_HASH_INIT};
    int rc = ERR_OK;
    double t_load = now_ms() - t_start;
    if (r.interactive) {
        rc = run_interactive(en, &r, &st, &e);
    } else if (r.n_parallel > 1) {
        rc = run_parallel(en, &r, r.prompt, &st, &e);
    } else {
        int32_t *toks = NULL;
        int n = run_tokenize_prompt(en, r.prompt, r.chat, r.sys, &toks, &e);
        if (n < 0) {
            fprintf(stderr, "error: prompt: %s\n", e.msg);
            rc = e.code ? e.code : ERR_ARG;
            goto done;
        }
        if (n >= engine_n_ctx(en)) {
            fprintf(stderr, "error: the prompt has %d tokens, the context only %d (use -c)\n", n, engine_n_ctx(en));
            free(toks);
            rc = ERR_ARG;
            goto done;
        }
        if (r.verbose_prompt) {
            fprintf(stderr, "prompt: %d tokens:", n);
            for (int i = 0; i < n; i++) fprintf(stderr, " %d", toks[i]);
            fprintf(stderr, "\n");
        }
        if (r.display_prompt && !r.chat) echo_prompt(en, toks, n);
        struct gen g;
        if (!(rc = gen_init(&g, en, 0, &r.g, emit_stdout, NULL, &e))) {
            if (!(rc = gen_feed(&g, toks, n, &st, &e)))
                rc = draft ? gen_run_speculative(&g, draft, r.n_draft, &g_stop, &st, &e)
                           : gen_run(&g, &g_stop, &st, &e);
            gen_free(&g);
        }
        free(toks);
        printf("\n");
        fflush(stdout);
    }
    if (rc && e.msg[0]) fprintf(stderr, "\nerror: %s\n", e.msg);
    if (!rc) {
        print_perf(en, &st, t_load, now_ms() - t_start);
        if (r.n_parallel > 1)
            fprintf(stderr, "parallel: %d sequences, %d tokens generated in %.2f ms: %.2f tokens per second aggregate\n",
                    r.n_parallel, st.n_gen, st.t_eval_ms, 1e3 * st.n_gen / st.t_eval_ms);
        if (draft)
            fprintf(stderr, "speculative: draft %s, %d drafted, %d accepted (%.1f%%), %d target passes for %d tokens\n",
                    r.draft_path, st.n_drafted, st.n_accepted,
                    st.n_drafted ? 100.0 * st.n_accepted / st.n_drafted : 0.0, st.n_eval, st.n_gen);
        if (r.no_kv_offload) fprintf(stderr, "note: -nkvo has no effect: the CPU backend keeps the KV cache on the host\n");
        if (g_stop) fprintf(stderr, "[interrupted]\n");
    }
done:
    engine_free(draft);
    engine_free(en);
    free(file_text);
    return rc ? 1 : 0;
}
