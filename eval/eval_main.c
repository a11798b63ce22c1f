/* eval/eval_main.c: ./llm-eval, the evaluation suite: `eval arc`, `eval sensitivity`, `eval report`,
 * `eval plot`.
 * Each subcommand lives in its own file (arc.c, sensitivity.c, report.c). docs/EVAL.md */
#include <stdio.h>
#include <string.h>

#include "eval/arc.h"
#include "eval/report.h"

int main(int argc, char **argv) {
    const char *cmd = argc > 1 ? argv[1] : "";
    if (!strcmp(cmd, "arc")) return arc_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "sensitivity")) return sensitivity_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "report")) return report_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "plot")) return plot_main(argc - 1, argv + 1);
    fprintf(stderr,
            "usage: %s COMMAND [options]\n"
            "  arc          -m MODEL -f arc_easy_validation.json [--limit N] [-q N]\n"
            "  sensitivity  -m MODEL -f TEXT [--bits 2] [--chunks N] [-c 256] -o DIR\n"
            "  report       -m MODEL -f wiki.test.raw [--chunks N] [--arc FILE] -o REPORT.md\n"
            "  plot         RESULTS.csv -o CHART.svg   (PPL against file size, one series per method)\n"
            "run '%s COMMAND --help' for a command's options\n",
            argv[0], argv[0]);
    return 2;
}
