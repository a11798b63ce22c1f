/* engine/tokenizer.c: tokenizer tables, special-token splitting, the SentencePiece BPE encoder and
 * the streaming decoder. The SPM encoder follows SentencePiece's BPE as llama.cpp's
 * llm_tokenizer_spm runs it: the whole text is split into UTF-8 characters, then the adjacent pair
 * whose concatenation is the highest-scoring piece merges (leftmost on ties) until none is left;
 * characters outside the vocabulary become <0xNN> byte tokens. GPT-2 BPE lives in tokenizer_bpe.c.
 * Tests: tests/test_tokenizer_spm.c (llama.cpp's vectors), tests/test_tokenizer_bpe.c. */
#include <stdlib.h>

#include "engine/tokenizer_int.h"

// ------------------------------------------------------------------------------------------------
// Hash map: piece -> id

uint32_t tok_hash(const char *s, size_t n) {
    uint32_t h = 2166136261u;  // FNV-1a
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

int32_t tok_map_get(const struct tok_map *m, const struct vocab *v, const char *s, size_t n) {
    uint32_t h = tok_hash(s, n);
    for (uint32_t i = h & m->mask;; i = (i + 1) & m->mask) {
        int32_t id = m->slots[i].id;
        if (id < 0) return -1;
        if (m->slots[i].hash == h && v->lens[id] == n && memcmp(v->tokens[id], s, n) == 0)
            return id;
    }
}

static int map_build(struct tok_map *m, const struct vocab *v) {
    uint32_t cap = 16;
    while (cap < 2u * (uint32_t)v->n_tokens) cap <<= 1;  // load factor <= 0.5
    m->slots = malloc(cap * sizeof *m->slots);
    if (!m->slots) return ERR_OOM;
    for (uint32_t i = 0; i < cap; i++) m->slots[i].id = -1;
    m->mask = cap - 1;
    for (int32_t id = 0; id < v->n_tokens; id++) {
        const char *s = v->tokens[id] ? v->tokens[id] : "";
        if (tok_map_get(m, v, s, v->lens[id]) >= 0) continue;  // duplicate: keep the lowest id
        uint32_t h = tok_hash(s, v->lens[id]), i = h & m->mask;
        while (m->slots[i].id >= 0) i = (i + 1) & m->mask;
        m->slots[i] = (struct tok_slot){.id = id, .hash = h};
    }
    return ERR_OK;
}

// ------------------------------------------------------------------------------------------------
// UTF-8

int utf8_decode(const unsigned char *s, size_t n, uint32_t *cp) {
    if (n == 0) return 0;
    unsigned c = s[0];
    if (c < 0x80) { *cp = c; return 1; }
    int len;
    uint32_t v;
    unsigned lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) { len = 2; v = c & 0x1F; }
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3; v = c & 0x0F;
        if (c == 0xE0) lo = 0xA0;       // no overlongs
        if (c == 0xED) hi = 0x9F;       // no surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4; v = c & 0x07;
        if (c == 0xF0) lo = 0x90;       // no overlongs
        if (c == 0xF4) hi = 0x8F;       // <= U+10FFFF
    } else return 0;
    if ((size_t)len > n) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    v = (v << 6) | (s[1] & 0x3F);
    for (int i = 2; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        v = (v << 6) | (s[i] & 0x3F);
    }
    *cp = v;
    return len;
}

int utf8_encode(uint32_t cp, char *o) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | cp >> 6); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12); o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18); o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

// ------------------------------------------------------------------------------------------------
// Binary max-heap of merge candidates: higher prio first, then the leftmost pair.

static bool cand_before(const struct tok_cand *a, const struct tok_cand *b) {
    return a->prio > b->prio || (a->prio == b->prio && a->left < b->left);
}

