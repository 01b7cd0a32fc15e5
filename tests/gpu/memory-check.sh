#!/usr/bin/env bash
# The GPU memory check (docs/BENCHMARKS.md, Memory model): on a CUDA machine with PyTorch and no .NET, runs the
# self-contained seco CLI (published as docs/BENCHMARKS.md, On a GPU, describes) on PyTorch's libtorch and prints, for
# each point, the memory model's prediction and the device memory measured in a process of its own, then SeCO's and
# plain training's time with and without recompute. About 6 minutes on an H200.
#   SECO=path/to/published/seco bash tests/gpu/memory-check.sh > docs/bench/h200-memory-model.jsonl
set -uo pipefail
seco=${SECO:?set SECO to the published seco executable}
export LD_LIBRARY_PATH="$(python3 -c 'import torch, os; print(os.path.dirname(torch.__file__))')/lib:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | sed 's/^/# /'
point() { # shape length recompute(true|false) strategy
  local flag=""; [ "$3" = true ] && flag=--recompute-layers
  local common=(--shape "$1" --dtype bfloat16 --device cuda --chunk-size 1024 $flag)
  echo "# $1 $4 at $2 tokens, recompute $3"
  "$seco" bench "${common[@]}" --predict --json --lengths "$2" --strategies "$4"
  timeout 300 "$seco" bench "${common[@]}" --memory-point "$4@$2" || echo "{\"event\":\"memory\",\"status\":\"failed\",\"shape\":\"$1\",\"length\":$2}"
}
for length in 4096 16384; do
  for recompute in false true; do point qwen2.5-0.5b $length $recompute seco; done
done
point qwen2.5-0.5b 16384 false full
point qwen2.5-0.5b 16384 false inference
point llama-3-8b 16384 true seco
point llama-3-8b 16384 false seco
for recompute in false true; do
  flag=""; [ $recompute = true ] && flag=--recompute-layers
  echo "# time: qwen2.5-0.5b at 16K, recompute $recompute"
  timeout 240 "$seco" bench --shape qwen2.5-0.5b --dtype bfloat16 --device cuda --chunk-size 1024 $flag --lengths 16384 \
    --baselines-up-to 16384 --strategies full,seco,spaco,inference --steps 3 --json
done
