/* tests/test_bench_synth.c: ./llm-bench --make-model's writer and the bench arithmetic. Small synthetic
 * models in f32/f16/q8_0/q4_0 must open with model_file_open with the exact shapes, metadata and
 * vocabulary, pass model_file_validate, hold finite weights of the intended scale; bytes per token
 * must equal the closed-form sum of qtype_row_bytes(type, ne0) * rows (embedding table excluded), and
 * match engine_weight_bytes_per_token for f32. Run: make build/tests/test_bench_synth */
#include <unistd.h>

#include "bench/bench.h"
#include "engine/engine.h"
#include "tests/test.h"

static const char *vocab_path;

static struct model_config small_cfg(int vocab, bool tied) {
    // TinyLlama's proportions at 1/8 the width: GQA 4 heads over 2 kv heads, head_dim 64
    struct model_config c = {.dim = 256, .hidden_dim = 704, .n_layers = 2, .n_heads = 4,
                             .n_kv_heads = 2, .vocab_size = vocab, .seq_len = 512, .head_dim = 64,
                             .rope_theta = 10000.0f, .norm_eps = 1e-5f, .rope = ROPE_INTERLEAVED,
                             .tied_output = tied, .arch = "llama", .name = "synth-test"};
    return c;
}

static const char *tmp_model(const char *tag) {
    static char buf[256];
    snprintf(buf, sizeof buf, "/tmp/test_bench_synth_%d_%s.gguf", (int)getpid(), tag);
    return buf;
}

/* Closed form of the decode bytes: per layer 2 norms (f32) + q,k,v,o + gate, up, down; then the
 * final norm and the head (untied: output.weight; tied: the embedding table read as the head). */
static uint64_t closed_form_bytes(const struct model_config *c, enum qtype t) {
    int64_t kv = (int64_t)c->n_kv_heads * c->head_dim, q = (int64_t)c->n_heads * c->head_dim;
    uint64_t layer = 2 * qtype_row_bytes(QT_F32, c->dim) +
                     qtype_row_bytes(t, c->dim) * (uint64_t)(q + 2 * kv + 2 * c->hidden_dim) +
                     qtype_row_bytes(t, q) * (uint64_t)c->dim +
                     qtype_row_bytes(t, c->hidden_dim) * (uint64_t)c->dim;
    return layer * (uint64_t)c->n_layers + qtype_row_bytes(QT_F32, c->dim) +
           qtype_row_bytes(t, c->dim) * (uint64_t)c->vocab_size;
}

// ------------------------------------------------------------------------------------------------

