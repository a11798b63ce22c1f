/* engine/bitalloc.c: --target-bpw (engine/bitalloc.h). */
#include "engine/bitalloc.h"

#include <math.h>
#include <stdio.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "loaders/loader.h"

const enum qtype bitalloc_cand[BITALLOC_NCAND] = {QT_Q2_G64, QT_Q3_G64, QT_Q4_G64, QT_Q8_G64, QT_F16};

static uint64_t total_bytes(const struct bitalloc_item *it, int n) {
    uint64_t s = 0;
    for (int i = 0; i < n; i++) s += it[i].bytes[it[i].choice];
    return s;
}

static void choose(struct bitalloc_item *it, int n, double lambda) {
    for (int i = 0; i < n; i++) {
        int best = 0;
        double bv = INFINITY;
        for (int k = 0; k < BITALLOC_NCAND; k++) {
            double v = it[i].damage[k] + lambda * (double)it[i].bytes[k];
            if (v < bv) bv = v, best = k;
        }
        it[i].choice = best;
    }
}

/* Exact up to the byte rounding: a knapsack DP over the budget in units of room / BITALLOC_UNITS
 * (each matrix's bytes rounded up, so the result fits; at most n units of slack are lost, and the
 * greedy pass after it spends them). false when out of memory. */
#define BITALLOC_UNITS 100000
static bool solve_dp(struct bitalloc_item *it, int n, uint64_t room) {
    const double unit = (double)room / BITALLOC_UNITS;
    if (!(unit > 0)) return false;
    const int S = BITALLOC_UNITS;
    double *best = malloc((size_t)(S + 1) * sizeof *best), *next = malloc((size_t)(S + 1) * sizeof *next);
    uint8_t *pick = malloc((size_t)n * (size_t)(S + 1));
    if (!best || !next || !pick) { free(best), free(next), free(pick); return false; }
    for (int s = 0; s <= S; s++) best[s] = 0;   // best[s]: least damage of the items so far in <= s units
    for (int i = 0; i < n; i++) {
        int w[BITALLOC_NCAND];
        for (int k = 0; k < BITALLOC_NCAND; k++) {
            double u = ceil((double)it[i].bytes[k] / unit);
            w[k] = u > S ? S + 1 : (int)u;
        }
        for (int s = 0; s <= S; s++) {
            double v = INFINITY;
            int pk = 0;
            for (int k = 0; k < BITALLOC_NCAND; k++)
                if (w[k] <= s && best[s - w[k]] + it[i].damage[k] < v) v = best[s - w[k]] + it[i].damage[k], pk = k;
            next[s] = v;
            pick[(size_t)i * (size_t)(S + 1) + (size_t)s] = (uint8_t)pk;
        }
        double *t = best; best = next; next = t;
    }
    bool ok = best[S] < INFINITY;
    if (ok) {   // walk back from the full budget
        int s = S;
        for (int i = n - 1; i >= 0; i--) {
            int k = pick[(size_t)i * (size_t)(S + 1) + (size_t)s];
            it[i].choice = k;
            s -= (int)ceil((double)it[i].bytes[k] / unit);
        }
    }
    free(best), free(next), free(pick);
    return ok;
}

