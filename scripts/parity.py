#!/usr/bin/env python3
"""Cross-check Agora's trainer against PyTorch (Hugging Face transformers' GPT2LMHeadModel or LlamaForCausalLM).

Usage: scripts/parity.py DIR
DIR is written by `agora model dump-reference --out DIR`: config.json + model.safetensors (our weights,
HF GPT-2 names and layout) and reference.safetensors (tokens, targets, our logits, loss and every gradient).
The model is loaded with transformers' own loader, run in fp32 on the same batch, and logits, loss and
each parameter's gradient are compared. Exit status 1 if any relative error exceeds the tolerance.
"""
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoConfig, GPT2LMHeadModel, LlamaForCausalLM

TOL = 1e-4


def rel_err(ours, ref):
    # Relative error of the whole tensor: ||ours - ref|| / ||ref||.
    num = (ours.double() - ref.double()).norm().item()
    den = ref.double().norm().item()
    return num / den if den > 0 else num


def main():
    d = sys.argv[1]
    torch.manual_seed(0)
    torch.set_num_threads(2)
    llama = AutoConfig.from_pretrained(d).model_type == "llama"
    cls = LlamaForCausalLM if llama else GPT2LMHeadModel
    model = cls.from_pretrained(d, attn_implementation="eager", torch_dtype=torch.float32)
    print(f"loaded {type(model).__name__}")
    model.eval()  # dropout is 0 anyway; eval keeps it deterministic
    ref = load_file(f"{d}/reference.safetensors")
    tokens = ref["tokens"].long()
    targets = ref["targets"].long()
    out = model(input_ids=tokens)
    logits = out.logits
    loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
    loss.backward()

    worst = 0.0
    failures = []

    def check(name, ours, theirs):
        nonlocal worst
        e = rel_err(ours, theirs)
        worst = max(worst, e)
        flag = "" if e < TOL else "  <-- FAIL"
        if e >= TOL:
            failures.append(name)
        print(f"{name:40s} rel.err {e:.2e}  ours[:3] {ours.flatten()[:3].tolist()}  torch[:3] {theirs.flatten()[:3].tolist()}{flag}")

    check("logits", ref["logits"], logits.detach())
    check("loss", ref["loss"], loss.detach().reshape(1))
    # GPT-2's names are its body's (wte.weight, h.0.…); LLaMA's are the whole model's (model.…, lm_head.weight).
    params = dict(model.named_parameters() if llama else model.transformer.named_parameters())
    for key in ref:
        if not key.startswith("grad."):
            continue
        name = key[len("grad."):]
        p = params[name]
        check("grad." + name, ref[key], p.grad)
    print(f"checked {len([k for k in ref if k.startswith('grad.')])} gradients; worst relative error {worst:.2e} (tolerance {TOL:g})")
    if failures:
        print("FAILED:", ", ".join(failures))
        sys.exit(1)
    print("parity OK")


if __name__ == "__main__":
    main()