static void check_model(enum qtype type, int vocab, bool tied) {
    struct model_config c = small_cfg(vocab, tied);
    char tag[64];
    snprintf(tag, sizeof tag, "%s_%d_%d", qtype_traits[type].name, vocab, tied);
    const char *path = tmp_model(tag);
    struct synth_opts so = {.out_path = path, .cfg = c, .type = type, .vocab_path = vocab_path,
                            .seed = 7};
    struct err e = {0};
    int rc = synth_make_model(&so, &e);
    CHECK(rc == ERR_OK, "%s: synth_make_model: %s", tag, e.msg);
    if (rc) return;

    struct model_file mf;
    rc = model_file_open(&mf, path, NULL, &e);
    CHECK(rc == ERR_OK, "%s: model_file_open: %s", tag, e.msg);
    if (rc) { unlink(path); return; }
    rc = model_file_validate(&mf, &e);
    CHECK(rc == ERR_OK, "%s: model_file_validate: %s", tag, e.msg);

    // metadata round trip
    const struct model_config *g = &mf.cfg;
    CHECK(g->dim == c.dim && g->hidden_dim == c.hidden_dim && g->n_layers == c.n_layers,
          "%s: dims %d/%d/%d", tag, g->dim, g->hidden_dim, g->n_layers);
    CHECK(g->n_heads == c.n_heads && g->n_kv_heads == c.n_kv_heads && g->head_dim == c.head_dim,
          "%s: heads %d/%d/%d", tag, g->n_heads, g->n_kv_heads, g->head_dim);
    CHECK(g->vocab_size == vocab && mf.vocab.n_tokens == vocab, "%s: vocab %d, %d tokens", tag,
          g->vocab_size, mf.vocab.n_tokens);
    CHECK(g->seq_len == c.seq_len && g->rope_theta == c.rope_theta, "%s: ctx %d theta %g", tag,
          g->seq_len, g->rope_theta);
    CHECK(g->tied_output == tied, "%s: tied_output %d", tag, g->tied_output);

    // every tensor: name, type, shape as laid out
    struct tensor_view want[64];
    int n = synth_tensor_layout(&c, type, want, 64);
    CHECK(n == mf.n_tensors, "%s: %d tensors, want %d", tag, mf.n_tensors, n);
    for (int i = 0; i < n; i++) {
        const struct tensor_view *v = model_file_find(&mf, want[i].name);
        CHECK(v != NULL, "%s: %s missing", tag, want[i].name);
        if (!v) continue;
        CHECK(v->type == want[i].type && v->ne[0] == want[i].ne[0] &&
              (v->n_dims == 1 || v->ne[1] == want[i].ne[1]) && v->nbytes == want[i].nbytes,
              "%s: %s type %d ne %lld x %lld", tag, v->name, v->type, (long long)v->ne[0],
              (long long)v->ne[1]);
    }

    // weights: finite, norms exactly 1, matrices with sd ~ 0.5/sqrt(fan_in)
    const struct tensor_view *wq = model_file_find(&mf, "blk.1.attn_q.weight");
    const struct tensor_view *nrm = model_file_find(&mf, "blk.0.ffn_norm.weight");
    if (wq && nrm) {
        int64_t ne0 = wq->ne[0], rows = wq->ne[1];
        float *row = malloc((size_t)ne0 * sizeof *row);
        double ss = 0;
        bool finite = true;
        for (int64_t r = 0; r < rows; r++) {
            qtype_traits[wq->type].dequantize_row(row, (const char *)wq->data +
                                                  (size_t)r * qtype_row_bytes(wq->type, ne0), ne0);
            for (int64_t i = 0; i < ne0; i++) {
                finite = finite && isfinite(row[i]);
                ss += (double)row[i] * row[i];
            }
        }
        double sd = sqrt(ss / (double)(ne0 * rows)), want_sd = 0.5 / sqrt((double)ne0);
        CHECK(finite, "%s: non-finite weight in %s", tag, wq->name);
        // 65536 samples: the sampling error of sd is ~0.3%; q4_0's rounding adds ~ d^2/12 of
        // variance (d ~ 3.5 sd / 8), about +2.5%, so 5% bounds both
        CHECK(fabs(sd / want_sd - 1) < 0.05, "%s: sd %.5f want %.5f", tag, sd, want_sd);
        const float *nv = nrm->data;
        bool ones = true;
        for (int64_t i = 0; i < nrm->ne[0]; i++) ones = ones && nv[i] == 1.0f;
        CHECK(ones, "%s: norm weights are not 1", tag);
        free(row);
    }

    // vocabulary: padded with <extra_N>, truncated with specials kept when in range
    if (vocab > 32000) {
        char buf[32];
        snprintf(buf, sizeof buf, "<extra_%d>", vocab - 32001);
        CHECK(!strcmp(mf.vocab.tokens[vocab - 1], buf), "%s: last token '%s' want '%s'", tag,
              mf.vocab.tokens[vocab - 1], buf);
        CHECK(mf.vocab.types[vocab - 1] == TOK_UNUSED, "%s: padding type %d", tag,
              mf.vocab.types[vocab - 1]);
    }
    CHECK(mf.vocab.bos == 1 && mf.vocab.eos == 2, "%s: bos %d eos %d", tag, mf.vocab.bos,
          mf.vocab.eos);
    CHECK(!strcmp(mf.vocab.tokens[3], "<0x00>"), "%s: token 3 '%s'", tag, mf.vocab.tokens[3]);

    // bytes per token: file views, synthetic layout and closed form agree
    uint64_t from_file = bench_bytes_per_token(mf.tensors, mf.n_tensors, tied);
    uint64_t from_layout = bench_bytes_per_token(want, n, tied);
    uint64_t closed = closed_form_bytes(&c, type);
    CHECK(from_file == closed && from_layout == closed, "%s: bytes/token file %llu layout %llu "
          "closed form %llu", tag, (unsigned long long)from_file, (unsigned long long)from_layout,
          (unsigned long long)closed);
    model_file_close(&mf);

    // the engine keeps f32 as f32, so its own count must match ours
    if (type == QT_F32) {
        struct engine *en = NULL;
        struct engine_opts eo = {.model_path = path, .n_ctx = 16, .n_threads = 1, .quiet = true};
        rc = engine_load(&en, &eo, &e);
        CHECK(rc == ERR_OK, "%s: engine_load: %s", tag, e.msg);
        if (!rc) {
            CHECK(engine_weight_bytes_per_token(en) == closed, "%s: engine bytes/token %zu, want "
                  "%llu", tag, engine_weight_bytes_per_token(en), (unsigned long long)closed);
            int32_t tok[4] = {1, 450, 4996, 17354};
            float *logits = malloc((size_t)vocab * sizeof *logits);
            rc = engine_forward(en, tok, 4, 0, logits, false, &e);
            CHECK(rc == ERR_OK, "%s: engine_forward: %s", tag, e.msg);
            bool finite = true;
            for (int i = 0; !rc && i < vocab; i++) finite = finite && isfinite(logits[i]);
            CHECK(finite, "%s: non-finite logits from random weights", tag);
            free(logits);
            engine_free(en);
        }
    }
    unlink(path);
}

