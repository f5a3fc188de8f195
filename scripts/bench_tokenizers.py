#!/usr/bin/env python3
"""Peer for `agora bench tokenizer`: Hugging Face `tokenizers` (Rust) encoding the same files with the same
tokenizer.json on one thread (RAYON_NUM_THREADS=1), a fresh tokenizer per repetition, median time.
Usage: scripts/bench_tokenizers.py TOKENIZER_JSON REPEATS FILE..."""
import json
import os
import sys
import time

os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
from tokenizers import Tokenizer  # noqa: E402


def main():
    path, repeats, *files = sys.argv[1:]
    texts = [open(f, encoding="utf-8", newline="").read() for f in files]
    nbytes = sum(len(t.encode()) for t in texts)
    times = []
    for _ in range(int(repeats)):
        tok = Tokenizer.from_file(path)
        t0 = time.perf_counter()
        if os.environ.get("BY_LINE"):
            # The batch API over lines (still one thread): tokenizers' fastest path for many short inputs.
            n = sum(len(e.ids) for t in texts for e in tok.encode_batch(t.split("\n"), add_special_tokens=False))
        else:
            n = sum(len(tok.encode(t, add_special_tokens=False).ids) for t in texts)
        times.append(time.perf_counter() - t0)
    times.sort()
    s = times[len(times) // 2]
    print(json.dumps(dict(peer="tokenizers" + ("-encode_batch-lines" if os.environ.get("BY_LINE") else "-encode"), bytes=nbytes, tokens=n, seconds=s, mb_per_s=nbytes / s / 1e6)))


if __name__ == "__main__":
    main()
