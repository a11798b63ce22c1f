/* engine/generate.c: the generation loop (see generate.h). Plain decoding, context shift,
 * speculative decoding and -np parallel decoding all go through the same sample/emit step. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "engine/generate.h"

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return 1e3 * (double)ts.tv_sec + 1e-6 * (double)ts.tv_nsec;
}

void gen_params_default(struct gen_params *p) {
    sampler_params_default(&p->sp);
    p->n_predict = 128;
    p->n_keep = 0;
    p->ctx_shift = true;
    p->ignore_eos = false;
}

uint64_t gen_hash(uint64_t h, const void *data, size_t len) {
    const unsigned char *b = data;
    for (size_t i = 0; i < len; i++) { h ^= b[i]; h *= 0x100000001b3ULL; }
    return h;
}

bool gen_is_eog(const struct vocab *v, int32_t t) {
    return t == v->eos || (v->eot >= 0 && t == v->eot) || (v->bos >= 0 && t == v->bos);
}

int gen_init(struct gen *g, struct engine *en, int seq, const struct gen_params *p, gen_emit_fn emit,
             void *user, struct err *e) {
    memset(g, 0, sizeof *g);
    g->en = en;
    g->seq = seq;
    g->p = *p;
    g->n_ctx = engine_n_ctx(en);
    g->n_vocab = engine_config(en)->vocab_size;
    g->emit = emit;
    g->user = user;
    g->smp = sampler_create(&p->sp, g->n_vocab);
    g->tokens = malloc((size_t)g->n_ctx * sizeof *g->tokens);
    g->logits = malloc((size_t)g->n_vocab * sizeof *g->logits);
    if (!g->smp || !g->tokens || !g->logits) { gen_free(g); return ERR(e, ERR_OOM, "out of memory"); }
    detok_init(&g->dt);
    return ERR_OK;
}

void gen_free(struct gen *g) {
    sampler_free(g->smp);
    free(g->tokens);
    free(g->logits);
    g->smp = NULL;
    g->tokens = NULL;
    g->logits = NULL;
}

int gen_shift(struct gen *g, struct gen_stats *st, struct err *e) {
    const int n_left = g->n_past - g->n_keep, n_discard = n_left / 2;
    if (n_discard <= 0)
        return ERR(e, ERR_ARG, "context full (%d tokens) and --keep %d leaves nothing to discard", g->n_ctx, g->n_keep);
    int rc = engine_kv_shift(g->en, g->seq, g->n_keep, n_discard, g->n_past, e);
    if (rc) return rc;
    memmove(g->tokens + g->n_keep, g->tokens + g->n_keep + n_discard,
            (size_t)(g->n_past - g->n_keep - n_discard) * sizeof *g->tokens);
    g->n_past -= n_discard;
    if (st) st->n_shift++;
    return ERR_OK;
}

int gen_feed(struct gen *g, const int32_t *toks, int n, struct gen_stats *st, struct err *e) {
    if (n <= 0) return ERR_OK;
    if (!g->keep_set) {   // llama.cpp: --keep counts prompt tokens after BOS; -1 or too many = all
        const struct vocab *v = engine_vocab(g->en);
        int bos = v->bos >= 0 && toks[0] == v->bos;
        g->n_keep = (g->p.n_keep < 0 || g->p.n_keep + bos > n) ? n : g->p.n_keep + bos;
        g->keep_set = true;
    }
    if (n > g->n_ctx) return ERR(e, ERR_ARG, "%d tokens do not fit the context of %d (use -c)", n, g->n_ctx);
    int rc;
    while (g->n_past + n > g->n_ctx) {
        if (!g->p.ctx_shift)
            return ERR(e, ERR_ARG, "context full: %d + %d tokens exceed the context size %d (use -c)", g->n_past,
                       n, g->n_ctx);
        if ((rc = gen_shift(g, st, e))) return rc;
    }
    double t0 = now_ms();
    if ((rc = engine_forward_seq(g->en, g->seq, toks, n, g->n_past, g->logits, false, e))) return rc;
    memcpy(g->tokens + g->n_past, toks, (size_t)n * sizeof *toks);
    g->n_past += n;
    for (int i = 0; i < n; i++) sampler_accept(g->smp, toks[i]);
    if (st) {
        st->t_prompt_ms += now_ms() - t0;
        st->n_prompt += n;
    }
    return ERR_OK;
}

static int limit_of(const struct gen *g) {
    if (g->p.n_predict >= 0) return g->p.n_predict;
    return g->p.n_predict == -2 ? g->n_ctx - g->n_past : INT_MAX;
}

/* Emits the text of an accepted token and records it in the sampler and the hash. */
static void emit_token(struct gen *g, int32_t t, struct gen_stats *st) {
    char piece[256];
    sampler_accept(g->smp, t);
    st->n_gen++;
    size_t k = tokenizer_decode_token(engine_tokenizer(g->en), &g->dt, t, piece, sizeof piece);
    st->hash = gen_hash(st->hash, piece, k);
    if (g->emit && k) g->emit(g->user, piece, k);
}

