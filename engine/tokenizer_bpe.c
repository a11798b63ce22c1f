/* engine/tokenizer_bpe.c: GPT-2 byte-level BPE (SmolLM2, Llama-3, GPT-2 vocabularies).
 * Text -> pre-tokenizer words (the regex of vocab->pre, matched by hand below) -> each byte becomes
 * its GPT-2 "byte character" (printable bytes map to themselves, the other 68 to U+0100..U+0143)
 * -> adjacent pairs merge by lowest merge rank (leftmost on ties) -> ids.
 * Tests: tests/test_tokenizer_bpe.c. */
#include <stdlib.h>

#include "engine/tokenizer_int.h"

// ------------------------------------------------------------------------------------------------
// GPT-2 byte <-> character mapping

// Bytes '!'..'~', 0xA1..0xAC and 0xAE..0xFF are their own code point; the remaining 68 bytes
// (0x00..0x20, 0x7F..0xA0, 0xAD) get U+0100 + their index among those, in byte order.
static uint32_t byte_to_cp(int b) {
    if (b <= 0x20) return 0x100 + (uint32_t)b;
    if (b >= 0x7F && b <= 0xA0) return 0x100 + 33 + (uint32_t)(b - 0x7F);
    if (b == 0xAD) return 0x100 + 67;
    return (uint32_t)b;
}

int bpe_cp_to_byte(uint32_t cp) {
    if (cp < 0x100) {
        bool self = (cp >= 0x21 && cp <= 0x7E) || (cp >= 0xA1 && cp <= 0xAC) || cp >= 0xAE;
        return self ? (int)cp : -1;
    }
    if (cp < 0x100 + 33) return (int)(cp - 0x100);
    if (cp < 0x100 + 67) return (int)(cp - 0x100 - 33 + 0x7F);
    if (cp == 0x100 + 67) return 0xAD;
    return -1;
}

// ------------------------------------------------------------------------------------------------
// Merge table: (left id, right id) -> (rank, merged id)

static uint32_t pair_hash(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return (uint32_t)k;
}

// Finds (a, b); returns the slot index, or -1 (and *empty = the free slot) when absent.
static int64_t pair_find(const struct pair_map *m, int32_t a, int32_t b, uint32_t *empty) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
    for (uint32_t i = pair_hash(key) & m->mask;; i = (i + 1) & m->mask) {
        if (m->keys[i] == key) return i;
        if (m->keys[i] == 0) {
            if (empty) *empty = i;
            return -1;
        }
    }
}

static enum tok_pre pre_from_name(const char *s) {
    static const char *llama3[] = {"llama3", "llama-bpe", "llama-v3", "dbrx", "smaug-bpe"};
    static const char *digits[] = {"smollm", "starcoder", "refact", "codeshell", "command-r"};
    for (size_t i = 0; i < sizeof llama3 / sizeof *llama3; i++)
        if (strcmp(s, llama3[i]) == 0) return PRE_LLAMA3;
    for (size_t i = 0; i < sizeof digits / sizeof *digits; i++)
        if (strcmp(s, digits[i]) == 0) return PRE_DIGITS;
    return PRE_GPT2;  // "gpt2", "gpt-2", "default", "" and anything unknown
}