bool bitalloc_solve(struct bitalloc_item *it, int n, uint64_t budget, uint64_t fixed) {
    if (fixed > budget) return false;
    const uint64_t room = budget - fixed;
    for (int i = 0; i < n; i++) it[i].choice = 0;
    if (total_bytes(it, n) > room) return false;
    if (!solve_dp(it, n, room)) {   // the Lagrangian
        for (int i = 0; i < n; i++) it[i].choice = 0;
        // lambda: damage per byte. Large enough -> the smallest candidates, which fit.
        double lo = 0, hi = 1;
        choose(it, n, hi);
        for (int k = 0; k < 200 && total_bytes(it, n) > room; k++) hi *= 4, choose(it, n, hi);
        choose(it, n, lo);
        if (total_bytes(it, n) > room) {
            for (int k = 0; k < 100; k++) {
                double mid = lo > 0 ? sqrt(lo * hi) : hi / 1e12;
                if (lo == 0 && k > 0) mid = hi / 2;
                choose(it, n, mid);
                if (total_bytes(it, n) > room) lo = mid;
                else hi = mid;
                if (lo > 0 && hi / lo < 1 + 1e-9) break;
            }
            choose(it, n, hi);
        }
    }
    // spend the rest: the upgrade with the largest damage drop per byte that still fits
    for (;;) {
        uint64_t used = total_bytes(it, n);
        int bi = -1, bk = -1;
        double best = 0;
        for (int i = 0; i < n; i++) {
            const int c = it[i].choice;
            for (int k = c + 1; k < BITALLOC_NCAND; k++) {
                uint64_t extra = it[i].bytes[k] - it[i].bytes[c];
                double gain = it[i].damage[c] - it[i].damage[k];
                if (used + extra <= room && gain > 0 && gain / (double)extra > best)
                    best = gain / (double)extra, bi = i, bk = k;
            }
        }
        if (bi < 0) break;
        it[bi].choice = bk;
    }
    // exchanges: move one matrix to another width and a second one too, when the pair removes
    // damage within the budget (the Lagrangian's integrality gap is large for few matrices)
    for (int pass = 0; pass < 50; pass++) {
        bool improved = false;
        uint64_t used = total_bytes(it, n);
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) {
                if (j == i) continue;
                const int ci = it[i].choice, cj = it[j].choice;
                int bki = ci, bkj = cj;
                double bgain = 0;
                for (int ki = 0; ki < BITALLOC_NCAND; ki++)
                    for (int kj = 0; kj < BITALLOC_NCAND; kj++) {
                        int64_t delta = (int64_t)(it[i].bytes[ki] - it[i].bytes[ci]) + (int64_t)(it[j].bytes[kj] - it[j].bytes[cj]);
                        if ((int64_t)used + delta > (int64_t)room) continue;
                        double gain = it[i].damage[ci] - it[i].damage[ki] + it[j].damage[cj] - it[j].damage[kj];
                        if (gain > bgain * (1 + 1e-12) + 1e-300) bgain = gain, bki = ki, bkj = kj;
                    }
                if (bgain > 0) {
                    used = used - it[i].bytes[ci] - it[j].bytes[cj] + it[i].bytes[bki] + it[j].bytes[bkj];
                    it[i].choice = bki, it[j].choice = bkj;
                    improved = true;
                }
            }
        if (!improved) break;
    }
    return true;
}

/* sum_rows v^T v weighted by the diagonal d (NULL: 1). */
static double quad_diag(const float *V, int64_t n, int64_t rows, const float *d) {
    double s = 0;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t i = 0; i < n; i++) s += (double)(d ? d[i] : 1.0f) * V[r * n + i] * V[r * n + i];
    return s;
}

/* Measures one matrix at every candidate width. */
static int measure(const struct bitalloc_args *a, const struct tensor_view *tv, const char *calib_name,
                   struct bitalloc_item *it, struct err *e) {
    const int64_t n = tv->ne[0], rows = tv->ne[1];
    const struct calib_entry *ce = calib_find(a->calib, calib_name);
    if (ce && ce->n != n) return ERR(e, ERR_FORMAT, "%s: the imatrix has %lld inputs, the model %lld", tv->name, (long long)ce->n, (long long)n);
    float *w = malloc((size_t)n * (size_t)rows * sizeof *w), *h = NULL;
    float *deq = malloc((size_t)n * (size_t)rows * sizeof *deq);
    void *q = malloc(quantize_nbytes(QT_F16, n, rows));
    int rc = ERR_OK;
    if (!w || !deq || !q) { rc = ERR(e, ERR_OOM, "%s: out of memory", tv->name); goto out; }
    dequantize_matrix(tv->type, w, tv->data, n, rows);   // the source in f32
    if (ce && calib_xtx(a->calib, ce)) {
        h = malloc((size_t)n * (size_t)n * sizeof *h);
        if (!h) { rc = ERR(e, ERR_OOM, "%s: out of memory", tv->name); goto out; }
        calib_hessian_full(a->calib, ce, h);
    }
    const float *diag = ce ? ce->x2 : NULL;
    double signal;
    if (h) {   // sum_rows w^T H w: the output error of an all-zero matrix
        memset(deq, 0, (size_t)n * (size_t)rows * sizeof *deq);
        signal = quant_output_error(QT_F32, deq, w, n, rows, h, a->n_threads);
    } else {
        signal = quad_diag(w, n, rows, diag);
    }
    if (!(signal > 0)) signal = 1;
    for (int k = 0; k < BITALLOC_NCAND; k++) {
        const enum qtype t = bitalloc_cand[k];
        it->bytes[k] = quantize_nbytes(t, n, rows);
        double err = 0;
        if (a->gptq && h && qtype_traits[t].native) {   // GPTQ accounts its own output error (damped H) as it goes
            rc = gptq_quantize_matrix(t, q, w, n, rows, h, &a->gptq_opts, a->n_threads, &err, e);
            if (rc) goto out;
        } else {
            rc = quantize_matrix_imp(t, a->method, q, w, n, rows, a->method == QM_OPT ? diag : NULL, a->n_threads, e);
            if (rc) goto out;
            if (h) {
                err = quant_output_error(t, q, w, n, rows, h, a->n_threads);
            } else {
                dequantize_matrix(t, deq, q, n, rows);
                for (int64_t i = 0; i < n * rows; i++) deq[i] = w[i] - deq[i];
                err = quad_diag(deq, n, rows, diag);
            }
        }
        it->damage[k] = err / signal;
    }
out:
    free(w), free(h), free(deq), free(q);
    return rc;
}

