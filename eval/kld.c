/* eval/kld.c: top-K log-prob files and KL divergence (see kld.h). All math in double. */
#include "eval/kld.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static_assert(sizeof(struct kld_header) == 200, "kld_header must be packed (200 bytes)");
static_assert(sizeof(struct kld_row) == 8 * KLD_TOPK + 8, "kld_row must be packed");

// ------------------------------------------------------------------------------------------------
// Pure math

double kld_topk(const float *logits, int vocab, int k, float *logp, int32_t *idx, float *logp_rest,
                uint8_t *mask) {
    if (vocab <= 0 || k <= 0) return 0.0;
    if (k > vocab) k = vocab;
    // insertion into a descending list of k: O(vocab) when most logits fall below the k-th
    int have = 0;
    for (int i = 0; i < vocab; i++) {
        float x = logits[i];
        if (have == k && !(x > logp[k - 1])) continue;
        int j = have < k ? have++ : k - 1;
        while (j > 0 && logp[j - 1] < x) {
            logp[j] = logp[j - 1];
            idx[j] = idx[j - 1];
            j--;
        }
        logp[j] = x;
        idx[j] = i;
    }
    double lse = eval_logsumexp(logits, vocab);
    memset(mask, 0, (size_t)vocab);
    for (int j = 0; j < k; j++) mask[idx[j]] = 1;
    double rest = 0.0;   // summed directly, not as 1 - top: no cancellation when top ~ 1
    for (int i = 0; i < vocab; i++)
        if (!mask[i]) rest += exp((double)logits[i] - lse);
    for (int j = 0; j < k; j++) logp[j] = (float)((double)logp[j] - lse);
    for (int j = k; j < KLD_TOPK; j++) {   // vocab < KLD_TOPK: empty slots carry no mass
        logp[j] = -INFINITY;
        idx[j] = -1;
    }
    *logp_rest = rest > 0 ? (float)log(rest) : -INFINITY;
    return lse;
}

double kld_row_divergence(const struct kld_row *row, const float *logits, int vocab, uint8_t *mask) {
    if (vocab <= 0) return 0.0;
    double lse = eval_logsumexp(logits, vocab);
    memset(mask, 0, (size_t)vocab);
    double kl = 0.0;
    for (int j = 0; j < KLD_TOPK; j++) {
        if (row->idx[j] < 0) continue;
        mask[row->idx[j]] = 1;
        double lp = row->logp[j], lq = (double)logits[row->idx[j]] - lse;
        kl += exp(lp) * (lp - lq);
    }
    if (isfinite(row->logp_rest)) {
        double q_rest = 0.0;
        for (int i = 0; i < vocab; i++)
            if (!mask[i]) q_rest += exp((double)logits[i] - lse);
        double lp = row->logp_rest;
        double lq = q_rest > 0 ? log(q_rest) : -745.0;   // exp(-745) ~ smallest double
        kl += exp(lp) * (lp - lq);
    }
    return kl > 0 ? kl : 0.0;   // >= 0 in exact arithmetic; clamp rounding noise
}

// ------------------------------------------------------------------------------------------------
// Writer

int kld_writer_open(struct kld_writer *w, const char *path, const struct kld_header *h,
                    struct err *e) {
    memset(w, 0, sizeof *w);
    w->h = *h;
    memcpy(w->h.magic, KLD_MAGIC, 8);
    w->h.version = 1;
    w->h.top_k = KLD_TOPK;
    w->h.n_rows = 0;
    w->h.base_nll_sum = 0;
    w->mask = malloc(h->vocab ? h->vocab : 1);
    w->f = fopen(path, "wb");
    if (!w->f || !w->mask) {
        free(w->mask);
        if (w->f) fclose(w->f);
        w->f = NULL;
        return ERR(e, ERR_IO, "cannot write %s", path);
    }
    if (fwrite(&w->h, sizeof w->h, 1, w->f) != 1) return ERR(e, ERR_IO, "write %s", path);
    return ERR_OK;
}

int kld_writer_row(void *u, const float *logits, int vocab, int32_t target, double nll,
                   struct err *e) {
    struct kld_writer *w = u;
    if ((uint32_t)vocab != w->h.vocab) return ERR(e, ERR_ARG, "vocab %d != %u", vocab, w->h.vocab);
    struct kld_row row;
    kld_topk(logits, vocab, KLD_TOPK, row.logp, row.idx, &row.logp_rest, w->mask);
    row.logp_target = (float)-nll;
    if (fwrite(&row, sizeof row, 1, w->f) != 1) return ERR(e, ERR_IO, "kld file write failed");
    w->h.n_rows++;
    w->h.base_nll_sum += nll;
    return ERR_OK;
}

