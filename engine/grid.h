/* engine/grid.h: ./infer --grid GRID_FILE -f PROMPTS [-o DIR]: runs every option set of the grid
 * file (one per line: "--temp 0.7 --top-k 40" or "temp=0.7 top-k=40" or "temp=0.7,top-k=40";
 * "base" = the command line's options unchanged; # comments) over every prompt (one per line),
 * with the same model, seed and prompts; writes DIR/run_NNN.log (outputs and timings), one
 * DIR/<option>.csv per option name and DIR/summary.csv. Format: docs/GENERATION.md. */
#ifndef ENGINE_GRID_H
#define ENGINE_GRID_H

#include "engine/gen_opts.h"

/* Returns 0 on success; prints a one-line error and returns 1 otherwise. */
int grid_main(const struct run_opts *base);

/* Splits one grid line into argv-style flags and values (key=value -> --key value; short llama.cpp
 * flags such as c, n, s, ctk, ctv keep one dash). Returns the count, -1 on error. The strings point
 * into buf (a copy of line, modified) or into static flag names. */
int grid_split_line(const char *line, char *buf, size_t buf_len, const char **argv, int max);

#endif