int tok_heap_push(struct tok_heap *h, struct tok_cand c) {
    if (h->n == h->cap) {
        size_t cap = h->cap ? 2 * h->cap : 256;
        struct tok_cand *a = realloc(h->a, cap * sizeof *a);
        if (!a) return ERR_OOM;
        h->a = a;
        h->cap = cap;
    }
    size_t i = h->n++;
    while (i > 0 && cand_before(&c, &h->a[(i - 1) / 2])) {  // sift up
        h->a[i] = h->a[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h->a[i] = c;
    return ERR_OK;
}

struct tok_cand tok_heap_pop(struct tok_heap *h) {
    struct tok_cand top = h->a[0], last = h->a[--h->n];
    size_t i = 0, n = h->n;
    for (;;) {  // sift the last element down from the root
        size_t k = 2 * i + 1;
        if (k >= n) break;
        if (k + 1 < n && cand_before(&h->a[k + 1], &h->a[k])) k++;
        if (!cand_before(&h->a[k], &last)) break;
        h->a[i] = h->a[k];
        i = k;
    }
    if (n) h->a[i] = last;
    return top;
}

// ------------------------------------------------------------------------------------------------
// Construction

static int32_t tok_type(const struct vocab *v, int32_t id) {
    return v->types ? v->types[id] : TOK_NORMAL;
}

// "<0xNN>" with two upper-case hex digits -> NN, else -1.
static int byte_piece_value(const char *s, uint32_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

static int special_cmp(const void *a, const void *b, void *arg) {
    const struct vocab *v = arg;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (v->lens[x] != v->lens[y]) return v->lens[x] > v->lens[y] ? -1 : 1;  // longest first
    return x < y ? -1 : x > y;
}

struct tokenizer *tokenizer_create(const struct vocab *v, struct err *e) {
    if (!v || v->n_tokens <= 0 || !v->tokens || !v->lens) {
        ERR(e, ERR_ARG, "empty vocabulary");
        return NULL;
    }
    if (v->kind != VOCAB_SPM && v->kind != VOCAB_BPE) {
        ERR(e, ERR_UNSUPPORTED, "vocabulary kind %d is neither SentencePiece nor GPT-2 BPE", v->kind);
        return NULL;
    }
    struct tokenizer *t = calloc(1, sizeof *t);
    if (!t) goto oom;
    t->v = v;
    int32_t n = v->n_tokens;
    t->mergeable = calloc((size_t)n, 1);
    t->special = malloc((size_t)n * sizeof *t->special);
    if (!t->mergeable || !t->special || map_build(&t->map, v)) goto oom;

    for (int b = 0; b < 256; b++) t->byte_tok[b] = -1;
    for (int32_t id = 0; id < n; id++) {
        int32_t ty = tok_type(v, id);
        int bv = v->kind == VOCAB_SPM ? byte_piece_value(v->tokens[id], v->lens[id]) : -1;
        if (bv >= 0 && t->byte_tok[bv] < 0) t->byte_tok[bv] = id;
        // SentencePiece never produces control, unknown, unused or byte pieces from plain text.
        bool plain = ty != TOK_CONTROL && ty != TOK_UNKNOWN && ty != TOK_UNUSED && ty != TOK_BYTE &&
                     bv < 0 && id != v->bos && id != v->eos && id != v->unk;
        t->mergeable[id] = plain;
        if ((ty == TOK_CONTROL || ty == TOK_USER_DEFINED || ty == TOK_UNKNOWN) && v->lens[id] > 0) {
            t->special[t->n_special++] = id;
            t->special_first[(unsigned char)v->tokens[id][0]] = true;
        }
    }
    if (v->kind == VOCAB_SPM) {
        // Word-by-word merging is exact when no mergeable piece has a marker after another char.
        const char *sp = v->llama2c_style ? " " : "\xE2\x96\x81";
        size_t sl = strlen(sp);
        t->spm_split = true;
        for (int32_t id = 0; id < n && t->spm_split; id++) {
            const char *p = v->tokens[id];
            uint32_t len = v->lens[id];
            if (!t->mergeable[id]) continue;
            for (uint32_t i = 1; i + sl <= len; i++)
                if (memcmp(p + i, sp, sl) == 0 && (i < sl || memcmp(p + i - sl, sp, sl) != 0))
                    t->spm_split = false;
        }
    }
    qsort_r(t->special, (size_t)t->n_special, sizeof *t->special, special_cmp, (void *)v);

    if (v->kind == VOCAB_BPE) {
        int rc = bpe_init(t, e);
        if (rc) {
            tokenizer_free(t);
            return NULL;
        }
    }
    return t;
oom:
    tokenizer_free(t);
    ERR(e, ERR_OOM, "out of memory building tables for %d tokens", v->n_tokens);
    return NULL;
}

void tokenizer_free(struct tokenizer *t) {
    if (!t) return;
    bpe_free(t);
    free(t->map.slots);
    free(t->mergeable);
    free(t->special);
    free(t);
}

const char *tokenizer_piece(const struct tokenizer *t, int32_t id) {
    if (!t || id < 0 || id >= t->v->n_tokens) return NULL;
    return t->v->tokens[id];
}

int32_t tokenizer_find(const struct tokenizer *t, const char *piece) {
    if (!t || !piece) return -1;
    return tok_map_get(&t->map, t->v, piece, strlen(piece));
}

// ------------------------------------------------------------------------------------------------
// SentencePiece BPE

// Queues the merge of symbols l and r = l.next if their concatenation is a mergeable piece.
static int spm_try_pair(const struct tokenizer *t, const char *w, const struct tok_sym *sym,
                        int32_t l, int32_t r, struct tok_heap *h) {
    if (l < 0 || r < 0) return ERR_OK;
    uint32_t size = sym[l].len + sym[r].len;
    int32_t id = tok_map_get(&t->map, t->v, w + sym[l].off, size);  // spans are adjacent in w
    if (id < 0 || !t->mergeable[id]) return ERR_OK;
    struct tok_cand c = {.prio = t->v->scores ? t->v->scores[id] : 0.0, .left = l, .right = r,
                         .new_id = id, .size = size};
    return tok_heap_push(h, c);
}

static bool is_marker(const char *w, const struct tok_sym *y, const char *sp, size_t sp_len) {
    return y->len == sp_len && memcmp(w + y->off, sp, sp_len) == 0;
}

/* Encodes one fragment: escape spaces to '▁' (llama2.c vocabularies keep ' '), optionally prepend
 * the dummy-prefix space, merge by score, then emit pieces or byte fallback. */
static int spm_encode(const struct tokenizer *t, const char *s, size_t n, bool prefix,
                      struct tok_out *o, struct err *e) {
    const struct vocab *v = t->v;
    if (n == 0) return ERR_OK;
    const char *sp = v->llama2c_style ? " " : "\xE2\x96\x81";  // U+2581 '▁'
    size_t sp_len = strlen(sp);
    char *w = malloc(3 * n + 4);
    struct tok_sym *sym = malloc((n + 1) * sizeof *sym);
    struct tok_heap h = {0};
    int rc = ERR_OK;
    if (!w || !sym) { rc = ERR_OOM; goto done; }

    size_t wn = 0;
    if (prefix && v->add_space_prefix) { memcpy(w, sp, sp_len); wn = sp_len; }
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ') { memcpy(w + wn, sp, sp_len); wn += sp_len; }
        else w[wn++] = s[i];
    }
    // One symbol per UTF-8 character (the text was validated by tokenizer_encode).
    int32_t ns = 0;
    for (size_t i = 0; i < wn;) {
        uint32_t cp;
        int len = utf8_decode((const unsigned char *)w + i, wn - i, &cp);
        if (len <= 0) len = 1;  // cannot happen on validated input
        int32_t id = tok_map_get(&t->map, v, w + i, (size_t)len);
        sym[ns] = (struct tok_sym){.id = id >= 0 && t->mergeable[id] ? id : -1, .off = (uint32_t)i,
                                   .len = (uint32_t)len, .prev = ns - 1, .next = ns + 1};
        ns++;
        i += (size_t)len;
    }
    // Merge one word at a time (a word starts at each run of space markers) when spm_split says
    // no piece crosses such a boundary: the result is the same and the heap stays small.
    for (int32_t c0 = 0, c1; c0 < ns && !rc; c0 = c1) {
        c1 = c0 + 1;
        if (t->spm_split) {
            while (c1 < ns && !(is_marker(w, &sym[c1], sp, sp_len) &&
                                !is_marker(w, &sym[c1 - 1], sp, sp_len)))
                c1++;
        } else {
            c1 = ns;
        }
        sym[c0].prev = -1;
        sym[c1 - 1].next = -1;
        h.n = 0;
        for (int32_t i = c0; i + 1 < c1 && !rc; i++) rc = spm_try_pair(t, w, sym, i, i + 1, &h);
        while (h.n > 0 && !rc) {
            struct tok_cand c = tok_heap_pop(&h);
            struct tok_sym *L = &sym[c.left], *R = &sym[c.right];
            if (L->len == 0 || R->len == 0 || L->next != c.right || L->len + R->len != c.size)
                continue;  // stale: one side merged since this candidate was queued
            L->len += R->len;
            L->id = c.new_id;
            R->len = 0;
            L->next = R->next;
            if (R->next >= 0) sym[R->next].prev = c.left;
            rc = spm_try_pair(t, w, sym, L->prev, c.left, &h);
            if (!rc) rc = spm_try_pair(t, w, sym, c.left, L->next, &h);
        }
        for (int32_t i = c0; i >= 0 && !rc; i = sym[i].next) {
            if (sym[i].id >= 0) { tok_emit(o, sym[i].id); continue; }
            // Not a piece: byte fallback when every byte has a token, else one <unk> per character.
            bool all = true;
            for (uint32_t k = 0; k < sym[i].len; k++)
                all = all && t->byte_tok[(unsigned char)w[sym[i].off + k]] >= 0;
            if (all) {
                for (uint32_t k = 0; k < sym[i].len; k++)
                    tok_emit(o, t->byte_tok[(unsigned char)w[sym[i].off + k]]);
            } else if (v->unk >= 0) {
                tok_emit(o, v->unk);
            }
        }
    }
done:
    if (rc) ERR(e, rc, "out of memory encoding %zu bytes", n);
    free(w);
    free(sym);
    free(h.a);
    return rc;
}

// ------------------------------------------------------------------------------------------------
// Encode: validate, split at special tokens, encode each fragment

// Length of the special token matching at s[0..n) (longest first), 0 if none; *id set.
static size_t special_at(const struct tokenizer *t, const char *s, size_t n, int32_t *id) {
    if (!t->special_first[(unsigned char)s[0]]) return 0;
    for (int k = 0; k < t->n_special; k++) {
        int32_t sid = t->special[k];
        uint32_t len = t->v->lens[sid];
        if (len <= n && memcmp(s, t->v->tokens[sid], len) == 0) {
            *id = sid;
            return len;
        }
    }
    return 0;
}

int tokenizer_encode(const struct tokenizer *t, const char *text, size_t len, bool add_bos,
                     bool parse_special, int32_t *out, int max, struct err *e) {
    if (!t || (!text && len) || (!out && max > 0) || max < 0) {
        ERR(e, ERR_ARG, "bad arguments");
        return -1;
    }
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        int k = utf8_decode((const unsigned char *)text + i, len - i, &cp);
        if (k <= 0) {
            ERR(e, ERR_ARG, "invalid UTF-8 at byte %zu (0x%02X)", i, (unsigned char)text[i]);
            return -1;
        }
        i += (size_t)k;
    }
    struct tok_out o = {.ids = out, .n = 0, .max = max};
    if (add_bos && t->v->bos >= 0) tok_emit(&o, t->v->bos);

    bool prev_special = true;  // SPM: the dummy prefix goes before the first fragment and after
                               // every special token (llama.cpp's rule)
    size_t pos = 0;
    while (pos < len) {
        size_t end = len, slen = 0;
        int32_t sid = -1;
        if (parse_special && t->n_special) {
            for (size_t i = pos; i < len; i++) {
                slen = special_at(t, text + i, len - i, &sid);
                if (slen) { end = i; break; }
            }
        }
        if (end > pos) {
            int rc = t->v->kind == VOCAB_SPM
                         ? spm_encode(t, text + pos, end - pos, prev_special, &o, e)
                         : bpe_encode(t, text + pos, end - pos, &o, e);
            if (rc) return -1;
            prev_special = false;
        }
        if (slen) {
            tok_emit(&o, sid);
            prev_special = true;
            pos = end + slen;
        } else {
            pos = len;
        }
    }
    if (o.overflow) {
        ERR(e, ERR_ARG, "text needs %d tokens, more than max %d", o.n, max);
        return -1;
    }
    return o.n;
}

// ------------------------------------------------------------------------------------------------
// Streaming decode

void detok_init(struct detok *d) {
    memset(d, 0, sizeof *d);
    d->prev = -1;
}

struct sink {
    char *out;
    size_t cap, n;
    bool full;  // something did not fit: write nothing more (no half characters)
};

static void sink_put(struct sink *k, const void *p, size_t n) {
    if (k->full || k->cap == 0 || n > k->cap - 1 - k->n) {  // keep room for the NUL
        k->full = true;
        return;
    }
    memcpy(k->out + k->n, p, n);
    k->n += n;
}

static size_t sink_end(struct sink *k) {
    if (k->cap) k->out[k->n] = 0;
    return k->n;
}

static const char REPLACEMENT[3] = {'\xEF', '\xBF', '\xBD'};  // U+FFFD

// Expected length of the UTF-8 sequence starting with b; 0 for bytes that cannot start one.
static int utf8_need(unsigned b) {
    return b < 0x80 ? 1 : b >= 0xC2 && b <= 0xDF ? 2 : b >= 0xE0 && b <= 0xEF ? 3
         : b >= 0xF0 && b <= 0xF4 ? 4 : 0;
}

// Feeds one byte through the UTF-8 assembler: complete characters go to k, broken ones to U+FFFD.
static void feed_byte(struct detok *d, struct sink *k, unsigned char b) {
    for (;;) {
        if (d->n_pending == 0) {
            int need = utf8_need(b);
            if (need == 1) sink_put(k, &b, 1);
            else if (need == 0) sink_put(k, REPLACEMENT, 3);
            else d->pending[d->n_pending++] = b;
            return;
        }
        unsigned lead = d->pending[0], lo = 0x80, hi = 0xBF;
        if (d->n_pending == 1) {  // the second byte has tighter bounds (see utf8_decode)
            if (lead == 0xE0) lo = 0xA0;
            if (lead == 0xED) hi = 0x9F;
            if (lead == 0xF0) lo = 0x90;
            if (lead == 0xF4) hi = 0x8F;
        }
        if (b >= lo && b <= hi) {
            d->pending[d->n_pending++] = b;
            if (d->n_pending == utf8_need(lead)) {
                sink_put(k, d->pending, (size_t)d->n_pending);
                d->n_pending = 0;
            }
            return;
        }
        sink_put(k, REPLACEMENT, 3);  // broken sequence; b starts afresh
        d->n_pending = 0;
    }
}

static void feed(struct detok *d, struct sink *k, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) feed_byte(d, k, (unsigned char)s[i]);
}

