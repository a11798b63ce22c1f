/* eval/svg.c: bar chart and line plot as plain SVG 1.1 text (see svg.h). Layout: 900 x 480 px,
 * plot area inset by fixed margins, "nice" axis ticks (1, 2, 5 x 10^k). */
#include "eval/svg.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

enum { W = 900, H = 480, ML = 80, MR = 30, MT = 50, MB = 80 };
static const char *const colours[] = {"#4878a8", "#d0703a", "#4a9a5a", "#a04a8a", "#888888"};

static void esc(FILE *f, const char *s) {   // XML text escaping
    for (; s && *s; s++) {
        if (*s == '<') fputs("&lt;", f);
        else if (*s == '>') fputs("&gt;", f);
        else if (*s == '&') fputs("&amp;", f);
        else fputc(*s, f);
    }
}

static double nice_step(double range, int target) {
    double raw = range / target, p = pow(10, floor(log10(raw))), m = raw / p;
    return (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * p;
}

static FILE *open_svg(const char *path, const char *title, const char *xlabel, const char *ylabel) {
    FILE *f = fopen(path, "w");
    if (!f) return NULL;
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
               "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"12\">\n", W, H, W, H);
    fprintf(f, "<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n", W, H);
    fprintf(f, "<text x=\"%d\" y=\"28\" text-anchor=\"middle\" font-size=\"16\" font-weight=\"bold\">",
            W / 2);
    esc(f, title);
    fprintf(f, "</text>\n<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">", ML + (W - ML - MR) / 2,
            H - 12);
    esc(f, xlabel);
    fprintf(f, "</text>\n<text x=\"18\" y=\"%d\" text-anchor=\"middle\" transform=\"rotate(-90 18 %d)\">",
            MT + (H - MT - MB) / 2, MT + (H - MT - MB) / 2);
    esc(f, ylabel);
    fprintf(f, "</text>\n");
    return f;
}

/* Horizontal grid lines and y tick labels for [lo, hi] mapped by ymap. */
static void y_axis(FILE *f, double lo, double hi, bool log_y) {
    double plo = log_y ? log10(lo) : lo, phi = log_y ? log10(hi) : hi;
    double step = nice_step(phi - plo, 6);
    for (double v = ceil(plo / step) * step; v <= phi + 1e-9 * step; v += step) {
        double y = MT + (H - MT - MB) * (1 - (v - plo) / (phi - plo));
        double val = log_y ? pow(10, v) : v;
        fprintf(f, "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#dddddd\"/>\n", ML,
                W - MR, y, y);
        fprintf(f, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%.4g</text>\n", ML - 6, y + 4, val);
    }
    fprintf(f, "<line x1=\"%d\" x2=\"%d\" y1=\"%d\" y2=\"%d\" stroke=\"black\"/>\n", ML, ML, MT, H - MB);
    fprintf(f, "<line x1=\"%d\" x2=\"%d\" y1=\"%d\" y2=\"%d\" stroke=\"black\"/>\n", ML, W - MR,
            H - MB, H - MB);
}

int svg_bar_chart(const char *path, const char *title, const char *xlabel, const char *ylabel,
                  const char *const *labels, const double *values, int n, const bool *highlight,
                  const char *legend_hi) {
    if (n <= 0) return -1;
    FILE *f = open_svg(path, title, xlabel, ylabel);
    if (!f) return -1;
    double lo = 0, hi = 0;
    for (int i = 0; i < n; i++) {
        if (isfinite(values[i]) && values[i] > hi) hi = values[i];
        if (isfinite(values[i]) && values[i] < lo) lo = values[i];
    }
    if (hi - lo <= 0) hi = lo + 1;
    hi += 0.08 * (hi - lo);   // room for the value labels
    y_axis(f, lo, hi, false);
    double pw = W - ML - MR, ph = H - MT - MB, bw = pw / n;
    double y0 = MT + ph * (1 - (0 - lo) / (hi - lo));
    for (int i = 0; i < n; i++) {
        double v = isfinite(values[i]) ? values[i] : hi;
        double y = MT + ph * (1 - (v - lo) / (hi - lo));
        double top = y < y0 ? y : y0, h = fabs(y0 - y);
        const char *c = highlight && highlight[i] ? colours[1] : colours[0];
        fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\">"
                   "<title>%s: %.6g</title></rect>\n",
                ML + i * bw + bw * 0.1, top, bw * 0.8, h, c, labels[i], values[i]);
        if (n <= 40)
            fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"%d\">%.3g</text>\n",
                    ML + (i + 0.5) * bw, top - 3, n > 20 ? 8 : 10, values[i]);
        fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\" font-size=\"%d\">", ML + (i + 0.5) * bw,
                H - MB + 14, n > 30 ? 8 : 11);
        esc(f, labels[i]);
        fprintf(f, "</text>\n");
    }
    if (highlight && legend_hi) {
        fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"12\" height=\"12\" fill=\"%s\"/>", W - MR - 200,
                MT - 2, colours[1]);
        fprintf(f, "<text x=\"%d\" y=\"%d\">", W - MR - 182, MT + 9);
        esc(f, legend_hi);
        fprintf(f, "</text>\n");
    }
    fprintf(f, "</svg>\n");
    return fclose(f) == 0 ? 0 : -1;
}

