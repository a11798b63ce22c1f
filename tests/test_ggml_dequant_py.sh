#!/usr/bin/env bash
# tests/test_ggml_dequant_py.sh: quant/ggml_quants.c against gguf-py (an independent implementation):
# random Q8_0/Q4_0/Q4_1/Q4_K/Q5_K/Q6_K blocks, gguf-py's Q8_0/Q4_0/Q4_1 quantizers (bit-exact), and real
# SmolLM2 tensors (Q4_1, Q8_0). Exit 77 (SKIP) without python gguf or the test binary.
set -u
BUILD=${BUILD:-build}
bin=$BUILD/tests/test_ggml_dequant
model=models/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$model" ] || model=${TEST_DATA:-../shared/data}/models/SmolLM2-135M-Instruct.Q4_1.gguf
[ -x "$bin" ] || { echo "SKIP: $bin not built"; exit 77; }
PY=${PYTHON:-python3}   # make test sets PYTHON (check-python: the system python3 or build/pyenv)
"$PY" -c "import numpy, gguf" 2>/dev/null || { echo "SKIP: $PY lacks gguf/numpy"; exit 77; }
tmp=$(mktemp /tmp/ggml_ref.XXXXXX)
trap 'rm -f "$tmp"' EXIT
if [ -f "$model" ]; then
    "$PY" tests/ggml_dequant_ref.py "$tmp" "$model" || exit $?
else
    echo "note: $model missing, random blocks only (make models)"
    "$PY" tests/ggml_dequant_ref.py "$tmp" || exit $?
fi
"$bin" --ref "$tmp"
