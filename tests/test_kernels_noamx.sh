#!/usr/bin/env bash
# tests/test_kernels_noamx.sh: on a CPU with AMX, cpu_matmul routes int8-type prefill (t >= AMX_MIN_T)
# to the AMX kernels, so test_kernels_matmul alone would test the AVX-512/AVX2 prefill tiles only at
# t <= 3. This runs it again with AMX disabled (LLM_AMX=0), so every tile path is checked against the
# refs. Without AMX it is the same run twice (cheap: ~5 s).
set -u
B=${BUILD:-build}
exec env LLM_AMX=0 "$B/tests/test_kernels_matmul"
