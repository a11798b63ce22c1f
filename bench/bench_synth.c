/* bench/bench_synth.c: synthetic Llama GGUFs with real shapes, a real tokenizer vocabulary and random
 * weights, for benchmarking models we cannot download. Weights are generated tensor by tensor into a
 * temporary file-backed mapping (page cache, reclaimable), so a 13 GB 7B f16 file needs no 13 GB of
 * anonymous RAM; the temporary file needs as much free disk as the model.
 * Test: tests/test_bench_synth.c; docs/BENCH.md */
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bench/bench.h"
#include "kernels/cpu/threadpool.h"
#include "loaders/gguf_write.h"

// ------------------------------------------------------------------------------------------------
// Presets: the published shapes of each model (config.json of the Hugging Face checkpoints)

#define PRESET(nm, d, hd, nl, nh, nkv, voc, ctx, theta, tied)                                      \
    {.name = nm,                                                                                   \
     .cfg = {.dim = d, .hidden_dim = hd, .n_layers = nl, .n_heads = nh, .n_kv_heads = nkv,           \
             .vocab_size = voc, .seq_len = ctx, .head_dim = (d) / (nh), .rope_theta = theta,         \
             .norm_eps = 1e-5f, .rope = ROPE_INTERLEAVED, .tied_output = tied, .arch = "llama",     \
             .name = nm}}

const struct synth_preset synth_presets[] = {
    PRESET("tinyllama", 2048, 5632, 22, 32, 4, 32000, 2048, 10000.0f, false),
    PRESET("llama-3.2-1b", 2048, 8192, 16, 32, 8, 128256, 131072, 500000.0f, true),
    PRESET("smollm2-135m", 576, 1536, 30, 9, 3, 49152, 8192, 100000.0f, true),
    PRESET("llama-2-7b", 4096, 11008, 32, 32, 32, 32000, 4096, 10000.0f, false),
    {.name = NULL},
};

const struct synth_preset *synth_preset_find(const char *name) {
    for (const struct synth_preset *p = synth_presets; p->name; p++)
        if (strcmp(p->name, name) == 0) return p;
    return NULL;
}

int synth_type_from_name(const char *s) {
    if (!strcmp(s, "f32")) return QT_F32;
    if (!strcmp(s, "f16")) return QT_F16;
    if (!strcmp(s, "q8_0")) return QT_GGML_Q8_0;
    if (!strcmp(s, "q4_0")) return QT_GGML_Q4_0;
    return -1;
}

// ------------------------------------------------------------------------------------------------
// Layout and bytes per token

static void set_view(struct tensor_view *v, const char *name, enum qtype type, int64_t ne0,
                     int64_t ne1) {
    memset(v, 0, sizeof *v);
    snprintf(v->name, sizeof v->name, "%s", name);
    v->type = type;
    v->n_dims = ne1 > 1 ? 2 : 1;
    v->ne[0] = ne0;
    v->ne[1] = ne1;
    v->ne[2] = v->ne[3] = 1;
    v->nbytes = qtype_row_bytes(type, ne0) * (uint64_t)ne1;
}

int synth_tensor_layout(const struct model_config *c, enum qtype type, struct tensor_view *v, int cap) {
    int need = 2 + !c->tied_output + 9 * c->n_layers, n = 0;
    if (need > cap) return -1;
    int64_t kv_dim = (int64_t)c->n_kv_heads * c->head_dim, q_dim = (int64_t)c->n_heads * c->head_dim;
    set_view(&v[n++], "token_embd.weight", type, c->dim, c->vocab_size);
    set_view(&v[n++], "output_norm.weight", QT_F32, c->dim, 1);
    if (!c->tied_output) set_view(&v[n++], "output.weight", type, c->dim, c->vocab_size);
    for (int l = 0; l < c->n_layers; l++) {
        static const char *names[9] = {"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                                       "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"};
        // (ne0 = row length = fan_in, ne1 = rows = fan_out); norms are f32 vectors as in llama.cpp
        int64_t shape[9][2] = {{c->dim, 1}, {c->dim, q_dim}, {c->dim, kv_dim}, {c->dim, kv_dim},
                               {q_dim, c->dim}, {c->dim, 1}, {c->dim, c->hidden_dim},
                               {c->dim, c->hidden_dim}, {c->hidden_dim, c->dim}};
        for (int k = 0; k < 9; k++) {
            char name[96];
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, names[k]);
            set_view(&v[n++], name, shape[k][1] == 1 ? QT_F32 : type, shape[k][0], shape[k][1]);
        }
    }
    return n;
}

uint64_t bench_bytes_per_token(const struct tensor_view *v, int n, bool tied_output) {
    // decode reads every matrix and norm once; the embedding table is only gathered (one row,
    // excluded like engine_weight_bytes_per_token) unless it doubles as the output head
    uint64_t sum = 0;
    for (int i = 0; i < n; i++) {
        if (!strcmp(v[i].name, "token_embd.weight") && !tied_output) continue;
        int64_t rows = 1;
        for (int k = 1; k < v[i].n_dims; k++) rows *= v[i].ne[k];
        sum += qtype_row_bytes(v[i].type, v[i].ne[0]) * (uint64_t)rows;
    }
    return sum;
}

