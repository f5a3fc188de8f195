"""Loads a directory written by `agora export` with Hugging Face transformers and generates from it.

    python scripts/export_check.py DIR [OTHER]   ->  one JSON line; exit status 0 when everything holds

With OTHER (another export of the same version, e.g. sharded), every parameter must be equal in both.
"""
import json
import sys

import torch
from transformers import AutoModelForCausalLM, GenerationConfig, PreTrainedTokenizerFast

d = sys.argv[1]
model = AutoModelForCausalLM.from_pretrained(d)  # GPT2LMHeadModel or LlamaForCausalLM, as config.json says
model.eval()
tok = PreTrainedTokenizerFast(tokenizer_file=f"{d}/tokenizer.json")
gen = GenerationConfig.from_pretrained(d)
ids = tok("Die Datei wird", return_tensors="pt").input_ids
torch.manual_seed(0)
with torch.no_grad():
    out = model.generate(ids, generation_config=gen, max_new_tokens=16, pad_token_id=gen.eos_token_id)
    logits = model(out).logits
assert torch.isfinite(logits).all(), "non-finite logits"
assert out.shape[1] > ids.shape[1], "nothing generated"
same = None
if len(sys.argv) > 2:
    other = AutoModelForCausalLM.from_pretrained(sys.argv[2]).state_dict()
    mine = model.state_dict()
    assert mine.keys() == other.keys(), "different tensors"
    assert all(torch.equal(mine[k], other[k]) for k in mine), "different values"
    same = len(mine)
print(json.dumps({"loaded": type(model).__name__, "parameters": sum(p.numel() for p in model.parameters()), "same_tensors": same,
                  "generated": tok.decode(out[0][ids.shape[1]:])}))
