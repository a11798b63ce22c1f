/* eval/ppl.h: perplexity protocols as pure functions over token arrays. A protocol becomes a plan:
 * a list of segments, each evaluated from position 0 with a fresh context, scoring some of its
 * positions. ppl_run() evaluates a plan through a callback (the engine, or a fake in the tests).
 * Protocol details and their sources: docs/EVAL.md. Tests: tests/test_eval_ppl.c */
#ifndef EVAL_PPL_H
#define EVAL_PPL_H

#include "eval/eval_common.h"

enum ppl_protocol { PPL_LLAMACPP = 0, PPL_GPTQ = 1, PPL_STORIES = 2 };
const char *ppl_protocol_name(enum ppl_protocol p);
int ppl_protocol_from_name(const char *s);   // -1 if unknown

/* One context window. Position t (0 <= t < n) sees token tokens[start + t], except that position 0
 * sees `bos` when bos >= 0 (llama.cpp overwrites the first token of every chunk with BOS).
 * The logits at positions t in [first, n - 1) are scored against tokens[start + t + 1]:
 * n - 1 - first tokens per segment. */
struct ppl_segment {
    int64_t start;
    int n;
    int first;
    int32_t bos;
};

struct ppl_plan {
    enum ppl_protocol protocol;
    int n_ctx;                 // longest segment: the KV cache the plan needs
    int n_segments;
    struct ppl_segment *seg;   // malloc'd
    int64_t n_scored;          // sum of (n - 1 - first)
};

/* llama.cpp perplexity: n_chunks = n_tokens / n_ctx (the tail is dropped), chunk i covers
 * tokens [i*n_ctx, (i+1)*n_ctx), its first token is replaced by bos (if bos >= 0), and the positions
 * [n_ctx/2, n_ctx - 1) are scored: n_ctx - 1 - n_ctx/2 tokens per chunk (255 at -c 512).
 * max_chunks > 0 limits the chunks. Returns 0, or -1 when not even one chunk fits. */
int ppl_plan_llamacpp(struct ppl_plan *p, int64_t n_tokens, int n_ctx, int max_chunks, int32_t bos);
/* GPTQ / HF style: n_tokens / n_ctx non-overlapping chunks, every position but the last scored
 * (labels = inputs, shifted): n_ctx - 1 tokens per chunk. No BOS substitution. */
int ppl_plan_gptq(struct ppl_plan *p, int64_t n_tokens, int n_ctx, int max_chunks);
/* One segment per document: doc d starts at starts[d] with lens[d] tokens (BOS included), truncated
 * to max_len positions (max_len - 1 scored at most); documents of < 2 tokens are skipped. */
int ppl_plan_docs(struct ppl_plan *p, enum ppl_protocol proto, const int64_t *starts,
                  const int *lens, int n_docs, int max_len, int max_chunks);
void ppl_plan_free(struct ppl_plan *p);
/* Hash of exactly what the plan evaluates (every segment's tokens after BOS substitution, and
 * the scored ranges): ties a KLD base file to its tokens. */
uint64_t ppl_plan_hash(const struct ppl_plan *p, const int32_t *tokens);

// ------------------------------------------------------------------------------------------------
// Text preparation

/* TinyStories: splits text at lines that are exactly "<|endoftext|>", strips '\n'/'\r' around
 * each story and drops empty ones. Returns the number of stories; *out gets a malloc'd array of
 * malloc'd strings (free with ppl_free_strings). -1 on OOM. */
int ppl_split_stories(const char *text, char ***out);
void ppl_free_strings(char **s, int n);

/* GPTQ's wikitext text: the HF dataset rows are the lines of wiki.test.raw (each keeps its '\n';
 * whitespace-only lines become ""), and GPTQ evaluates "\n\n".join(rows). Rebuilds that string
 * from the raw file. malloc'd; NULL on OOM. */
char *ppl_gptq_join(const char *raw);

// ------------------------------------------------------------------------------------------------
// Running a plan

/* Evaluates tokens[0..n) at positions pos..pos+n-1, continuing the context of the same segment
 * (pos == 0 starts a new one), and writes n x vocab logits. Returns 0 or an error code. */
typedef int (*ppl_eval_fn)(void *u, const int32_t *tokens, int n, int pos, float *logits,
                           struct err *e);

/* Called once per scored position, in plan order: logits (vocab floats) and the target token. */
typedef int (*ppl_row_fn)(void *u, const float *logits, int vocab, int32_t target, double nll,
                          struct err *e);

struct ppl_result {
    struct nll_stats st;
    int n_segments;
    int64_t n_eval;     // tokens evaluated (forward passes), scored or not
    double seconds;     // wall time of ppl_run
};

/* Runs the plan. batch: most tokens per eval call (<= 0: whole segment). row_fn may be NULL.
 * progress may be NULL. Per-row NLL is computed in double from the float logits. */
int ppl_run(const struct ppl_plan *p, const int32_t *tokens, int vocab, int batch,
            ppl_eval_fn eval, void *eval_u, ppl_row_fn row, void *row_u,
            struct eval_progress *progress, struct ppl_result *r, struct err *e);

/* ppl_eval_fn over an engine (u = struct engine *): engine_forward(..., all_logits = true). */
int ppl_engine_eval(void *u, const int32_t *tokens, int n, int pos, float *logits, struct err *e);

/* Builds the token array and plan for a protocol from a text (the three protocols of ./ppl).
 * n_ctx <= 0 picks the protocol default (512, 2048, 512). gptq_raw: use the text as is instead of
 * rebuilding GPTQ's "\n\n".join. Returns the token array (malloc'd) or NULL with a message. */
int32_t *ppl_prepare(struct engine *en, enum ppl_protocol proto, const char *text, int n_ctx,
                     int max_chunks, bool gptq_raw, struct ppl_plan *plan, int64_t *n_tokens);

#endif
