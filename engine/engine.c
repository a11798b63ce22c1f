/* engine/engine.c: model loading (any file format -> weights on a backend, converted or quantized
 * as requested), the KV cache and activation buffers, tokenize and forward entry points.
 * Test: tests/test_model_*.c */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

#include "engine/model.h"
#include "engine/tokenizer.h"
#include "quant/plan.h"
#include "quant/quantize.h"
#include "quant/gptq.h"
#include "engine/bitalloc.h"
#include "loaders/imatrix.h"
#include "quant/repack.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// After a copy out of the model mapping: drop the mapping's pages of the copied range from this
// process (MADV_DONTNEED on the loader's PROT_READ private file mapping; they stay in the page cache
// and fault back in if read again), so the resident set does not hold the weights twice. Only for
// ranges inside one of the file's maps: on a loader-owned (anonymous) buffer the same call would
// zero the data.
static void drop_source_pages(const struct model_file *mf, const void *p, size_t n) {
#ifdef MADV_DONTNEED
    const uintptr_t lo = (uintptr_t)p, hi = lo + n;
    bool mapped = false;
    for (int i = 0; i < mf->n_maps && !mapped; i++)
        mapped = lo >= (uintptr_t)mf->maps[i].addr && hi <= (uintptr_t)mf->maps[i].addr + mf->maps[i].size;
    if (!mapped) return;
    const uintptr_t pg = 4096, a = (lo + pg - 1) & ~(pg - 1), b = hi & ~(pg - 1);
    if (b > a) (void)madvise((void *)a, b - a, MADV_DONTNEED);
#else
    (void)mf, (void)p, (void)n;
#endif
}

static void *eng_alloc(struct engine *en, size_t nbytes) {
    if (en->n_allocs == en->cap_allocs) {
        int cap = en->cap_allocs ? 2 * en->cap_allocs : 64;
        void **p = realloc(en->allocs, (size_t)cap * sizeof *p);
        if (!p) return NULL;
        en->allocs = p;
        en->cap_allocs = cap;
    }
    void *d = en->be->ops->alloc(en->be, nbytes);
    if (d) en->allocs[en->n_allocs++] = d;
    return d;
}

// ------------------------------------------------------------------------------------------------
// Weight preparation: decide each tensor's compute type, convert/quantize, upload.

struct prep {
    struct engine *en;
    const struct engine_opts *o;
    struct quant_plan plan;
    bool quantize;         // -q or --bits given
    int n_threads;
    int done, total;       // progress
    int n_expanded;        // matrices of a ggml block type computed in f32 (no kernel for the type)
    enum qtype expanded_from, expanded_to;
    uint64_t expanded_file_bytes, expanded_bytes;
    enum quant_method method;
    bool gptq;
    struct calib calib;    // --imatrix (empty without)
    int n_gptq, n_imp, n_plain;   // matrices quantized with GPTQ / importance-weighted OPT / without data
    double gptq_loss;
};

/* Quantizes one matrix (the f32 source f, rows x n) to `want` for tensor `name` with the chosen
 * method and the calibration data for its input when there is some: GPTQ (Gram matrix), OPT
 * weighted by E[x^2], or the plain method (e.g. an untied embedding: it is not a matmul). */
static int quantize_weights(struct prep *p, enum qtype want, void *dst, const float *f, int64_t n,
                            int64_t rows, const char *name, struct err *e) {
    if (!qtype_traits[want].native)   // f16/bf16 (or a ggml type): plain conversion
        return quantize_matrix(want, QM_RTN, dst, f, n, rows, p->n_threads, e);
    // the tied embedding is quantized as the output head it also is
    const bool tied_head = p->en->cfg.tied_output && strcmp(name, "token_embd.weight") == 0;
    const struct calib_entry *ce = calib_find(&p->calib, tied_head ? "output.weight" : name);
    if (ce && ce->n != n)
        return ERR(e, ERR_FORMAT, "%s: the imatrix has %lld inputs for it, the model %lld (another model's file?)",
                   name, (long long)ce->n, (long long)n);
    if (p->gptq && ce && calib_xtx(&p->calib, ce)) {
        float *h = malloc((size_t)n * (size_t)n * sizeof *h);
        if (!h) return ERR(e, ERR_OOM, "%s: out of memory for its %lld x %lld Hessian", name, (long long)n, (long long)n);
        calib_hessian_full(&p->calib, ce, h);
        struct gptq_opts go = GPTQ_OPTS_DEFAULT;
        if (p->o->gptq_damp > 0) go.damp = p->o->gptq_damp;
        go.act_order = !p->o->gptq_no_act_order;
        double loss = 0;
        int rc = gptq_quantize_matrix(want, dst, f, n, rows, h, &go, p->n_threads, &loss, e);
        free(h);
        if (rc) return ERR(e, rc, "%s: GPTQ: %s", name, e->msg);
        p->n_gptq++;
        p->gptq_loss += loss;
        return ERR_OK;
    }
    if (p->gptq && ce) return ERR(e, ERR_ARG, "%s: the imatrix has no Gram matrix for it (./imatrix without --no-hessian makes them; llama-imatrix files have none: use --method opt)", name);
    if (ce && p->method == QM_OPT) p->n_imp++;
    else p->n_plain++;
    return quantize_matrix_imp(want, p->method, dst, f, n, rows, ce && p->method == QM_OPT ? ce->x2 : NULL,
                               p->n_threads, e);
}