/* The kind of a plan key: "blk.3.ffn_down" -> "ffn_down", "output" -> "output". */
static const char *key_kind(const char *key) {
    if (strncmp(key, "blk.", 4)) return key;
    const char *d = strchr(key + 4, '.');
    return d ? d + 1 : key;
}

static int measure_kl(const struct bitalloc_args *a, const char *spec, const char *what, double *kl, struct err *e) {
    if (!a->quiet) fprintf(stderr, "\r--target-bpw: KL with %-24s", what);
    int rc = a->kl(a->kl_ctx, spec, kl, e);
    if (!rc && *kl < 1e-7) *kl = 1e-7;   // lost in the noise: still a small positive damage
    return rc;
}

static int layer_of(const char *key) { return strncmp(key, "blk.", 4) ? -1 : atoi(key + 4); }

/* Damage in predicted KL (nats per token of calibration text against the source):
 *  - per kind (attn_q .. ffn_down) and quantized width, the KL with every matrix of that kind at
 *    that width (the rest at the source) is shared among the kind's matrices in proportion to
 *    their r at that width;
 *  - per layer, the KL with only that layer at q3 rescales its matrices (layers differ in how far
 *    their errors travel, and r does not see it);
 *  - the output head, one large matrix, is measured at each width.
 * f16 keeps its r scaled like q8 (its error is far below anything measured). */
static int scale_measured(const struct bitalloc_args *a, struct bitalloc_item *it, int n, struct err *e) {
    static const char *const kinds[] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
    enum { NK = sizeof kinds / sizeof *kinds, NQ = BITALLOC_NCAND - 1 };   // the quantized widths
    const int q3 = 1;   // bitalloc_cand[1]
    double sk[NK][BITALLOC_NCAND] = {{0}};
    char spec[128], what[64];
    int rc = ERR_OK;
    for (int k = 0; k < NK && !rc; k++)
        for (int c = 0; c < NQ && !rc; c++) {
            double rsum = 0, kl = 0;
            for (int i = 0; i < n; i++)
                if (strcmp(key_kind(it[i].name), kinds[k]) == 0) rsum += it[i].damage[c];
            if (!(rsum > 0)) continue;
            const char *tn = qtype_traits[bitalloc_cand[c]].name;
            snprintf(spec, sizeof spec, "default=32,%s=%s", kinds[k], tn);
            snprintf(what, sizeof what, "every %s at %s", kinds[k], tn);
            if (!(rc = measure_kl(a, spec, what, &kl, e))) sk[k][c] = kl / rsum;
            if (c == NQ - 1) sk[k][NQ] = sk[k][c];   // f16: as q8
        }
    for (int i = 0; i < n && !rc; i++) {   // the head: measured at each quantized width
        if (strcmp(it[i].name, "output")) continue;
        for (int c = 0; c < BITALLOC_NCAND && !rc; c++) {
            const enum qtype t = bitalloc_cand[c];
            if (t == QT_F16) { it[i].damage[c] = 0; continue; }
            snprintf(spec, sizeof spec, "default=32,output=%s", qtype_traits[t].name);
            snprintf(what, sizeof what, "output at %s", qtype_traits[t].name);
            rc = measure_kl(a, spec, what, &it[i].damage[c], e);
        }
    }
    int max_layer = -1;
    for (int i = 0; i < n; i++) max_layer = layer_of(it[i].name) > max_layer ? layer_of(it[i].name) : max_layer;
    for (int l = 0; l <= max_layer && !rc; l++) {
        double pred = 0, kl = 0;
        for (int i = 0; i < n; i++) {
            if (layer_of(it[i].name) != l) continue;
            for (int k = 0; k < NK; k++)
                if (strcmp(key_kind(it[i].name), kinds[k]) == 0) pred += sk[k][q3] * it[i].damage[q3];
        }
        if (!(pred > 0)) continue;
        snprintf(spec, sizeof spec, "default=32,blk.%d=q3_g64", l);
        snprintf(what, sizeof what, "layer %d at q3", l);
        if ((rc = measure_kl(a, spec, what, &kl, e))) break;
        for (int i = 0; i < n; i++) {
            if (layer_of(it[i].name) != l) continue;
            for (int k = 0; k < NK; k++)
                if (strcmp(key_kind(it[i].name), kinds[k]) == 0)
                    for (int c = 0; c < BITALLOC_NCAND; c++) it[i].damage[c] *= sk[k][c] * kl / pred;
        }
        if (!a->quiet) fprintf(stderr, "\r%-70s\r--target-bpw: layer %2d at q3: KL %.5f nats/token\n", "", l, kl);
    }
    if (!a->quiet) fprintf(stderr, "\r%-70s\r", "");
    return rc;
}

