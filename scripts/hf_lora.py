"""peft side of the LoRA cross-checks (tests only; the product is Swift).

    python scripts/hf_lora.py grads BASE_DIR OUT --targets q_proj,v_proj --rank R --alpha A --seed S
                              --tokens 1,2,... --labels 5,-100,... --batch B
        peft's LoraConfig on transformers' model from BASE_DIR; A and B drawn at random (B not zero, so that A's
        gradient is not zero either) and saved with save_pretrained into OUT/adapter; the mean cross-entropy of
        the logits at every position against --labels (−100 ignored, no shift: label t is position t's target)
        and its gradients for every adapter matrix, into OUT/grads.safetensors under peft's file names.
        --train-tokens 5,9: those tokens' rows train too (trainable_token_indices), moved off their base values.
    python scripts/hf_lora.py logits BASE_DIR ADAPTER_DIR OUT.safetensors --tokens 1,2,3 [--merged DIR]
        logits of PeftModel.from_pretrained(base, ADAPTER_DIR) and, with --merged, of the merged model
        transformers loads from DIR.
Prints one JSON line.
"""
import argparse
import json
import os

import torch
from safetensors.torch import save_file


def load_base(path):
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def grads(args):
    from peft import LoraConfig, get_peft_model
    torch.manual_seed(args.seed)
    base = load_base(args.base)
    extra = {}
    if args.train_tokens:
        ids = [int(t) for t in args.train_tokens.split(",")]
        extra["trainable_token_indices"] = {"wte": ids} if base.config.model_type == "gpt2" else {"embed_tokens": ids, "lm_head": ids}
    cfg = LoraConfig(r=args.rank, lora_alpha=args.alpha, lora_dropout=0.0, target_modules=args.targets.split(","),
                     bias="none", task_type="CAUSAL_LM", fan_in_fan_out=base.config.model_type == "gpt2", **extra)
    model = get_peft_model(base, cfg)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.copy_(0.3 * torch.randn_like(p) / p.shape[1] ** 0.5)
            elif "trainable_tokens_delta" in n:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(os.path.join(args.out, "adapter"))
    tokens = torch.tensor([int(t) for t in args.tokens.split(",")]).view(args.batch, -1)
    labels = torch.tensor([int(t) for t in args.labels.split(",")]).view(args.batch, -1)
    logits = model(input_ids=tokens).logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100)
    loss.backward()
    out = {"loss": loss.detach().reshape(1)}
    trained = 0
    for n, p in model.named_parameters():
        if p.requires_grad:
            trained += 1
            assert "lora_" in n or "trainable_tokens_delta" in n, n
            out[n.replace(".default.weight", ".weight").replace("trainable_tokens_delta.default", "trainable_tokens_delta")] = p.grad.detach().contiguous()
    save_file(out, os.path.join(args.out, "grads.safetensors"))
    print(json.dumps({"loss": loss.item(), "trained": trained}))


def logits(args):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    tokens = torch.tensor([[int(t) for t in args.tokens.split(",")]])
    base = load_base(args.base)
    # An adapter that trains a chat template's new tokens needs the base's vocabulary grown to hold them first
    # (the rows' values come from the adapter, so how they are initialised does not matter).
    with open(os.path.join(args.adapter, "adapter_config.json")) as f:
        indices = json.load(f).get("trainable_token_indices") or {}
    ids = indices if isinstance(indices, list) else [i for v in indices.values() for i in v]
    if ids and max(ids) >= base.get_input_embeddings().weight.shape[0]:
        base.resize_token_embeddings(max(ids) + 1, mean_resizing=False)
    model = PeftModel.from_pretrained(base, args.adapter).eval()
    out = {"peft": model(input_ids=tokens).logits[0].detach().contiguous()}
    if args.merged:
        merged = AutoModelForCausalLM.from_pretrained(args.merged, dtype=torch.float32).eval()
        out["merged"] = merged(input_ids=tokens).logits[0].detach().contiguous()
    with torch.no_grad():
        plain = load_base(args.base)
        if plain.get_input_embeddings().weight.shape[0] < model.get_input_embeddings().weight.shape[0]:
            plain.resize_token_embeddings(model.get_input_embeddings().weight.shape[0], mean_resizing=False)
        out["base"] = plain(input_ids=tokens).logits[0].detach().contiguous()
    save_file(out, args.path)
    diff = (out["peft"] - out["merged"]).abs().max().item() if args.merged else None
    print(json.dumps({"max_peft_vs_merged": diff, "max_adapter_effect": (out["peft"] - out["base"]).abs().max().item()}))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("grads")
    g.add_argument("base")
    g.add_argument("out")
    g.add_argument("--targets", required=True)
    g.add_argument("--rank", type=int, default=4)
    g.add_argument("--alpha", type=float, default=8)
    g.add_argument("--seed", type=int, default=3)
    g.add_argument("--tokens", required=True)
    g.add_argument("--labels", required=True)
    g.add_argument("--batch", type=int, default=1)
    g.add_argument("--train-tokens", help="ids for trainable_token_indices (their embedding and head rows train too)")
    g.set_defaults(run=grads)
    lg = sub.add_parser("logits")
    lg.add_argument("base")
    lg.add_argument("adapter")
    lg.add_argument("path")
    lg.add_argument("--tokens", required=True)
    lg.add_argument("--merged")
    lg.set_defaults(run=logits)
    args = ap.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
