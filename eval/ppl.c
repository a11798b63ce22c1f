/* eval/ppl.c: perplexity plans (llama.cpp, GPTQ, per-document), text preparation and the runner.
 * llama.cpp's rules (first = n_ctx/2, n_chunk = n_tokens/n_ctx, BOS on every chunk) are described
 * in docs/EVAL.md. Tests: tests/test_eval_ppl.c */
#include "eval/ppl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const protocol_names[] = {"llamacpp", "gptq", "stories"};

const char *ppl_protocol_name(enum ppl_protocol p) {
    return (unsigned)p < 3 ? protocol_names[p] : "?";
}

int ppl_protocol_from_name(const char *s) {
    for (int i = 0; i < 3; i++)
        if (s && strcmp(s, protocol_names[i]) == 0) return i;
    return -1;
}

// ------------------------------------------------------------------------------------------------
// Plans

static int plan_alloc(struct ppl_plan *p, enum ppl_protocol proto, int n) {
    memset(p, 0, sizeof *p);
    p->protocol = proto;
    if (n <= 0) return -1;
    p->seg = calloc((size_t)n, sizeof *p->seg);
    if (!p->seg) return -1;
    p->n_segments = n;
    return 0;
}

static void plan_finish(struct ppl_plan *p) {
    p->n_scored = 0;
    p->n_ctx = 0;
    for (int i = 0; i < p->n_segments; i++) {
        p->n_scored += p->seg[i].n - 1 - p->seg[i].first;
        if (p->seg[i].n > p->n_ctx) p->n_ctx = p->seg[i].n;
    }
}

int ppl_plan_llamacpp(struct ppl_plan *p, int64_t n_tokens, int n_ctx, int max_chunks,
                      int32_t bos) {
    memset(p, 0, sizeof *p);
    if (n_ctx < 2) return -1;
    int64_t n_chunks = n_tokens / n_ctx;   // the tail that does not fill a chunk is dropped
    if (max_chunks > 0 && n_chunks > max_chunks) n_chunks = max_chunks;
    if (n_chunks > (1 << 30) || plan_alloc(p, PPL_LLAMACPP, (int)n_chunks) != 0) return -1;
    for (int i = 0; i < p->n_segments; i++)
        p->seg[i] = (struct ppl_segment){
            .start = (int64_t)i * n_ctx, .n = n_ctx, .first = n_ctx / 2, .bos = bos};
    plan_finish(p);
    return 0;
}

int ppl_plan_gptq(struct ppl_plan *p, int64_t n_tokens, int n_ctx, int max_chunks) {
    memset(p, 0, sizeof *p);
    if (n_ctx < 2) return -1;
    int64_t n_chunks = n_tokens / n_ctx;   // GPTQ: nsamples = numel // seqlen
    if (max_chunks > 0 && n_chunks > max_chunks) n_chunks = max_chunks;
    if (n_chunks > (1 << 30) || plan_alloc(p, PPL_GPTQ, (int)n_chunks) != 0) return -1;
    for (int i = 0; i < p->n_segments; i++)
        p->seg[i] = (struct ppl_segment){.start = (int64_t)i * n_ctx, .n = n_ctx, .first = 0, .bos = -1};
    plan_finish(p);
    return 0;
}

int ppl_plan_docs(struct ppl_plan *p, enum ppl_protocol proto, const int64_t *starts,
                  const int *lens, int n_docs, int max_len, int max_chunks) {
    memset(p, 0, sizeof *p);
    if (max_len < 2) return -1;
    int n = 0;
    for (int d = 0; d < n_docs; d++)
        if (lens[d] >= 2) n++;
    if (max_chunks > 0 && n > max_chunks) n = max_chunks;
    if (plan_alloc(p, proto, n) != 0) return -1;
    int k = 0;
    for (int d = 0; d < n_docs && k < n; d++) {
        if (lens[d] < 2) continue;
        int len = lens[d] < max_len ? lens[d] : max_len;   // run.c stops at seq_len positions
        p->seg[k++] = (struct ppl_segment){.start = starts[d], .n = len, .first = 0, .bos = -1};
    }
    plan_finish(p);
    return 0;
}

void ppl_plan_free(struct ppl_plan *p) {
    free(p->seg);
    memset(p, 0, sizeof *p);
}

uint64_t ppl_plan_hash(const struct ppl_plan *p, const int32_t *tokens) {
    uint64_t h = 0;
    for (int i = 0; i < p->n_segments; i++) {
        const struct ppl_segment *s = &p->seg[i];
        int32_t head[3] = {s->n, s->first, s->bos >= 0 ? s->bos : tokens[s->start]};
        h = eval_hash_tokens(h, head, 3);
        h = eval_hash_tokens(h, tokens + s->start + 1, s->n - 1);
    }
    return h;
}