// ------------------------------------------------------------------------------------------------
// Vocabulary: a real one, padded with "<extra_N>" (type UNUSED) or truncated to vocab_size

int synth_vocab(struct vocab *v, const char *path, int vocab_size, struct err *e) {
    struct model_file mf;
    memset(v, 0, sizeof *v);
    v->bos = v->eos = v->unk = v->pad = v->eot = -1;
    int rc = model_file_open(&mf, path, NULL, e);
    if (rc) return rc;
    const struct vocab *s = &mf.vocab;
    if (s->n_tokens <= 0) {
        model_file_close(&mf);
        return ERR(e, ERR_FORMAT, "%s: no tokenizer vocabulary", path);
    }
    int n = vocab_size;
    v->kind = s->kind;
    v->n_tokens = n;
    v->tokens = vocab_alloc(v, (size_t)n * sizeof *v->tokens);
    v->lens = vocab_alloc(v, (size_t)n * sizeof *v->lens);
    v->scores = vocab_alloc(v, (size_t)n * sizeof *v->scores);
    v->types = vocab_alloc(v, (size_t)n * sizeof *v->types);
    if (!v->tokens || !v->lens || !v->scores || !v->types) goto oom;
    for (int i = 0; i < n; i++) {
        if (i < s->n_tokens) {
            v->tokens[i] = vocab_strdup(v, s->tokens[i], s->lens[i]);
            v->lens[i] = s->lens[i];
            v->scores[i] = s->scores ? s->scores[i] : 0.0f;
            v->types[i] = s->types ? s->types[i] : TOK_NORMAL;
        } else {
            char buf[32];
            int len = snprintf(buf, sizeof buf, "<extra_%d>", i - s->n_tokens);
            v->tokens[i] = vocab_strdup(v, buf, (size_t)len);
            v->lens[i] = (uint32_t)len;
            v->scores[i] = -1e9f;   // never preferred by the SPM merge loop
            v->types[i] = TOK_UNUSED;
        }
        if (!v->tokens[i]) goto oom;
    }
    if (s->kind == VOCAB_BPE && s->n_merges > 0) {
        v->merges = vocab_alloc(v, (size_t)s->n_merges * sizeof *v->merges);
        if (!v->merges) goto oom;
        for (int i = 0; i < s->n_merges; i++)
            if (!(v->merges[i] = vocab_strdup(v, s->merges[i], strlen(s->merges[i])))) goto oom;
        v->n_merges = s->n_merges;
    }
    // special ids survive only if they are still inside the (possibly truncated) vocabulary
#define KEEP(id) ((id) >= 0 && (id) < n ? (id) : -1)
    v->bos = KEEP(s->bos);
    v->eos = KEEP(s->eos);
    v->unk = KEEP(s->unk);
    v->pad = KEEP(s->pad);
    v->eot = KEEP(s->eot);
#undef KEEP
    v->add_bos = s->add_bos;
    v->add_space_prefix = s->add_space_prefix;
    v->llama2c_style = s->llama2c_style;
    memcpy(v->pre, s->pre, sizeof v->pre);
    model_file_close(&mf);
    return ERR_OK;
oom:
    model_file_close(&mf);
    vocab_free(v);
    return ERR(e, ERR_OOM, "vocabulary of %d tokens", vocab_size);
}

// ------------------------------------------------------------------------------------------------
// Weight generation: each row has its own PRNG stream, so the file is the same for any thread count

struct gen_job {
    const struct tensor_view *v;
    void *dst;
    int tensor_index;
    uint64_t seed;
    float stddev;     // 0: constant 1 (norm weights)
    float **rowbuf;   // one f32 row per thread
};

static void gen_worker(void *arg, int ith, int nth) {
    struct gen_job *j = arg;
    int64_t ne0 = j->v->ne[0], rows = j->v->ne[1];
    size_t rb = qtype_row_bytes(j->v->type, ne0);
    float *buf = j->rowbuf[ith];
    for (int64_t r = ith; r < rows; r += nth) {
        struct bench_rng g;
        bench_rng_seed(&g, j->seed ^ ((uint64_t)j->tensor_index << 40) ^ (uint64_t)r * 0x9E3779B1u);
        if (j->stddev == 0) {
            for (int64_t i = 0; i < ne0; i++) buf[i] = 1.0f;
        } else {
            // Irwin-Hall(4): the sum of four 16-bit uniforms, centred and scaled to unit variance
            // (var of one U(0,1) is 1/12), is close to normal within +-3.46 sd and needs one PRNG
            // call and no log/cos per weight, which makes a 7B file several times faster to make
            const float scale = j->stddev * 1.7320508f / 65536.0f;   // sqrt(12 / 4) / 2^16
            for (int64_t i = 0; i < ne0; i++) {
                uint64_t u = bench_rng_u64(&g);
                float s4 = (float)(u & 0xffff) + (float)(u >> 16 & 0xffff) +
                           (float)(u >> 32 & 0xffff) + (float)(u >> 48);
                buf[i] = (s4 - 131070.0f) * scale;   // 4 * (2^16 - 1) / 2 centres it
            }
        }
        qtype_traits[j->v->type].quantize_row((char *)j->dst + (size_t)r * rb, buf, ne0);
    }
}

