#!/usr/bin/env python3
"""Peer for scripts/bench-vocabulary: Hugging Face `tokenizers` (Rust) training a byte-level BPE of VOCAB tokens on
the union of the languages' train.txt (the text on one machine, as a federation cannot have it), GPT-2
pre-tokenisation, one thread (RAYON_NUM_THREADS=1). Prints seconds and the process's peak RSS as JSON.
Usage: scripts/bench_vocabulary_peer.py VOCAB FILE..."""
import json
import os
import resource
import sys
import time

os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
from tokenizers import Tokenizer, models, pre_tokenizers, trainers, decoders  # noqa: E402


def main():
    vocab, *files = sys.argv[1:]
    t0 = time.perf_counter()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=int(vocab), special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train(files, trainer)
    s = time.perf_counter() - t0
    nbytes = sum(os.path.getsize(f) for f in files)
    print(json.dumps(dict(peer="tokenizers-BpeTrainer", vocab=tok.get_vocab_size(), bytes=nbytes, seconds=s,
                          peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))


if __name__ == "__main__":
    main()
