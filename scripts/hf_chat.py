"""transformers' side of the chat-template cross-check (tests only; the product is Swift).

    python scripts/hf_chat.py render TOKENIZER_DIR CONVERSATIONS.jsonl OUT.json [--generation-prompt]
        AutoTokenizer.from_pretrained(TOKENIZER_DIR).apply_chat_template(messages, tokenize=True) for every
        conversation ({"messages": [...]} per line): the token ids, a list per line, into OUT.json.
Prints one JSON line.
"""
import argparse
import json

from transformers import AutoTokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["render"])
    ap.add_argument("tokenizer")
    ap.add_argument("conversations")
    ap.add_argument("out")
    ap.add_argument("--generation-prompt", action="store_true")
    args = ap.parse_args()
    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    out = []
    with open(args.conversations, encoding="utf-8") as f:
        for line in f:
            messages = json.loads(line)["messages"]
            ids = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=args.generation_prompt)
            if hasattr(ids, "keys"):
                ids = ids["input_ids"]
            out.append([int(i) for i in ids])
    with open(args.out, "w") as f:
        json.dump(out, f)
    print(json.dumps({"conversations": len(out), "template": tok.chat_template is not None}))


if __name__ == "__main__":
    main()
