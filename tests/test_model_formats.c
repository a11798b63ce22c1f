/* tests/test_model_formats.c: one random model with TinyLlama's structure (32 heads / 4 KV heads,
 * head_dim 64, untied output head, vocab 32000 with the real Llama-2 vocabulary) but 2 narrow layers,
 * written by the project's writers in every supported format (GGUF F32 and F16, safetensors folder
 * F32 and F16, llama2.c v0 legacy and v1): each loads and gives the same logits. */
#include <sys/stat.h>
#include <unistd.h>

#include "engine/engine.h"
#include "loaders/gguf_write.h"
#include "loaders/writers.h"
#include "tests/test.h"

#define N_TOK 8
static const int32_t toks[N_TOK] = {1, 15043, 3186, 29892, 920, 526, 366, 29973};

static struct model_config cfg = {
    .dim = 2048, .hidden_dim = 128, .n_layers = 2, .n_heads = 32, .n_kv_heads = 4, .vocab_size = 32000,
    .seq_len = 64, .head_dim = 64, .rope_theta = 10000.0f, .norm_eps = 1e-5f, .rope = ROPE_INTERLEAVED,
    .tied_output = false, .arch = "llama", .name = "tinyllama-shaped-test"};

static float *logits_of(const char *path, const char *tok_path, const char *label) {
    struct engine_opts o = {.model_path = path, .tokenizer_path = tok_path, .n_threads = 2, .n_ctx = 16, .quiet = true};
    struct err e = {0};
    struct engine *en;
    if (engine_load(&en, &o, &e)) { CHECK(0, "%s: load: %s", label, e.msg); return NULL; }
    const struct model_config *c = engine_config(en);
    CHECK(c->n_heads == 32 && c->n_kv_heads == 4 && c->head_dim == 64 && c->vocab_size == 32000 && !c->tied_output,
          "%s: config %d %d %d %d tied=%d", label, c->n_heads, c->n_kv_heads, c->head_dim, c->vocab_size, c->tied_output);
    float *l = malloc(sizeof(float) * N_TOK * 32000);
    CHECK(engine_forward(en, toks, N_TOK, 0, l, true, &e) == 0, "%s: forward: %s", label, e.msg);
    engine_free(en);
    return l;
}

/* Compares logits of two loads of the same weights. Both are fp32 forward passes over the same
 * values; only the RoPE pairing (NeoX over permuted rows vs interleaved) and summation order differ,
 * so per STYLE.md 5 each reduction errs by <= ~sqrt(K)*eps*sum|terms|; across 2 layers x 7 reductions
 * (K <= 2048) we allow 16 * 8 * sqrt(2048) * eps relative to the row's max |logit|. */
static void compare(const float *a, const float *b, const char *what) {
    if (!a || !b) return;
    double worst = 0;
    for (int t = 0; t < N_TOK; t++) {
        double mx = 0;
        for (int i = 0; i < 32000; i++) mx = fmax(mx, fabs(a[t * 32000 + i]));
        double tol = 16 * 8 * sqrt(2048.0) * FLT_EPSILON * mx;
        for (int i = 0; i < 32000; i++) {
            CHECK_NEAR(b[t * 32000 + i], a[t * 32000 + i], tol, "%s pos %d id %d", what, t, i);
            worst = fmax(worst, fabs(b[t * 32000 + i] - a[t * 32000 + i]) / mx);
        }
    }
    printf("%-28s worst |diff| / max|logit| = %.3g\n", what, worst);
}

