"""Hugging Face side of the import and generation cross-checks (tests only; the product is Swift).

    python scripts/hf_model.py make gpt2|llama OUT [--dtype f32|f16|bf16] [--shards N] [--seed S]
        A model transformers makes with random initialisation, in a shape no Agora preset has, with a byte-level
        BPE tokenizer learned here from synthetic words (ids not in Agora's order; LLaMA's with <s>/</s> and a
        template that puts <s> first), saved with save_pretrained. Prints one JSON line.
    python scripts/hf_model.py logits DIR OUT.safetensors --tokens 1,2,3
        transformers' logits (fp32) on fixed tokens, with the tokens, into OUT.
    python scripts/hf_model.py greedy DIR --prompt TEXT --new N
        transformers' generate(do_sample=False): one JSON line with the prompt's ids and the new tokens.
"""
import argparse
import json
import os
import random
import sys

import torch
from safetensors.torch import save_file


def synthetic_text(seed, words=40000):
    """Words from syllables (some non-ASCII), so no third-party text is involved."""
    rng = random.Random(seed)
    syll = ["ka", "lo", "mi", "ste", "ra", "vé", "ßa", "ło", "ze", "ün", "δα", "ка", "ri", "an", "to", "el", "pa", "ñe"]
    vocab = ["".join(rng.choice(syll) for _ in range(rng.randint(1, 4))) for _ in range(600)]
    out = []
    for i in range(words):
        w = rng.choice(vocab[: 50 + i % 550])
        out.append(w.capitalize() if rng.random() < 0.1 else w)
        if rng.random() < 0.08:
            out.append(rng.choice([".", ",", "!", "?", "\n", " 42", " 7."]))
    return " ".join(out)


def make_tokenizer(kind, seed):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<s>", "</s>"] if kind == "llama" else ["<|endoftext|>"]
    trainer = trainers.BpeTrainer(vocab_size=420, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([synthetic_text(seed)], trainer=trainer)
    if kind == "llama":
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=True)
    return tok


def make(args):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    torch.manual_seed(args.seed)
    tok = make_tokenizer(args.kind, args.seed)
    V = tok.get_vocab_size()
    if args.kind == "gpt2":
        eos = tok.token_to_id("<|endoftext|>")
        cfg = GPT2Config(vocab_size=V, n_positions=96, n_embd=48, n_layer=3, n_head=6, bos_token_id=eos, eos_token_id=eos,
                         initializer_range=0.15, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)
        model = GPT2LMHeadModel(cfg)
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    else:
        bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
        cfg = LlamaConfig(vocab_size=V, max_position_embeddings=128, hidden_size=64, intermediate_size=136, num_hidden_layers=3,
                          num_attention_heads=8, num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=args.tied,
                          bos_token_id=bos, eos_token_id=eos, initializer_range=0.15)
        model = LlamaForCausalLM(cfg)
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    with torch.no_grad():  # norms away from 1, so that a mixed-up norm weight shows in the logits
        for n, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_(1 + 0.3 * torch.randn_like(p)) if n.endswith("weight") else p.copy_(0.1 * torch.randn_like(p))
    dtype = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    model = model.to(dtype)
    model.config.name_or_path = f"agora-tests/random-{args.kind}"
    shard = "100KB" if args.shards > 1 else "10GB"
    model.save_pretrained(args.out, safe_serialization=True, max_shard_size=shard)
    fast.save_pretrained(args.out)
    with open(os.path.join(args.out, "README.md"), "w") as f:
        f.write("---\nlicense: apache-2.0\nlibrary_name: transformers\n---\n\nA randomly initialised model made by Agora's tests.\n")
    print(json.dumps({"out": args.out, "kind": args.kind, "vocab": V, "parameters": sum(p.numel() for p in model.parameters()),
                      "files": sorted(os.listdir(args.out))}))


def load(d):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    return model, AutoTokenizer.from_pretrained(d)


def logits(args):
    model, _ = load(args.dir)
    ids = torch.tensor([[int(t) for t in args.tokens.split(",")]])
    with torch.no_grad():
        out = model(ids).logits[0].float().contiguous()
    save_file({"tokens": ids[0].to(torch.int32), "logits": out}, args.out)
    print(json.dumps({"tokens": ids.shape[1], "vocab": out.shape[1]}))


def greedy(args):
    model, tok = load(args.dir)
    ids = tok(args.prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, do_sample=False, max_new_tokens=args.new, min_new_tokens=0, pad_token_id=model.config.eos_token_id)
        # the smallest gap between the chosen token's logit and the runner-up's along the way (a near-tie could
        # go either way in another summation order)
        full = model(out).logits[0, ids.shape[1] - 1 : out.shape[1] - 1]
        top = torch.topk(full, 2, dim=-1).values
        margin = float((top[:, 0] - top[:, 1]).min()) if full.shape[0] else 0.0
    print(json.dumps({"prompt": ids[0].tolist(), "new": out[0, ids.shape[1]:].tolist(), "margin": margin}))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("kind", choices=["gpt2", "llama"])
    m.add_argument("out")
    m.add_argument("--dtype", default="f32", choices=["f32", "f16", "bf16"])
    m.add_argument("--shards", type=int, default=1)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--tied", action="store_true")
    l = sub.add_parser("logits")
    l.add_argument("dir")
    l.add_argument("out")
    l.add_argument("--tokens", required=True)
    g = sub.add_parser("greedy")
    g.add_argument("dir")
    g.add_argument("--prompt", required=True)
    g.add_argument("--new", type=int, default=24)
    args = ap.parse_args()
    {"make": make, "logits": logits, "greedy": greedy}[args.cmd](args)


if __name__ == "__main__":
    main()
