"""peft + transformers side of `scripts/bench-peers lora` (the product is Swift).

    python scripts/bench_lora.py MODEL_DIR [--method lora|full] [--rank 16] [--alpha 32] [--batch 8] [--sequence 512]
                                 [--steps 3] [--threads N]
        Times fine-tuning steps as `agora bench lora` does: random tokens and targets, forward, mean cross-entropy,
        backward, clipping and AdamW (fp32, sdpa attention, the same threads). LoRA: peft's LoraConfig on every
        linear layer of the blocks. Prints one JSON line.
"""
import argparse
import json
import resource
import statistics
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--method", default="lora", choices=["lora", "full"])
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--alpha", type=float, default=32)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--sequence", type=int, default=512)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32, attn_implementation="sdpa")
    model.train()
    if a.method == "lora":
        from peft import LoraConfig, get_peft_model
        targets = ["c_attn", "c_proj", "c_fc"] if model.config.model_type == "gpt2" else \
            ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        model = get_peft_model(model, LoraConfig(r=a.rank, lora_alpha=a.alpha, lora_dropout=0.0, target_modules=targets,
                                                 task_type="CAUSAL_LM", fan_in_fan_out=model.config.model_type == "gpt2"))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    V = model.config.vocab_size
    g = torch.Generator().manual_seed(3)
    times = []
    for i in range(a.steps + 1):
        x = torch.randint(0, V, (a.batch, a.sequence), generator=g)
        y = torch.randint(0, V, (a.batch, a.sequence), generator=g)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        logits = model(input_ids=x).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if i >= 1:
            times.append(time.perf_counter() - t0)
    s = statistics.median(times)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"method": a.method, "rank": a.rank if a.method == "lora" else 0, "B": a.batch, "T": a.sequence,
                      "threads": torch.get_num_threads(), "trained": sum(p.numel() for p in params), "seconds_per_step": s,
                      "tokens_per_s": a.batch * a.sequence / s, "peak_rss_mib": rss, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