int bpe_init(struct tokenizer *t, struct err *e) {
    const struct vocab *v = t->v;
    char buf[8];
    for (int b = 0; b < 256; b++) {
        int n = utf8_encode(byte_to_cp(b), buf);
        t->byte_sym[b] = tok_map_get(&t->map, v, buf, (size_t)n);
    }
    t->pre = pre_from_name(v->pre);
    t->ignore_merges = t->pre == PRE_LLAMA3;  // as Hugging Face's Llama-3 tokenizer.json sets

    uint32_t cap = 16;
    while (cap < 2u * (uint32_t)(v->n_merges > 0 ? v->n_merges : 1)) cap <<= 1;
    struct pair_map *m = &t->merges;
    m->keys = calloc(cap, sizeof *m->keys);
    m->rank = malloc(cap * sizeof *m->rank);
    m->id = malloc(cap * sizeof *m->id);
    m->mask = cap - 1;
    size_t maxlen = 0;
    for (int32_t r = 0; r < v->n_merges; r++)
        if (v->merges[r] && strlen(v->merges[r]) > maxlen) maxlen = strlen(v->merges[r]);
    char *cat = malloc(maxlen + 1);
    if (!m->keys || !m->rank || !m->id || !cat) {
        free(cat);
        return ERR(e, ERR_OOM, "out of memory for %d merges", v->n_merges);
    }
    for (int32_t r = 0; r < v->n_merges; r++) {
        const char *s = v->merges[r];
        const char *sp = s && s[0] ? strchr(s + 1, ' ') : NULL;  // "a b"; a may not be empty
        if (!sp) continue;
        size_t na = (size_t)(sp - s), nb = strlen(sp + 1);
        int32_t a = tok_map_get(&t->map, v, s, na), b = tok_map_get(&t->map, v, sp + 1, nb);
        memcpy(cat, s, na);
        memcpy(cat + na, sp + 1, nb);
        int32_t ab = tok_map_get(&t->map, v, cat, na + nb);
        if (a < 0 || b < 0 || ab < 0) continue;  // refers to pieces the vocabulary lacks
        uint32_t slot;
        if (pair_find(m, a, b, &slot) >= 0) continue;  // duplicate merge: the first rank wins
        m->keys[slot] = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
        m->rank[slot] = r;
        m->id[slot] = ab;
    }
    free(cat);
    return ERR_OK;
}

void bpe_free(struct tokenizer *t) {
    free(t->merges.keys);
    free(t->merges.rank);
    free(t->merges.id);
    t->merges.keys = NULL;
    t->merges.rank = t->merges.id = NULL;
}

// ------------------------------------------------------------------------------------------------
// Pre-tokenizers. Each matcher returns the end of the regex match that starts at i in s[0..n);
// n is the end of the current fragment, and the lookahead (?!\S) sees the fragment end as the end.

enum cls { C_L, C_N, C_S, C_O };  // letter, number, white space, other

static uint32_t cp_at(const char *s, size_t i, size_t n, size_t *next) {
    uint32_t cp;
    int len = utf8_decode((const unsigned char *)s + i, n - i, &cp);
    if (len <= 0) { cp = 0xFFFD; len = 1; }  // cannot happen: the text was validated
    *next = i + (size_t)len;
    return cp;
}

static enum cls cls_of(uint32_t cp) {
    if (uni_is_letter(cp)) return C_L;
    if (uni_is_number(cp)) return C_N;
    if (uni_is_space(cp)) return C_S;
    return C_O;
}

static enum cls cls_at(const char *s, size_t i, size_t n) {
    size_t nx;
    return i < n ? cls_of(cp_at(s, i, n, &nx)) : C_S;
}

// End of the run of class c starting at i (at most max characters); *last = start of its last char.
static size_t run_of(const char *s, size_t i, size_t n, enum cls c, int max, size_t *last) {
    size_t j = i, nx;
    for (int k = 0; j < n && k < max; k++) {
        uint32_t cp = cp_at(s, j, n, &nx);
        if (cls_of(cp) != c) break;
        if (last) *last = j;
        j = nx;
    }
    return j;
}

// 's 't 're 've 'm 'll 'd (ASCII case-insensitive when ci): match length or 0.
static size_t contraction(const char *s, size_t i, size_t n, bool ci) {
    if (s[i] != '\'' || i + 1 >= n) return 0;
    char a = s[i + 1], b = i + 2 < n ? s[i + 2] : 0;
    if (ci) {
        a = (char)(a >= 'A' && a <= 'Z' ? a + 32 : a);
        b = (char)(b >= 'A' && b <= 'Z' ? b + 32 : b);
    }
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    return 0;
}

