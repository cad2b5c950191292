"""What the CLI shows: ``run`` results for people (a short text) and for programs (one JSON schema for
every task), and ``info``'s account of what was checked, each check in its own terms.

The JSON of ``run --json`` is runtime/document.py's (``run_document``), shared with the servers.
"""

from __future__ import annotations

import json

from ..runtime.document import (  # noqa: F401  (the CLI's run path reads them through display)
    RUN_SCHEMA,
    cosine_matrix,
    describe_input,
    dumps,
    finish,
    generation_output,
    run_document,
    run_output,
    strict,
)
from ..tasks import TASKS
from ..tasks.base import num as _num
from ..tasks.base import show as _show
from ..tasks.base import sort_key as _key


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
    if v.get("mode") == "generation":  # text-generation: tokens and logits vs transformers generate
        keys = ("prompts", "prompt_lengths", "max_new_tokens", "tokens_compared", "sequences_equal", "ties",
                "finish_reasons", "prefill_positions_compared", "atol", "rtol", "tie", "max_abs_diff", "summary")
        gen = {"check": "generation", "ran": v.get("ran", True), "passed": bool(v.get("passed")),
               "against": v.get("against"), **{k: v.get(k) for k in keys}}
        return {"checks": [gen], "passed": gen["passed"] and gen["ran"]}
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
    if isinstance(v.get("answers"), dict):  # issue 24: answers on real text at reduced precision
        out["checks"].append({"check": "answers", **v["answers"]})
    if manifest.get("newly_initialized_weights"):
        out["untrained_weights"] = list(manifest["newly_initialized_weights"])
    out["passed"] = all(c.get("passed") for c in out["checks"] if c.get("ran", True)) and grid["ran"]
    return out


def validation_lines(manifest: dict) -> list[str]:
    """``info``'s validation block: what was compared, by which criterion, with what result."""
    summary = checks(manifest)
    grid = summary["checks"][0]
    label = "validation    "
    if grid["check"] == "generation":
        lengths = grid.get("prompt_lengths") or [0]
        return [f"{label}{grid.get('summary')}",
                f"  against     {grid.get('against')}",
                f"  prompts     {grid.get('prompts')} of {min(lengths)}-{max(lengths)} tokens, up to "
                f"{grid.get('max_new_tokens')} new tokens each; a flip within {grid.get('tie')} of eager's "
                "top logit ends that prompt as a tie"]
    if not grid["ran"]:
        lines = [f"{label}not run ({grid.get('note')})"]
    elif grid["mode"] == "cosine":
        t, m = grid["thresholds"], grid["measured"]
        lines = [
            f"{label}{'passed' if grid['passed'] else 'FAILED'}: {grid['cases']} cases, {grid['precision']} "
            "vs float32 eager by cosine on random token ids (shapes x paddings, each padded row vs itself "
            "unpadded; real text: the text check and answers lines)",
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
    from .proof import answer_lines, source_lines  # issue 24: the source folder's checks, answers on real text

    lines.extend(answer_lines(manifest) + source_lines(manifest))
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


def cpu_lines(manifest: dict) -> list[str]:
    """``info``'s CPU block: where the artifact was made, what it needs, and (--optimize auto) what was measured."""
    c = manifest.get("cpu")
    if not c:
        return ["cpu           - (exported before the manifest recorded the CPU)"]
    flags = " ".join(c.get("flags") or []) or "unknown"
    cap = f"; torch kernels {c['capability']}" if c.get("capability") else ""
    where = f"{c.get('model') or 'an unknown CPU'} ({c.get('machine', '?')}{cap}; flags {flags})"
    made = f"cpu           exported on {where}"
    lines = [made,
             "  requires    " + (", ".join(c["requires"]) if c.get("requires") else
                                 "nothing beyond what torch runs on (TorchScript picks kernels when it runs)")]
    lines += [f"  warning     {note}" for note in c.get("notes") or []]
    t = manifest.get("tuning")
    if t:
        la = t.get("load_average") or {}
        quiet = "quiet" if t.get("quiet") else "NOT quiet: timings are not evidence"
        lines.append(f"optimize      auto: {t.get('winner')} won; {t.get('why', '')}")
        lines.append(f"  workload    {t.get('workload', {}).get('description', '?')}; load average "
                     f"{_load(la.get('start'))} at start, {_load(la.get('end'))} at end ({quiet})")
        for cand in t.get("candidates", []):
            if cand.get("median_ms") is not None:
                what = f"{cand['median_ms']:.2f} ms median" + (f" ({cand['ratio']:.2f}x of {t.get('baseline')})"
                                                               if cand.get("ratio") is not None else "")
            else:
                what = cand.get("status", "?")
            mark = "*" if cand.get("name") == t.get("winner") else " "
            lines.append(f"  {mark} {cand.get('name', '?'):<22} {what}" + (f": {cand['reason']}" if cand.get("reason")
                                                                          else ""))
    return lines


def _load(values) -> str:
    return "/".join(f"{x:.2f}" for x in values) if values else "?"