/* The f32 contents of a tensor view (the view itself if already f32, else a malloc'd copy). */
static float *to_f32(const struct tensor_view *tv, bool *owned, struct err *e) {
    const int64_t n = tv->ne[0], rows = tv->n_dims > 1 ? tv->ne[1] : 1;
    *owned = false;
    if (tv->type == QT_F32) return (float *)tv->data;
    float *f = malloc((size_t)n * (size_t)rows * sizeof(float));
    if (!f) {
        ERR(e, ERR_OOM, "%s: cannot allocate %.1f MiB to convert to f32", tv->name,
            (double)n * (double)rows * 4.0 / 1048576.0);
        return NULL;
    }
    const size_t rb = qtype_row_bytes(tv->type, n);
    for (int64_t r = 0; r < rows; r++)
        qtype_traits[tv->type].dequantize_row(f + r * n, (const uint8_t *)tv->data + (size_t)r * rb, n);
    *owned = true;
    return f;
}

enum tkind { T_NORM, T_MATRIX, T_EMBD };   // embedding tables are read one row per token

/* Host backend, matrix of natural type `want` stored as `layout`: the natural bytes (the file's, or
 * quantized into a temporary) packed into a new buffer. */
static int prep_repacked(struct prep *p, struct tensor *t, const struct tensor_view *tv, enum qtype want,
                         enum qtype layout, struct err *e) {
    struct engine *en = p->en;
    const int64_t n = t->ne[0], rows = t->ne[1];
    void *dst = eng_alloc(en, t->nbytes);
    if (!dst) return ERR(e, ERR_OOM, "%s: cannot allocate %.1f MiB", t->name, t->nbytes / 1048576.0);
    const void *natural = tv->data;
    void *tmp = NULL;
    if (want != tv->type) {
        bool owned;
        float *f = to_f32(tv, &owned, e);
        if (!f) return e->code;
        tmp = malloc(t->nbytes);
        int rc = tmp ? ERR_OK : ERR(e, ERR_OOM, "%s: out of memory", t->name);
        if (!rc) rc = quantize_weights(p, want, tmp, f, n, rows, tv->name, e);
        if (owned) free(f);
        if (rc) { free(tmp); return rc; }
        natural = tmp;
    }
    x8_pack_matrix(layout, dst, natural, n, rows, p->n_threads);
    free(tmp);
    t->type = layout;
    t->data = dst;
    return ERR_OK;
}

/* Loads tensor `name` into *t, choosing its compute type: norms f32; matrices keep their type when
 * the backend has a matmul for it, else f32 (ggml quants), or the bit plan's type with -q/--bits. */
static int prep_tensor(struct prep *p, struct tensor *t, const char *name, enum tkind kind, struct err *e) {
    const bool matrix = kind == T_MATRIX;
    struct engine *en = p->en;
    struct backend *be = en->be;
    const struct tensor_view *tv = model_file_find(&en->mf, name);
    if (!tv) return ERR(e, ERR_FORMAT, "%s: missing tensor %s", en->mf.path, name);
    const int64_t n = tv->ne[0], rows = tv->n_dims > 1 ? tv->ne[1] : 1;
    enum qtype want;
    if (kind == T_NORM) {
        want = QT_F32;
    } else if (kind == T_EMBD && !p->quantize) {
        // host backends dequantize the rows they need from any type; others need one they know
        want = (be->host_memory || be->ops->supports(be, tv->type)) ? tv->type : QT_F32;
    } else if (p->quantize) {
        // a tied embedding is the output head too: the plan's "output" rule decides its precision
        bool tied_head = en->cfg.tied_output && strcmp(name, "token_embd.weight") == 0;
        want = quant_plan_type(&p->plan, tied_head ? "output.weight" : name, n);
    } else {
        want = be->ops->supports(be, tv->type) ? tv->type : QT_F32;   // ggml quants -> f32
        // the int8-activation Q8_0/Q4_0 kernels pair two 32-blocks per 64-wide activation group
        if ((want == QT_GGML_Q8_0 || want == QT_GGML_Q4_0) && matrix && n % 64 != 0) want = QT_F32;
        // other ggml block matrices (Q4_1, K-quants) are expanded to f16, not f32: half the bytes
        // per token, and the f16 rounding (2^-11 relative) is far below the block quantization's
        // own error. --bits default=32 keeps the exact f32 expansion.
        if (matrix && want == QT_F32 && tv->type != QT_F32 && tv->type != QT_F16 && tv->type != QT_BF16 &&
            be->ops->supports(be, QT_F16))
            want = QT_F16;
        if (matrix && want != tv->type && (want == QT_F32 || want == QT_F16)) {
            uint64_t fb = 0;
            (void)qtype_nbytes(tv->type, n, rows, &fb);
            p->n_expanded++;
            p->expanded_from = tv->type;
            p->expanded_file_bytes += fb;
            p->expanded_bytes += (uint64_t)n * (uint64_t)rows * qtype_traits[want].block_bytes;
            p->expanded_to = want;
        }
    }
    if (matrix && !be->ops->supports(be, want))
        return ERR(e, ERR_UNSUPPORTED, "%s: backend %s has no matmul for type %s", name,
                   be->ops->name, qtype_traits[want].name);
    t->type = want;
    t->ne[0] = n;
    t->ne[1] = rows;
    t->name = tv->name;
    uint64_t nbytes;
    if (!qtype_nbytes(want, n, rows, &nbytes))
        return ERR(e, ERR_FORMAT, "%s: %lld x %lld does not fit type %s", name, (long long)n,
                   (long long)rows, qtype_traits[want].name);
    t->nbytes = (size_t)nbytes;
    p->done++;
    if (!p->o->quiet && p->quantize && matrix)
        fprintf(stderr, "\rquantizing %3d/%d %-28s -> %-7s", p->done, p->total, name, qtype_traits[want].name);

    // the backend's preferred layout (CPU + AVX-512 VNNI: X8, same bytes, quant/repack.h)
    const enum qtype layout = matrix && be->ops->matrix_layout ? be->ops->matrix_layout(be, want, n) : want;
    if (layout != want) return prep_repacked(p, t, tv, want, layout, e);
    if (want == tv->type && be->host_memory && !(matrix && be->copy_min_bytes && t->nbytes >= be->copy_min_bytes)) {
        t->data = (void *)tv->data;   // zero copy: point into the mmap
        return ERR_OK;
    }
    void *dst = eng_alloc(en, t->nbytes);
    if (!dst) return ERR(e, ERR_OOM, "%s: cannot allocate %.1f MiB on %s", name, t->nbytes / 1048576.0,
                         be->ops->name);
    t->data = dst;
    if (want == tv->type) {
        int rc = be->ops->upload(be, dst, tv->data, t->nbytes, e);
        if (!rc && be->host_memory) drop_source_pages(&en->mf, tv->data, t->nbytes);
        return rc;
    }
    bool owned;
    float *f = to_f32(tv, &owned, e);
    if (!f) return e->code;
    int rc = ERR_OK;
    void *host = be->host_memory ? dst : malloc(t->nbytes);
    if (!host) rc = ERR(e, ERR_OOM, "%s: out of memory", name);
    if (!rc && want == QT_F32) memcpy(host, f, t->nbytes);
    else if (!rc) rc = quantize_weights(p, want, host, f, n, rows, name, e);
    if (!rc && !be->host_memory) rc = be->ops->upload(be, dst, host, t->nbytes, e);
    if (host != dst) free(host);
    if (owned) free(f);
    return rc;
}

