#!/bin/bash
# Writes the inputs of the Hugging Face oracle (hf_compare.py) into OUT (default: runs/oracle):
# tiny random models of each supported family in Hugging Face's layout, a LoRA adapter trained on each by `seco train`
# (so that B != 0 and the adapter changes the scores), and our per-token NLLs from `seco eval` for one id sequence,
# scored whole (one chunk) and in chunks of 12 (the cached-prefix path), with and without the adapter.
# Families: llama, mistral (sliding window 16), qwen2 (q/k/v bias, tied embeddings), qwen2sw (qwen2 windowed, 16).
# hidden 16 keeps the four models small enough (about 20 MB) to carry to a machine with Python.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-runs/oracle}
SECO=${SECO:-"dotnet src/Microsoft.ML.Seco.Cli/bin/Release/net10.0/seco.dll"}
[ -n "${SECO_SKIP_BUILD:-}" ] || dotnet build src/Microsoft.ML.Seco.Cli -c Release -v q -nologo > /dev/null
rm -rf "$OUT"; mkdir -p "$OUT"
head -c 20000 README.md > "$OUT/train.txt"
IDS=$(python3 -c "import random; r=random.Random(7); print(','.join(str(r.randrange(50257)) for _ in range(70)))")
echo "$IDS" > "$OUT/ids.txt"
for family in llama mistral qwen2 qwen2sw; do
  type=${family%sw}
  $SECO init-tiny --out "$OUT/$family" --model-type "$type" --layers 2 --hidden-size 16 --heads 2 --kv-heads 1 --intermediate-size 48 --seed 3 > /dev/null
  python3 - "$OUT/$family/config.json" "$family" <<'PY'
import json, sys
path, family = sys.argv[1], sys.argv[2]
config = json.load(open(path))
if family == "mistral": config["sliding_window"] = 16
if family == "qwen2sw": config.update(use_sliding_window=True, max_window_layers=0, sliding_window=16)
json.dump(config, open(path, "w"), indent=2)
PY
  $SECO train --model "$OUT/$family" --data "$OUT/train.txt" --output "$OUT/$family-run" --max-steps 6 --lr 1e-2 --max-seq-len 64 \
    --chunk-size 16 --lora-targets q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj --device cpu --dtype float32 --json > "$OUT/$family-train.log"
  for chunk in 70 12; do
    $SECO eval --model "$OUT/$family" --adapter "$OUT/$family-run/adapter" --input-ids "$IDS" --chunk-size $chunk --per-token --json --device cpu > "$OUT/$family-lora-c$chunk.json"
  done
  $SECO eval --model "$OUT/$family" --input-ids "$IDS" --chunk-size 12 --per-token --json --device cpu > "$OUT/$family-base-c12.json"
done
# What the comparison does not read: checkpoints, model.seco, the tokenizers of the models nobody trains again.
rm -rf "$OUT"/*-run/checkpoints "$OUT"/*-run/model.seco "$OUT"/mistral/tokenizer*.json "$OUT"/qwen2*/tokenizer*.json
echo "wrote $OUT ($(du -sh "$OUT" | cut -f1)); next, where torch, transformers and peft are: python3 tests/oracle/hf_compare.py $OUT"
