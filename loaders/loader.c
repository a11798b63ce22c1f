/* loaders/loader.c: the format-independent part of loading: dispatch by content, mmap bookkeeping,
 * owned buffers, the vocabulary arena and the Llama shape check every loader's output goes through.
 * Test: tests/test_loader_gguf.c (and the other tests/test_loader_*.c). */
#include "loaders/loader.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

// ------------------------------------------------------------------------------------------------
// Vocabulary arena: a list of zeroed chunks; allocations bump inside the head chunk.

struct arena_chunk {
    struct arena_chunk *next;
    size_t cap, used;
    _Alignas(16) unsigned char data[];
};

#define ARENA_CHUNK (64 * 1024)

void *vocab_alloc(struct vocab *v, size_t nbytes) {
    if (nbytes == 0) nbytes = 1;
    if (nbytes > SIZE_MAX - 64) return NULL;
    nbytes = (nbytes + 15) & ~(size_t)15;  // keep every allocation 16-byte aligned
    struct arena_chunk *head = v->arena;
    if (head && head->cap - head->used >= nbytes) {
        void *p = head->data + head->used;
        head->used += nbytes;
        return p;
    }
    // Big requests get a chunk of their own, linked behind the head so its free tail stays usable.
    bool own = nbytes > ARENA_CHUNK / 4;
    size_t cap = own ? nbytes : ARENA_CHUNK;
    struct arena_chunk *c = calloc(1, sizeof *c + cap);
    if (!c) return NULL;
    c->cap = cap;
    c->used = nbytes;
    if (own && head) {
        c->next = head->next;
        head->next = c;
    } else {
        c->next = head;
        v->arena = c;
    }
    return c->data;
}

char *vocab_strdup(struct vocab *v, const char *s, size_t len) {
    if (len == SIZE_MAX) return NULL;
    char *p = vocab_alloc(v, len + 1);
    if (!p) return NULL;
    if (len) memcpy(p, s, len);
    p[len] = 0;
    return p;
}

