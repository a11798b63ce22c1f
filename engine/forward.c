/* engine/forward.c: the Llama forward pass, written once over the backend vtable (STYLE.md 3).
 * Pre-norm transformer: x = embed(tokens); per layer x += attn(rmsnorm(x)); x += ffn(rmsnorm(x));
 * logits = rmsnorm(x) @ output^T. Grouped-query attention over the KV cache, RoPE on q and k,
 * SwiGLU FFN. Prefill runs all tokens of a batch through each matmul at once (matrix-matrix).
 * A batch may hold several sequences (-np): the matmuls see all rows; RoPE, the cache append and
 * attention run per span of rows, each with its own positions and KV cache.
 * Reference: llama2.c run.c forward(); test: tests/test_model_stories.c */
#include "engine/model.h"

// A view of the first n rows of a scratch activation.
static struct tensor rows(const struct tensor *full, int n) {
    struct tensor t = *full;
    t.ne[1] = n;
    t.nbytes = (size_t)n * (size_t)t.ne[0] * sizeof(float);
    return t;
}

// A view of rows [row0, row0 + n) of an f32 activation.
static struct tensor span_rows(const struct tensor *full, int row0, int n) {
    struct tensor t = rows(full, n);
    t.data = (float *)full->data + (size_t)row0 * (size_t)full->ne[0];
    return t;
}

// The calibration hook (./imatrix): the input of the weights named in names, before they multiply it.
static void observe(struct engine *en, int n_w, const char *const *names, const struct tensor *x) {
    if (en->observe) en->observe(en->observe_ctx, names, n_w, x);
}

// outs[i] = x @ ws[i]^T: one backend call when it has matmul_n (the CPU shares the activation
// quantization and the thread pass), else one matmul each
static void matmuls(struct engine *en, int n, struct tensor *const *outs, const struct tensor *x,
                    const struct tensor *const *ws) {
    struct backend *be = en->be;
    if (en->observe) {
        const char *names[4];
        for (int i = 0; i < n && i < 4; i++) names[i] = ws[i]->name;
        observe(en, n < 4 ? n : 4, names, x);
    }
    if (be->ops->matmul_n) be->ops->matmul_n(be, n, outs, x, ws);
    else
        for (int i = 0; i < n; i++) be->ops->matmul(be, outs[i], x, ws[i]);
}

// ------------------------------------------------------------------------------------------------
// Attention block: x += wo @ attention(rope(wq @ xn), rope(wk @ xn), wv @ xn)

static void attention_block(struct engine *en, int l, int n, const struct seq_span *sp, int n_sp) {
    struct backend *be = en->be;
    const struct model_config *c = &en->cfg;
    const struct layer_weights *lw = &en->w.layers[l];
    struct tensor x = rows(&en->s.x, n), xb = rows(&en->s.xb, n), xb2 = rows(&en->s.xb2, n);
    struct tensor q = rows(&en->s.q, n), k = rows(&en->s.k, n), v = rows(&en->s.v, n);
    struct tensor att = rows(&en->s.att, n);

    be->ops->rmsnorm(be, &xb, &x, &lw->attn_norm, c->norm_eps);
    // q (n, n_heads * head_dim), k and v (n, n_kv_heads * head_dim)
    matmuls(en, 3, (struct tensor *const[]){&q, &k, &v}, &xb, (const struct tensor *const[]){&lw->wq, &lw->wk, &lw->wv});
    for (int i = 0; i < n_sp; i++) {         // one span per sequence (a single one unless -np)
        const int r0 = sp[i].row0, m = sp[i].n, pos = sp[i].pos;
        struct kv_cache *kv = &en->kv[sp[i].seq];
        struct tensor qs = span_rows(&q, r0, m), ks = span_rows(&k, r0, m), vs = span_rows(&v, r0, m);
        struct tensor as = span_rows(&att, r0, m);
        be->ops->rope(be, &qs, c->n_heads, c->head_dim, pos, c->rope_theta, (int)c->rope);
        be->ops->rope(be, &ks, c->n_kv_heads, c->head_dim, pos, c->rope_theta, (int)c->rope);
        // append the span's keys/values at rows pos .. pos+m-1, then attend causally over 0 .. pos+t
        be->ops->set_rows(be, &kv->k[l], pos, &ks);
        be->ops->set_rows(be, &kv->v[l], pos, &vs);
        be->ops->attention(be, &as, &qs, &kv->k[l], &kv->v[l], c->n_heads, c->n_kv_heads, c->head_dim, pos);
    }
    observe(en, 1, &lw->wo.name, &att);
    be->ops->matmul(be, &xb2, &att, &lw->wo);  // (n, dim)
    be->ops->add(be, &x, &x, &xb2);            // residual
}

// ------------------------------------------------------------------------------------------------
// FFN block: x += w2 @ (silu(w1 @ xn) * (w3 @ xn))

static void ffn_block(struct engine *en, int l, int n) {
    struct backend *be = en->be;
    const struct layer_weights *lw = &en->w.layers[l];
    struct tensor x = rows(&en->s.x, n), xb = rows(&en->s.xb, n), xb2 = rows(&en->s.xb2, n);
    struct tensor hb = rows(&en->s.hb, n), hb2 = rows(&en->s.hb2, n);

    be->ops->rmsnorm(be, &xb, &x, &lw->ffn_norm, en->cfg.norm_eps);
    // gate and up (n, hidden_dim)
    matmuls(en, 2, (struct tensor *const[]){&hb, &hb2}, &xb, (const struct tensor *const[]){&lw->w1, &lw->w3});
    be->ops->swiglu(be, &hb, &hb, &hb2);       // hb = silu(gate) * up
    observe(en, 1, &lw->w2.name, &hb);
    be->ops->matmul(be, &xb2, &hb, &lw->w2);   // down (n, dim)
    be->ops->add(be, &x, &x, &xb2);            // residual
}

// ------------------------------------------------------------------------------------------------
// Output head: logits for the last row only (decode, generation) or for every row (perplexity).

static int output_head(struct engine *en, int n, bool all_logits) {
    struct backend *be = en->be;
    const int first = all_logits ? 0 : n - 1, n_out = n - first;
    struct tensor x = rows(&en->s.x, n), xb = rows(&en->s.xb, n);
    be->ops->rmsnorm(be, &xb, &x, &en->w.output_norm, en->cfg.norm_eps);
    // the rows we need, as a view starting at row `first`
    struct tensor xin = rows(&en->s.xb, n_out);
    xin.data = (float *)xb.data + (size_t)first * (size_t)xb.ne[0];
    struct tensor logits = en->s.logits;
    logits.ne[1] = n_out;
    observe(en, 1, (const char *const[]){"output.weight"}, &xin);
    be->ops->matmul(be, &logits, &xin, &en->w.output);   // (n_out, vocab)
    return n_out;
}

int forward_batch(struct engine *en, const int32_t *tokens, int n, const struct seq_span *sp, int n_sp,
                  bool all_logits) {
    struct backend *be = en->be;
    struct tensor x = rows(&en->s.x, n);
    be->ops->embed(be, &x, &en->w.token_embd, tokens, n);   // (n, dim)
    for (int l = 0; l < en->cfg.n_layers; l++) {
        attention_block(en, l, n, sp, n_sp);
        ffn_block(en, l, n);
    }
    return output_head(en, n, all_logits);
}