static void flush_text(struct gen *g, struct gen_stats *st) {
    char piece[16];
    size_t k = detok_flush(&g->dt, piece, sizeof piece);
    st->hash = gen_hash(st->hash, piece, k);
    if (g->emit && k) g->emit(g->user, piece, k);
}

/* Samples the next token from g->logits; returns -1 when generation ends (EOG). */
static int32_t sample_next(struct gen *g, struct gen_stats *st) {
    int32_t t = sampler_sample(g->smp, g->logits);
    if (gen_is_eog(engine_vocab(g->en), t) && !g->p.ignore_eos) { st->eog = true; return -1; }
    return t;
}

/* Makes room for one more token: false when the context is full and cannot shift. */
static bool room_for(struct gen *g, int n, struct gen_stats *st, struct err *e, int *rc) {
    *rc = ERR_OK;
    if (g->n_past + n <= g->n_ctx) return true;
    if (!g->p.ctx_shift || g->p.n_predict == -2) { st->ctx_full = true; return false; }
    if ((*rc = gen_shift(g, st, e))) return false;
    return g->n_past + n <= g->n_ctx;
}

int gen_run(struct gen *g, volatile sig_atomic_t *stop, struct gen_stats *st, struct err *e) {
    const int limit = limit_of(g);
    const double t0 = now_ms();
    int rc = ERR_OK;
    for (int n = 0; n < limit;) {
        if (stop && *stop) { st->interrupted = true; break; }
        int32_t t = sample_next(g, st);
        if (t < 0) break;
        emit_token(g, t, st);
        if (++n == limit) break;
        if (!room_for(g, 1, st, e, &rc)) break;
        if ((rc = engine_forward_seq(g->en, g->seq, &t, 1, g->n_past, g->logits, false, e))) break;
        g->tokens[g->n_past++] = t;
        st->n_eval++;
    }
    flush_text(g, st);
    st->t_eval_ms += now_ms() - t0;
    return rc;
}

static int32_t argmax(const float *x, int n) {
    int32_t b = 0;
    for (int i = 1; i < n; i++) if (x[i] > x[b]) b = i;
    return b;
}

int gen_run_speculative(struct gen *g, struct engine *draft, int n_draft, volatile sig_atomic_t *stop,
                        struct gen_stats *st, struct err *e) {
    const int limit = limit_of(g), V = g->n_vocab;
    if (engine_config(draft)->vocab_size != V)
        return ERR(e, ERR_ARG, "draft model vocabulary (%d) differs from the target's (%d)",
                   engine_config(draft)->vocab_size, V);
    if (n_draft < 1 || n_draft > 64) return ERR(e, ERR_ARG, "--draft must be in [1, 64]");
    const int draft_ctx = engine_n_ctx(draft);
    float *dl = malloc((size_t)V * sizeof *dl), *tl = malloc((size_t)(n_draft + 1) * V * sizeof *tl);
    int32_t *batch = malloc((size_t)(n_draft + 1) * sizeof *batch);
    if (!dl || !tl || !batch) { free(dl); free(tl); free(batch); return ERR(e, ERR_OOM, "out of memory"); }
    const double t0 = now_ms();
    int rc = ERR_OK, n = 0, d_past = 0;   // the draft cache holds g->tokens[0 .. d_past)
    int32_t pending = -1;                 // a token the target already sampled (a draft correction)
    while (n < limit) {
        if (stop && *stop) { st->interrupted = true; break; }
        int32_t cur = pending >= 0 ? pending : sample_next(g, st);
        pending = -1;
        if (cur < 0) break;
        emit_token(g, cur, st);
        if (++n == limit) break;
        if (g->n_past + 1 > g->n_ctx || g->n_past + 1 > draft_ctx) { st->ctx_full = true; break; }
        // how many to draft: bounded by what is left to generate and by both contexts
        int nd = n_draft;
        if (nd > limit - n - 1) nd = limit - n - 1;
        if (nd > g->n_ctx - g->n_past - 1) nd = g->n_ctx - g->n_past - 1;
        if (nd > draft_ctx - g->n_past - 1) nd = draft_ctx - g->n_past - 1;
        if (nd < 0) nd = 0;
        const int base = g->n_past;   // position of cur
        if (nd > 0) {
            // catch the draft up on the accepted tokens it has not seen, plus cur
            g->tokens[base] = cur;
            if ((rc = engine_forward(draft, g->tokens + d_past, base + 1 - d_past, d_past, dl, false, e))) break;
            d_past = base + 1;
            batch[0] = cur;
            for (int j = 0; j < nd; j++) {
                batch[j + 1] = argmax(dl, V);
                if (j + 1 < nd) {
                    if ((rc = engine_forward(draft, &batch[j + 1], 1, base + 1 + j, dl, false, e))) break;
                }
            }
            if (rc) break;
        } else {
            batch[0] = cur;
        }
        // verify: the target runs cur and the drafts in one pass, logits for every row
        if ((rc = engine_forward_seq(g->en, g->seq, batch, nd + 1, base, tl, nd > 0, e))) break;
        g->tokens[g->n_past++] = cur;
        st->n_eval++;
        st->n_drafted += nd;
        int a = 0;   // drafts accepted
        bool done = false;
        for (; a < nd; a++) {
            memcpy(g->logits, tl + (size_t)a * V, (size_t)V * sizeof *tl);
            int32_t t = sample_next(g, st);
            if (t < 0) { done = true; break; }
            if (t != batch[a + 1]) { pending = t; break; }
            emit_token(g, t, st);
            g->tokens[g->n_past++] = t;
            st->n_accepted++;
            if (++n == limit) { done = true; break; }
            if (stop && *stop) { st->interrupted = true; done = true; break; }
        }
        if (done) break;
        if (a == nd) memcpy(g->logits, tl + (size_t)nd * V, (size_t)V * sizeof *tl);
        // the draft saw cur and batch[1 .. nd-1]; of those, cur and the first a drafts are valid
        if (nd > 0) d_past = base + 1 + (a < nd - 1 ? a : nd - 1);
    }
    flush_text(g, st);
    st->t_eval_ms += now_ms() - t0;
    free(dl);
    free(tl);
    free(batch);
    return rc;
}

