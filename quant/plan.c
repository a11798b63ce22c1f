/* quant/plan.c: parser and lookup for the mixed-precision bit plan (syntax in quant/plan.h).
 * Test: tests/test_quant_opt.c (parser cases and error messages). */
#include "quant/plan.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

static const char *const plan_kinds[] = {"attn_q", "attn_k", "attn_v", "attn_output",
                                         "ffn_gate", "ffn_up", "ffn_down"};
#define N_PLAN_KINDS (sizeof plan_kinds / sizeof plan_kinds[0])

/* Copies a validated kind name (<= 11 chars) into the rule. */
static void set_kind(struct quant_rule *r, const char *s) {
    size_t l = strlen(s);
    if (l >= sizeof r->kind) l = sizeof r->kind - 1;
    memcpy(r->kind, s, l);
    r->kind[l] = '\0';
}

static bool is_layer_kind(const char *s) {
    for (size_t i = 0; i < N_PLAN_KINDS; i++)
        if (strcmp(s, plan_kinds[i]) == 0) return true;
    return false;
}

// ------------------------------------------------------------------------------------------------
// Parsing

/* Value: bits (2,3,4,8,16,32) or a type name that has a quantizer. */
static int parse_value(const char *v, enum qtype *out, const char *tok, struct err *e) {
    char *end;
    errno = 0;
    long bits = strtol(v, &end, 10);
    int t;
    if (*v && *end == '\0' && errno == 0) {
        t = (bits >= 0 && bits <= 64) ? qtype_for_bits((int)bits) : -1;
        if (t < 0)
            return ERR(e, ERR_ARG, "bad rule '%s': %ld bits is not one of 2, 3, 4, 8, 16, 32", tok, bits);
    } else {
        t = qtype_from_name(v);
        if (t < 0) return ERR(e, ERR_ARG, "bad rule '%s': unknown type '%s'", tok, v);
        if (!qtype_traits[t].quantize_row)
            return ERR(e, ERR_ARG, "bad rule '%s': type %s is load-only and cannot be a target",
                       tok, qtype_traits[t].name);
    }
    *out = (enum qtype)t;
    return ERR_OK;
}

/* Non-negative decimal layer number, consumed from *s. */
static bool parse_layer(const char **s, int *out) {
    if (!isdigit((unsigned char)**s)) return false;
    long v = 0;
    while (isdigit((unsigned char)**s)) {
        v = v * 10 + (**s - '0');
        if (v > 1000000) return false;
        (*s)++;
    }
    *out = (int)v;
    return true;
}

/* One "key=value" token (already trimmed, NUL-terminated, writable). */
static int parse_rule(struct quant_plan *p, char *tok, struct err *e) {
    char orig[128];
    snprintf(orig, sizeof orig, "%s", tok);
    char *eq = strchr(tok, '=');
    if (!eq) return ERR(e, ERR_ARG, "bad rule '%s': expected key=value", orig);
    *eq = '\0';
    char *key = tok, *val = eq + 1;
    // trim around '='
    for (char *k = eq - 1; k >= key && isspace((unsigned char)*k); k--) *k = '\0';
    while (isspace((unsigned char)*val)) val++;
    if (!*key) return ERR(e, ERR_ARG, "bad rule '%s': empty key", orig);
    if (!*val) return ERR(e, ERR_ARG, "bad rule '%s': empty value", orig);
    size_t kl = strlen(key);
    if (kl > 7 && strcmp(key + kl - 7, ".weight") == 0) key[kl - 7] = '\0';

    enum qtype t = QT_F32;
    int rc = parse_value(val, &t, orig, e);
    if (rc) return rc;
    if (strcmp(key, "default") == 0) {
        p->default_type = t;
        return ERR_OK;
    }
    struct quant_rule r = {.layer_lo = -1, .layer_hi = -1, .type = t};
    if (strcmp(key, "output") == 0 || strcmp(key, "token_embd") == 0) {
        set_kind(&r, key);
    } else if (strncmp(key, "blk.", 4) == 0) {
        const char *s = key + 4;
        if (!parse_layer(&s, &r.layer_lo))
            return ERR(e, ERR_ARG, "bad rule '%s': expected a layer number after 'blk.'", orig);
        r.layer_hi = r.layer_lo;
        if (*s == '-') {
            s++;
            if (!parse_layer(&s, &r.layer_hi))
                return ERR(e, ERR_ARG, "bad rule '%s': expected blk.A-B", orig);
            if (r.layer_hi < r.layer_lo)
                return ERR(e, ERR_ARG, "bad rule '%s': empty layer range %d-%d", orig, r.layer_lo,
                           r.layer_hi);
        }
        if (*s == '.') {
            s++;
            if (!is_layer_kind(s))
                return ERR(e, ERR_ARG, "bad rule '%s': unknown tensor kind '%s'", orig, s);
            set_kind(&r, s);
        } else if (*s) {
            return ERR(e, ERR_ARG, "bad rule '%s': unexpected '%s' after the layer", orig, s);
        }
    } else if (is_layer_kind(key)) {
        r.layer_lo = 0, r.layer_hi = 1 << 30;   // every layer
        set_kind(&r, key);
    } else {
        return ERR(e, ERR_ARG,
                   "bad rule '%s': unknown key '%s' (want default, output, token_embd, blk.N, "
                   "blk.A-B, blk.N.<kind> or a kind such as ffn_down)", orig, key);
    }
    if (p->n_rules >= QUANT_PLAN_MAX_RULES)
        return ERR(e, ERR_ARG, "bad rule '%s': more than %d rules", orig, QUANT_PLAN_MAX_RULES);
    p->rules[p->n_rules++] = r;
    return ERR_OK;
}

