"""transformers' side of `scripts/bench-peers generate`: decoding at batch 1 on the same checkpoint.

    python scripts/bench_generate.py DIR --prompt-tokens 128 --new-tokens 256 --repeats 3 --threads 2

fp32, sdpa attention, torch.inference_mode, greedy generate with min_new_tokens so every run decodes the same
count. Time to first token is generate(max_new_tokens=1); the decoding rate is (new − 1) tokens over the rest.
Prints one JSON line (medians of the repeats, after one warm-up).
"""
import argparse
import json
import resource
import statistics
import time

import torch
from transformers import AutoModelForCausalLM

ap = argparse.ArgumentParser()
ap.add_argument("dir")
ap.add_argument("--prompt-tokens", type=int, default=128)
ap.add_argument("--new-tokens", type=int, default=256)
ap.add_argument("--repeats", type=int, default=3)
ap.add_argument("--threads", type=int, default=2)
a = ap.parse_args()
torch.set_num_threads(a.threads)
model = AutoModelForCausalLM.from_pretrained(a.dir, dtype=torch.float32, attn_implementation="sdpa").eval()
V = model.config.vocab_size
g = torch.Generator().manual_seed(7)
ttft, rates = [], []
with torch.inference_mode():
    for r in range(a.repeats + 1):
        ids = torch.randint(0, V, (1, a.prompt_tokens), generator=g)
        t0 = time.perf_counter()
        model.generate(ids, do_sample=False, max_new_tokens=1, min_new_tokens=1, pad_token_id=0)
        t1 = time.perf_counter()
        out = model.generate(ids, do_sample=False, max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens, pad_token_id=0)
        t2 = time.perf_counter()
        assert out.shape[1] == a.prompt_tokens + a.new_tokens
        if r == 0:
            continue
        ttft.append((t1 - t0) * 1000)
        rates.append((a.new_tokens - 1) / ((t2 - t1) - (t1 - t0)))
print(json.dumps({"side": "transformers", "torch": torch.__version__, "threads": a.threads, "prompt_tokens": a.prompt_tokens, "new_tokens": a.new_tokens,
                  "ttft_ms": round(statistics.median(ttft), 2), "decode_tokens_per_s": round(statistics.median(rates), 1),
                  "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