size_t tokenizer_decode_token(const struct tokenizer *t, struct detok *d, int32_t id, char *out,
                              size_t cap) {
    struct sink k = {out, cap, 0, false};
    const struct vocab *v = t->v;
    if (id < 0 || id >= v->n_tokens) return sink_end(&k);
    int32_t prev = d->prev, ty = tok_type(v, id);
    d->prev = id;
    if (ty == TOK_CONTROL || id == v->bos || id == v->eos) return sink_end(&k);
    if (ty == TOK_UNKNOWN || id == v->unk) {
        feed(d, &k, REPLACEMENT, 3);
        return sink_end(&k);
    }
    const char *p = v->tokens[id];
    size_t n = v->lens[id];
    if (v->kind == VOCAB_SPM) {
        int bv = byte_piece_value(p, (uint32_t)n);
        if (bv >= 0) {
            feed_byte(d, &k, (unsigned char)bv);
            return sink_end(&k);
        }
        bool drop = prev >= 0 && prev == v->bos;  // SentencePiece strips the dummy-prefix space
        for (size_t i = 0; i < n;) {
            if (!v->llama2c_style && n - i >= 3 && memcmp(p + i, "\xE2\x96\x81", 3) == 0) {
                if (!(drop && i == 0)) feed_byte(d, &k, ' ');
                i += 3;
            } else {
                if (!(drop && i == 0 && p[i] == ' ')) feed_byte(d, &k, (unsigned char)p[i]);
                i++;
            }
        }
        return sink_end(&k);
    }
    // BPE: user-defined tokens are stored as plain text; others as GPT-2 byte characters.
    if (ty == TOK_USER_DEFINED) {
        feed(d, &k, p, n);
        return sink_end(&k);
    }
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int len = utf8_decode((const unsigned char *)p + i, n - i, &cp);
        if (len <= 0) { feed_byte(d, &k, (unsigned char)p[i]); i++; continue; }
        int b = bpe_cp_to_byte(cp);
        if (b >= 0) feed_byte(d, &k, (unsigned char)b);
        else feed(d, &k, p + i, (size_t)len);  // not a byte character: pass through
        i += (size_t)len;
    }
    return sink_end(&k);
}

size_t detok_flush(struct detok *d, char *out, size_t cap) {
    struct sink k = {out, cap, 0, false};
    if (d->n_pending) sink_put(&k, REPLACEMENT, 3);
    d->n_pending = 0;
    return sink_end(&k);
}
