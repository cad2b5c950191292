"""The ``run --json`` document: one JSON schema for every task, written by the CLI (``run --json``) and the
servers (``serve``: POST / with {"texts": [...]}) alike, so it lives below both.

The JSON of ``run --json`` (documented in docs/cli.md; the schema name changes if a field changes meaning):

    {"schema": "hf-torchscript/run/1", "artifact": DIR, "task": TASK, "model_type": TYPE,
     "results": [{"input": {"text": ..., "pair"?: ..., "choices"?: [...]}, "output": {...}}, ...],
     "similarity": [[...]] | null, "warnings": [...]}

``hf-torchscript serve`` answers POST / with the same document (``run_document``).

``output`` per task (each written by its task module's ``to_json``, tasks/*.py):
feature-extraction {"tokens", "outputs": {name: {"shape", "data"}}};
sentence-embedding {"embedding", "dimension", "norm"}; fill-mask {"masks": [[prediction, ...] per mask]};
text-classification {"label", "score", "scores": {label: p}}; token-classification {"tokens": [{"token",
"label", "score", "start", "end"}]}; question-answering {"answer", "score", "start", "end"};
multiple-choice {"choice", "index", "score", "scores"}; causal-lm {"next_tokens": [prediction, ...]};
seq2seq-lm {"text", "token_ids"}. A prediction is {"token", "token_id", "token_str", "score"}.
The JSON is strict: a NaN or infinite value is written as null (and counted in "warnings").
"""

from __future__ import annotations

import json
import math

import torch

from ..tasks import TASKS
from ..tasks.base import flat_outputs
from ..tasks.base import floats as _floats

RUN_SCHEMA = "hf-torchscript/run/1"


# -- run: one schema ---------------------------------------------------------------------------------


def run_output(task: str, result) -> list[dict]:
    """The task's Python result (ExportedModel.__call__) as one JSON-ready ``output`` object per input."""
    t = TASKS.get(task)
    return t.to_json(result) if t is not None else flat_outputs(result)  # else: already one flat object per input


def generation_output(result: dict) -> dict:
    """One text-generation result (generation.Generation fields) as a ``run --json`` output object."""
    return {"text": result["text"], "token_ids": list(result["token_ids"]), "prompt_ids": list(result["prompt_ids"]),
            "finish_reason": result["finish_reason"], "timings": dict(result["timings"])}


def run_document(directory, manifest: dict, inputs: list, outputs: list[dict], *, similarity=None,
                 warnings: list[str] = ()) -> dict:
    """The whole ``run --json`` document."""
    return {
        "schema": RUN_SCHEMA,
        "artifact": str(directory),
        "task": manifest["task"],
        "model_type": manifest.get("model_type"),
        "results": [{"input": describe_input(x), "output": o} for x, o in zip(inputs, outputs)],
        "similarity": None if similarity is None else [_floats(row) for row in similarity],
        "warnings": list(warnings),
    }


def describe_input(item) -> dict:
    if isinstance(item, str):
        return {"text": item}
    text, second = item
    return {"text": text, "choices": list(second)} if isinstance(second, (list, tuple)) else {"text": text, "pair": second}


def cosine_matrix(embeddings: torch.Tensor) -> torch.Tensor:
    e = embeddings.double()
    e = e / e.norm(dim=1, keepdim=True).clamp(min=1e-12)
    return (e @ e.T).float()


def finish(doc: dict, nonfinite: int = 0) -> dict:
    """``doc`` as strict JSON with its NaN/inf count: ``nonfinite_outputs`` is the larger of the model's own
    count (NonFiniteOutputWarning) and the values written as null, so a script checks one field (issue 24)."""
    clean, nulls = strict(doc)
    if nulls:
        clean["warnings"].append(f"{nulls} NaN/infinite values were written as null")
    clean["nonfinite_outputs"] = max(nonfinite, nulls)
    return clean


def dumps(doc) -> tuple[str, int]:
    """Strict JSON (non-finite floats -> null) with lists of numbers on one line; returns (text, nulls written)."""
    clean, nulls = strict(doc)
    return _dumps(clean), nulls


def strict(doc) -> tuple[object, int]:
    """``doc`` with every NaN/infinite float replaced by None (valid JSON); returns (doc, how many)."""
    count = [0]
    return _finite(doc, count), count[0]


def _finite(x, count):
    if isinstance(x, float) and not math.isfinite(x):
        count[0] += 1
        return None
    if isinstance(x, dict):
        return {k: _finite(v, count) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v, count) for v in x]
    return x


def _dumps(obj, indent: int = 0) -> str:
    pad = "  " * (indent + 1)
    if isinstance(obj, dict) and obj:
        items = [f"{pad}{json.dumps(k)}: {_dumps(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + "  " * indent + "}"
    if isinstance(obj, list) and obj and not all(isinstance(x, (int, float)) or x is None for x in obj):
        items = [pad + _dumps(v, indent + 1) for v in obj]
        return "[\n" + ",\n".join(items) + "\n" + "  " * indent + "]"
    return json.dumps(obj, ensure_ascii=False, allow_nan=False)


# -- run: for people ---------------------------------------------------------------------------------
