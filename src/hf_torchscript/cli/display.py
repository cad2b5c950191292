"""What the CLI shows: ``run`` results for people (a short text) and for programs (one JSON schema for
every task), and ``info``'s account of what was checked, each check in its own terms.

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
from ..tasks.base import num as _num
from ..tasks.base import show as _show
from ..tasks.base import sort_key as _key

RUN_SCHEMA = "hf-torchscript/run/1"


# -- run: one schema ---------------------------------------------------------------------------------


def run_output(task: str, result) -> list[dict]:
    """The task's Python result (ExportedModel.__call__) as one JSON-ready ``output`` object per input."""
    t = TASKS.get(task)
    return t.to_json(result) if t is not None else flat_outputs(result)  # else: already one flat object per input


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


def run_text(doc: dict, *, top_k: int = 5) -> str:
    """A short human summary of a ``run_document``: one line (or a few) per input."""
    task, results = doc["task"], doc["results"]
    lines = []
    t = TASKS.get(task)
    if t is not None and t.summary is not None:
        lines += t.summary(results, top_k)
    else:
        lines += [f"[{i}] {_show(r['input'])}: {json.dumps(r['output'])[:200]}" for i, r in enumerate(results)]
    if doc.get("similarity") is not None:
        lines += similarity_text(doc["similarity"])
    return "\n".join(lines)


def similarity_text(matrix: list[list[float]], full_up_to: int = 10) -> list[str]:
    """Cosine similarity: the whole matrix for a few texts, each text's nearest other text for more."""
    n = len(matrix)
    if n < 2:
        return ["cosine similarity: needs at least two texts"]
    if n <= full_up_to:
        head = "       " + " ".join(f"{f'[{j}]':>6}" for j in range(n))
        rows = [f"  {f'[{i}]':>4} " + " ".join(f"{_num(v, 3):>6}" for v in row) for i, row in enumerate(matrix)]
        return ["cosine similarity:", head, *rows]
    lines = ["cosine similarity, nearest other text:"]
    for i, row in enumerate(matrix):
        j = max((k for k in range(n) if k != i), key=lambda k: _key(row[k]))
        lines.append(f"  [{i}] -> [{j}] {_num(row[j], 3)}")
    return lines


# -- info: each check in its own terms -----------------------------------------------------------------


def checks(manifest: dict) -> dict:
    """What the artifact's proof checked and found, per check, in the check's own terms (for ``info --json``)."""
    v = manifest.get("validation") or {}
    grid = {"check": "grid", "ran": v.get("ran", True), "passed": bool(v.get("passed")) and v.get("ran", True),
            "cases": len(v.get("cases", [])), "mode": v.get("mode", "allclose"),
            "against": "the float32 eager model on the same batch, and each padded row alone unpadded"}
    if not grid["ran"]:
        grid["note"] = v.get("note")
    elif grid["mode"] == "cosine":
        grid["thresholds"] = v.get("thresholds") or {}
        grid["measured"] = {"min_cosine": v.get("min_cosine", {}), "max_norm_error": v.get("max_norm_error", {}),
                            "top1_agreement": v.get("top1_agreement", {}),
                            "max_abs_diff": v.get("max_abs_diff", {})}
        grid["precision"] = manifest.get("quantize") or manifest.get("dtype")
    else:
        grid["thresholds"] = {"atol": v.get("atol"), "rtol": v.get("rtol")}
        grid["measured"] = {"max_abs_diff": v.get("max_abs_diff", {})}
    out = {"checks": [grid]}
    text = v.get("text")
    if text:
        out["checks"].append({"check": "text", **text})
    if manifest.get("newly_initialized_weights"):
        out["untrained_weights"] = list(manifest["newly_initialized_weights"])
    out["passed"] = all(c.get("passed") for c in out["checks"] if c.get("ran", True)) and grid["ran"]
    return out


def validation_lines(manifest: dict) -> list[str]:
    """``info``'s validation block: what was compared, by which criterion, with what result."""
    summary = checks(manifest)
    grid = summary["checks"][0]
    label = "validation    "
    if not grid["ran"]:
        lines = [f"{label}not run ({grid.get('note')})"]
    elif grid["mode"] == "cosine":
        t, m = grid["thresholds"], grid["measured"]
        lines = [
            f"{label}{'passed' if grid['passed'] else 'FAILED'}: {grid['cases']} cases, {grid['precision']} "
            "vs float32 eager by cosine (shapes x paddings, each padded row vs itself unpadded)",
            f"  cosine      min per row {_per_output(m['min_cosine'], '.5f')} (needs >= {t.get('min_cosine')})",
            f"  norm        max relative error {_per_output(m['max_norm_error'], '.2e')} "
            f"(needs <= {t.get('max_norm_error')})",
        ]
        if m["top1_agreement"]:
            lines.append(f"  top-1       agreement {_per_output(m['top1_agreement'], '.1%')} (flips within "
                         f"{t.get('top1_tie')} of a row's range count as ties)")
        lines.append(f"  abs diff    {_per_output(m['max_abs_diff'], '.2e')} (for information: not the criterion "
                     "at reduced precision)")
    else:
        t, m = grid["thresholds"], grid["measured"]
        lines = [
            f"{label}{'passed' if grid['passed'] else 'FAILED'}: {grid['cases']} cases vs float32 eager "
            "(shapes x paddings, each padded row vs itself unpadded)",
            f"  tolerance   |exported - eager| <= atol {t['atol']:g} + rtol {t['rtol']:g} x |eager|; max abs diff "
            f"{_per_output(m['max_abs_diff'], '.2e')}",
        ]
    text = next((c for c in summary["checks"] if c["check"] == "text"), None)
    lines.append("text check    " + (str(text.get("summary", "")).removeprefix("text check ") if text is not None
                                     else "- (exported before text checks existed)"))
    if summary.get("untrained_weights"):
        new = summary["untrained_weights"]
        lines.append(f"weights       UNTRAINED: {len(new)} tensors were not in the checkpoint and are random "
                     f"({', '.join(new[:3])}{'...' if len(new) > 3 else ''}): exported with --allow-new-weights; "
                     "the checks above compare against those same random weights")
    return lines


def _per_output(values: dict, fmt: str) -> str:
    if not values:
        return "-"
    return ", ".join(f"{k} {'nan' if v is None else format(v, fmt)}" for k, v in values.items())