/* Weight scale: std = 0.5 / sqrt(fan_in) keeps every matmul output at about half the rms of its
 * normalized input, so the residual stream grows slowly and stays finite over 30+ layers. */
static float weight_std(const struct tensor_view *v) {
    if (v->n_dims == 1) return 0.0f;
    if (!strcmp(v->name, "token_embd.weight")) return 1.0f;
    return 0.5f / sqrtf((float)v->ne[0]);
}

int synth_make_model(const struct synth_opts *o, struct err *e) {
    const struct model_config *c = &o->cfg;
    if (c->n_layers < 1 || c->n_layers > LOADER_MAX_LAYERS || c->dim < 1 || c->n_heads < 1 ||
        c->n_kv_heads < 1 || c->n_heads % c->n_kv_heads || c->vocab_size < 1)
        return ERR(e, ERR_ARG, "bad model config");
    if (!qtype_traits[o->type].quantize_row) return ERR(e, ERR_UNSUPPORTED, "type has no quantizer");
    int group = qtype_traits[o->type].group;
    if (c->dim % group || c->hidden_dim % group || (c->n_heads * c->head_dim) % group)
        return ERR(e, ERR_ARG, "dims must be multiples of %d for %s", group,
                   qtype_traits[o->type].name);

    int cap = 3 + 9 * c->n_layers;
    struct tensor_view *views = calloc((size_t)cap, sizeof *views);
    if (!views) return ERR(e, ERR_OOM, "tensor list");
    int n = synth_tensor_layout(c, o->type, views, cap);
    uint64_t total = 0;
    for (int i = 0; i < n; i++) total += (views[i].nbytes + 4095) & ~(uint64_t)4095;

    struct vocab voc;
    int rc = synth_vocab(&voc, o->vocab_path, c->vocab_size, e);
    if (rc) {
        free(views);
        return rc;
    }

    // temporary file-backed mapping next to the output; unlinked at once, so it never outlives us
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.weights.tmp", o->out_path);
    int fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) {
        vocab_free(&voc);
        free(views);
        return ERR(e, ERR_IO, "cannot create %s", tmp);
    }
    unlink(tmp);
    unsigned char *map = MAP_FAILED;
    if (ftruncate(fd, (off_t)total) == 0)
        map = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        vocab_free(&voc);
        free(views);
        return ERR(e, ERR_IO, "cannot map %llu bytes of temporary space next to %s",
                   (unsigned long long)total, o->out_path);
    }

    int nth = cpu_count();
    struct threadpool *tp = threadpool_create(nth);
    float **rowbuf = calloc((size_t)nth, sizeof *rowbuf);
    int64_t max_row = 0;
    for (int i = 0; i < n; i++) max_row = views[i].ne[0] > max_row ? views[i].ne[0] : max_row;
    bool ok = tp && rowbuf;
    for (int i = 0; ok && i < nth; i++) ok = (rowbuf[i] = malloc((size_t)max_row * sizeof(float)));
    if (!ok) {
        rc = ERR(e, ERR_OOM, "generation buffers");
        goto done;
    }
    double t0 = bench_now();
    uint64_t off = 0, done_bytes = 0;
    for (int i = 0; i < n; i++) {
        struct gen_job j = {.v = &views[i], .dst = map + off, .tensor_index = i, .seed = o->seed,
                            .stddev = weight_std(&views[i]), .rowbuf = rowbuf};
        threadpool_run(tp, gen_worker, &j);
        views[i].data = map + off;
        // hand the pages to the page cache: they stay dirty there, but leave our resident set
        if (views[i].nbytes >= (64u << 20)) madvise(map + off, views[i].nbytes, MADV_DONTNEED);
        off += (views[i].nbytes + 4095) & ~(uint64_t)4095;
        done_bytes += views[i].nbytes;
        if (o->verbose)
            fprintf(stderr, "\rmake-model: [%3d/%d] %-28s %6.1f%% of %.2f GB, %.0fs   ", i + 1, n,
                    views[i].name, 100.0 * done_bytes / total, total / 1e9, bench_now() - t0);
    }
    if (o->verbose) fprintf(stderr, "\nmake-model: writing %s\n", o->out_path);
    madvise(map, total, MADV_SEQUENTIAL);
    rc = gguf_write_model(o->out_path, c, &voc, views, n, e);
    if (o->verbose && !rc)
        fprintf(stderr, "make-model: wrote %s (%d tensors, %.2f GB) in %.1fs\n", o->out_path, n,
                total / 1e9, bench_now() - t0);
done:
    for (int i = 0; rowbuf && i < nth; i++) free(rowbuf[i]);
    free(rowbuf);
    if (tp) threadpool_destroy(tp);
    munmap(map, total);
    vocab_free(&voc);
    free(views);
    return rc;
}
