#!/usr/bin/env bash
# tests/test_kernels_x8_noamx.sh: test_kernels_x8 with AMX disabled (LLM_AMX=0), so the X8 AVX-512
# prefill tiles (t >= AMX_MIN_T) are checked too, not only the AMX path (see test_kernels_noamx.sh).
set -u
B=${BUILD:-build}
exec env LLM_AMX=0 "$B/tests/test_kernels_x8"