static int load_weights_planned(struct engine *en, const struct engine_opts *o, struct prep *pp, struct err *e);

// ------------------------------------------------------------------------------------------------
// --target-bpw: KL divergence of a plan against the source on calibration text (bitalloc_kl_fn),
// each plan on a temporary engine; the source's log-probs are computed once.

#define KL_CHUNKS 2
#define KL_CTX 512

struct klctx {
    const struct engine_opts *o;
    int32_t tok[KL_CHUNKS * KL_CTX];
    int n_chunks, vocab;
    float *base;     // n_chunks x (KL_CTX / 2) scored positions x vocab: the source's log-probs
    float *logits;   // KL_CTX x vocab
};

static void log_softmax(float *x, int n) {
    float mx = x[0];
    for (int i = 1; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    double s = 0;
    for (int i = 0; i < n; i++) s += exp((double)x[i] - mx);
    const float l = (float)(mx + log(s));
    for (int i = 0; i < n; i++) x[i] -= l;
}

static int kl_open(struct klctx *k, const char *spec, struct engine **en, struct err *e) {
    struct engine_opts so = *k->o;
    so.quant_bits = 0, so.target_bpw = 0, so.bits_plan = spec, so.quiet = true, so.n_ctx = KL_CTX;
    so.n_seq = 1, so.calib_text = NULL, so.alloc_table = NULL;
    if (!strcmp(spec, "default=32")) so.imatrix_path = NULL, so.quant_method = NULL;
    return engine_load(en, &so, e);
}

static int kl_prepare(struct klctx *k, struct err *e) {
    struct engine *en;
    int rc = kl_open(k, "default=32", &en, e);
    if (rc) return rc;
    size_t len = 0;
    char *text = NULL;
    FILE *f = fopen(k->o->calib_text, "rb");
    if (!f) { engine_free(en); return ERR(e, ERR_IO, "%s: %s", k->o->calib_text, strerror(errno)); }
    text = malloc(1 << 16);
    if (text) len = fread(text, 1, (1 << 16) - 1, f);
    fclose(f);
    if (!text) { engine_free(en); return ERR(e, ERR_OOM, "out of memory"); }
    while (len > 0 && text[len - 1] != '\n') len--;   // whole lines: no UTF-8 sequence cut in two
    text[len] = 0;
    int32_t *all = malloc((len + 2) * sizeof *all);
    int n = all ? engine_tokenize(en, text, false, false, all, (int)len + 1, e) : -1;
    free(text);
    if (n < 0) { free(all); engine_free(en); return all ? (int)e->code : ERR(e, ERR_OOM, "out of memory"); }
    k->n_chunks = n / KL_CTX < KL_CHUNKS ? n / KL_CTX : KL_CHUNKS;
    if (k->n_chunks < 1) {
        free(all), engine_free(en);
        return ERR(e, ERR_ARG, "%s: %d tokens, fewer than one chunk of %d for the KL measurements", k->o->calib_text, n, KL_CTX);
    }
    memcpy(k->tok, all, (size_t)k->n_chunks * KL_CTX * sizeof *all);
    free(all);
    k->vocab = en->cfg.vocab_size;
    k->logits = malloc((size_t)KL_CTX * (size_t)k->vocab * sizeof(float));
    k->base = malloc((size_t)k->n_chunks * (KL_CTX / 2) * (size_t)k->vocab * sizeof(float));
    if (!k->logits || !k->base) { engine_free(en); return ERR(e, ERR_OOM, "out of memory for the KL base"); }
    const struct vocab *vb = &en->mf.vocab;
    for (int c = 0; c < k->n_chunks && !rc; c++) {
        int32_t *t = k->tok + c * KL_CTX;
        if (vb->add_bos && vb->bos >= 0) t[0] = vb->bos;
        rc = engine_forward(en, t, KL_CTX, 0, k->logits, true, e);
        for (int p = KL_CTX / 2; p < KL_CTX && !rc; p++) {
            float *dst = k->base + ((size_t)c * (KL_CTX / 2) + (size_t)(p - KL_CTX / 2)) * (size_t)k->vocab;
            memcpy(dst, k->logits + (size_t)p * k->vocab, (size_t)k->vocab * sizeof(float));
            log_softmax(dst, k->vocab);
        }
    }
    engine_free(en);
    return rc;
}

static int kl_of_plan(void *ctx, const char *spec, double *kl, struct err *e) {
    struct klctx *k = ctx;
    int rc = k->base ? ERR_OK : kl_prepare(k, e);
    if (rc) return rc;
    struct engine *en;
    if ((rc = kl_open(k, spec, &en, e))) return rc;
    double sum = 0;
    int64_t cnt = 0;
    for (int c = 0; c < k->n_chunks && !rc; c++) {
        rc = engine_forward(en, k->tok + c * KL_CTX, KL_CTX, 0, k->logits, true, e);
        for (int p = KL_CTX / 2; p < KL_CTX && !rc; p++) {
            float *q = k->logits + (size_t)p * k->vocab;
            const float *b = k->base + ((size_t)c * (KL_CTX / 2) + (size_t)(p - KL_CTX / 2)) * (size_t)k->vocab;
            log_softmax(q, k->vocab);
            double s = 0;
            for (int v = 0; v < k->vocab; v++) s += exp((double)b[v]) * ((double)b[v] - q[v]);
            sum += s, cnt++;
        }
    }
    engine_free(en);
    *kl = cnt ? sum / (double)cnt : 0;
    return rc;
}

static int load_weights(struct engine *en, const struct engine_opts *o, struct err *e) {
    struct prep p = {.en = en, .o = o};
    p.n_threads = o->n_threads > 0 ? o->n_threads : 0;
    if (p.n_threads <= 0) p.n_threads = en->be->n_threads > 0 ? en->be->n_threads : 1;
    p.quantize = o->quant_bits > 0 || (o->bits_plan && *o->bits_plan) || o->target_bpw > 0;
    const char *qm = o->quant_method ? o->quant_method : "opt";
    if (strcmp(qm, "rtn") && strcmp(qm, "opt") && strcmp(qm, "gptq"))
        return ERR(e, ERR_ARG, "quantization method '%s' unknown (rtn, opt or gptq)", qm);
    p.method = strcmp(qm, "rtn") == 0 ? QM_RTN : QM_OPT;
    p.gptq = strcmp(qm, "gptq") == 0;
    if (p.gptq && !(o->imatrix_path && *o->imatrix_path))
        return ERR(e, ERR_ARG, "--method gptq needs --imatrix FILE with Gram matrices (make one with ./imatrix)");
    if (o->imatrix_path && *o->imatrix_path) {
        if (!p.quantize)
            return ERR(e, ERR_ARG, "--imatrix applies when quantizing: add -q N or --bits PLAN");
        if (imatrix_load(&p.calib, o->imatrix_path, e)) return e->code;
    }
    int rc = load_weights_planned(en, o, &p, e);
    if (rc && p.quantize && !o->quiet) fprintf(stderr, "\r%-78s\r", "");   // the progress line
    calib_free(&p.calib);
    return rc;
}

static int load_weights_planned(struct engine *en, const struct engine_opts *o, struct prep *pp, struct err *e) {
    struct prep p = *pp;
    const struct model_config *c = &en->cfg;
    // --target-bpw B, or --bits auto:B in every tool
    double target = o->target_bpw;
    const char *spec = o->bits_plan;
    if (spec && strncmp(spec, "auto:", 5) == 0) {
        char *end = NULL;
        target = strtod(spec + 5, &end);
        if (end == spec + 5 || *end) return ERR(e, ERR_ARG, "--bits %s: expected auto:B with B bits per weight, e.g. auto:4.5", spec);
        spec = NULL;
    }
    if (o->target_bpw > 0 && spec && *spec)
        return ERR(e, ERR_ARG, "--target-bpw chooses the per-tensor plan itself: drop --bits %s", spec);
    if (target != 0 && !(target >= 2 && target <= 16))
        return ERR(e, ERR_ARG, "target %g bits per weight out of range (2..16)", target);
    if (target > 0 && !(o->calib_text && *o->calib_text))
        return ERR(e, ERR_ARG, "--target-bpw needs --calib-text FILE: a calibration text (e.g. the one given to ./imatrix, make calib) on which each kind of matrix's KL divergence is measured");
    if (target > 0) {   // before minutes of measuring, not after
        FILE *cf = fopen(o->calib_text, "rb");
        if (!cf) return ERR(e, ERR_IO, "--calib-text %s: %s", o->calib_text, strerror(errno));
        fclose(cf);
    }
    if (p.quantize) {
        int bits = o->quant_bits > 0 ? o->quant_bits : target > 0 ? 4 : 32;
        // Below 8 bits the output head (also the embedding when tied) defaults to 8 bits, as
        // llama.cpp's Q4_0/Q4_K_M keep it at Q6_K/Q8_0: it is ~6% of a 1B model's weights but the
        // layer perplexity is most sensitive to (docs/QUANT_FORMATS.md). A plan rule overrides it.
        const char *head = (o->quant_bits > 0 && o->quant_bits < 8 && !(target > 0)) ? "output=8" : "";
        FILE *pf = spec ? fopen(spec, "r") : NULL;   // --bits may name a plan file
        if (pf) {
            fclose(pf);
            if (quant_plan_parse(&p.plan, head, bits, e) || quant_plan_load_file(&p.plan, spec, e))
                return e->code;
        } else {
            if (quant_plan_parse(&p.plan, head, bits, e)) return e->code;
            if (spec && *spec && quant_plan_add(&p.plan, spec, e)) return e->code;
        }
        if (target > 0) {
            struct gptq_opts go = GPTQ_OPTS_DEFAULT;
            if (o->gptq_damp > 0) go.damp = o->gptq_damp;
            go.act_order = !o->gptq_no_act_order;
            struct klctx *kc = o->calib_text && *o->calib_text ? calloc(1, sizeof *kc) : NULL;
            if (o->calib_text && *o->calib_text && !kc) return ERR(e, ERR_OOM, "out of memory");
            if (kc) kc->o = o;
            struct bitalloc_args ba = {.mf = &en->mf, .tied_output = c->tied_output, .calib = &p.calib,
                                       .gptq = p.gptq, .gptq_opts = go, .method = p.method,
                                       .target_bpw = target, .n_threads = p.n_threads, .quiet = o->quiet,
                                       .kl = kc ? kl_of_plan : NULL, .kl_ctx = kc, .table = o->alloc_table};
            int brc = bitalloc_plan(&ba, &p.plan, e);
            if (kc) free(kc->base), free(kc->logits), free(kc);
            if (brc) return brc;
        }
    }
    p.total = 2 + 9 * c->n_layers + 1;
    int rc;
    en->w.layers = calloc((size_t)c->n_layers, sizeof *en->w.layers);
    if (!en->w.layers) return ERR(e, ERR_OOM, "out of memory");
    // The embedding table is a matrix too when it doubles as the output head (tied).
    if ((rc = prep_tensor(&p, &en->w.token_embd, "token_embd.weight", c->tied_output ? T_MATRIX : T_EMBD, e)))
        return rc;
    if ((rc = prep_tensor(&p, &en->w.output_norm, "output_norm.weight", T_NORM, e))) return rc;
    if (c->tied_output) en->w.output = en->w.token_embd;
    else if ((rc = prep_tensor(&p, &en->w.output, "output.weight", T_MATRIX, e))) return rc;
    static const char *const names[9] = {"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                                         "ffn_norm", "ffn_gate", "ffn_down", "ffn_up"};
    for (int l = 0; l < c->n_layers; l++) {
        struct layer_weights *lw = &en->w.layers[l];
        struct tensor *dst[9] = {&lw->attn_norm, &lw->wq, &lw->wk, &lw->wv, &lw->wo,
                                 &lw->ffn_norm, &lw->w1, &lw->w2, &lw->w3};
        for (int i = 0; i < 9; i++) {
            char name[96];
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, names[i]);
            if ((rc = prep_tensor(&p, dst[i], name, (i == 0 || i == 5) ? T_NORM : T_MATRIX, e))) return rc;
        }
    }
    if (p.quantize && !o->quiet) fprintf(stderr, "\r%-70s\r", "");
    if (p.quantize && !o->quiet && (p.n_gptq || p.n_imp))
        fprintf(stderr, "calibration %s: %d matrices GPTQ (output error %.4g), %d importance-weighted, %d without data\n",
                o->imatrix_path, p.n_gptq, p.gptq_loss, p.n_imp, p.n_plain);
    if (p.n_expanded && !o->quiet)   // say so: the user brought 4-bit weights and gets f32 speed
        fprintf(stderr,
                "note: %d matrices of ggml block types (e.g. %s) have no %s kernel and are computed in %s: "
                "%.1f MiB in the file -> %.1f MiB in memory (%.1fx the bytes to read per token). Requantize at load with -q 8 or -q 4, or ./quantize from the f16/bf16 source "
                "(docs/QUANT_FORMATS.md); --bits default=32 computes every matrix in f32.\n",
                p.n_expanded, qtype_traits[p.expanded_from].name, en->be->ops->name, qtype_traits[p.expanded_to].name,
                p.expanded_file_bytes / 1048576.0, p.expanded_bytes / 1048576.0,
                p.expanded_file_bytes ? (double)p.expanded_bytes / (double)p.expanded_file_bytes : 1.0);
    // accounting
    en->weight_bytes = en->w.token_embd.nbytes + en->w.output_norm.nbytes +
                       (c->tied_output ? 0 : en->w.output.nbytes);
    en->weight_bytes_per_token = en->w.output.nbytes + en->w.output_norm.nbytes;
    for (int l = 0; l < c->n_layers; l++) {
        const struct layer_weights *lw = &en->w.layers[l];
        size_t b = lw->attn_norm.nbytes + lw->wq.nbytes + lw->wk.nbytes + lw->wv.nbytes + lw->wo.nbytes +
                   lw->ffn_norm.nbytes + lw->w1.nbytes + lw->w2.nbytes + lw->w3.nbytes;
        en->weight_bytes += b;
        en->weight_bytes_per_token += b;
    }
    return ERR_OK;
}

// ------------------------------------------------------------------------------------------------
// Activations

static int alloc_act(struct engine *en, struct tensor *t, int64_t row, int64_t n_rows, const char *name,
                     struct err *e) {
    t->type = QT_F32;
    t->ne[0] = row;
    t->ne[1] = n_rows;
    t->nbytes = (size_t)row * (size_t)n_rows * sizeof(float);
    t->name = name;
    t->data = eng_alloc(en, t->nbytes);
    if (!t->data) return ERR(e, ERR_OOM, "cannot allocate %s (%.1f MiB)", name, t->nbytes / 1048576.0);
    en->scratch_bytes += t->nbytes;
    return ERR_OK;
}

static int alloc_state(struct engine *en, struct err *e) {
    const struct model_config *c = &en->cfg;
    const int B = ENGINE_MAX_BATCH, q_dim = c->n_heads * c->head_dim, kv_dim = c->n_kv_heads * c->head_dim;
    struct run_state *s = &en->s;
    int rc;
    if ((rc = alloc_act(en, &s->x, c->dim, B, "x", e)) || (rc = alloc_act(en, &s->xb, c->dim, B, "xb", e)) ||
        (rc = alloc_act(en, &s->xb2, c->dim, B, "xb2", e)) || (rc = alloc_act(en, &s->q, q_dim, B, "q", e)) ||
        (rc = alloc_act(en, &s->k, kv_dim, B, "k", e)) || (rc = alloc_act(en, &s->v, kv_dim, B, "v", e)) ||
        (rc = alloc_act(en, &s->att, q_dim, B, "att", e)) ||
        (rc = alloc_act(en, &s->hb, c->hidden_dim, B, "hb", e)) ||
        (rc = alloc_act(en, &s->hb2, c->hidden_dim, B, "hb2", e)) ||
        (rc = alloc_act(en, &s->logits, c->vocab_size, 1, "logits", e)))
        return rc;
    s->logits_rows = 1;
    return ERR_OK;
}

/* Grows the logits buffer to ENGINE_MAX_BATCH rows the first time all logits are requested. */
static int grow_logits(struct engine *en, struct err *e) {
    if (en->s.logits_rows >= ENGINE_MAX_BATCH) return ERR_OK;
    en->scratch_bytes -= en->s.logits.nbytes;   // the old buffer stays in allocs until engine_free
    int rc = alloc_act(en, &en->s.logits, en->cfg.vocab_size, ENGINE_MAX_BATCH, "logits", e);
    if (!rc) en->s.logits_rows = ENGINE_MAX_BATCH;
    return rc;
}

// ------------------------------------------------------------------------------------------------
// Public API

int engine_load(struct engine **out, const struct engine_opts *o, struct err *e) {
    *out = NULL;
    double t0 = now_s();
    struct engine *en = calloc(1, sizeof *en);
    if (!en) return ERR(e, ERR_OOM, "out of memory");
    int rc = model_file_open(&en->mf, o->model_path, o->tokenizer_path, e);
    if (rc) { free(en); return rc; }
    en->cfg = en->mf.cfg;
    if (!(en->tok = tokenizer_create(&en->mf.vocab, e))) { rc = e->code ? e->code : ERR_FORMAT; goto fail; }
    if (o->vocab_only) { *out = en; en->load_seconds = now_s() - t0; return ERR_OK; }
    if (!en->mf.has_weights) {
        rc = ERR(e, ERR_FORMAT, "%s: vocabulary-only file, it has no weights to run", o->model_path);
        goto fail;
    }
    if ((rc = model_file_validate(&en->mf, e))) goto fail;
    if (en->cfg.vocab_size != en->mf.vocab.n_tokens) {
        rc = ERR(e, ERR_FORMAT, "%s: model vocab_size %d but the tokenizer has %d tokens", o->model_path,
                 en->cfg.vocab_size, en->mf.vocab.n_tokens);
        goto fail;
    }
    bool cuda = (o->device && strcmp(o->device, "cuda") == 0) || o->n_gpu_layers > 0;
    if (o->device && strcmp(o->device, "cuda") != 0 && strcmp(o->device, "cpu") != 0) {
        rc = ERR(e, ERR_ARG, "unknown device '%s' (use cpu or cuda)", o->device);
        goto fail;
    }
    en->be = cuda ? backend_cuda_create(0, e) : backend_cpu_create(o->n_threads, e);
    if (!en->be) { rc = e->code ? e->code : ERR_BACKEND; goto fail; }
    if ((rc = load_weights(en, o, e))) goto fail;
    en->n_ctx = o->n_ctx > 0 ? o->n_ctx : (en->cfg.seq_len < 4096 ? en->cfg.seq_len : 4096);
    if (en->n_ctx > 1 << 20) { rc = ERR(e, ERR_ARG, "context size %d is too large", en->n_ctx); goto fail; }
    en->n_seq = o->n_seq > 0 ? o->n_seq : 1;
    if (en->n_seq > ENGINE_MAX_BATCH) { rc = ERR(e, ERR_ARG, "at most %d parallel sequences", ENGINE_MAX_BATCH); goto fail; }
    if (!(en->kv = calloc((size_t)en->n_seq, sizeof *en->kv))) { rc = ERR(e, ERR_OOM, "out of memory"); goto fail; }
    for (int i = 0; i < en->n_seq; i++)
        if ((rc = kv_cache_init(&en->kv[i], en->be, en->cfg.n_layers, en->n_ctx, en->cfg.n_kv_heads,
                                en->cfg.head_dim, o->cache_type_k, o->cache_type_v, e)))
            goto fail;
    if ((rc = alloc_state(en, e))) goto fail;
    if ((rc = en->be->ops->sync(en->be, e))) goto fail;
    en->load_seconds = now_s() - t0;
    *out = en;
    return ERR_OK;
fail:
    engine_free(en);
    return rc ? rc : ERR_FORMAT;
}

void engine_free(struct engine *en) {
    if (!en) return;
    if (en->be) {
        for (int i = 0; en->kv && i < en->n_seq; i++) kv_cache_free(&en->kv[i], en->be);
        for (int i = 0; i < en->n_allocs; i++) en->be->ops->free(en->be, en->allocs[i]);
        en->be->ops->destroy(en->be);
    }
    free(en->allocs);
    for (int i = 0; i < en->n_save_bufs; i++) free(en->save_bufs[i]);
    free(en->save_bufs);
    free(en->kv);
    free(en->w.layers);
    free(en->host_logits);
    tokenizer_free(en->tok);
    model_file_close(&en->mf);
    free(en);
}

const struct model_config *engine_config(const struct engine *en) { return &en->cfg; }
const struct vocab *engine_vocab(const struct engine *en) { return &en->mf.vocab; }
const struct model_file *engine_model_file(const struct engine *en) { return &en->mf; }
struct backend *engine_backend(struct engine *en) { return en->be; }
int engine_n_ctx(const struct engine *en) { return en->n_ctx; }
struct tokenizer *engine_tokenizer(struct engine *en) { return en->tok; }
size_t engine_weight_bytes(const struct engine *en) { return en->weight_bytes; }
size_t engine_kv_bytes(const struct engine *en) {
    size_t b = 0;
    for (int i = 0; en->kv && i < en->n_seq; i++) b += en->kv[i].nbytes;
    return b;
}
int engine_n_seq(const struct engine *en) { return en->n_seq; }
enum qtype engine_kv_type(const struct engine *en, int which) {
    if (!en->kv) return QT_F32;
    return which ? en->kv[0].type_v : en->kv[0].type_k;
}
size_t engine_scratch_bytes(const struct engine *en) { return en->scratch_bytes; }
size_t engine_weight_bytes_per_token(const struct engine *en) { return en->weight_bytes_per_token; }
double engine_load_seconds(const struct engine *en) { return en->load_seconds; }

int engine_tokenize(struct engine *en, const char *text, bool add_bos, bool parse_special, int32_t *out,
                    int max, struct err *e) {
    return tokenizer_encode(en->tok, text, strlen(text), add_bos, parse_special, out, max, e);
}

int engine_forward_seq(struct engine *en, int seq, const int32_t *tokens, int n, int pos, float *logits,
                       bool all_logits, struct err *e) {
    if (!en->be) return ERR(e, ERR_ARG, "engine loaded vocabulary-only");
    if (n <= 0) return ERR(e, ERR_ARG, "no tokens");
    if (seq < 0 || seq >= en->n_seq) return ERR(e, ERR_ARG, "sequence %d out of range [0, %d)", seq, en->n_seq);
    if (pos < 0 || (int64_t)pos + n > en->n_ctx)
        return ERR(e, ERR_ARG, "context full: positions %d..%d exceed the context size %d (use -c)", pos,
                   pos + n - 1, en->n_ctx);
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= en->cfg.vocab_size)
            return ERR(e, ERR_ARG, "token id %d out of range [0, %d)", tokens[i], en->cfg.vocab_size);
    int rc;
    if (all_logits && logits && (rc = grow_logits(en, e))) return rc;
    const size_t V = (size_t)en->cfg.vocab_size;
    for (int done = 0; done < n;) {
        int b = n - done < ENGINE_MAX_BATCH ? n - done : ENGINE_MAX_BATCH;
        bool last = done + b == n;
        struct seq_span sp = {seq, 0, b, pos + done};
        // A decode step on a backend that can record it (CUDA graphs) is captured and replayed as
        // one launch; LLM_NO_CAPTURE=1 turns this off to compare.
        bool capture = b == 1 && en->be->ops->begin_capture && !getenv("LLM_NO_CAPTURE") &&
                       en->be->ops->begin_capture(en->be) == ERR_OK;
        int rows = forward_batch(en, tokens + done, b, &sp, 1, all_logits);
        if (capture && (rc = en->be->ops->end_capture(en->be)))
            return ERR(e, rc, "%s backend: replaying the captured decode step failed", en->be->ops->name);
        if (logits && (all_logits || last)) {
            float *dst = all_logits ? logits + (size_t)done * V : logits;
            if ((rc = en->be->ops->download(en->be, dst, en->s.logits.data, (size_t)rows * V * sizeof(float), e)))
                return rc;
        }
        done += b;
    }
    return en->be->ops->sync(en->be, e);
}

