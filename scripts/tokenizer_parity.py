#!/usr/bin/env python3
"""Cross-check Agora's tokenizer against Hugging Face `tokenizers`.

Usage: scripts/tokenizer_parity.py AGORA_BINARY TOKENIZER_JSON FILE...
Encodes each file with `agora tokenizer encode` and with `tokenizers.Tokenizer.from_file`, and compares
the ids. Adds a file of hard cases (contractions, whitespace runs, emoji, CJK, combining marks, NBSP).
Exit status 1 on any difference.
"""
import json
import os
import subprocess
import sys
import tempfile

from tokenizers import Tokenizer

HARD = (
    "It's we'll they'd've I'M DON'T  two  spaces   three\t\ttabs \n\n\nnewlines  \n end \r\n"
    "emoji 👩‍💻🇪🇺 CJK 中文字符 combining e\u0301 a\u0308 nbsp\u00a0here em\u2003space zwsp\u200bx "
    "digits 1234567 ½ ² ٣ roman Ⅻ «quotes» „Anführung“ ‘single’ — – … ß ẞ İı Ωμέγα ŁÓDŹ Ħ ő ű\n"
    "trailing spaces   "
)


def main():
    binary, tok_path, *files = sys.argv[1:]
    tmp = tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8", newline="")
    tmp.write(HARD)
    tmp.close()
    files = files + [tmp.name]
    out = subprocess.run([binary, "tokenizer", "encode", "--tokenizer", tok_path, *files], check=True, capture_output=True)
    ours = json.loads(out.stdout)
    ref = Tokenizer.from_file(tok_path)
    bad = 0
    for f in files:
        with open(f, encoding="utf-8", newline="") as h:
            text = h.read()
        theirs = ref.encode(text, add_special_tokens=False).ids
        mine = ours[f]
        name = "hard-cases" if f == tmp.name else f
        if mine == theirs:
            print(f"{name}: {len(mine)} ids identical ({len(text.encode())} bytes, {len(mine) / max(1, len(text.encode())):.3f} tokens/byte)")
        else:
            bad += 1
            i = next((k for k, (a, b) in enumerate(zip(mine, theirs)) if a != b), min(len(mine), len(theirs)))
            print(f"{name}: DIFFERENT at id {i}: ours {mine[i:i + 8]} tokenizers {theirs[i:i + 8]}")
            print("   near:", repr(ref.decode(theirs[max(0, i - 4):i + 4])))
        # Decoding must give the text back.
        if ref.decode(mine) != text:
            bad += 1
            print(f"{name}: tokenizers does not decode our ids back to the text")
    os.unlink(tmp.name)
    print(f"tokenizer parity: {len(files) - bad} of {len(files)} files identical")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