/* --alloc-table: the measured candidates as CSV (name, then bytes and damage per candidate), read
 * back instead of measuring again when it matches the model (same names and bytes). */
static int table_save(const char *path, const struct bitalloc_item *it, int n, struct err *e) {
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return ERR(e, ERR_IO, "%s: %s", tmp, strerror(errno));
    fprintf(f, "# --target-bpw measurements: damage in predicted KL nats/token (engine/bitalloc.h)\nname");
    for (int c = 0; c < BITALLOC_NCAND; c++) fprintf(f, ",bytes_%s,damage_%s", qtype_traits[bitalloc_cand[c]].name, qtype_traits[bitalloc_cand[c]].name);
    fprintf(f, "\n");
    for (int i = 0; i < n; i++) {
        fprintf(f, "%s", it[i].name);
        for (int c = 0; c < BITALLOC_NCAND; c++) fprintf(f, ",%llu,%.9g", (unsigned long long)it[i].bytes[c], it[i].damage[c]);
        fprintf(f, "\n");
    }
    if (fclose(f) != 0 || rename(tmp, path) != 0) { unlink(tmp); return ERR(e, ERR_IO, "%s: cannot write", path); }
    return ERR_OK;
}

/* true if path holds a table for exactly these items (names, bytes), whose damages are taken. */
static bool table_load(const char *path, struct bitalloc_item *it, int n) {
    FILE *f = fopen(path, "r");
    if (!f) return false;
    char line[1024];
    int i = 0;
    bool ok = true;
    struct bitalloc_item tmp;
    while (ok && fgets(line, sizeof line, f)) {
        if (line[0] == '#' || strncmp(line, "name,", 5) == 0) continue;
        char *p = strchr(line, ',');
        if (!p || i >= n) { ok = false; break; }
        *p++ = 0;
        if (strcmp(line, it[i].name)) { ok = false; break; }
        for (int c = 0; c < BITALLOC_NCAND && ok; c++) {
            char *end;
            unsigned long long b = strtoull(p, &end, 10);
            if (*end != ',' || b != it[i].bytes[c]) { ok = false; break; }
            tmp.damage[c] = strtod(end + 1, &p);
            if (!(tmp.damage[c] >= 0) || (*p != ',' && *p != '\n' && *p != 0)) ok = false;
            if (*p == ',') p++;
        }
        if (ok) memcpy(it[i].damage, tmp.damage, sizeof tmp.damage);
        i++;
    }
    fclose(f);
    return ok && i == n;
}