int gen_run_parallel(struct gen *gens, int n, volatile sig_atomic_t *stop, struct gen_stats *st,
                     struct err *e) {
    if (n <= 0) return ERR_OK;
    struct engine *en = gens[0].en;
    const int V = gens[0].n_vocab;
    int32_t *toks = malloc((size_t)n * sizeof *toks);
    int *seq = malloc((size_t)n * sizeof *seq), *pos = malloc((size_t)n * sizeof *pos), *who = malloc((size_t)n * sizeof *who);
    int *left = malloc((size_t)n * sizeof *left);
    bool *active = malloc((size_t)n * sizeof *active);
    float *logits = malloc((size_t)n * V * sizeof *logits);
    struct gen_stats *sub = calloc((size_t)n, sizeof *sub);
    int rc = ERR_OK;
    if (!toks || !seq || !pos || !who || !left || !active || !logits || !sub) { rc = ERR(e, ERR_OOM, "out of memory"); goto out; }
    for (int i = 0; i < n; i++) {
        active[i] = true;
        left[i] = limit_of(&gens[i]);
        sub[i].hash = GEN_HASH_INIT;
    }
    const double t0 = now_ms();
    for (;;) {
        int m = 0;
        for (int i = 0; i < n; i++) {
            if (!active[i]) continue;
            struct gen *g = &gens[i];
            if (stop && *stop) { st->interrupted = true; active[i] = false; continue; }
            int32_t t = left[i] > 0 ? sample_next(g, &sub[i]) : -1;
            if (t < 0) { active[i] = false; continue; }
            emit_token(g, t, &sub[i]);
            if (--left[i] == 0 || g->n_past >= g->n_ctx) {   // no shift in parallel mode
                if (left[i] > 0) sub[i].ctx_full = true;
                active[i] = false;
                continue;
            }
            toks[m] = t;
            seq[m] = g->seq;
            pos[m] = g->n_past;
            who[m] = i;
            m++;
        }
        if (m == 0) break;
        if ((rc = engine_decode_multi(en, toks, seq, pos, m, logits, e))) break;
        for (int j = 0; j < m; j++) {
            struct gen *g = &gens[who[j]];
            g->tokens[g->n_past++] = toks[j];
            memcpy(g->logits, logits + (size_t)j * V, (size_t)V * sizeof *logits);
            sub[who[j]].n_eval++;
        }
    }
    for (int i = 0; i < n; i++) {
        flush_text(&gens[i], &sub[i]);
        st->n_gen += sub[i].n_gen;
        st->n_eval += sub[i].n_eval;
        st->eog |= sub[i].eog;
        st->ctx_full |= sub[i].ctx_full;
        st->hash = gen_hash(st->hash, &sub[i].hash, sizeof sub[i].hash);
    }
    st->t_eval_ms += now_ms() - t0;
out:
    free(toks); free(seq); free(pos); free(who); free(left); free(active); free(logits); free(sub);
    return rc;
}
