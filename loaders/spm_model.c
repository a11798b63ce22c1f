/* loaders/spm_model.c: SentencePiece tokenizer.model (a protobuf ModelProto) -> struct vocab.
 * Only the wire format is parsed: ModelProto field 1 (repeated SentencePiece {1: piece, 2: score
 * (float), 3: type}) and NormalizerSpec (field 3) add_dummy_prefix (its field 3); every other
 * field is skipped by wire type. Every varint and length is bounds-checked.
 * Test: tests/test_loader_llama2c.c (tokenizer.model vs tokenizer.bin). */
#include "loaders/loader.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct pb {
    const unsigned char *p;
    size_t n, pos;     // p[0..n) is the current message; pos is relative to the file via base
    size_t base;       // file offset of p[0]
    const char *path;
    struct err *e;
};

static int pb_fail(struct pb *b, const char *field, const char *what) {
    return err_set(b->e, ERR_FORMAT, b->path, "%s at byte %zu: %s", field, b->base + b->pos, what);
}

static int pb_varint(struct pb *b, const char *field, uint64_t *out) {
    uint64_t v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (b->pos >= b->n) return pb_fail(b, field, "truncated varint");
        unsigned char c = b->p[b->pos++];
        if (shift == 63 && c > 1) return pb_fail(b, field, "varint overflows 64 bits");
        v |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            *out = v;
            return ERR_OK;
        }
    }
    return pb_fail(b, field, "varint longer than 10 bytes");
}

/* Reads a length-delimited payload: *sub covers it, b->pos moves past it. */
static int pb_bytes(struct pb *b, const char *field, struct pb *sub) {
    uint64_t len = 0;
    int rc = pb_varint(b, field, &len);
    if (rc) return rc;
    if (len > b->n - b->pos) return pb_fail(b, field, "length runs past the end of the message");
    *sub = (struct pb){b->p + b->pos, (size_t)len, 0, b->base + b->pos, b->path, b->e};
    b->pos += (size_t)len;
    return ERR_OK;
}

/* Skips one field of the given wire type. */
static int pb_skip(struct pb *b, int wt, const char *field) {
    uint64_t v;
    struct pb sub;
    switch (wt) {
    case 0: return pb_varint(b, field, &v);
    case 1: if (b->n - b->pos < 8) return pb_fail(b, field, "truncated fixed64"); b->pos += 8; return ERR_OK;
    case 2: return pb_bytes(b, field, &sub);
    case 5: if (b->n - b->pos < 4) return pb_fail(b, field, "truncated fixed32"); b->pos += 4; return ERR_OK;
    default: return pb_fail(b, field, "unsupported wire type (groups or corrupt)");
    }
}

static int pb_key(struct pb *b, uint32_t *field, int *wt) {
    uint64_t k = 0;
    int rc = pb_varint(b, "field key", &k);
    if (rc) return rc;
    *field = (uint32_t)(k >> 3);
    *wt = (int)(k & 7);
    if (*field == 0 || k >> 3 > 0x1fffffff) return pb_fail(b, "field key", "invalid field number");
    return ERR_OK;
}

/* One SentencePiece message. */
static int parse_piece(struct pb *b, struct pb *piece, float *score, int *type) {
    piece->p = NULL;
    piece->n = 0;
    *score = 0.0f;
    *type = TOK_NORMAL;   // proto default NORMAL = 1
    bool have_piece = false;
    while (b->pos < b->n) {
        uint32_t f;
        int wt, rc;
        if ((rc = pb_key(b, &f, &wt))) return rc;
        if (f == 1 && wt == 2) {
            if ((rc = pb_bytes(b, "piece", piece))) return rc;
            have_piece = true;
        } else if (f == 2 && wt == 5) {
            if (b->n - b->pos < 4) return pb_fail(b, "score", "truncated float");
            memcpy(score, b->p + b->pos, 4);
            b->pos += 4;
        } else if (f == 3 && wt == 0) {
            uint64_t t;
            if ((rc = pb_varint(b, "type", &t))) return rc;
            if (t < 1 || t > 6) return pb_fail(b, "type", "piece type not in 1..6");
            *type = (int)t;   // sentencepiece's enum values equal enum token_type's
        } else if ((rc = pb_skip(b, wt, "piece field"))) {
            return rc;
        }
    }
    if (!have_piece) return pb_fail(b, "piece", "SentencePiece without a piece string");
    return ERR_OK;
}

