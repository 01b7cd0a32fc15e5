#!/usr/bin/env bash
# The GPU speed check (issue #22; docs/BENCHMARKS.md, Operations dispatched and On a GPU): on a CUDA machine with
# PyTorch and no .NET, runs the self-contained seco CLI (published as docs/BENCHMARKS.md, On a GPU, describes) on
# PyTorch's libtorch. In order: float64 gradcheck on CUDA; which attention kernel serves each dtype; Qwen2.5-0.5B's
# shape at 16K (full, seco, spaco, inference; operations per step; --phases), the same with the blockwise attention
# for comparison; Llama-3.2-3B's shape at 8K; SeCO's CUDA memory at two lengths, each in a process of its own.
# Targets: SeCO / full ≤ 2.0 (0.5B, 16K) and ≤ 1.5 (3B, 8K); SpaCO / inference ≤ 1.5; memory slope ≤ 2.5× the cache.
# About 7 minutes on an H200; every step has its own timeout, so one that hangs does not take the rest with it.
#   SECO=path/to/published/seco bash tests/gpu/check.sh > docs/bench/h200-check.txt 2>&1
set -uo pipefail
seco=${SECO:?set SECO to the published seco executable}
export LD_LIBRARY_PATH="$(python3 -c 'import torch, os; print(os.path.dirname(torch.__file__))')/lib:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | sed 's/^/# /'
run() { # seconds description command...
  local limit=$1 what=$2; shift 2
  echo "# $what"
  local start=$SECONDS
  timeout "$limit" "$@"; local rc=$?
  echo "# exit $rc after $((SECONDS - start)) s"
}

tiny=$(mktemp -d)
"$seco" init-tiny --out "$tiny" --no-tokenizer > /dev/null
run 60 "float64 gradcheck on CUDA: SeCO against full backpropagation" "$seco" gradcheck --model "$tiny" --seq-len 200 --chunk-size 48 --device cuda --json
run 60 "float64 gradcheck on CUDA: Bernoulli SpaCO's exact expectation" "$seco" gradcheck --model "$tiny" --seq-len 200 --chunk-size 48 \
  --strategy spaco-bernoulli --sampled-chunks 2 --compensation both --device cuda --json
run 60 "float32 gradcheck on CUDA (the fused kernels, if their check passed)" "$seco" gradcheck --model "$tiny" --seq-len 200 --chunk-size 48 \
  --dtype float32 --device cuda --json
for dtype in float32 bfloat16; do
  run 60 "attention kernel and a smoke run, $dtype" "$seco" bench --quick --device cuda --dtype "$dtype" --strategies seco,inference --steps 1
done
common=(--device cuda --dtype bfloat16 --chunk-size 1024 --steps 3 --phases)
run 150 "qwen2.5-0.5b at 16K, fused attention" "$seco" bench --shape qwen2.5-0.5b --lengths 16384 --baselines-up-to 16384 \
  --strategies full,seco,spaco,inference "${common[@]}"
run 90 "qwen2.5-0.5b at 16K, blockwise attention (the previous path, for comparison)" "$seco" bench --shape qwen2.5-0.5b --lengths 16384 \
  --strategies seco,inference --attention blockwise "${common[@]}"
run 120 "llama-3.2-3b at 8K" "$seco" bench --shape llama-3.2-3b --lengths 8192 --baselines-up-to 8192 \
  --strategies full,seco,spaco,inference "${common[@]}"
for length in 8192 16384; do
  run 60 "SeCO's CUDA memory at $length tokens (own process)" "$seco" bench --shape qwen2.5-0.5b --device cuda --dtype bfloat16 \
    --chunk-size 1024 --memory-point "seco@$length"
done
