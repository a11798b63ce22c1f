/* loaders/json_min.c: strict JSON parser into an arena-backed tree (see json_min.h).
 * Recursive descent; children of an open container are collected on one shared scratch stack and
 * copied into the arena when the container closes, so every array/object is contiguous and
 * json_at is O(1). Test: tests/test_loader_safetensors.c */
#include "loaders/json_min.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

// ------------------------------------------------------------------------------------------------
// Arena: chunks of at least 1 MiB, bump-allocated, 16-byte aligned

struct chunk {
    struct chunk *next;
    size_t used, cap;
    _Alignas(16) unsigned char mem[];
};

static void *arena_alloc(void **arena, size_t n) {
    n = (n + 15) & ~(size_t)15;
    struct chunk *c = *arena;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > (1u << 20) ? n : (1u << 20);
        struct chunk *nc = malloc(sizeof *nc + cap);
        if (!nc) return NULL;
        nc->next = c;
        nc->used = 0;
        nc->cap = cap;
        *arena = c = nc;
    }
    void *p = c->mem + c->used;
    c->used += n;
    return p;
}

static void arena_free(void *arena) {
    for (struct chunk *c = arena, *next; c; c = next) {
        next = c->next;
        free(c);
    }
}

// ------------------------------------------------------------------------------------------------
// Parser state

struct parser {
    const unsigned char *s;
    size_t n, pos;
    const char *name;
    struct err *e;
    void *arena;
    struct json *stack;   // scratch: children of every open container
    size_t sp, scap;
    char *sbuf;           // scratch for decoding one string
    size_t sbuf_cap;
    int depth;
};

static int fail(struct parser *p, size_t off, const char *what) {
    return ERR(p->e, ERR_FORMAT, "%s: json at byte %zu: %s", p->name, off, what);
}

static int oom(struct parser *p) {
    return ERR(p->e, ERR_OOM, "%s: json at byte %zu: out of memory", p->name, p->pos);
}

static void skip_ws(struct parser *p) {
    while (p->pos < p->n) {
        unsigned char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->pos++;
    }
}

static int push(struct parser *p, const struct json *v) {
    if (p->sp == p->scap) {
        size_t cap = p->scap ? p->scap * 2 : 256;
        struct json *ns = realloc(p->stack, cap * sizeof *ns);
        if (!ns) return oom(p);
        p->stack = ns;
        p->scap = cap;
    }
    p->stack[p->sp++] = *v;
    return ERR_OK;
}

static int sbuf_put(struct parser *p, size_t *len, const char *bytes, size_t k) {
    if (p->sbuf_cap - *len < k + 1) {
        size_t cap = p->sbuf_cap ? p->sbuf_cap : 256;
        while (cap - *len < k + 1) cap *= 2;
        char *nb = realloc(p->sbuf, cap);
        if (!nb) return oom(p);
        p->sbuf = nb;
        p->sbuf_cap = cap;
    }
    memcpy(p->sbuf + *len, bytes, k);
    *len += k;
    return ERR_OK;
}

static int hex4(struct parser *p, size_t at, uint32_t *out) {
    if (p->n - at < 4) return fail(p, at, "truncated \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = p->s[at + i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return fail(p, at + i, "bad hex digit in \\u escape");
        v = v * 16 + (uint32_t)d;
    }
    *out = v;
    return ERR_OK;
}

static size_t utf8_encode(uint32_t cp, char *o) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | cp >> 6); o[1] = (char)(0x80 | (cp & 63)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12); o[1] = (char)(0x80 | (cp >> 6 & 63));
        o[2] = (char)(0x80 | (cp & 63));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18); o[1] = (char)(0x80 | (cp >> 12 & 63));
    o[2] = (char)(0x80 | (cp >> 6 & 63)); o[3] = (char)(0x80 | (cp & 63));
    return 4;
}