int engine_forward(struct engine *en, const int32_t *tokens, int n, int pos, float *logits, bool all_logits,
                   struct err *e) {
    return engine_forward_seq(en, 0, tokens, n, pos, logits, all_logits, e);
}

int engine_decode_multi(struct engine *en, const int32_t *tokens, const int *seq, const int *pos, int n,
                        float *logits, struct err *e) {
    if (!en->be) return ERR(e, ERR_ARG, "engine loaded vocabulary-only");
    if (n <= 0 || n > en->n_seq) return ERR(e, ERR_ARG, "decode_multi: %d sequences, engine has %d", n, en->n_seq);
    struct seq_span sp[ENGINE_MAX_BATCH];
    for (int i = 0; i < n; i++) {
        if (seq[i] < 0 || seq[i] >= en->n_seq) return ERR(e, ERR_ARG, "sequence %d out of range", seq[i]);
        for (int j = 0; j < i; j++)
            if (seq[j] == seq[i]) return ERR(e, ERR_ARG, "sequence %d given twice in one step", seq[i]);
        if (pos[i] < 0 || pos[i] >= en->n_ctx)
            return ERR(e, ERR_ARG, "context full: position %d of sequence %d exceeds the context size %d",
                       pos[i], seq[i], en->n_ctx);
        if (tokens[i] < 0 || tokens[i] >= en->cfg.vocab_size)
            return ERR(e, ERR_ARG, "token id %d out of range [0, %d)", tokens[i], en->cfg.vocab_size);
        sp[i] = (struct seq_span){seq[i], i, 1, pos[i]};
    }
    int rc;
    if (n > 1 && (rc = grow_logits(en, e))) return rc;
    int rows = forward_batch(en, tokens, n, sp, n, true);
    if ((rc = en->be->ops->download(en->be, logits, en->s.logits.data,
                                    (size_t)rows * (size_t)en->cfg.vocab_size * sizeof(float), e)))
        return rc;
    return en->be->ops->sync(en->be, e);
}

