/* quant/calib.c: the calibration statistics container (quant/calib.h). */
#include "quant/calib.h"

#include <stdlib.h>

int calib_add(struct calib *c, const char *name, int64_t n, bool with_xtx, struct err *e) {
    for (int i = 0; i < c->n; i++)
        if (strcmp(c->e[i].name, name) == 0) {
            if (c->e[i].n != n)
                return ERR(e, ERR_FORMAT, "%s: %lld inputs, but %lld before", name, (long long)n,
                           (long long)c->e[i].n), -1;
            return i;
        }
    if (n <= 0 || n > (1 << 20) || strlen(name) >= sizeof c->e[0].name)
        return ERR(e, ERR_ARG, "%.96s: bad entry (n = %lld)", name, (long long)n), -1;
    if (c->n == c->cap) {
        int cap = c->cap ? 2 * c->cap : 64;
        struct calib_entry *ne = realloc(c->e, (size_t)cap * sizeof *ne);
        if (!ne) return ERR(e, ERR_OOM, "out of memory"), -1;
        c->e = ne, c->cap = cap;
    }
    struct calib_entry *ce = &c->e[c->n];
    memset(ce, 0, sizeof *ce);
    strcpy(ce->name, name);
    ce->n = n;
    ce->xtx_of = -1;
    ce->x2 = calloc((size_t)n, sizeof(float));
    if (with_xtx) ce->xtx = calloc((size_t)calib_tri_row(n, n), sizeof(float));
    if (!ce->x2 || (with_xtx && !ce->xtx)) {
        free(ce->x2), free(ce->xtx);
        return ERR(e, ERR_OOM, "%s: out of memory for %lld x %lld statistics", name, (long long)n,
                   (long long)n), -1;
    }
    return c->n++;
}

const struct calib_entry *calib_find(const struct calib *c, const char *name) {
    if (!c) return NULL;
    for (int i = 0; i < c->n; i++)
        if (strcmp(c->e[i].name, name) == 0) return &c->e[i];
    return NULL;
}

const float *calib_xtx(const struct calib *c, const struct calib_entry *ce) {
    if (ce->xtx) return ce->xtx;
    if (ce->xtx_of >= 0 && ce->xtx_of < c->n && c->e[ce->xtx_of].n == ce->n) return c->e[ce->xtx_of].xtx;
    return NULL;
}

bool calib_hessian_full(const struct calib *c, const struct calib_entry *ce, float *out) {
    const float *p = calib_xtx(c, ce);
    if (!p) return false;
    const int64_t n = ce->n;
    for (int64_t i = 0; i < n; i++) {
        const float *r = p + calib_tri_row(n, i) - i;   // r[j] = H[i][j] for j >= i
        for (int64_t j = i; j < n; j++) out[i * n + j] = out[j * n + i] = r[j];
    }
    return true;
}

void calib_free(struct calib *c) {
    for (int i = 0; i < c->n; i++) free(c->e[i].x2), free(c->e[i].xtx);
    free(c->e);
    memset(c, 0, sizeof *c);
}
