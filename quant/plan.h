/* quant/plan.h: the mixed-precision bit plan: which qtype each weight tensor gets.
 * Spec: comma-separated rules "key=value", later rules override earlier ones, e.g.
 *   "default=4,blk.0-1=8,output=8,token_embd=8,blk.5.ffn_down=3,attn_v=8"
 * keys:   default | output | token_embd | blk.N | blk.A-B (whole layers) | blk.N.<kind> |
 *         blk.A-B.<kind> | <kind> (all layers), kind in attn_q attn_k attn_v attn_output
 *         ffn_gate ffn_up ffn_down (a trailing ".weight" is accepted)
 * values: bits 2 3 4 8 16 32, or a type name (q4_g64, q4, f16, bf16, q8_0 ...).
 * Norms and 1-D tensors stay F32. Test: tests/test_quant_opt.c */
#ifndef QUANT_PLAN_H
#define QUANT_PLAN_H

#include "quant/qtypes.h"

#define QUANT_PLAN_MAX_RULES 1024

struct quant_rule {
    int layer_lo, layer_hi;  // inclusive layer range; -1, -1: not a per-layer rule
    char kind[24];           // "ffn_down", "output", "token_embd"; "" = every tensor of the layers
    enum qtype type;
};

struct quant_plan {
    enum qtype default_type;
    int n_rules;
    struct quant_rule rules[QUANT_PLAN_MAX_RULES];
};

/* Parses spec (NULL or "" = no rules) into *p, with default_bits (2,3,4,8,16,32) as the type of
 * every tensor no rule names. Returns 0 or ERR_ARG with a message naming the bad token. */
int quant_plan_parse(struct quant_plan *p, const char *spec, int default_bits, struct err *e);

/* Adds the rules of spec to an already parsed plan (same syntax; "default=" allowed). */
int quant_plan_add(struct quant_plan *p, const char *spec, struct err *e);

/* Reads a plan file: the same rules, one or more per line (commas allowed), '#' starts a comment.
 * Rules are added to *p (call quant_plan_parse first for the default). ERR_IO / ERR_ARG
 * (with file:line). */
int quant_plan_load_file(struct quant_plan *p, const char *path, struct err *e);

/* The type for tensor `tensor_name` (GGUF naming, "blk.3.ffn_down.weight") with row length ne0.
 * Norms stay F32. A type whose group does not divide ne0 falls back to F16. */
enum qtype quant_plan_type(const struct quant_plan *p, const char *tensor_name, int64_t ne0);

/* As quant_plan_type, also given n_dims (1-D tensors stay F32); *fell_back (may be NULL) is set
 * when the planned type did not fit ne0 and F16 was used instead. */
enum qtype quant_plan_type_ex(const struct quant_plan *p, const char *tensor_name, int n_dims,
                              int64_t ne0, bool *fell_back);

#endif
