/* eval/plot.c: `./llm-eval plot`, a PPL-vs-size chart (SVG) from a CSV of quantized files, one
 * series per engine/method: lines "series,label,bytes,ppl" ('#' comments, a header line allowed).
 * docs/EVAL.md "Quality against llama.cpp" is drawn with it. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval/report.h"
#include "eval/svg.h"

#define PLOT_MAX 256
#define PLOT_SERIES 16

int plot_main(int argc, char **argv) {
    const char *in = NULL, *out = NULL, *title = "Perplexity against file size";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-o") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(argv[i], "--title") && i + 1 < argc) title = argv[++i];
        else if (argv[i][0] != '-' && !in) in = argv[i];
        else {
            fprintf(stderr, "usage: llm-eval plot RESULTS.csv -o CHART.svg [--title T]\n"
                            "  RESULTS.csv: lines series,label,bytes,ppl\n");
            return 2;
        }
    }
    if (!in || !out) {
        fprintf(stderr, "error: need RESULTS.csv and -o CHART.svg\n");
        return 2;
    }
    FILE *f = fopen(in, "r");
    if (!f) { perror(in); return 1; }
    static char names[PLOT_SERIES][64], labels[PLOT_MAX][64];
    static double x[PLOT_SERIES][PLOT_MAX], y[PLOT_SERIES][PLOT_MAX];
    static const char *lp[PLOT_SERIES][PLOT_MAX];
    int cnt[PLOT_SERIES] = {0}, ns = 0, np = 0, line = 0;
    bool header_done = false;
    char buf[512];
    while (fgets(buf, sizeof buf, f)) {
        line++;
        if (buf[0] == '#' || buf[0] == '\n') continue;
        char s[64], l[64];
        double b, p;
        if (sscanf(buf, "%63[^,],%63[^,],%lf,%lf", s, l, &b, &p) != 4) {
            if (!header_done) { header_done = true; continue; }   // the header line
            fprintf(stderr, "error: %s:%d: expected series,label,bytes,ppl\n", in, line);
            fclose(f);
            return 1;
        }
        header_done = true;
        if (!(b > 0) || !(p > 0)) {
            fprintf(stderr, "error: %s:%d: bytes and ppl must be positive\n", in, line);
            fclose(f);
            return 1;
        }
        int k = 0;
        while (k < ns && strcmp(names[k], s)) k++;
        if (k == ns) {
            if (ns == PLOT_SERIES) { fprintf(stderr, "error: more than %d series\n", PLOT_SERIES); fclose(f); return 1; }
            snprintf(names[ns++], sizeof names[0], "%s", s);
        }
        if (np == PLOT_MAX || cnt[k] == PLOT_MAX) { fprintf(stderr, "error: more than %d points\n", PLOT_MAX); fclose(f); return 1; }
        snprintf(labels[np], sizeof labels[0], "%s", l);
        x[k][cnt[k]] = b / 1e6, y[k][cnt[k]] = p, lp[k][cnt[k]] = labels[np];
        cnt[k]++, np++;
    }
    fclose(f);
    if (!np) { fprintf(stderr, "error: %s: no points\n", in); return 1; }
    struct svg_series ser[PLOT_SERIES];
    for (int k = 0; k < ns; k++) {
        // join points by size
        for (int i = 1; i < cnt[k]; i++)
            for (int j = i; j > 0 && x[k][j] < x[k][j - 1]; j--) {
                double t = x[k][j]; x[k][j] = x[k][j - 1]; x[k][j - 1] = t;
                t = y[k][j]; y[k][j] = y[k][j - 1]; y[k][j - 1] = t;
                const char *u = lp[k][j]; lp[k][j] = lp[k][j - 1]; lp[k][j - 1] = u;
            }
        ser[k] = (struct svg_series){.name = names[k], .n = cnt[k], .x = x[k], .y = y[k], .point_labels = lp[k]};
    }
    if (svg_line_plot(out, title, "file size (MB)", "perplexity (log scale)", ser, ns, true)) {
        fprintf(stderr, "error: cannot write %s\n", out);
        return 1;
    }
    printf("wrote %s: %d points in %d series\n", out, np, ns);
    return 0;
}