int bitalloc_plan(const struct bitalloc_args *a, struct quant_plan *plan, struct err *e) {
    const struct model_file *mf = a->mf;
    struct bitalloc_item *items = calloc((size_t)mf->n_tensors + 1, sizeof *items);
    if (!items) return ERR(e, ERR_OOM, "out of memory");
    int n = 0, rc = ERR_OK;
    uint64_t n_params = 0, fixed = 0;
    for (int i = 0; i < mf->n_tensors; i++) {
        const struct tensor_view *tv = &mf->tensors[i];
        uint64_t cnt = 1;
        for (int d = 0; d < tv->n_dims; d++) cnt *= (uint64_t)tv->ne[d];
        const bool is_embd = strcmp(tv->name, "token_embd.weight") == 0;
        const bool is_out = strcmp(tv->name, "output.weight") == 0;
        if (is_out && a->tied_output) continue;   // a copy of the embedding: one tensor in our file
        n_params += cnt;
        // matrices the plan decides: layer matrices, the output head (the tied embedding is it)
        const bool planned = tv->n_dims == 2 && !strstr(tv->name, "norm") && tv->ne[0] % 64 == 0 &&
                             (strncmp(tv->name, "blk.", 4) == 0 || is_out || (is_embd && a->tied_output));
        if (!planned) {
            // untied embedding: planned as "token_embd" by the default type; norms f32
            // (a row length the plan's type does not divide falls back to f16, as the load does)
            const enum qtype ft = quant_plan_type_ex(plan, tv->name, tv->n_dims, tv->ne[0], NULL);
            fixed += ft == QT_F32 ? cnt * 4 : quantize_nbytes(ft, tv->ne[0], tv->ne[1]);
            continue;
        }
        struct bitalloc_item *it = &items[n];
        snprintf(it->name, sizeof it->name, "%s", (is_embd || is_out) ? "output" : tv->name);
        size_t ln = strlen(it->name);
        if (ln > 7 && strcmp(it->name + ln - 7, ".weight") == 0) it->name[ln - 7] = 0;
        for (int c = 0; c < BITALLOC_NCAND; c++) it->bytes[c] = quantize_nbytes(bitalloc_cand[c], tv->ne[0], tv->ne[1]);
        it->choice = (int)(tv - mf->tensors);   // the tensor, until measured
        n++;
    }
    if (a->table && table_load(a->table, items, n)) {
        if (!a->quiet) fprintf(stderr, "--target-bpw: measurements from %s\n", a->table);
    } else {
        for (int i = 0; i < n && !rc; i++) {
            const struct tensor_view *tv = &mf->tensors[items[i].choice];
            const bool head = !strcmp(items[i].name, "output");
            if (!a->quiet) fprintf(stderr, "\r--target-bpw: measuring %3d/%d %-28s", i + 1, n, items[i].name);
            rc = measure(a, tv, head ? "output.weight" : tv->name, &items[i], e);
        }
        if (!a->quiet) fprintf(stderr, "\r%-70s\r", "");
        if (!rc && a->kl) rc = scale_measured(a, items, n, e);
        if (!rc && a->table) rc = table_save(a->table, items, n, e);
        if (rc) goto out;
    }
    const uint64_t budget = (uint64_t)(a->target_bpw * (double)n_params / 8.0);
    if (!bitalloc_solve(items, n, budget, fixed)) {
        uint64_t min = fixed;
        for (int i = 0; i < n; i++) min += items[i].bytes[0];
        rc = ERR(e, ERR_ARG, "--target-bpw %.3f is below the smallest file this model makes (%.3f bits/weight: every matrix q2_g64)",
                 a->target_bpw, 8.0 * (double)min / (double)n_params);
        goto out;
    }
    double dmg = 0;
    int count[BITALLOC_NCAND] = {0};
    uint64_t used = fixed;
    for (int i = 0; i < n && !rc; i++) {
        char rule[160];
        snprintf(rule, sizeof rule, "%s=%s", items[i].name, qtype_traits[bitalloc_cand[items[i].choice]].name);
        rc = quant_plan_add(plan, rule, e);
        dmg += items[i].damage[items[i].choice];
        count[items[i].choice]++;
        used += items[i].bytes[items[i].choice];
    }
    if (!rc && !a->quiet) {
        fprintf(stderr, "--target-bpw %.3f: %.3f bits/weight (%.2f MiB), %d matrices: q2 %d, q3 %d, q4 %d, q8 %d, f16 %d; predicted damage %.4g%s\n",
                a->target_bpw, 8.0 * (double)used / (double)n_params, used / 1048576.0, n, count[0], count[1], count[2], count[3], count[4], dmg,
                a->kl ? " nats/token (KL)" : " (summed relative output error)");
        fprintf(stderr, "plan (for --bits):");
        for (int i = 0; i < n; i++)
            fprintf(stderr, "%s%s=%d", i ? "," : " ", items[i].name, qtype_traits[bitalloc_cand[items[i].choice]].bits);
        fprintf(stderr, "\n");
    }
out:
    free(items);
    return rc;
}