int engine_set_matmul_observer(struct engine *en, engine_matmul_observer fn, void *ctx, struct err *e) {
    if (fn && !en->be->host_memory)
        return ERR(e, ERR_UNSUPPORTED, "calibration needs a host-memory backend (--device cpu), not %s",
                   en->be->ops->name);
    en->observe = fn;
    en->observe_ctx = ctx;
    return ERR_OK;
}

int engine_kv_shift(struct engine *en, int seq, int keep, int n_discard, int n_past, struct err *e) {
    if (!en->be) return ERR(e, ERR_ARG, "engine loaded vocabulary-only");
    if (seq < 0 || seq >= en->n_seq) return ERR(e, ERR_ARG, "sequence %d out of range [0, %d)", seq, en->n_seq);
    return kv_cache_shift(&en->kv[seq], en->be, keep, n_discard, n_past, en->cfg.rope_theta, (int)en->cfg.rope, e);
}

// ------------------------------------------------------------------------------------------------
// Saving: the prepared (converted / quantized) weights as our native model.bin

// X8 weights (CPU repacking) are viewed through a natural-layout copy, kept until engine_free
static int add_view(struct engine *en, struct tensor_view *v, int *n, const struct tensor *t, const char *name,
                    int n_dims, bool natural, struct err *e) {
    struct tensor_view *tv = &v[(*n)++];
    memset(tv, 0, sizeof *tv);
    snprintf(tv->name, sizeof tv->name, "%s", name);
    tv->type = t->type;
    tv->n_dims = n_dims;
    tv->ne[0] = t->ne[0];
    tv->ne[1] = n_dims > 1 ? t->ne[1] : 1;
    tv->ne[2] = tv->ne[3] = 1;
    tv->data = t->data;
    tv->nbytes = t->nbytes;
    if (!natural || !qtype_is_x8(t->type)) return ERR_OK;
    void **bufs = realloc(en->save_bufs, (size_t)(en->n_save_bufs + 1) * sizeof *bufs);
    uint8_t *nat = malloc(t->nbytes ? t->nbytes : 1);
    if (bufs) en->save_bufs = bufs;
    if (!bufs || !nat) {
        free(nat);
        return ERR(e, ERR_OOM, "%s: out of memory for a natural-layout copy (%.1f MiB)", name, t->nbytes / 1048576.0);
    }
    en->save_bufs[en->n_save_bufs++] = nat;
    const size_t rb = qtype_row_bytes(t->type, t->ne[0]);
    for (int64_t r = 0; r < t->ne[1]; r++)
        x8_unpack_row(t->type, nat + (size_t)r * rb, (const uint8_t *)t->data + (size_t)r * rb, t->ne[0]);
    tv->type = (enum qtype)qtype_natural_of(t->type);
    tv->data = nat;
    return ERR_OK;
}