/* Splits text on ',' and newlines; '#' comments to the end of the line. where: "" or "file:line". */
static int parse_text(struct quant_plan *p, const char *text, const char *path, struct err *e) {
    int line = 1;
    const char *s = text;
    while (*s) {
        const char *end = s;
        while (*end && *end != ',' && *end != '\n' && *end != '#') end++;
        char tok[128];
        const char *a = s, *b = end;
        while (a < b && isspace((unsigned char)*a)) a++;
        while (b > a && isspace((unsigned char)b[-1])) b--;
        if (b > a) {
            if ((size_t)(b - a) >= sizeof tok)
                return ERR(e, ERR_ARG, "%s%s%.*s...: rule too long", path ? path : "",
                           path ? ": " : "", 40, a);
            memcpy(tok, a, (size_t)(b - a));
            tok[b - a] = '\0';
            int rc = parse_rule(p, tok, e);
            if (rc) {
                if (path) {   // prefix "file:line: "
                    char msg[sizeof e->msg];
                    snprintf(msg, sizeof msg, "%s", e->msg);
                    ERR(e, rc, "%s:%d: %s", path, line, msg);
                }
                return rc;
            }
        }
        if (*end == '#')
            while (*end && *end != '\n') end++;
        if (*end == '\n') line++;
        s = *end ? end + 1 : end;
    }
    return ERR_OK;
}

int quant_plan_parse(struct quant_plan *p, const char *spec, int default_bits, struct err *e) {
    memset(p, 0, sizeof *p);
    int t = qtype_for_bits(default_bits);
    if (t < 0)
        return ERR(e, ERR_ARG, "default bits %d is not one of 2, 3, 4, 8, 16, 32", default_bits);
    p->default_type = (enum qtype)t;
    return spec ? parse_text(p, spec, NULL, e) : ERR_OK;
}

int quant_plan_add(struct quant_plan *p, const char *spec, struct err *e) {
    return spec ? parse_text(p, spec, NULL, e) : ERR_OK;
}

int quant_plan_load_file(struct quant_plan *p, const char *path, struct err *e) {
    FILE *f = fopen(path, "rb");
    if (!f) return ERR(e, ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    char *buf = NULL;
    size_t len = 0, cap = 0;
    int c;
    while ((c = fgetc(f)) != EOF) {
        if (len + 2 > cap) {
            if (cap >= (1u << 20)) {   // a plan is a few lines; refuse anything huge
                free(buf), fclose(f);
                return ERR(e, ERR_ARG, "%s: plan file larger than 1 MiB", path);
            }
            cap = cap ? cap * 2 : 4096;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf), fclose(f);
                return ERR(e, ERR_OOM, "%s: out of memory", path);
            }
            buf = nb;
        }
        buf[len++] = (char)c;
    }
    fclose(f);
    if (!buf) return ERR_OK;   // empty file: no rules
    buf[len] = '\0';
    int rc = parse_text(p, buf, path, e);
    free(buf);
    return rc;
}

// ------------------------------------------------------------------------------------------------
// Lookup

enum qtype quant_plan_type_ex(const struct quant_plan *p, const char *tensor_name, int n_dims,
                              int64_t ne0, bool *fell_back) {
    if (fell_back) *fell_back = false;
    if (n_dims == 1 || strstr(tensor_name, "norm")) return QT_F32;   // norms and vectors: exact
    // "blk.<layer>.<kind>.weight" / "<kind>.weight"
    char kind[64];
    int layer = -1;
    const char *s = tensor_name;
    if (strncmp(s, "blk.", 4) == 0) {
        s += 4;
        if (parse_layer(&s, &layer) && *s == '.') s++;
        else layer = -1, s = tensor_name;
    }
    snprintf(kind, sizeof kind, "%s", s);
    size_t kl = strlen(kind);
    if (kl > 7 && strcmp(kind + kl - 7, ".weight") == 0) kind[kl - 7] = '\0';

    enum qtype t = p->default_type;
    for (int i = 0; i < p->n_rules; i++) {   // later rules override earlier ones
        const struct quant_rule *r = &p->rules[i];
        bool layer_ok = r->layer_lo < 0 ? layer < 0 : (layer >= r->layer_lo && layer <= r->layer_hi);
        bool kind_ok = r->kind[0] == '\0' ? layer >= 0 : strcmp(r->kind, kind) == 0;
        if (layer_ok && kind_ok) t = r->type;
    }
    if (ne0 % qtype_traits[t].group != 0) {
        if (fell_back) *fell_back = true;
        t = QT_F16;
    }
    return t;
}

enum qtype quant_plan_type(const struct quant_plan *p, const char *tensor_name, int64_t ne0) {
    return quant_plan_type_ex(p, tensor_name, 2, ne0, NULL);
}
