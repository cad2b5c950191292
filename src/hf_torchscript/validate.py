"""Prove an exported module computes the eager model's function: a grid of shapes and paddings.

Two references per case:
  1. the eager model on the very same padded batch: every output, on the valid positions;
  2. the eager model on each padded row alone with its padding removed: the exported module must
     give the same numbers for a row whatever padding surrounds it. This is what catches a trace
     that baked the "no padding" branch, or a length, or a batch size.
All failures are collected and reported together.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch

from .inputs import InputSpec, OutputSpec, make_inputs


@dataclass(frozen=True)
class Case:
    dims: dict  # axis name -> size
    patterns: tuple[str, ...]  # padding pattern of each row

    @property
    def label(self) -> str:
        shape = "x".join(str(self.dims[k]) for k in ("batch_size", "num_choices", "sequence_length") if k in self.dims)
        return f"({shape}) {'/'.join(self.patterns)}"


@dataclass
class ValidationReport:
    """What validation checked and what it found; ``passed`` is False if any output was out of tolerance."""

    passed: bool  # every check ran and was within tolerance (False when nothing ran)
    atol: float
    rtol: float
    mode: str = "allclose"
    cases: list[dict] = field(default_factory=list)
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    min_cosine: dict[str, float] = field(default_factory=dict)
    note: str | None = None
    ran: bool = True  # False: the module could not be executed here (e.g. compiled for a Neuron device)

    def to_json(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        if not self.ran:
            return f"validation not run: {self.note}"
        head = "passed" if self.passed else "FAILED"
        diffs = ", ".join(f"{k} {v:.2e}" for k, v in self.max_abs_diff.items())
        return f"validation {head}: {len(self.cases)} cases, max abs diff {diffs}"

    def failure_text(self, limit: int = 20) -> str:
        lines = [f"- {f}" for f in self.failures[:limit]]
        if len(self.failures) > limit:
            lines.append(f"- ... and {len(self.failures) - limit} more")
        return "\n".join(lines)


def build_grid(
    strategy: str,
    *,
    traced_batch: int,
    traced_length: int,
    max_length: int,
    lengths: Sequence[int] = (),
    static_batch: int = 0,
    has_sequence: bool = True,
    decoder: bool = False,
    choices: bool = False,
    decoder_inputs: bool = False,
) -> list[Case]:
    """The shapes and paddings to check, from the strategy's own edges.

    dynamic: lengths 1, 2, traced-1, traced, traced+1, 2*traced+1 and the max;
    buckets/static: 1 and every bucket edge b-1, b, b+1 (b+1 lands in the next bucket);
    batch 1 and a batch larger than the traced one, whose rows are unpadded, right padded,
    padded after the first token, and (decoders) left padded.
    """
    multi = ("full", "right", "first", "left") if decoder else ("full", "right", "first")
    if static_batch:
        batches = sorted({1, static_batch, static_batch + 1})
    else:
        batches = [1, max(traced_batch + 1, len(multi))]
    if not has_sequence:
        seq_lengths = [None]
    elif strategy == "dynamic":
        L0 = traced_length
        seq_lengths = sorted({1, 2, L0 - 1, L0, L0 + 1, 2 * L0 + 1, max_length})
    else:
        seq_lengths = sorted({1, *(x for b in lengths for x in (b - 1, b, b + 1))})
    seq_lengths = [L for L in seq_lengths if L is None or 1 <= L <= max_length]
    cases = []
    for L in seq_lengths:
        for B in batches:
            dims = {"batch_size": B}
            if L is not None:
                dims["sequence_length"] = L
            if choices:
                dims["num_choices"] = 2
            if decoder_inputs:
                dims["decoder_sequence_length"] = max(1, (L or 2) // 2)
            patterns = ("full",) if B == 1 else tuple(multi[i % len(multi)] for i in range(B))
            cases.append(Case(dims, patterns))
    return cases


def check(
    exported: Callable,
    reference: Callable,
    specs: Sequence[InputSpec],
    outputs: Sequence[OutputSpec],
    cases: Sequence[Case],
    *,
    atol: float,
    rtol: float,
    vocab_size: int,
    type_vocab_size: int = 2,
    avoid_ids: Sequence[int] = (),
    seed: int = 0,
    row_references: bool = True,
) -> ValidationReport:
    """Run every case through ``exported`` and ``reference`` (both take positional tensors)."""
    report = ValidationReport(passed=True, atol=atol, rtol=rtol)
    report.max_abs_diff = {o.name: 0.0 for o in outputs}
    for i, case in enumerate(cases):
        inputs = make_inputs(
            specs,
            case.dims,
            case.patterns,
            vocab_size=vocab_size,
            type_vocab_size=type_vocab_size,
            seed=seed + i,
            avoid_ids=avoid_ids,
        )
        entry = {"shape": case.dims, "padding": list(case.patterns), "max_abs_diff": {}}
        failures = compare_inputs(exported, reference, specs, outputs, inputs, case.label, atol=atol, rtol=rtol,
                                  diffs=entry["max_abs_diff"], row_references=row_references, patterns=case.patterns)
        for name, d in entry["max_abs_diff"].items():
            report.max_abs_diff[name] = max(report.max_abs_diff.get(name, 0.0), d)
        entry["ok"] = not failures
        report.cases.append(entry)
        report.failures.extend(failures)
    report.passed = not report.failures
    return report


def compare_inputs(
    exported: Callable,
    reference: Callable,
    specs: Sequence[InputSpec],
    outputs: Sequence[OutputSpec],
    inputs: dict[str, torch.Tensor],
    label: str,
    *,
    atol: float,
    rtol: float,
    diffs: dict | None = None,
    row_references: bool = True,
    patterns: Sequence[str] | None = None,
) -> list[str]:
    """Compare ``exported`` with ``reference`` on one batch; returns failure lines (empty if equal)."""
    diffs = {} if diffs is None else diffs
    args = tuple(inputs[s.name] for s in specs)
    with torch.no_grad():
        ref = reference(*args)
        try:
            got = exported(*args)
        except Exception as e:  # the exported module failing at a shape is a finding, not a crash
            return [f"{label}: exported module raised {_last_line(e)}"]
    if len(got) != len(outputs):
        return [f"{label}: exported module returned {len(got)} outputs, expected {len(outputs)}"]
    masks = _masks(inputs)
    failures = []
    for o, g, r in zip(outputs, got, ref):
        msg = _compare(o, g, r, masks, atol, rtol, diffs)
        if msg:
            failures.append(f"{o.name} at {label}: {msg}")
    if row_references and masks:
        failures.extend(_row_checks(reference, specs, outputs, inputs, got, label, atol, rtol, diffs, patterns))
    return failures


def _row_checks(reference, specs, outputs, inputs, got, label, atol, rtol, diffs, patterns) -> list[str]:
    failures = []
    batch = next(iter(inputs.values())).shape[0]
    for b in range(batch):
        keep = {}
        for axis, (mask, _) in _masks(inputs).items():
            row = mask[b].reshape(-1, mask.shape[-1]).any(0)  # positions valid in any choice
            if not bool(row.all()):
                keep[axis] = row.nonzero().flatten()
        if not keep:
            continue  # unpadded row: the batch comparison covered it
        row_inputs = {}
        for s in specs:
            x = inputs[s.name][b : b + 1]
            axis = "sequence_length" if s.mask == "attention_mask" else (
                "decoder_sequence_length" if s.mask == "decoder_attention_mask" else None)
            if axis in keep:
                x = x.index_select(-1, keep[axis])
            row_inputs[s.name] = x
        with torch.no_grad():
            ref = reference(*(row_inputs[s.name] for s in specs))
        masks = _masks(row_inputs)
        pattern = patterns[b % len(patterns)] if patterns else "padded"
        for o, g, r in zip(outputs, got, ref):
            g = g[b : b + 1]
            for axis, idx in keep.items():
                if axis in o.shape:
                    g = g.index_select(o.shape.index(axis), idx)
            msg = _compare(o, g, r, masks, atol, rtol, diffs)
            if msg:
                failures.append(f"{o.name} at {label} row {b} ({pattern}) vs the same row unpadded: {msg}")
    return failures


def _masks(inputs: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, tuple]]:
    out = {}
    if "attention_mask" in inputs:
        m = inputs["attention_mask"]
        axes = ("batch_size", "num_choices", "sequence_length") if m.dim() == 3 else ("batch_size", "sequence_length")
        out["sequence_length"] = (m, axes)
    if "decoder_attention_mask" in inputs:
        out["decoder_sequence_length"] = (inputs["decoder_attention_mask"], ("batch_size", "decoder_sequence_length"))
    return out


def _valid(o: OutputSpec, masks, shape) -> torch.Tensor | None:
    valid = None
    for axis, (m, m_axes) in masks.items():
        if axis not in o.shape or not all(a in o.shape for a in m_axes):
            continue
        view = [shape[i] if o.shape[i] in m_axes else 1 for i in range(len(shape))]
        v = m.bool().reshape(view)
        valid = v if valid is None else valid & v
    return valid


def _compare(o: OutputSpec, got: torch.Tensor, ref: torch.Tensor, masks, atol, rtol, diffs) -> str | None:
    if got.shape != ref.shape:
        return f"shape {tuple(got.shape)} != eager {tuple(ref.shape)}"
    got, ref = got.double(), ref.double()
    diff = (got - ref).abs()
    bad = (diff > atol + rtol * ref.abs()) | (torch.isnan(diff) & ~torch.isnan(ref))
    valid = _valid(o, masks, got.shape)
    if valid is not None:
        bad = bad & valid
        diff = torch.where(valid, diff, torch.zeros_like(diff))
    d = float(torch.nan_to_num(diff, nan=float("inf")).max()) if diff.numel() else 0.0
    diffs[o.name] = max(diffs.get(o.name, 0.0), d)
    n_bad = int(bad.sum())
    if n_bad:
        return f"max diff {d:.3g} > atol {atol:g} + rtol {rtol:g}*|eager| ({n_bad} of {bad.numel()} values)"
    return None


def _last_line(e: Exception) -> str:
    lines = [l.strip() for l in str(e).strip().splitlines() if l.strip()]
    return f"{type(e).__name__}: {lines[-1] if lines else ''}"