static int views(struct engine *en, struct tensor_view **out, int *n_out, bool natural, struct err *e) {
    if (!en->be || !en->be->host_memory) return ERR(e, ERR_UNSUPPORTED, "weights are not in host memory");
    const struct model_config *c = &en->cfg;
    struct tensor_view *v = calloc((size_t)(3 + 9 * c->n_layers), sizeof *v);
    if (!v) return ERR(e, ERR_OOM, "out of memory");
    int n = 0;
    int rc = add_view(en, v, &n, &en->w.token_embd, "token_embd.weight", 2, natural, e);
    if (!rc) rc = add_view(en, v, &n, &en->w.output_norm, "output_norm.weight", 1, natural, e);
    if (!rc && !c->tied_output) rc = add_view(en, v, &n, &en->w.output, "output.weight", 2, natural, e);
    static const char *const names[9] = {"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                                         "ffn_norm", "ffn_gate", "ffn_down", "ffn_up"};
    for (int l = 0; l < c->n_layers; l++) {
        const struct layer_weights *lw = &en->w.layers[l];
        const struct tensor *src[9] = {&lw->attn_norm, &lw->wq, &lw->wk, &lw->wv, &lw->wo,
                                       &lw->ffn_norm, &lw->w1, &lw->w2, &lw->w3};
        for (int i = 0; i < 9; i++) {
            char name[96];
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, names[i]);
            if (!rc) rc = add_view(en, v, &n, src[i], name, (i == 0 || i == 5) ? 1 : 2, natural, e);
        }
    }
    if (rc) {
        free(v);
        return rc;
    }
    *out = v;
    *n_out = n;
    return ERR_OK;
}

int engine_tensor_views(struct engine *en, struct tensor_view **out, int *n_out, struct err *e) {
    return views(en, out, n_out, true, e);
}

int engine_compute_views(struct engine *en, struct tensor_view **out, int *n_out, struct err *e) {
    return views(en, out, n_out, false, e);
}

int engine_save(struct engine *en, const char *path, struct err *e) {
    struct tensor_view *v;
    int n, rc;
    if ((rc = engine_tensor_views(en, &v, &n, e))) return rc;
    rc = native_write(path, &en->cfg, &en->mf.vocab, v, n, e);
    free(v);
    return rc;
}
