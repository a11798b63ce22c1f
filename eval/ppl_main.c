/* eval/ppl_main.c: ./ppl, perplexity of a model on a text file under the llama.cpp, GPTQ or
 * TinyStories protocol, with optional KL divergence against a base model's saved top-K log-probs.
 * Usage: ./ppl -m MODEL -f FILE [options]; docs/EVAL.md. Test: tests/test_eval_ppl.c */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "eval/kld.h"
#include "eval/ppl.h"

static void usage(const char *argv0) {
    fprintf(stderr,
            "usage: %s -m MODEL -f FILE [options]\n%s"
            "  -f FILE                   text file (wiki.test.raw, TinyStories excerpt, ...)\n"
            "  --protocol P              llamacpp (default) | gptq | stories\n"
            "  -c N                      context per chunk (default 512; gptq 2048)\n"
            "  --chunks N                evaluate at most N chunks (stories: N stories)\n"
            "  -b N                      tokens per forward call (default 512)\n"
            "  --gptq-raw                gptq: tokenize the file as is (no \"\\n\\n\".join of rows)\n"
            "  --json                    print one JSON object on stdout\n"
            "  --quiet                   no progress bar\n"
            "  --kl-divergence-base F    write the base model's top-%d log-probs to F\n"
            "  --kl-divergence F         compare with the base file F (same text and flags)\n",
            argv0, eval_model_flags_help, KLD_TOPK);
    exit(2);
}

