#!/usr/bin/env python3
"""PyTorch reference for `agora bench trainer`: the same GPT-2 or LLaMA-style shape, batch and AdamW step in
eager PyTorch (scaled_dot_product_attention; GPT-2 with tied embeddings; LLaMA with RMSNorm, rotary positions,
SwiGLU, grouped-query attention, untied head, no biases), fp32 or — with --autocast — bf16 autocast, timed the
same way (median ms/step after 2 warm-up steps). Prints one JSON object. Used by scripts/bench-peers."""
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
# Agora's LLaMA presets (GPTConfig.swift): KV key/value heads, I the SwiGLU width.
LLAMA = {
    "llama-tiny": dict(V=512, T=64, C=64, L=2, H=4, KV=2, I=176),
    "llama-small": dict(V=4096, T=128, C=128, L=4, H=4, KV=2, I=352),
    "llama-14m": dict(V=8192, T=256, C=384, L=6, H=6, KV=2, I=1024),
    "llama-100m": dict(V=16384, T=512, C=768, L=12, H=12, KV=4, I=2048),
}


class LlamaBlock(nn.Module):
    def __init__(self, C, H, KV, I):
        super().__init__()
        self.H, self.KV, self.hs = H, KV, C // H
        self.input_layernorm = nn.RMSNorm(C, eps=1e-5)
        self.qkv = nn.Linear(C, (H + 2 * KV) * self.hs, bias=False)
        self.o_proj = nn.Linear(C, C, bias=False)
        self.post_attention_layernorm = nn.RMSNorm(C, eps=1e-5)
        self.gate_up = nn.Linear(C, 2 * I, bias=False)
        self.down_proj = nn.Linear(I, C, bias=False)

    def forward(self, x, cos, sin):
        B, T, C = x.shape
        q, k, v = self.qkv(self.input_layernorm(x)).split([self.H * self.hs, self.KV * self.hs, self.KV * self.hs], dim=2)
        q = q.view(B, T, self.H, self.hs).transpose(1, 2)
        k = k.view(B, T, self.KV, self.hs).transpose(1, 2)
        v = v.view(B, T, self.KV, self.hs).transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        x = x + self.o_proj(y.transpose(1, 2).contiguous().view(B, T, C))
        gate, up = self.gate_up(self.post_attention_layernorm(x)).chunk(2, dim=2)
        return x + self.down_proj(F.silu(gate) * up)


def rope(x, cos, sin):
    h = x.size(-1) // 2
    x1, x2 = x[..., :h], x[..., h:]
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class Llama(nn.Module):
    def __init__(self, V, T, C, L, H, KV, I):
        super().__init__()
        self.embed_tokens = nn.Embedding(V, C)
        self.layers = nn.ModuleList(LlamaBlock(C, H, KV, I) for _ in range(L))
        self.norm = nn.RMSNorm(C, eps=1e-5)
        self.lm_head = nn.Linear(C, V, bias=False)
        hs = C // H
        inv = 1.0 / (10000 ** (torch.arange(0, hs, 2).float() / hs))
        ang = torch.outer(torch.arange(T).float(), inv)
        ang = torch.cat((ang, ang), dim=-1)
        self.register_buffer("cos", ang.cos(), persistent=False)
        self.register_buffer("sin", ang.sin(), persistent=False)

    def forward(self, idx, targets):
        T = idx.size(1)
        x = self.embed_tokens(idx)
        for b in self.layers:
            x = b(x, self.cos[:T], self.sin[:T])
        logits = self.lm_head(self.norm(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.view(-1))


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
    ap.add_argument("--autocast", action="store_true", help="bf16 autocast (torch.autocast('cpu', dtype=torch.bfloat16))")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    llama = a.preset in LLAMA
    p = LLAMA[a.preset] if llama else PRESETS[a.preset]
    model = Llama(**p) if llama else GPT(**p)
    n = sum(t.numel() for t in model.parameters())
    # FLOPs count the parameters that take part in products (not LLaMA's input embedding, a lookup).
    n_flops = n - (p["V"] * p["C"] if llama else 0)
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
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.autocast):
            loss = step(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        dt = (time.perf_counter() - t0) * 1000
        if i >= 2:
            times.append(dt)
    times.sort()
    ms = times[len(times) // 2] if len(times) % 2 else (times[len(times) // 2 - 1] + times[len(times) // 2]) / 2
    flops = (6 * n_flops + 6 * p["L"] * p["C"] * p["T"]) * a.batch * p["T"]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(dict(peer="pytorch-" + torch.__version__ + ("-compile" if a.compile else "-eager") + ("-bf16-autocast" if a.autocast else ""), preset=a.preset,
                          params=n, ms_per_step=ms, tokens_per_s=a.batch * p["T"] / (ms / 1000),
                          gflops=flops / (ms / 1000) / 1e9, peak_rss_mib=rss)))


if __name__ == "__main__":
    main()