int svg_line_plot(const char *path, const char *title, const char *xlabel, const char *ylabel,
                  const struct svg_series *series, int n_series, bool log_y) {
    double xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
    for (int s = 0; s < n_series; s++)
        for (int i = 0; i < series[s].n; i++) {
            double x = series[s].x[i], y = series[s].y[i];
            if (!isfinite(x) || !isfinite(y) || (log_y && y <= 0)) continue;
            if (x < xlo) xlo = x;
            if (x > xhi) xhi = x;
            if (y < ylo) ylo = y;
            if (y > yhi) yhi = y;
        }
    if (!(xlo <= xhi)) return -1;
    FILE *f = open_svg(path, title, xlabel, ylabel);
    if (!f) return -1;
    // pad the ranges by 8% so that points and labels stay inside the plot
    double xpad = (xhi - xlo > 0 ? xhi - xlo : 1) * 0.08;
    xlo -= xpad, xhi += xpad;
    if (log_y) {
        double r = yhi / ylo > 1.01 ? yhi / ylo : 1.1;
        ylo /= pow(r, 0.08), yhi *= pow(r, 0.08);
    } else {
        double ypad = (yhi - ylo > 0 ? yhi - ylo : 1) * 0.08;
        ylo -= ypad, yhi += ypad;
    }
    y_axis(f, ylo, yhi, log_y);
    double pw = W - ML - MR, ph = H - MT - MB;
    double step = nice_step(xhi - xlo, 8);
    for (double v = ceil(xlo / step) * step; v <= xhi; v += step) {
        double x = ML + pw * (v - xlo) / (xhi - xlo);
        fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%.4g</text>\n", x, H - MB + 16, v);
    }
    for (int s = 0; s < n_series; s++) {
        const char *c = colours[s % 5];
        const struct svg_series *se = &series[s];
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", c);
        for (int i = 0; i < se->n; i++) {
            double y = log_y ? log10(se->y[i]) : se->y[i];
            double py0 = log_y ? log10(ylo) : ylo, py1 = log_y ? log10(yhi) : yhi;
            if (!isfinite(y)) continue;
            fprintf(f, "%.1f,%.1f ", ML + pw * (se->x[i] - xlo) / (xhi - xlo),
                    MT + ph * (1 - (y - py0) / (py1 - py0)));
        }
        fprintf(f, "\"/>\n");
        for (int i = 0; i < se->n; i++) {
            double y = log_y ? log10(se->y[i]) : se->y[i];
            double py0 = log_y ? log10(ylo) : ylo, py1 = log_y ? log10(yhi) : yhi;
            if (!isfinite(y)) continue;
            double px = ML + pw * (se->x[i] - xlo) / (xhi - xlo), py = MT + ph * (1 - (y - py0) / (py1 - py0));
            fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"%s\"><title>%.4g, %.4g</title></circle>\n",
                    px, py, c, se->x[i], se->y[i]);
            if (se->point_labels && se->point_labels[i]) {
                fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"10\" fill=\"%s\">", px + 6,
                        py - 6 + 12 * s, c);
                esc(f, se->point_labels[i]);
                fprintf(f, " (%.4g)</text>\n", se->y[i]);
            }
        }
        fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"12\" height=\"12\" fill=\"%s\"/>", W - MR - 160,
                MT + 4 + 18 * s, c);
        fprintf(f, "<text x=\"%d\" y=\"%d\">", W - MR - 142, MT + 15 + 18 * s);
        esc(f, se->name);
        fprintf(f, "</text>\n");
    }
    fprintf(f, "</svg>\n");
    return fclose(f) == 0 ? 0 : -1;
}