int kld_writer_close(struct kld_writer *w, struct err *e) {
    int rc = ERR_OK;
    if (w->f) {
        if (fseek(w->f, 0, SEEK_SET) != 0 || fwrite(&w->h, sizeof w->h, 1, w->f) != 1)
            rc = ERR(e, ERR_IO, "kld header rewrite failed");
        if (fclose(w->f) != 0 && rc == ERR_OK) rc = ERR(e, ERR_IO, "kld file close failed");
    }
    free(w->mask);
    w->f = NULL;
    w->mask = NULL;
    return rc;
}

// ------------------------------------------------------------------------------------------------
// Reader

int kld_reader_open(struct kld_reader *r, const char *path, int vocab, uint64_t hash,
                    struct err *e) {
    memset(r, 0, sizeof *r);
    r->f = fopen(path, "rb");
    if (!r->f) return ERR(e, ERR_IO, "cannot open %s", path);
    int rc = ERR_OK;
    if (fread(&r->h, sizeof r->h, 1, r->f) != 1 || memcmp(r->h.magic, KLD_MAGIC, 8) != 0)
        rc = ERR(e, ERR_FORMAT, "%s: not a KLD base file (magic)", path);
    else if (r->h.version != 1 || r->h.top_k != KLD_TOPK)
        rc = ERR(e, ERR_FORMAT, "%s: version %u top_k %u unsupported", path, r->h.version,
                 r->h.top_k);
    else if (r->h.vocab != (uint32_t)vocab)
        rc = ERR(e, ERR_ARG, "%s: vocab %u, model has %d", path, r->h.vocab, vocab);
    else if (r->h.token_hash != hash)
        rc = ERR(e, ERR_ARG,
                 "%s: token hash %016llx != %016llx: different text, protocol, -c or --chunks "
                 "than the base run (%s, c=%u, %u chunks)",
                 path, (unsigned long long)r->h.token_hash, (unsigned long long)hash,
                 r->h.protocol_name, r->h.n_ctx, r->h.n_chunks);
    if (rc == ERR_OK && !(r->mask = malloc((size_t)vocab))) rc = ERR(e, ERR_OOM, "mask");
    if (rc != ERR_OK) kld_reader_close(r);
    return rc;
}

int kld_reader_row(void *u, const float *logits, int vocab, int32_t target, double nll,
                   struct err *e) {
    struct kld_reader *r = u;
    struct kld_row row;
    if (r->rows_read >= r->h.n_rows || fread(&row, sizeof row, 1, r->f) != 1)
        return ERR(e, ERR_FORMAT, "KLD base file has only %llu rows",
                   (unsigned long long)r->h.n_rows);
    r->rows_read++;
    double kl = kld_row_divergence(&row, logits, vocab, r->mask);
    r->sum += kl;
    r->sum2 += kl * kl;
    if (kl > r->max_kld) r->max_kld = kl;
    int am = 0;
    for (int i = 1; i < vocab; i++)
        if (logits[i] > logits[am]) am = i;
    if (am == row.idx[0]) r->top1_same++;
    nll_stats_add(&r->cur, nll);
    (void)target;
    return ERR_OK;
}

void kld_reader_close(struct kld_reader *r) {
    if (r->f) fclose(r->f);
    free(r->mask);
    r->f = NULL;
    r->mask = NULL;
}

void kld_reader_summary(const struct kld_reader *r, struct kld_summary *s) {
    memset(s, 0, sizeof *s);
    int64_t n = (int64_t)r->rows_read;
    s->n = n;
    if (n == 0) return;
    s->mean = r->sum / (double)n;
    double var = r->sum2 / (double)n - s->mean * s->mean;
    s->stderr_mean = n > 1 && var > 0 ? sqrt(var / (double)(n - 1)) : 0.0;
    s->max = r->max_kld;
    s->top1_pct = 100.0 * (double)r->top1_same / (double)n;
    s->ppl_base = exp(r->h.base_nll_sum / (double)r->h.n_rows);
    s->ppl_cur = nll_stats_ppl(&r->cur);
    s->delta_ppl = s->ppl_cur - s->ppl_base;
}