// \s+(?!\S)|\s+ at a white-space character i: the run, less its last character when a
// non-space follows and the run is longer than one character (that space joins the next word).
static size_t space_run(const char *s, size_t i, size_t n) {
    size_t last = i, e = run_of(s, i, n, C_S, 1 << 30, &last);
    if (e == n) return e;
    return last > i ? last : e;
}

// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
static size_t match_gpt2(const char *s, size_t i, size_t n) {
    size_t k = contraction(s, i, n, false);
    if (k) return i + k;
    size_t j = (s[i] == ' ' && i + 1 < n) ? i + 1 : i;  // the optional leading space
    enum cls c0 = cls_at(s, i, n), c1 = cls_at(s, j, n);
    if (c0 == C_L || (j > i && c1 == C_L)) return run_of(s, c0 == C_L ? i : j, n, C_L, 1 << 30, NULL);
    if (c0 == C_N || (j > i && c1 == C_N)) return run_of(s, c0 == C_N ? i : j, n, C_N, 1 << 30, NULL);
    if (c0 == C_O || (j > i && c1 == C_O)) return run_of(s, c0 == C_O ? i : j, n, C_O, 1 << 30, NULL);
    return space_run(s, i, n);
}

// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
// \s*[\r\n]+|\s+(?!\S)|\s+
static size_t match_llama3(const char *s, size_t i, size_t n) {
    size_t k = contraction(s, i, n, true), nx;
    if (k) return i + k;
    uint32_t c = cp_at(s, i, n, &nx);
    enum cls c0 = cls_of(c);
    if (c0 == C_L) return run_of(s, i, n, C_L, 1 << 30, NULL);
    if (c0 != C_N && c != '\r' && c != '\n' && cls_at(s, nx, n) == C_L && nx < n)
        return run_of(s, nx, n, C_L, 1 << 30, NULL);  // one leading non-letter, then letters
    if (c0 == C_N) return run_of(s, i, n, C_N, 3, NULL);
    size_t j = (c == ' ' && nx < n && cls_at(s, nx, n) == C_O) ? nx : i;
    if (cls_at(s, j, n) == C_O) {
        size_t e = run_of(s, j, n, C_O, 1 << 30, NULL);
        while (e < n && (s[e] == '\r' || s[e] == '\n')) e++;
        return e;
    }
    // White space from here on. \s*[\r\n]+ ends right after the run's last line break.
    size_t e = run_of(s, i, n, C_S, 1 << 30, NULL);
    for (size_t p = e; p > i; p--)
        if (s[p - 1] == '\r' || s[p - 1] == '\n') return p;
    return space_run(s, i, n);
}

// ------------------------------------------------------------------------------------------------
// Merging one word

struct bpe_work {
    struct tok_sym *sym;
    struct tok_heap heap;
    char *mapped;  // the word as GPT-2 byte characters (ignore_merges lookup)
};

static int bpe_try_pair(const struct tokenizer *t, struct tok_sym *sym, int32_t l, int32_t r,
                        struct tok_heap *h) {
    if (l < 0 || r < 0 || sym[l].id < 0 || sym[r].id < 0) return ERR_OK;
    int64_t slot = pair_find(&t->merges, sym[l].id, sym[r].id, NULL);
    if (slot < 0) return ERR_OK;
    struct tok_cand c = {.prio = -(double)t->merges.rank[slot], .left = l, .right = r,
                         .new_id = t->merges.id[slot], .size = sym[l].len + sym[r].len};
    return tok_heap_push(h, c);
}