int main(void) {
    test_begin("test_model_formats");
    const char *vpath = test_data("models/llama2-tokenizer/ggml-vocab-llama-spm.gguf");
    if (!file_exists(vpath)) test_skip("no %s", vpath);
    struct err e = {0};
    struct model_file vf;
    if (model_file_open(&vf, vpath, NULL, &e)) { CHECK(0, "vocab: %s", e.msg); return test_end(); }

    // ---- random weights: std 1/sqrt(fan_in) keeps activations O(1) through the layers
    struct rng g;
    rng_init(&g, 0);
    const int kv_dim = cfg.n_kv_heads * cfg.head_dim;
    struct tensor_view tv[3 + 9 * 2], tv16[3 + 9 * 2];
    int n = 0;
    struct spec { const char *name; int64_t ne0, ne1; } spec[3 + 9 * 2];
    spec[n++] = (struct spec){"token_embd.weight", cfg.dim, cfg.vocab_size};
    spec[n++] = (struct spec){"output_norm.weight", cfg.dim, 1};
    spec[n++] = (struct spec){"output.weight", cfg.dim, cfg.vocab_size};
    static char names[18][64];
    const char *kinds[9] = {"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"};
    for (int l = 0; l < cfg.n_layers; l++)
        for (int k = 0; k < 9; k++) {
            char *nm = names[l * 9 + k];
            snprintf(nm, 64, "blk.%d.%s.weight", l, kinds[k]);
            int64_t ne0 = cfg.dim, ne1 = cfg.dim;
            if (k == 0 || k == 5) ne1 = 1;
            else if (k == 2 || k == 3) ne1 = kv_dim;
            else if (k == 6 || k == 7) ne1 = cfg.hidden_dim;
            else if (k == 8) { ne0 = cfg.hidden_dim; ne1 = cfg.dim; }
            spec[n++] = (struct spec){nm, ne0, ne1};
        }
    for (int i = 0; i < n; i++) {
        size_t cnt = (size_t)spec[i].ne0 * (size_t)spec[i].ne1;
        float *d = malloc(cnt * sizeof(float));
        f16_t *h = malloc(cnt * sizeof(f16_t));
        bool norm = spec[i].ne1 == 1;
        float sd = norm ? 0.1f : (strcmp(spec[i].name, "token_embd.weight") == 0 ? 1.0f : 1.0f / sqrtf((float)spec[i].ne0));
        for (size_t k = 0; k < cnt; k++) {
            // norms are exact in f16, since the F16 safetensors writer stores them in f16 too
            d[k] = norm ? f16_to_f32(f32_to_f16(1.0f + sd * rng_normal(&g))) : sd * rng_normal(&g);
            h[k] = f32_to_f16(d[k]);
        }
        tv[i] = (struct tensor_view){.type = QT_F32, .n_dims = norm ? 1 : 2, .ne = {spec[i].ne0, spec[i].ne1, 1, 1},
                                     .data = d, .nbytes = cnt * 4};
        snprintf(tv[i].name, sizeof tv[i].name, "%s", spec[i].name);
        tv16[i] = tv[i];
        if (!norm) {   // the F16 copy: matrices in f16, norms stay f32
            tv16[i].type = QT_F16;
            tv16[i].data = h;
            tv16[i].nbytes = cnt * 2;
        } else {
            free(h);
        }
    }
    char dir[] = "/tmp/llm_fmt_XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    char p_gguf[256], p_gguf16[256], p_st[256], p_st16[256], p_l0[256], p_l1[256], p_tok[256];
    snprintf(p_gguf, 256, "%s/m.f32.gguf", dir);
    snprintf(p_gguf16, 256, "%s/m.f16.gguf", dir);
    snprintf(p_st, 256, "%s/hf32", dir);
    snprintf(p_st16, 256, "%s/hf16", dir);
    snprintf(p_l0, 256, "%s/m.v0.bin", dir);
    snprintf(p_l1, 256, "%s/m.v1.bin", dir);
    snprintf(p_tok, 256, "%s/tokenizer.bin", dir);
    CHECK(gguf_write_model(p_gguf, &cfg, &vf.vocab, tv, n, &e) == 0, "gguf f32: %s", e.msg);
    CHECK(gguf_write_model(p_gguf16, &cfg, &vf.vocab, tv16, n, &e) == 0, "gguf f16: %s", e.msg);
    mkdir(p_st, 0755);
    mkdir(p_st16, 0755);
    CHECK(safetensors_write_folder(p_st, &cfg, &vf.vocab, tv, n, false, &e) == 0, "safetensors: %s", e.msg);
    CHECK(llama2c_write(p_l0, &cfg, tv, n, 0, &e) == 0, "llama2c v0: %s", e.msg);
    CHECK(llama2c_write(p_l1, &cfg, tv, n, 1, &e) == 0, "llama2c v1: %s", e.msg);
    CHECK(llama2c_tokenizer_write(p_tok, &vf.vocab, &e) == 0, "tokenizer.bin: %s", e.msg);

    float *ref = logits_of(p_gguf, NULL, "gguf f32");
    float *l;
    compare(ref, l = logits_of(p_st, NULL, "safetensors f32"), "safetensors f32 vs gguf f32"); free(l);
    compare(ref, l = logits_of(p_l0, p_tok, "llama2c v0"), "llama2c legacy vs gguf f32"); free(l);
    compare(ref, l = logits_of(p_l1, p_tok, "llama2c v1"), "llama2c v1 vs gguf f32"); free(l);
    free(ref);
    // F16 weights: the GGUF F16 model vs a safetensors F16 folder of the same values
    CHECK(safetensors_write_folder(p_st16, &cfg, &vf.vocab, tv, n, true, &e) == 0, "safetensors f16: %s", e.msg);
    ref = logits_of(p_gguf16, NULL, "gguf f16");
    compare(ref, l = logits_of(p_st16, NULL, "safetensors f16"), "safetensors f16 vs gguf f16"); free(l);
    free(ref);

    for (int i = 0; i < n; i++) {
        free((void *)tv[i].data);
        if (tv16[i].data != tv[i].data) free((void *)tv16[i].data);
    }
    model_file_close(&vf);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0, "cleanup");
    return test_end();
}
