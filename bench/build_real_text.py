"""Build src/hf_torchscript/data/kjv_sentences.json: real sentences, labelled by the book they come from.

The bench measures accuracy (cosine / top-1 of a variant vs eager fp32) on real text, int8
calibration needs real activations, and the tests train a small classifier on real sentences:
random token ids hide exactly the outlier activations that break int8 on trained weights.

The text is the King James Bible (public domain) from Debian's `bible-kjv-text` package, read
through its `bible` program (package `bible-kjv`), as for the length histogram:

    apt-get install bible-kjv bible-kjv-text
    python bench/build_real_text.py

Eight books of distinct style (narrative, law, poetry, wisdom, prophecy, gospel, history,
letter); sentences split at . ? ! ; across verse boundaries, 6 to 60 words; every k-th sentence
so each book gives PER_BOOK, deterministic. The label (the book) makes an 8-way classification
task that is hard enough for a linear head to have close calls.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "src" / "hf_torchscript" / "data" / "kjv_sentences.json"
RANGE = "Gen1:1-Rev22:21"
BOOKS = {"Ge": "Genesis", "Lev": "Leviticus", "Psa": "Psalms", "Prv": "Proverbs", "Isa": "Isaiah",
         "Mat": "Matthew", "Acts": "Acts", "Rom": "Romans"}
PER_BOOK = 80


def main() -> None:
    text = subprocess.run(["bible", "-f", RANGE], capture_output=True, text=True, check=True).stdout
    verses: dict[str, list[str]] = {b: [] for b in BOOKS}
    for line in text.splitlines():
        if " " not in line:
            continue
        ref, verse = line.split(" ", 1)
        book = re.match(r"\d?[A-Za-z]+", ref).group(0)
        if book in verses:
            verses[book].append(verse)
    rows = []
    for book, vs in verses.items():
        sentences = [s.strip() for s in re.split(r"(?<=[.?!;])\s+", " ".join(vs)) if s.strip()]
        sentences = [s for s in sentences if 6 <= len(s.split()) <= 60]
        step = max(1, len(sentences) // PER_BOOK)
        rows += [{"text": s, "label": BOOKS[book]} for s in sentences[::step][:PER_BOOK]]
    OUT.write_text(json.dumps({
        "source": f"King James Bible, Debian package bible-kjv-text (`bible -f {RANGE}`)",
        "selection": f"{PER_BOOK} sentences from each of {', '.join(BOOKS.values())}: split at . ? ! ;, "
                     "6-60 words, evenly spaced through the book",
        "labels": list(BOOKS.values()),
        "sentences": rows,
    }, indent=0) + "\n")
    print(f"wrote {len(rows)} sentences to {OUT}")


if __name__ == "__main__":
    main()