int main(int argc, char **argv) {
    struct eval_model_args ma = {0};
    const char *file = NULL, *kld_base = NULL, *kld_cmp = NULL;
    int n_ctx = 0, max_chunks = 0, batch = 512;
    int proto = PPL_LLAMACPP;
    bool json = false, quiet = false, gptq_raw = false;
    for (int i = 1; i < argc;) {
        int r = eval_parse_model_flag(&ma, argc, argv, &i);
        if (r < 0) usage(argv[0]);
        if (r > 0) continue;
        const char *f = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int used = 2;
        if (!strcmp(f, "-f") && v) file = v;
        else if ((!strcmp(f, "-c") || !strcmp(f, "--ctx-size")) && v) n_ctx = eval_atoi(f, v);
        else if (!strcmp(f, "--chunks") && v) max_chunks = eval_atoi(f, v);
        else if ((!strcmp(f, "-b") || !strcmp(f, "--batch")) && v) batch = eval_atoi(f, v);
        else if (!strcmp(f, "--protocol") && v) {
            if ((proto = ppl_protocol_from_name(v)) < 0) {
                fprintf(stderr, "error: unknown protocol '%s'\n", v);
                usage(argv[0]);
            }
        } else if (!strcmp(f, "--kl-divergence-base") && v) kld_base = v;
        else if (!strcmp(f, "--kl-divergence") && v) kld_cmp = v;
        else if (!strcmp(f, "--json")) json = true, used = 1;
        else if (!strcmp(f, "--quiet")) quiet = true, used = 1;
        else if (!strcmp(f, "--gptq-raw")) gptq_raw = true, used = 1;
        else if (!strcmp(f, "-h") || !strcmp(f, "--help")) usage(argv[0]);
        else {
            fprintf(stderr, "error: unknown or incomplete flag '%s'\n", f);
            usage(argv[0]);
        }
        i += used;
    }
    if (!file || !ma.model) usage(argv[0]);
    if (kld_base && kld_cmp) {
        fprintf(stderr, "error: --kl-divergence-base and --kl-divergence are exclusive\n");
        return 2;
    }
    if (n_ctx <= 0) n_ctx = proto == PPL_GPTQ ? 2048 : 512;

    char *text = eval_read_file(file, NULL);
    if (!text) return 1;
    struct engine *en = eval_load(&ma, n_ctx, quiet);
    if (!en) return 1;
    const struct model_config *cfg = engine_config(en);

    struct ppl_plan plan;
    int64_t n_tokens = 0;
    int32_t *tok = ppl_prepare(en, proto, text, n_ctx, max_chunks, gptq_raw, &plan, &n_tokens);
    free(text);
    if (!tok) return 1;
    uint64_t hash = ppl_plan_hash(&plan, tok);
    if (!quiet)
        fprintf(stderr, "ppl: %s, protocol %s, %lld tokens, %d chunks of <= %d, %lld scored\n",
                cfg->name, ppl_protocol_name(plan.protocol), (long long)n_tokens,
                plan.n_segments, plan.n_ctx, (long long)plan.n_scored);

    struct err e = {0};
    struct kld_writer kw;
    struct kld_reader kr;
    ppl_row_fn row = NULL;
    void *row_u = NULL;
    int rc = ERR_OK;
    if (kld_base) {
        struct kld_header h = {.vocab = (uint32_t)cfg->vocab_size, .n_ctx = (uint32_t)plan.n_ctx,
                               .n_chunks = (uint32_t)plan.n_segments,
                               .protocol = (uint32_t)plan.protocol, .token_hash = hash};
        snprintf(h.model, sizeof h.model, "%s", cfg->name);
        snprintf(h.protocol_name, sizeof h.protocol_name, "%s", ppl_protocol_name(plan.protocol));
        rc = kld_writer_open(&kw, kld_base, &h, &e);
        row = kld_writer_row, row_u = &kw;
    } else if (kld_cmp) {
        rc = kld_reader_open(&kr, kld_cmp, cfg->vocab_size, hash, &e);
        row = kld_reader_row, row_u = &kr;
    }
    struct ppl_result res = {0};
    if (rc == ERR_OK) {
        struct eval_progress prog;
        eval_progress_start(&prog, "chunks", plan.n_segments, !quiet);
        rc = ppl_run(&plan, tok, cfg->vocab_size, batch, ppl_engine_eval, en, row, row_u, &prog,
                     &res, &e);
        eval_progress_end(&prog);
    }
    struct kld_summary ks = {0};
    if (kld_base) {
        int rc2 = kld_writer_close(&kw, rc == ERR_OK ? &e : NULL);
        if (rc == ERR_OK) rc = rc2;
    } else if (kld_cmp) {
        kld_reader_summary(&kr, &ks);
        if (rc == ERR_OK && kr.rows_read != kr.h.n_rows)
            rc = ERR(&e, ERR_ARG, "read %llu of %llu base rows", (unsigned long long)kr.rows_read,
                     (unsigned long long)kr.h.n_rows);
        kld_reader_close(&kr);
    }
    if (rc != ERR_OK) {
        fprintf(stderr, "error: %s\n", e.msg);
        return 1;
    }

    double ppl = nll_stats_ppl(&res.st), ppl_se = nll_stats_ppl_stderr(&res.st);
    double tps = res.seconds > 0 ? (double)res.n_eval / res.seconds : 0;
    fprintf(stderr, "Final estimate: PPL = %.4f +/- %.5f  (%lld tokens scored, %.1f tok/s, %.2f s)\n",
            ppl, ppl_se, (long long)res.st.n, tps, res.seconds);
    if (kld_cmp)
        fprintf(stderr,
                "KLD vs %s: mean %.6f +/- %.6f (max %.4f), same top-1 %.2f%%, "
                "PPL %.4f -> %.4f (delta %+.4f)\n",
                kr.h.model, ks.mean, ks.stderr_mean, ks.max, ks.top1_pct, ks.ppl_base, ks.ppl_cur,
                ks.delta_ppl);
    if (json) {
        printf("{\"model\":");
        eval_json_str(stdout, cfg->name);
        printf(",\"file\":");
        eval_json_str(stdout, file);
        printf(",\"protocol\":\"%s\",\"n_ctx\":%d,\"chunks\":%d,\"tokens_total\":%lld,"
               "\"tokens_scored\":%lld,\"tokens_evaluated\":%lld,\"mean_nll\":%.8f,"
               "\"nll_stderr\":%.8f,\"ppl\":%.6f,\"ppl_stderr\":%.6f,\"seconds\":%.3f,"
               "\"tok_per_s\":%.2f,\"quant_bits\":%d",
               ppl_protocol_name(plan.protocol), plan.n_ctx, plan.n_segments, (long long)n_tokens,
               (long long)res.st.n, (long long)res.n_eval, nll_stats_mean(&res.st),
               nll_stats_stderr(&res.st), ppl, ppl_se, res.seconds, tps, ma.quant_bits);
        if (kld_cmp)
            printf(",\"kld\":{\"mean\":%.8f,\"stderr\":%.8f,\"max\":%.6f,\"top1_pct\":%.4f,"
                   "\"ppl_base\":%.6f,\"delta_ppl\":%.6f}",
                   ks.mean, ks.stderr_mean, ks.max, ks.top1_pct, ks.ppl_base, ks.delta_ppl);
        printf("}\n");
    }
    ppl_plan_free(&plan);
    free(tok);
    engine_free(en);
    return 0;
}