static void test_presets_and_lists(void) {
    const struct synth_preset *p = synth_preset_find("tinyllama");
    CHECK(p && p->cfg.dim == 2048 && p->cfg.hidden_dim == 5632 && p->cfg.n_layers == 22 &&
          p->cfg.n_kv_heads == 4 && !p->cfg.tied_output, "tinyllama preset");
    p = synth_preset_find("llama-3.2-1b");
    CHECK(p && p->cfg.vocab_size == 128256 && p->cfg.tied_output && p->cfg.rope_theta == 500000.0f,
          "llama-3.2-1b preset");
    CHECK(synth_preset_find("gpt-2") == NULL, "unknown preset");
    // TinyLlama f16, closed form by hand: 22 x (2 x 2048 x 4 + 2 x (2048 x (2048 + 512 + 11264) +
    // 2048 x 2048 + 5632 x 2048)) + 2048 x 4 + 2 x 2048 x 32000
    struct model_config c = synth_preset_find("tinyllama")->cfg;
    CHECK(closed_form_bytes(&c, QT_F16) == 1938128896ull + 131080192ull, "tinyllama f16 bytes %llu",
          (unsigned long long)closed_form_bytes(&c, QT_F16));
    int v[BENCH_MAX_LIST];
    CHECK(bench_parse_int_list("1,2,16", v, BENCH_MAX_LIST, 1, 64) == 3 && v[2] == 16, "list");
    CHECK(bench_parse_int_list("1,,2", v, BENCH_MAX_LIST, 1, 64) == -1, "empty entry");
    CHECK(bench_parse_int_list("1,x", v, BENCH_MAX_LIST, 1, 64) == -1, "bad entry");
    CHECK(bench_parse_int_list("0", v, BENCH_MAX_LIST, 1, 64) == -1, "below range");
    double x[5] = {3, 1, 2, 5, 4};
    struct bench_stats s = bench_stats_of(x, 5);
    CHECK(s.mean == 3 && s.median == 3 && s.min == 1 && s.max == 5, "stats");
    CHECK(fabs(s.stddev - sqrt(2.5)) < 1e-12, "sample stddev %g", s.stddev);
}

int main(void) {
    test_begin("bench_synth");
    vocab_path = test_data("models/llama2-tokenizer/ggml-vocab-llama-spm.gguf");
    if (!file_exists(vocab_path)) test_skip("%s missing", vocab_path);
    test_presets_and_lists();
    const enum qtype types[] = {QT_F32, QT_F16, QT_GGML_Q8_0, QT_GGML_Q4_0};
    for (int i = 0; i < 4; i++) check_model(types[i], 32000, false);
    check_model(QT_F16, 32010, true);   // padded with <extra_0..9>, tied head
    check_model(QT_GGML_Q8_0, 1000, true);   // truncated
    return test_end();
}
