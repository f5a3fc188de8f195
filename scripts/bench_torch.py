#!/usr/bin/env python3
"""PyTorch reference for `agora bench trainer`: the same GPT-2 shape, batch and AdamW step in eager
PyTorch (scaled_dot_product_attention, tied embeddings, fp32), timed the same way (median ms/step after
2 warm-up steps). Prints one JSON object. Used by scripts/bench-peers."""
import argparse
import json
import math
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

PRESETS = {
    "tiny": dict(V=512, T=64, C=64, L=2, H=4),
    "small": dict(V=4096, T=128, C=128, L=4, H=4),
    "bench-14m": dict(V=8192, T=256, C=384, L=6, H=6),
    "gpt-100m": dict(V=16384, T=512, C=768, L=12, H=12),
}


class Block(nn.Module):
    def __init__(self, C, H):
        super().__init__()
        self.H = H
        self.ln_1 = nn.LayerNorm(C)
        self.c_attn = nn.Linear(C, 3 * C)
        self.c_proj = nn.Linear(C, C)
        self.ln_2 = nn.LayerNorm(C)
        self.c_fc = nn.Linear(C, 4 * C)
        self.mlp_proj = nn.Linear(4 * C, C)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.H, C // self.H).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, V, T, C, L, H):
        super().__init__()
        self.wte = nn.Embedding(V, C)
        self.wpe = nn.Embedding(T, C)
        self.h = nn.ModuleList(Block(C, H) for _ in range(L))
        self.ln_f = nn.LayerNorm(C)

    def forward(self, idx, targets):
        T = idx.size(1)
        x = self.wte(idx) + self.wpe(torch.arange(T))
        for b in self.h:
            x = b(x)
        logits = self.ln_f(x) @ self.wte.weight.t()
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="bench-14m")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compile", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    p = PRESETS[a.preset]
    model = GPT(**p)
    n = sum(t.numel() for t in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=False, foreach=True)
    step = model
    if a.compile:
        step = torch.compile(model)
    times = []
    for i in range(a.steps + 2):
        x = torch.randint(0, p["V"], (a.batch, p["T"]))
        y = torch.randint(0, p["V"], (a.batch, p["T"]))
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = step(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        dt = (time.perf_counter() - t0) * 1000
        if i >= 2:
            times.append(dt)
    times.sort()
    ms = times[len(times) // 2] if len(times) % 2 else (times[len(times) // 2 - 1] + times[len(times) // 2]) / 2
    flops = (6 * n + 6 * p["L"] * p["C"] * p["T"]) * a.batch * p["T"]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(dict(peer="pytorch-" + torch.__version__ + ("-compile" if a.compile else "-eager"), preset=a.preset,
                          params=n, ms_per_step=ms, tokens_per_s=a.batch * p["T"] / (ms / 1000),
                          gflops=flops / (ms / 1000) / 1e9, peak_rss_mib=rss)))


if __name__ == "__main__":
    main()
