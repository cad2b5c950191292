"""Real sentences shipped with the package (data/kjv_sentences.json, built by bench/build_real_text.py).

int8 calibration and the benchmark's accuracy columns need real text: random token ids hide the
outlier activations that break int8 on trained weights. 640 sentences from eight books of the
King James Bible (public domain), labelled by book.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

SENTENCES_FILE = "kjv_sentences.json"


@cache
def _load() -> dict:
    return json.loads(resources.files("hf_torchscript").joinpath("data", SENTENCES_FILE).read_text())


def real_sentences() -> list[dict]:
    """``[{"text": ..., "label": book}, ...]``: 640 sentences, 80 from each of eight books, in book order."""
    return list(_load()["sentences"])


def real_text_source() -> dict:
    """Where the sentences come from and how they were chosen (for reports and manifests)."""
    data = _load()
    return {k: data[k] for k in ("source", "selection", "labels")} | {"sentences": len(data["sentences"])}
