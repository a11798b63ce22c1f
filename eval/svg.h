/* eval/svg.h: two hand-written SVG charts for the eval reports, readable on their own (title, axis
 * labels, values on the bars / next to the points). No dependencies. */
#ifndef EVAL_SVG_H
#define EVAL_SVG_H

#include <stdbool.h>

/* Vertical bars, one per label; highlight[i] (may be NULL) draws bar i in a second colour and
 * legend_hi names that colour ("kept at 8 bits"). Returns 0 or -1 (cannot write). */
int svg_bar_chart(const char *path, const char *title, const char *xlabel, const char *ylabel,
                  const char *const *labels, const double *values, int n, const bool *highlight,
                  const char *legend_hi);

/* Scatter/line plot: n_series series of points (x[i], y[i]) with a label per point, joined in
 * the given order. log_y: logarithmic y axis. Returns 0 or -1. */
struct svg_series {
    const char *name;
    int n;
    const double *x, *y;
    const char *const *point_labels;   // may be NULL
};
int svg_line_plot(const char *path, const char *title, const char *xlabel, const char *ylabel,
                  const struct svg_series *series, int n_series, bool log_y);

#endif