/* Length of the well-formed UTF-8 sequence at s[0..avail), 0 if malformed (RFC 3629: no
 * overlongs, no surrogates, max U+10FFFF). */
static size_t utf8_valid(const unsigned char *s, size_t avail) {
    unsigned char c = s[0];
    size_t k;
    uint32_t cp, min;
    if (c < 0x80) return 1;
    if ((c & 0xE0) == 0xC0) { k = 2; cp = c & 0x1F; min = 0x80; }
    else if ((c & 0xF0) == 0xE0) { k = 3; cp = c & 0x0F; min = 0x800; }
    else if ((c & 0xF8) == 0xF0) { k = 4; cp = c & 0x07; min = 0x10000; }
    else return 0;
    if (avail < k) return 0;
    for (size_t i = 1; i < k; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = cp << 6 | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return k;
}

/* Parses a string starting at the opening quote; the decoded bytes go to the arena. */
static int parse_string(struct parser *p, const char **out, uint32_t *out_len) {
    size_t start = p->pos, len = 0;
    p->pos++;  // opening quote
    for (;;) {
        if (p->pos >= p->n) return fail(p, start, "unterminated string");
        unsigned char c = p->s[p->pos];
        if (c == '"') { p->pos++; break; }
        if (c < 0x20) return fail(p, p->pos, "control character in string");
        if (c == '\\') {
            if (p->pos + 1 >= p->n) return fail(p, p->pos, "truncated escape");
            unsigned char x = p->s[p->pos + 1];
            char ch;
            switch (x) {
            case '"': ch = '"'; break;
            case '\\': ch = '\\'; break;
            case '/': ch = '/'; break;
            case 'b': ch = '\b'; break;
            case 'f': ch = '\f'; break;
            case 'n': ch = '\n'; break;
            case 'r': ch = '\r'; break;
            case 't': ch = '\t'; break;
            case 'u': {
                uint32_t cp, lo;
                size_t at = p->pos;
                if (hex4(p, p->pos + 2, &cp)) return p->e ? p->e->code : ERR_FORMAT;
                p->pos += 6;
                if (cp >= 0xDC00 && cp <= 0xDFFF) return fail(p, at, "lone low surrogate");
                if (cp >= 0xD800 && cp <= 0xDBFF) {  // must be followed by \uDC00..\uDFFF
                    if (p->n - p->pos < 2 || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u')
                        return fail(p, at, "high surrogate without a low surrogate");
                    if (hex4(p, p->pos + 2, &lo)) return p->e ? p->e->code : ERR_FORMAT;
                    if (lo < 0xDC00 || lo > 0xDFFF)
                        return fail(p, p->pos, "high surrogate without a low surrogate");
                    p->pos += 6;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                }
                char u[4];
                size_t k = utf8_encode(cp, u);
                if (sbuf_put(p, &len, u, k)) return ERR_OOM;
                continue;
            }
            default: return fail(p, p->pos, "invalid escape");
            }
            if (sbuf_put(p, &len, &ch, 1)) return ERR_OOM;
            p->pos += 2;
            continue;
        }
        // a run of plain bytes, validated as UTF-8
        size_t run = p->pos;
        while (p->pos < p->n) {
            unsigned char b = p->s[p->pos];
            if (b == '"' || b == '\\' || b < 0x20) break;
            size_t k = utf8_valid(p->s + p->pos, p->n - p->pos);
            if (!k) return fail(p, p->pos, "invalid UTF-8 in string");
            p->pos += k;
        }
        if (sbuf_put(p, &len, (const char *)p->s + run, p->pos - run)) return ERR_OOM;
    }
    if (len > UINT32_MAX - 1) return fail(p, start, "string too long");
    char *dst = arena_alloc(&p->arena, len + 1);
    if (!dst) return oom(p);
    if (len) memcpy(dst, p->sbuf, len);
    dst[len] = 0;
    *out = dst;
    *out_len = (uint32_t)len;
    return ERR_OK;
}

static int parse_number(struct parser *p, struct json *v) {
    size_t start = p->pos, i = p->pos;
    const unsigned char *s = p->s;
    if (i < p->n && s[i] == '-') i++;
    if (i >= p->n || !(s[i] >= '0' && s[i] <= '9')) return fail(p, start, "bad number");
    if (s[i] == '0') {
        i++;
        if (i < p->n && s[i] >= '0' && s[i] <= '9') return fail(p, start, "leading zero in number");
    } else {
        while (i < p->n && s[i] >= '0' && s[i] <= '9') i++;
    }
    if (i < p->n && s[i] == '.') {
        i++;
        if (i >= p->n || !(s[i] >= '0' && s[i] <= '9')) return fail(p, i, "digit expected after '.'");
        while (i < p->n && s[i] >= '0' && s[i] <= '9') i++;
    }
    if (i < p->n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < p->n && (s[i] == '+' || s[i] == '-')) i++;
        if (i >= p->n || !(s[i] >= '0' && s[i] <= '9')) return fail(p, i, "digit expected in exponent");
        while (i < p->n && s[i] >= '0' && s[i] <= '9') i++;
    }
    char buf[512];
    if (i - start >= sizeof buf) return fail(p, start, "number too long");
    memcpy(buf, s + start, i - start);
    buf[i - start] = 0;
    v->type = JSON_NUMBER;
    v->num = strtod(buf, NULL);   // syntax already checked; overflow gives +-inf
    p->pos = i;
    return ERR_OK;
}

static int parse_value(struct parser *p, struct json *v);

/* Parses '[' ... ']' or '{' ... '}' at p->pos; children land in the arena. */
static int parse_container(struct parser *p, struct json *v, bool object) {
    size_t start = p->pos, base = p->sp;
    if (++p->depth > JSON_MAX_DEPTH) return fail(p, start, "nesting deeper than 128");
    char close = object ? '}' : ']';
    p->pos++;
    skip_ws(p);
    if (p->pos < p->n && p->s[p->pos] == close) {
        p->pos++;
    } else {
        for (;;) {
            struct json kid;
            memset(&kid, 0, sizeof kid);
            skip_ws(p);
            if (object) {
                if (p->pos >= p->n || p->s[p->pos] != '"') return fail(p, p->pos, "member name expected");
                if (parse_string(p, &kid.key, &kid.key_len)) return p->e ? p->e->code : ERR_FORMAT;
                skip_ws(p);
                if (p->pos >= p->n || p->s[p->pos] != ':') return fail(p, p->pos, "':' expected");
                p->pos++;
                skip_ws(p);
            }
            const char *key = kid.key;
            uint32_t key_len = kid.key_len;
            int rc = parse_value(p, &kid);
            if (rc) return rc;
            kid.key = key;
            kid.key_len = key_len;
            if (push(p, &kid)) return ERR_OOM;
            skip_ws(p);
            if (p->pos >= p->n) return fail(p, start, object ? "unterminated object" : "unterminated array");
            if (p->s[p->pos] == ',') { p->pos++; skip_ws(p);
                if (p->pos < p->n && p->s[p->pos] == close) return fail(p, p->pos, "trailing comma");
                continue; }
            if (p->s[p->pos] == close) { p->pos++; break; }
            return fail(p, p->pos, object ? "',' or '}' expected" : "',' or ']' expected");
        }
    }
    size_t n = p->sp - base;
    if (n > UINT32_MAX) return fail(p, start, "too many elements");
    v->type = object ? JSON_OBJECT : JSON_ARRAY;
    v->len = (uint32_t)n;
    if (n) {
        v->kids = arena_alloc(&p->arena, n * sizeof *v->kids);
        if (!v->kids) return oom(p);
        memcpy(v->kids, p->stack + base, n * sizeof *v->kids);
    }
    p->sp = base;
    p->depth--;
    return ERR_OK;
}

static int parse_lit(struct parser *p, const char *lit, enum json_type t, struct json *v) {
    size_t k = strlen(lit);
    if (p->n - p->pos < k || memcmp(p->s + p->pos, lit, k)) return fail(p, p->pos, "unexpected character");
    p->pos += k;
    v->type = t;
    return ERR_OK;
}

static int parse_value(struct parser *p, struct json *v) {
    skip_ws(p);
    memset(v, 0, sizeof *v);
    v->off = p->pos;
    if (p->pos >= p->n) return fail(p, p->pos, "value expected, got end of text");
    switch (p->s[p->pos]) {
    case '{': return parse_container(p, v, true);
    case '[': return parse_container(p, v, false);
    case '"': v->type = JSON_STRING; return parse_string(p, &v->str, &v->len);
    case 't': return parse_lit(p, "true", JSON_TRUE, v);
    case 'f': return parse_lit(p, "false", JSON_FALSE, v);
    case 'n': return parse_lit(p, "null", JSON_NULL, v);
    default: return parse_number(p, v);
    }
}

int json_parse(struct json_doc *doc, const char *text, size_t len, const char *name, struct err *e) {
    memset(doc, 0, sizeof *doc);
    if (!name) name = "json";
    if (len > JSON_MAX_BYTES) return ERR(e, ERR_FORMAT, "%s: json at byte 0: text of %zu bytes exceeds the 1 GiB limit", name, len);
    struct parser p = { .s = (const unsigned char *)text, .n = len, .name = name, .e = e };
    struct json *root = arena_alloc(&p.arena, sizeof *root);
    int rc = root ? ERR_OK : oom(&p);
    if (!rc) rc = parse_value(&p, root);
    if (!rc) {
        skip_ws(&p);
        if (p.pos != p.n) rc = fail(&p, p.pos, "trailing characters after the value");
    }
    free(p.stack);
    free(p.sbuf);
    if (rc) {
        arena_free(p.arena);
        return rc;
    }
    doc->root = root;
    doc->arena = p.arena;
    return ERR_OK;
}

void json_free(struct json_doc *doc) {
    if (!doc) return;
    arena_free(doc->arena);
    doc->arena = NULL;
    doc->root = NULL;
}

// ------------------------------------------------------------------------------------------------
// Lookups

const struct json *json_get(const struct json *obj, const char *key) {
    if (!obj || obj->type != JSON_OBJECT || !key) return NULL;
    size_t k = strlen(key);
    for (uint32_t i = 0; i < obj->len; i++) {
        const struct json *m = &obj->kids[i];
        if (m->key_len == k && !memcmp(m->key, key, k)) return m;
    }
    return NULL;
}

size_t json_len(const struct json *v) {
    return v && (v->type == JSON_ARRAY || v->type == JSON_OBJECT) ? v->len : 0;
}

const struct json *json_at(const struct json *v, size_t i) {
    return i < json_len(v) ? &v->kids[i] : NULL;
}

const char *json_str(const struct json *v) {
    return v && v->type == JSON_STRING ? v->str : NULL;
}

bool json_num(const struct json *v, double *out) {
    if (!v || v->type != JSON_NUMBER) return false;
    *out = v->num;
    return true;
}

bool json_int(const struct json *v, int64_t *out) {
    if (!v || v->type != JSON_NUMBER) return false;
    double d = v->num;
    if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0) || d != floor(d)) return false;
    *out = (int64_t)d;
    return true;
}

bool json_bool(const struct json *v, bool *out) {
    if (!v || (v->type != JSON_TRUE && v->type != JSON_FALSE)) return false;
    *out = v->type == JSON_TRUE;
    return true;
}

bool json_is_null(const struct json *v) {
    return v && v->type == JSON_NULL;
}

const char *json_get_str(const struct json *obj, const char *key) {
    return json_str(json_get(obj, key));
}
