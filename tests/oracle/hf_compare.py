#!/usr/bin/env python3
"""Hugging Face transformers (+ PEFT for the adapters) score the token ids that `seco eval` scored (prepare.sh).

Usage: python3 hf_compare.py DIR [--tol 2e-4]. Every DIR/FAMILY-{base,lora}-cN.json (and cuda-FAMILY.json: an adapter
trained on CUDA into DIR/cuda-FAMILY-run) is compared per token with transformers' float32 NLL under both its eager and
its sdpa attention; PEFT loads our adapter_config.json and adapter_model.safetensors as they are. Prints one JSON line
per comparison and exits 1 when any per-token difference exceeds --tol.
"""
import argparse, glob, json, os, sys

import torch
from transformers import AutoModelForCausalLM

p = argparse.ArgumentParser()
p.add_argument("dir"); p.add_argument("--tol", type=float, default=2e-4)
a = p.parse_args()
ids = torch.tensor([[int(x) for x in open(os.path.join(a.dir, "ids.txt")).read().strip().split(",")]])
rows = []
for ours_path in sorted(glob.glob(os.path.join(a.dir, "*.json"))):
    name = os.path.basename(ours_path)[:-5]
    parts = name.split("-")
    if name.startswith("cuda-"):
        family, adapter = parts[1], os.path.join(a.dir, f"cuda-{parts[1]}-run", "adapter")
    elif len(parts) == 3 and parts[1] in ("base", "lora"):
        family = parts[0]
        adapter = os.path.join(a.dir, f"{family}-run", "adapter") if parts[1] == "lora" else None
    else:
        continue
    ours = json.load(open(ours_path))["per_token_nll"]
    for attention in ("eager", "sdpa"):
        model = AutoModelForCausalLM.from_pretrained(os.path.join(a.dir, family), dtype=torch.float32, attn_implementation=attention)
        if adapter:
            from peft import PeftModel
            model = PeftModel.from_pretrained(model, adapter)  # fails loudly if our files are not PEFT's format
        model.eval()
        with torch.no_grad():
            logits = model(ids).logits.double()
        nll = torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="none").tolist()
        diff = max(abs(x - y) for x, y in zip(nll, ours)) if len(nll) == len(ours) else float("inf")
        rows.append({"case": name, "attention": attention, "adapter": adapter is not None, "tokens": len(nll),
                     "max_abs_diff": diff})
        print(json.dumps(rows[-1]), flush=True)
worst = max((r["max_abs_diff"] for r in rows), default=float("inf"))
print(json.dumps({"comparisons": len(rows), "worst_max_abs_diff": worst, "tol": a.tol}))
sys.exit(0 if rows and worst <= a.tol else 1)