int spm_model_load(struct vocab *v, const char *path, struct err *e) {
    vocab_free(v);
    FILE *f = fopen(path, "rb");
    if (!f) return err_set(e, ERR_IO, path, "cannot open");
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size > (1ull << 31)) {
        fclose(f);
        return err_set(e, ERR_IO, path, "not a regular file or larger than 2 GiB");
    }
    size_t n = (size_t)st.st_size;
    unsigned char *buf = malloc(n ? n : 1);
    if (!buf) { fclose(f); return err_set(e, ERR_OOM, path, "out of memory"); }
    if (fread(buf, 1, n, f) != n) { free(buf); fclose(f); return err_set(e, ERR_IO, path, "read error"); }
    fclose(f);

    int rc = ERR_OK;
    bool add_prefix = true;   // NormalizerSpec.add_dummy_prefix defaults to true
    // pass 1: count pieces (each is at least 2 bytes, so the count is bounded by the size)
    struct pb b = {buf, n, 0, 0, path, e};
    int64_t count = 0;
    while (b.pos < b.n) {
        uint32_t fld;
        int wt;
        struct pb sub;
        if ((rc = pb_key(&b, &fld, &wt))) goto done;
        if (fld == 1 && wt == 2) {
            if ((rc = pb_bytes(&b, "pieces", &sub))) goto done;
            if (++count > LOADER_MAX_VOCAB) { rc = pb_fail(&b, "pieces", "more than LOADER_MAX_VOCAB"); goto done; }
        } else if (fld == 3 && wt == 2) {   // NormalizerSpec
            if ((rc = pb_bytes(&b, "normalizer_spec", &sub))) goto done;
            while (sub.pos < sub.n) {
                uint32_t f2;
                int wt2;
                if ((rc = pb_key(&sub, &f2, &wt2))) goto done;
                if (f2 == 3 && wt2 == 0) {
                    uint64_t x;
                    if ((rc = pb_varint(&sub, "add_dummy_prefix", &x))) goto done;
                    add_prefix = x != 0;
                } else if ((rc = pb_skip(&sub, wt2, "normalizer field"))) {
                    goto done;
                }
            }
        } else if ((rc = pb_skip(&b, wt, "model field"))) {
            goto done;
        }
    }
    if (count == 0) { rc = err_set(e, ERR_FORMAT, path, "pieces at byte 0: no SentencePiece entries (not a tokenizer.model?)"); goto done; }

    v->kind = VOCAB_SPM;
    v->n_tokens = (int32_t)count;
    v->tokens = vocab_alloc(v, (size_t)count * sizeof *v->tokens);
    v->lens = vocab_alloc(v, (size_t)count * sizeof *v->lens);
    v->scores = vocab_alloc(v, (size_t)count * sizeof *v->scores);
    v->types = vocab_alloc(v, (size_t)count * sizeof *v->types);
    if (!v->tokens || !v->lens || !v->scores || !v->types) { rc = err_set(e, ERR_OOM, path, "out of memory"); goto done; }
    v->bos = v->eos = v->unk = v->pad = v->eot = -1;
    b.pos = 0;
    for (int32_t i = 0; b.pos < b.n;) {
        uint32_t fld;
        int wt;
        struct pb sub, piece;
        if ((rc = pb_key(&b, &fld, &wt))) goto done;
        if (!(fld == 1 && wt == 2)) {
            if ((rc = pb_skip(&b, wt, "model field"))) goto done;
            continue;
        }
        if ((rc = pb_bytes(&b, "pieces", &sub))) goto done;
        float score;
        int type;
        if ((rc = parse_piece(&sub, &piece, &score, &type))) goto done;
        if (piece.n > LOADER_MAX_STRING) { rc = pb_fail(&sub, "piece", "piece longer than 16 MiB"); goto done; }
        v->tokens[i] = vocab_strdup(v, (const char *)piece.p, piece.n);
        if (!v->tokens[i]) { rc = err_set(e, ERR_OOM, path, "out of memory"); goto done; }
        v->lens[i] = (uint32_t)piece.n;
        v->scores[i] = isfinite(score) ? score : 0.0f;
        v->types[i] = type;
        if (type == TOK_UNKNOWN && v->unk < 0) v->unk = i;
        if (type == TOK_CONTROL && piece.n == 3 && !memcmp(piece.p, "<s>", 3)) v->bos = i;
        if (type == TOK_CONTROL && piece.n == 4 && !memcmp(piece.p, "</s>", 4)) v->eos = i;
        if (type == TOK_CONTROL && piece.n == 5 && !memcmp(piece.p, "<pad>", 5)) v->pad = i;
        i++;
    }
    v->add_bos = true;
    v->add_space_prefix = add_prefix;
    v->llama2c_style = false;
    rc = ERR_OK;
done:
    free(buf);
    if (rc) vocab_free(v);
    return rc;
}