// ------------------------------------------------------------------------------------------------
// Text preparation

void ppl_free_strings(char **s, int n) {
    for (int i = 0; s && i < n; i++) free(s[i]);
    free(s);
}

int ppl_split_stories(const char *text, char ***out) {
    static const char sep[] = "<|endoftext|>";
    const size_t sep_len = sizeof sep - 1;
    int n = 0, cap = 16;
    char **v = malloc((size_t)cap * sizeof *v);
    if (!v) return -1;
    const char *story = text, *line = text;
    for (;;) {
        const char *eol = strchr(line, '\n');
        const char *end = eol ? eol : line + strlen(line);
        size_t ll = (size_t)(end - line);
        if (ll > 0 && line[ll - 1] == '\r') ll--;
        bool is_sep = ll == sep_len && memcmp(line, sep, sep_len) == 0;
        if (is_sep || !eol) {
            const char *a = story, *b = is_sep ? line : end;   // story text is [a, b)
            while (a < b && (*a == '\n' || *a == '\r')) a++;
            while (b > a && (b[-1] == '\n' || b[-1] == '\r')) b--;
            if (b > a) {
                if (n == cap) {
                    cap *= 2;
                    char **nv = realloc(v, (size_t)cap * sizeof *v);
                    if (!nv) goto oom;
                    v = nv;
                }
                v[n] = malloc((size_t)(b - a) + 1);
                if (!v[n]) goto oom;
                memcpy(v[n], a, (size_t)(b - a));
                v[n][b - a] = '\0';
                n++;
            }
            story = eol ? eol + 1 : end;
        }
        if (!eol) break;
        line = eol + 1;
    }
    *out = v;
    return n;
oom:
    ppl_free_strings(v, n);
    return -1;
}

char *ppl_gptq_join(const char *raw) {
    size_t len = strlen(raw), cap = 2 * len + 16;   // each row adds at most 2 bytes of separator
    char *out = malloc(cap);
    if (!out) return NULL;
    size_t o = 0;
    bool first = true;
    const char *line = raw;
    while (*line) {
        const char *eol = strchr(line, '\n');
        const char *end = eol ? eol + 1 : line + strlen(line);   // row keeps its '\n'
        bool blank = true;
        for (const char *c = line; c < end; c++)
            if (*c != ' ' && *c != '\t' && *c != '\n' && *c != '\r') blank = false;
        if (!first) {
            out[o++] = '\n';
            out[o++] = '\n';
        }
        first = false;
        if (!blank) {
            memcpy(out + o, line, (size_t)(end - line));
            o += (size_t)(end - line);
        }
        line = end;
    }
    out[o] = '\0';
    return out;
}

// ------------------------------------------------------------------------------------------------
// Runner

int ppl_run(const struct ppl_plan *p, const int32_t *tokens, int vocab, int batch,
            ppl_eval_fn eval, void *eval_u, ppl_row_fn row, void *row_u,
            struct eval_progress *progress, struct ppl_result *r, struct err *e) {
    memset(r, 0, sizeof *r);
    double t0 = eval_now();
    int max_b = batch > 0 && batch < p->n_ctx ? batch : p->n_ctx;
    float *logits = malloc((size_t)max_b * (size_t)vocab * sizeof *logits);
    int32_t *buf = malloc((size_t)max_b * sizeof *buf);
    if (!logits || !buf) {
        free(logits);
        free(buf);
        return ERR(e, ERR_OOM, "%d x %d logits", max_b, vocab);
    }
    int rc = ERR_OK;
    for (int s = 0; s < p->n_segments && rc == ERR_OK; s++) {
        const struct ppl_segment *sg = &p->seg[s];
        const int32_t *seg_tok = tokens + sg->start;
        for (int pos = 0; pos < sg->n && rc == ERR_OK; pos += max_b) {
            int nb = sg->n - pos < max_b ? sg->n - pos : max_b;
            memcpy(buf, seg_tok + pos, (size_t)nb * sizeof *buf);
            if (pos == 0 && sg->bos >= 0) buf[0] = sg->bos;
            rc = eval(eval_u, buf, nb, pos, logits, e);
            r->n_eval += nb;
            // score positions t in [first, n-1) that fall in this batch
            int lo = sg->first > pos ? sg->first : pos;
            int hi = sg->n - 1 < pos + nb ? sg->n - 1 : pos + nb;
            for (int t = lo; t < hi && rc == ERR_OK; t++) {
                const float *lg = logits + (size_t)(t - pos) * (size_t)vocab;
                int32_t target = seg_tok[t + 1];
                if (target < 0 || target >= vocab) {
                    rc = ERR(e, ERR_ARG, "token %d out of vocab %d", target, vocab);
                    break;
                }
                double nll = eval_nll(lg, vocab, target);
                if (!isfinite(nll)) {
                    rc = ERR(e, ERR_BACKEND, "non-finite logits at segment %d position %d", s, t);
                    break;
                }
                nll_stats_add(&r->st, nll);
                if (row) rc = row(row_u, lg, vocab, target, nll, e);
            }
        }
        r->n_segments = s + 1;
        if (progress) eval_progress_update(progress, s + 1, "PPL", nll_stats_ppl(&r->st));
    }
    free(logits);
    free(buf);
    r->seconds = eval_now() - t0;
    return rc;
}

