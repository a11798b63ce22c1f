#!/usr/bin/env bash
# tests/gpu_check.sh: everything that needs a GPU, in one command (for a lent H100/H200):
#   bash tests/gpu_check.sh        (writes logs under ${OUT:-/tmp/gpu_check})
# Builds with CUDA for sm_90, runs the CUDA op tests and the CPU-vs-GPU model tests, then the speed
# runs for docs/BENCH.md (TinyLlama-shaped synthetic model, decode/prefill, kernel microbenchmarks).
set -u
OUT=${OUT:-/tmp/gpu_check}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv | tee "$OUT/gpu.txt"
make -j16 cuda CUDA_ARCH=sm_90 BUILD=build >"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
make models >/dev/null 2>&1 || echo "no SmolLM2 (offline): model tests use stories260K only"
make -j16 BUILD=build tests-build >>"$OUT/build.log" 2>&1
build/tests/test_cuda_ops 2>&1 | tee "$OUT/test_cuda_ops.log" | tail -5
build/tests/test_cuda_model 2>&1 | tee "$OUT/test_cuda_model.log" | tail -25
M=/tmp/tinyllama-f16.gguf
[ -f $M ] || ./llm-bench --make-model tinyllama -o $M --type f16 >/dev/null 2>&1
./llm-bench -m $M -ngl 99 -q 0,8,4,3,2 --quant-method rtn -p 512 -n 128 -r 3 2>&1 | tee "$OUT/bench_gpu.md" | tail -12
echo "GPU kernel microbenchmarks: not implemented yet (llm-bench --kernels is CPU-only)"