static int bpe_word(const struct tokenizer *t, const char *w, size_t n, struct tok_out *o,
                    struct bpe_work *wk) {
    if (t->ignore_merges) {  // the whole word is a token: take it without merging
        size_t mn = 0;
        for (size_t i = 0; i < n; i++) mn += (size_t)utf8_encode(byte_to_cp((unsigned char)w[i]), wk->mapped + mn);
        int32_t id = tok_map_get(&t->map, t->v, wk->mapped, mn);
        if (id >= 0) {
            tok_emit(o, id);
            return ERR_OK;
        }
    }
    struct tok_sym *sym = wk->sym;
    for (size_t i = 0; i < n; i++)
        sym[i] = (struct tok_sym){.id = t->byte_sym[(unsigned char)w[i]], .off = (uint32_t)i,
                                  .len = 1, .prev = (int32_t)i - 1, .next = (int32_t)i + 1};
    sym[n - 1].next = -1;
    struct tok_heap *h = &wk->heap;
    h->n = 0;
    int rc = ERR_OK;
    for (size_t i = 0; i + 1 < n && !rc; i++) rc = bpe_try_pair(t, sym, (int32_t)i, (int32_t)i + 1, h);
    while (h->n > 0 && !rc) {
        struct tok_cand c = tok_heap_pop(h);
        struct tok_sym *L = &sym[c.left], *R = &sym[c.right];
        if (L->len == 0 || R->len == 0 || L->next != c.right || L->len + R->len != c.size)
            continue;  // stale
        L->len += R->len;
        L->id = c.new_id;
        R->len = 0;
        L->next = R->next;
        if (R->next >= 0) sym[R->next].prev = c.left;
        rc = bpe_try_pair(t, sym, L->prev, c.left, h);
        if (!rc) rc = bpe_try_pair(t, sym, c.left, L->next, h);
    }
    for (int32_t i = 0; i >= 0 && !rc; i = sym[i].next) {
        if (sym[i].id >= 0) tok_emit(o, sym[i].id);
        else if (t->v->unk >= 0) tok_emit(o, t->v->unk);  // a byte the vocabulary lacks
    }
    return rc;
}

// Word iterator over one fragment. PRE_DIGITS: every number character is a word of its own and
// the text between goes through GPT-2's pattern with the digit acting as the end of the text.
struct pretok {
    enum tok_pre pre;
    const char *s;
    size_t n, i, frag_end;  // frag_end: PRE_DIGITS only, end of the current digit-free span
};

static bool pretok_next(struct pretok *p, size_t *start, size_t *end) {
    if (p->i >= p->n) return false;
    size_t i = p->i, nx;
    *start = i;
    if (p->pre == PRE_LLAMA3) {
        *end = match_llama3(p->s, i, p->n);
    } else if (p->pre == PRE_DIGITS) {
        if (i >= p->frag_end) {  // find the next span: one digit, or everything up to a digit
            uint32_t cp = cp_at(p->s, i, p->n, &nx);
            if (uni_is_number(cp)) {
                p->i = *end = nx;
                return true;
            }
            size_t j = nx;
            while (j < p->n && !uni_is_number(cp_at(p->s, j, p->n, &nx))) j = nx;
            p->frag_end = j;
        }
        *end = match_gpt2(p->s, i, p->frag_end);
    } else {
        *end = match_gpt2(p->s, i, p->n);
    }
    p->i = *end;
    return true;
}

int bpe_pretokenize(const char *pre_name, const char *s, size_t n, size_t *ends, int max) {
    struct pretok p = {.pre = pre_from_name(pre_name), .s = s, .n = n};
    size_t a, b;
    int k = 0;
    while (pretok_next(&p, &a, &b)) {
        if (k < max) ends[k] = b;
        k++;
    }
    return k;
}

int bpe_encode(const struct tokenizer *t, const char *s, size_t n, struct tok_out *o, struct err *e) {
    if (n == 0) return ERR_OK;
    struct bpe_work wk = {0};
    wk.sym = malloc(n * sizeof *wk.sym);
    wk.mapped = malloc(2 * n + 1);  // byte characters are U+0021..U+0143: at most 2 bytes each
    int rc = wk.sym && wk.mapped ? ERR_OK : ERR_OOM;
    struct pretok p = {.pre = t->pre, .s = s, .n = n};
    size_t a, b;
    while (!rc && pretok_next(&p, &a, &b)) rc = bpe_word(t, s + a, b - a, o, &wk);
    if (rc) ERR(e, rc, "out of memory encoding %zu bytes", n);
    free(wk.sym);
    free(wk.mapped);
    free(wk.heap.a);
    return rc;
}