void vocab_free(struct vocab *v) {
    struct arena_chunk *c = v->arena;
    while (c) {
        struct arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    memset(v, 0, sizeof *v);
    v->bos = v->eos = v->unk = v->pad = v->eot = -1;
}

// ------------------------------------------------------------------------------------------------
// Mappings and owned buffers

int loader_map_file(struct model_file *mf, const char *path, const void **addr, size_t *size,
                    struct err *e) {
    *addr = NULL;
    *size = 0;
    if (mf->n_maps >= LOADER_MAX_MAPS)
        return err_set(e, ERR_UNSUPPORTED, path, "more than %d mapped files", LOADER_MAX_MAPS);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return err_set(e, ERR_IO, path, "cannot open: %s", strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int code = err_set(e, ERR_IO, path, "cannot stat: %s", strerror(errno));
        close(fd);
        return code;
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return err_set(e, ERR_IO, path, "is a directory, expected a file");
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return err_set(e, ERR_IO, path, "not a regular file");
    }
    if (st.st_size == 0) {
        close(fd);
        return err_set(e, ERR_FORMAT, path, "empty file (0 bytes)");
    }
    if ((uint64_t)st.st_size > SIZE_MAX) {
        close(fd);
        return err_set(e, ERR_UNSUPPORTED, path, "file too large to map");
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int mmap_errno = errno;
    close(fd);  // the mapping keeps its own reference to the file
    if (p == MAP_FAILED)
        return err_set(e, ERR_IO, path, "cannot mmap %" PRIu64 " bytes: %s", (uint64_t)st.st_size,
                       strerror(mmap_errno));
    mf->maps[mf->n_maps].addr = p;
    mf->maps[mf->n_maps].size = (size_t)st.st_size;
    mf->n_maps++;
    *addr = p;
    *size = (size_t)st.st_size;
    return ERR_OK;
}

void *loader_own(struct model_file *mf, size_t nbytes) {
    if (mf->n_owned == mf->cap_owned) {
        int cap = mf->cap_owned ? mf->cap_owned * 2 : 16;
        void **p = realloc(mf->owned, (size_t)cap * sizeof *p);
        if (!p) return NULL;
        mf->owned = p;
        mf->cap_owned = cap;
    }
    void *p = calloc(1, nbytes ? nbytes : 1);
    if (!p) return NULL;
    mf->owned[mf->n_owned++] = p;
    return p;
}

void model_file_close(struct model_file *mf) {
    if (!mf) return;
    for (int i = 0; i < mf->n_maps; i++)
        if (mf->maps[i].addr) munmap(mf->maps[i].addr, mf->maps[i].size);
    for (int i = 0; i < mf->n_owned; i++) free(mf->owned[i]);
    free(mf->owned);
    vocab_free(&mf->vocab);
    memset(mf, 0, sizeof *mf);
    mf->file_type = -1;
    mf->vocab.bos = mf->vocab.eos = mf->vocab.unk = mf->vocab.pad = mf->vocab.eot = -1;
}

// ------------------------------------------------------------------------------------------------
// Dispatch

#define GGUF_MAGIC_LE 0x46554747u  // "GGUF" read as a little-endian uint32

/* Our native model.bin starts with "LLMQ" (NATIVE_MAGIC in native.c). llama2.c .bin files have
 * no magic (legacy: 7 int32 hyper-parameters) or "ak42" as a uint32 (bytes "24ka", v1/v2), so
 * everything else goes to llama2c_open, which checks its own header. */
#define NATIVE_MAGIC_BYTES "LLMQ"

int model_file_open(struct model_file *mf, const char *path, const char *tokenizer_path,
                    struct err *e) {
    memset(mf, 0, sizeof *mf);
    mf->file_type = -1;
    mf->vocab.bos = mf->vocab.eos = mf->vocab.unk = mf->vocab.pad = mf->vocab.eot = -1;
    if (!path || !*path) return ERR(e, ERR_ARG, "no model path given");

    struct stat st;
    if (stat(path, &st) != 0) return err_set(e, ERR_IO, path, "cannot open: %s", strerror(errno));
    int rc;
    if (S_ISDIR(st.st_mode)) {
        rc = safetensors_open(mf, path, e);
    } else {
        unsigned char magic[8] = {0};
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) return err_set(e, ERR_IO, path, "cannot open: %s", strerror(errno));
        ssize_t got = read(fd, magic, sizeof magic);
        close(fd);
        if (got < 0) return err_set(e, ERR_IO, path, "cannot read: %s", strerror(errno));
        if (got == 0) return err_set(e, ERR_FORMAT, path, "empty file (0 bytes)");
        uint32_t m;
        memcpy(&m, magic, 4);
        if (got >= 4 && m == GGUF_MAGIC_LE)
            rc = gguf_open(mf, path, e);
        else if (got >= 4 && memcmp(magic, NATIVE_MAGIC_BYTES, 4) == 0)
            rc = native_open(mf, path, e);
        else
            rc = llama2c_open(mf, path, tokenizer_path, e);
    }
    if (rc == ERR_OK && mf->has_weights) rc = model_file_validate(mf, e);
    if (rc != ERR_OK) model_file_close(mf);
    return rc;
}

const struct tensor_view *model_file_find(const struct model_file *mf, const char *name) {
    for (int i = 0; i < mf->n_tensors; i++)
        if (strcmp(mf->tensors[i].name, name) == 0) return &mf->tensors[i];
    return NULL;
}

// ------------------------------------------------------------------------------------------------
// Validation: everything the forward pass will index, checked once here.

/* Checks one tensor: present, type known, shape (ne0, ne1) with ne[2..3] == 1, and nbytes equal to
 * what the type says. Vectors (the RMSNorm weights) must be f32/f16/bf16. */
static int check_tensor(const struct model_file *mf, const char *name, int64_t ne0, int64_t ne1,
                        bool vector, struct err *e) {
    const struct tensor_view *t = model_file_find(mf, name);
    if (!t) return err_set(e, ERR_FORMAT, mf->path, "%s: tensor missing", name);
    if ((int)t->type < 0 || t->type >= QT_COUNT || qtype_traits[t->type].internal)
        return err_set(e, ERR_UNSUPPORTED, mf->path, "%s at byte %" PRIu64 ": unknown type %d", name,
                       t->offset, (int)t->type);
    int64_t ne[4] = {1, 1, 1, 1};
    if (t->n_dims < 1 || t->n_dims > 4)
        return err_set(e, ERR_FORMAT, mf->path, "%s at byte %" PRIu64 ": n_dims %d", name, t->offset,
                       t->n_dims);
    for (int i = 0; i < t->n_dims; i++) ne[i] = t->ne[i];
    if (ne[0] != ne0 || ne[1] != ne1 || ne[2] != 1 || ne[3] != 1)
        return err_set(e, ERR_FORMAT, mf->path,
                       "%s at byte %" PRIu64 ": shape [%" PRId64 ", %" PRId64 ", %" PRId64 ", %" PRId64
                       "], expected [%" PRId64 ", %" PRId64 "]%s",
                       name, t->offset, ne[0], ne[1], ne[2], ne[3], ne0, ne1,
                       vector ? " (a vector)" : "");
    if (vector && t->type != QT_F32 && t->type != QT_F16 && t->type != QT_BF16)
        return err_set(e, ERR_UNSUPPORTED, mf->path, "%s at byte %" PRIu64 ": norm weights of type %s",
                       name, t->offset, qtype_traits[t->type].name);
    uint64_t nbytes;
    if (!qtype_nbytes(t->type, ne0, ne1, &nbytes) || nbytes != t->nbytes)
        return err_set(e, ERR_FORMAT, mf->path,
                       "%s at byte %" PRIu64 ": %" PRIu64 " bytes, type %s needs %" PRIu64, name,
                       t->offset, t->nbytes, qtype_traits[t->type].name, nbytes);
    if (!t->data) return err_set(e, ERR_FORMAT, mf->path, "%s: no data", name);
    return ERR_OK;
}

static int check_config(const struct model_file *mf, struct err *e) {
    const struct model_config *c = &mf->cfg;
#define CFG_POS(field, max)                                                                        \
    if (c->field <= 0 || (int64_t)c->field > (int64_t)(max))                                       \
        return err_set(e, ERR_FORMAT, mf->path, "config: " #field " = %d, expected 1..%lld",       \
                       c->field, (long long)(max));
    CFG_POS(dim, LOADER_MAX_DIM);
    CFG_POS(hidden_dim, LOADER_MAX_DIM);
    CFG_POS(n_layers, LOADER_MAX_LAYERS);
    CFG_POS(n_heads, LOADER_MAX_DIM);
    CFG_POS(n_kv_heads, LOADER_MAX_DIM);
    CFG_POS(vocab_size, LOADER_MAX_VOCAB);
    CFG_POS(seq_len, LOADER_MAX_DIM);
    CFG_POS(head_dim, LOADER_MAX_DIM);
#undef CFG_POS
    if (c->n_heads % c->n_kv_heads != 0)
        return err_set(e, ERR_FORMAT, mf->path, "config: n_heads %d not a multiple of n_kv_heads %d",
                       c->n_heads, c->n_kv_heads);
    if (c->head_dim % 2 != 0)
        return err_set(e, ERR_FORMAT, mf->path, "config: head_dim %d is odd (RoPE rotates pairs)",
                       c->head_dim);
    if ((int64_t)c->n_heads * c->head_dim > LOADER_MAX_DIM)
        return err_set(e, ERR_FORMAT, mf->path, "config: n_heads * head_dim too large");
    if (!(c->rope_theta > 0.0f) || !isfinite(c->rope_theta))
        return err_set(e, ERR_FORMAT, mf->path, "config: rope_theta %g", (double)c->rope_theta);
    if (!(c->norm_eps > 0.0f) || !isfinite(c->norm_eps))
        return err_set(e, ERR_FORMAT, mf->path, "config: norm_eps %g", (double)c->norm_eps);
    if (mf->vocab.n_tokens > c->vocab_size)
        return err_set(e, ERR_FORMAT, mf->path,
                       "config: tokenizer has %d tokens but the embedding only %d rows",
                       mf->vocab.n_tokens, c->vocab_size);
    return ERR_OK;
}

int model_file_validate(const struct model_file *mf, struct err *e) {
    if (!mf->has_weights)
        return err_set(e, ERR_FORMAT, mf->path, "vocabulary-only file: no weights to run");
    int rc = check_config(mf, e);
    if (rc) return rc;
    const struct model_config *c = &mf->cfg;
    int64_t dim = c->dim, hid = c->hidden_dim;
    int64_t q_dim = (int64_t)c->n_heads * c->head_dim, kv_dim = (int64_t)c->n_kv_heads * c->head_dim;
    if ((rc = check_tensor(mf, "token_embd.weight", dim, c->vocab_size, false, e))) return rc;
    if ((rc = check_tensor(mf, "output_norm.weight", dim, 1, true, e))) return rc;
    if (!c->tied_output && (rc = check_tensor(mf, "output.weight", dim, c->vocab_size, false, e)))
        return rc;
    static const struct {
        const char *suffix;
        int ne0, ne1;  // 0 dim, 1 hidden, 2 q_dim, 3 kv_dim, 4 one
    } layer[] = {
        {"attn_norm", 0, 4}, {"attn_q", 0, 2},   {"attn_k", 0, 3},   {"attn_v", 0, 3},
        {"attn_output", 2, 0}, {"ffn_norm", 0, 4}, {"ffn_gate", 0, 1}, {"ffn_up", 0, 1},
        {"ffn_down", 1, 0},
    };
    const int64_t sz[5] = {dim, hid, q_dim, kv_dim, 1};
    for (int l = 0; l < c->n_layers; l++) {
        for (size_t k = 0; k < sizeof layer / sizeof layer[0]; k++) {
            char name[96];
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, layer[k].suffix);
            rc = check_tensor(mf, name, sz[layer[k].ne0], sz[layer[k].ne1], layer[k].ne1 == 4, e);
            if (rc) return rc;
        }
    }
    return ERR_OK;
}
