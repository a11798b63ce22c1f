/* eval/kld.h: KL divergence of a (quantized) model against a base model, through a file of the
 * base model's top-K log-probs per scored position (ppl --kl-divergence-base / --kl-divergence).
 * KLD is computed over the partition {top-K tokens of the base, everything else}; by the log-sum
 * inequality that is a lower bound of the full-vocabulary KLD (docs/EVAL.md). Test: test_eval_ppl.c */
#ifndef EVAL_KLD_H
#define EVAL_KLD_H

#include "eval/eval_common.h"

#define KLD_TOPK 32
#define KLD_MAGIC "EVKLD01"   // 7 chars + NUL = 8 bytes

/* File layout (little-endian, packed by construction): header, then n_rows x struct kld_row. */
struct kld_header {
    char magic[8];
    uint32_t version;       // 1
    uint32_t top_k;         // KLD_TOPK
    uint32_t vocab;
    uint32_t n_ctx;
    uint32_t n_chunks;      // segments of the plan
    uint32_t protocol;      // enum ppl_protocol
    uint64_t token_hash;    // ppl_plan_hash
    uint64_t n_rows;        // scored positions
    double base_nll_sum;    // sum of the base model's NLL over the rows
    char model[128];        // base model name
    char protocol_name[16];
};

struct kld_row {
    float logp[KLD_TOPK];   // base log-probs, descending
    int32_t idx[KLD_TOPK];  // their token ids
    float logp_rest;        // log of the base probability outside the top K (-inf if none)
    float logp_target;      // base log-prob of the target token
};

/* Base model side: ppl_row_fn that appends one row per scored position. */
struct kld_writer {
    FILE *f;
    struct kld_header h;
    uint8_t *mask;          // vocab scratch
};
int kld_writer_open(struct kld_writer *w, const char *path, const struct kld_header *h,
                    struct err *e);
int kld_writer_row(void *u, const float *logits, int vocab, int32_t target, double nll,
                   struct err *e);
/* Rewrites the header with the final n_rows / base_nll_sum and closes. */
int kld_writer_close(struct kld_writer *w, struct err *e);

/* Compared model side: ppl_row_fn that reads the next base row and accumulates. */
struct kld_reader {
    FILE *f;
    struct kld_header h;
    uint8_t *mask;
    uint64_t rows_read;
    double sum, sum2;       // per-row KLD
    double max_kld;
    int64_t top1_same;      // rows where argmax(current) == base top-1
    struct nll_stats cur;   // current model's NLL on the same rows
};
/* Opens the file and checks magic/version/top_k/vocab, and that token_hash matches `hash`. */
int kld_reader_open(struct kld_reader *r, const char *path, int vocab, uint64_t hash,
                    struct err *e);
int kld_reader_row(void *u, const float *logits, int vocab, int32_t target, double nll,
                   struct err *e);
void kld_reader_close(struct kld_reader *r);

/* Summary of a comparison. */
struct kld_summary {
    int64_t n;
    double mean, stderr_mean, max;
    double top1_pct;        // % of rows with the same argmax
    double ppl_base, ppl_cur, delta_ppl;
};
void kld_reader_summary(const struct kld_reader *r, struct kld_summary *s);

/* Pure functions, exposed for the tests. Top-K of logits into (logp, idx), descending, and the
 * log of the probability mass outside it; mask is vocab bytes of scratch. Returns logsumexp. */
double kld_topk(const float *logits, int vocab, int k, float *logp, int32_t *idx, float *logp_rest,
                uint8_t *mask);
/* KLD(base || current) over {the row's top-K, rest} for current logits. */
double kld_row_divergence(const struct kld_row *row, const float *logits, int vocab, uint8_t *mask);

#endif