int ppl_engine_eval(void *u, const int32_t *tokens, int n, int pos, float *logits, struct err *e) {
    return engine_forward((struct engine *)u, tokens, n, pos, logits, true, e);
}

// ------------------------------------------------------------------------------------------------
// Protocol setup from text

static int32_t *prepare_stories(struct engine *en, const char *text, int max_len, int max_chunks,
                                struct ppl_plan *plan, int64_t *n_tokens) {
    char **stories = NULL;
    int n_st = ppl_split_stories(text, &stories);
    if (n_st <= 0) {
        fprintf(stderr, "error: no stories (split at <|endoftext|> lines)\n");
        ppl_free_strings(stories, n_st > 0 ? n_st : 0);
        return NULL;
    }
    int64_t cap = 16, n = 0;
    for (int d = 0; d < n_st; d++) cap += (int64_t)strlen(stories[d]) + 8;
    int32_t *tok = malloc((size_t)cap * sizeof *tok);
    int64_t *starts = malloc((size_t)n_st * sizeof *starts);
    int *lens = malloc((size_t)n_st * sizeof *lens);
    int32_t *out = NULL;
    if (!tok || !starts || !lens) goto done;
    for (int d = 0; d < n_st; d++) {
        struct err e = {0};
        // run.c: encode(text, bos=1, eos=0); every story is scored from its own BOS
        int got = engine_tokenize(en, stories[d], true, false, tok + n, (int)(cap - n), &e);
        if (got < 0) {
            fprintf(stderr, "error: tokenize story %d: %s\n", d, e.msg);
            goto done;
        }
        starts[d] = n;
        lens[d] = got;
        n += got;
    }
    if (ppl_plan_docs(plan, PPL_STORIES, starts, lens, n_st, max_len, max_chunks) != 0) {
        fprintf(stderr, "error: no story with >= 2 tokens\n");
        goto done;
    }
    *n_tokens = n;
    out = tok;
    tok = NULL;
done:
    free(tok);
    free(starts);
    free(lens);
    ppl_free_strings(stories, n_st);
    return out;
}

int32_t *ppl_prepare(struct engine *en, enum ppl_protocol proto, const char *text, int n_ctx,
                     int max_chunks, bool gptq_raw, struct ppl_plan *plan, int64_t *n_tokens) {
    if (n_ctx <= 0) n_ctx = proto == PPL_GPTQ ? 2048 : 512;
    if (proto == PPL_STORIES) return prepare_stories(en, text, n_ctx, max_chunks, plan, n_tokens);
    const struct vocab *v = engine_vocab(en);
    // llama.cpp and HF both add BOS only when the tokenizer asks for it (Llama: yes, SmolLM2: no)
    bool add_bos = v->add_bos && v->bos >= 0;
    char *joined = NULL;
    if (proto == PPL_GPTQ && !gptq_raw) {
        joined = ppl_gptq_join(text);
        if (!joined) return NULL;
        text = joined;
    }
    int n = 0;
    int32_t *tok = eval_tokenize_all(en, text, add_bos, &n);
    free(joined);
    if (!tok) return NULL;
    int rc = proto == PPL_LLAMACPP
                 ? ppl_plan_llamacpp(plan, n, n_ctx, max_chunks, add_bos ? v->bos : -1)
                 : ppl_plan_gptq(plan, n, n_ctx, max_chunks);
    if (rc != 0) {
        fprintf(stderr, "error: %d tokens do not fill one chunk of %d\n", n, n_ctx);
        free(tok);
        return NULL;
    }
    *n_tokens = n;
    return tok;
}
