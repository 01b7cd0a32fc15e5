#!/usr/bin/env bash
# Measures the peak memory of single SeCO, SpaCO-shaped, inference and baseline steps, each in a process of its own
# (seco bench's memory-point mode), on the shapes and chunk sizes the memory model is checked on. Writes
# docs/bench/memory-model-check.csv; StepMemoryTests compares the model's predictions with it (within 15 %).
# Run alone on a quiet machine (2 cores here): about 20 minutes.
#   bash docs/bench/memory-model-check.sh [path/to/seco]
set -euo pipefail
cd "$(dirname "$0")/../.."
seco=${1:-}
if [ -z "$seco" ]; then
  dotnet build src/Microsoft.ML.Seco.Cli -c Release -o /tmp/seco-memory-check >/dev/null
  seco=/tmp/seco-memory-check/seco
fi
out=docs/bench/memory-model-check.csv
echo "shape,dtype,chunk_size,recompute_layers,strategy,length,peak_bytes" > "$out"
point() { # shape chunk recompute strategy length
  local flag=""; [ "$3" = true ] && flag=--recompute-layers
  local line
  line=$("$seco" bench --shape "$1" --chunk-size "$2" $flag --dtype float32 --memory-point "$4@$5" | grep '^{')
  local bytes; bytes=$(sed -E 's/.*"peak_bytes":([0-9]+).*/\1/' <<<"$line")
  echo "$1,float32,$2,$3,$4,$5,$bytes" | tee -a "$out"
}
for shape in default gqa; do
  chunks="128 512 1024"; [ $shape = gqa ] && chunks="128 1024"
  for chunk in $chunks; do
    for recompute in false true; do
      for length in 2048 8192; do point $shape $chunk $recompute seco $length; done
    done
    point $shape $chunk false inference 8192
  done
  for length in 2048 4096; do point $shape 128 false full $length; point $shape 128 false checkpoint $length; done
done
for chunk in 256 1024; do
  for recompute in false true; do point qwen2.5-0.5b $chunk $recompute seco 2048; done
done
point qwen2.5-0.5b 1024 false inference 2048
