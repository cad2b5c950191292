"""Workloads: fixed-shape batches, real request lengths, and real sentences for accuracy.

Speed does not depend on the token ids, so timed batches use random ids at the requested shape.
Accuracy does: random ids hide the outlier activations that break int8 on trained weights, so
accuracy is measured on real sentences (hf_torchscript.texts) through the model's own tokenizer.
"""

from __future__ import annotations

import json
import random
import statistics
from functools import cache
from importlib import resources

import torch

from ..texts import real_sentences, real_text_source  # noqa: F401  (re-exported for bench scripts)
from .timing import percentile

LENGTHS_FILE = "kjv_sentence_lengths.json"


@cache
def _data(name: str) -> dict:
    return json.loads(resources.files("hf_torchscript").joinpath("data", name).read_text())


def sample_lengths(n: int, max_length: int, *, seed: int = 0) -> list[int]:
    """``n`` request lengths drawn from the real sentence-length histogram, capped at ``max_length``."""
    data = _data(LENGTHS_FILE)
    values = [int(k) for k in data["counts"]]
    rng = random.Random(seed)
    return [min(x, max_length) for x in rng.choices(values, weights=list(data["counts"].values()), k=n)]


def length_source() -> dict:
    data = _data(LENGTHS_FILE)
    return {k: data[k] for k in ("source", "split", "tokenizer", "sentences")}


def stats(xs) -> dict:
    return {"min": min(xs), "median": statistics.median(xs), "p90": percentile(xs, 0.9), "max": max(xs),
            "mean": statistics.mean(xs)}


def synthetic_batch(names, lengths: list[int], length: int, vocab: int, pad_id: int, seed: int) -> dict:
    """Right-padded batch of random ids: row i holds lengths[i] real tokens, padded to ``length``."""
    g = torch.Generator().manual_seed(seed)
    mask = (torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]).long()
    ids = torch.randint(min(5, vocab - 1), vocab, (len(lengths), length), generator=g)
    ids = torch.where(ids == pad_id, torch.full_like(ids, (pad_id + 1) % vocab), ids)
    ids = torch.where(mask.bool(), ids, torch.full_like(ids, pad_id))
    out = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    return {n: out[n] for n in names if n in out}


def text_batches(tokenizer, names, texts: list[str], *, batch: int, max_length: int) -> list[dict]:
    """Real sentences through ``tokenizer``, right-padded to each batch's longest, as a service batches them."""
    out = []
    for i in range(0, len(texts), batch):
        enc = tokenizer(texts[i:i + batch], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        if "token_type_ids" in names and "token_type_ids" not in enc:
            enc["token_type_ids"] = torch.zeros_like(enc["input_ids"])
        out.append({n: enc[n] for n in names})
    return out
