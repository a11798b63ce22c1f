/* eval/report.h: `./llm-eval sensitivity` (per-layer quantization sensitivity, sensitivity.c) and
 * `./llm-eval report` (the quantization ladder as a Markdown table, report.c). docs/EVAL.md */
#ifndef EVAL_REPORT_H
#define EVAL_REPORT_H

#include "eval/kld.h"
#include "eval/ppl.h"

/* Each returns the process exit code; argv[0] is the subcommand name. */
int sensitivity_main(int argc, char **argv);
int report_main(int argc, char **argv);
int plot_main(int argc, char **argv);   // eval/plot.c

/* Perplexity of one model configuration on a prepared plan (tokens from ppl_prepare with the same
 * vocabulary). kld_base_out / kld_in: optional KLD base file to write / compare with (may be NULL).
 * Returns 0 and fills r (and ks when comparing), or 1 with a message. */
int eval_config_ppl(struct engine *en, const struct ppl_plan *plan, const int32_t *tokens,
                    int batch, bool quiet, const char *kld_base_out, const char *kld_in,
                    struct ppl_result *r, struct kld_summary *ks);

/* Number of weights in the model file (all tensors), for bits per weight. */
int64_t eval_model_params(const struct engine *en);

#endif
