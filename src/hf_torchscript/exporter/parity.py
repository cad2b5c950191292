"""Step 5 of the flow: prove an exported module computes the eager model's function, on a grid of
shapes and paddings (``run_grid``, ``build_grid``, ``check``) with a ``ValidationReport``.

(Named parity, not validate: a submodule named validate would replace the public
hf_torchscript.validate function as soon as it is imported.)

Two references per case:
  1. the eager model on the very same padded batch: every output, on the valid positions;
  2. the eager model on each padded row alone with its padding removed: the exported module must
     give the same numbers for a row whatever padding surrounds it. This is what catches a trace
     that baked the "no padding" branch, or a length, or a batch size.
All failures are collected and reported together.

Two modes. ``allclose`` (float32 exports, optimized or not): every value within atol + rtol*|eager|.
``cosine`` (bfloat16/float16/int8 exports, which cannot meet fp32 tolerances by design): per row of
each output (the last axis, valid positions only) cosine similarity >= a threshold and the norm
within a fraction of the eager norm, and for ``*logits`` outputs the same top-1 as eager up to
near-ties. Both compare with the fp32 eager model; the mode and thresholds go in the manifest.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch

from ..errors import ValidationError
from ..progress import report as tell
from .inputs import InputSpec, OutputSpec, make_inputs


@dataclass(frozen=True)
class Case:
    dims: dict  # axis name -> size
    patterns: tuple[str, ...]  # padding pattern of each row

    @property
    def label(self) -> str:
        shape = "x".join(str(self.dims[k]) for k in ("batch_size", "num_choices", "sequence_length") if k in self.dims)
        return f"({shape}) {'/'.join(self.patterns)}"


# Reduced-precision thresholds, per (dtype or quantization). Measured on tiny random models and
# BERT-base: bf16 rows reach cosine 0.9999, int8 0.999; the bars leave room for unlucky rows
# without accepting a broken module (a wrong mask or a dropped layer gives cosine < 0.9).
REDUCED_PRECISION = {
    "bfloat16": {"min_cosine": 0.995, "max_norm_error": 0.05, "top1_tie": 0.02},
    "float16": {"min_cosine": 0.999, "max_norm_error": 0.01, "top1_tie": 0.01},
    "dynamic-int8": {"min_cosine": 0.99, "max_norm_error": 0.1, "top1_tie": 0.03},
    "dynamic-int8-aten": {"min_cosine": 0.99, "max_norm_error": 0.1, "top1_tie": 0.03},
}


@dataclass(frozen=True)
class Tolerance:
    """How exported and eager outputs must agree.

    mode "allclose": |exported - eager| <= atol + rtol*|eager| everywhere (float32).
    mode "cosine": per row (last axis, valid positions) cosine >= min_cosine and
    | |exported| / |eager| - 1 | <= max_norm_error; ``*logits`` outputs must pick eager's top-1
    unless eager's own margin to the exported pick is under top1_tie x the row's range.
    """

    mode: str = "allclose"
    atol: float = 1e-4
    rtol: float = 1e-4
    min_cosine: float = 0.0
    max_norm_error: float = 0.0
    top1_tie: float = 0.0
    reason: str = ""

    def thresholds(self) -> dict:
        if self.mode == "allclose":
            return {"atol": self.atol, "rtol": self.rtol}
        return {"min_cosine": self.min_cosine, "max_norm_error": self.max_norm_error, "top1_tie": self.top1_tie}

    def describe(self) -> str:
        if self.mode == "allclose":
            return f"atol {self.atol:g}, rtol {self.rtol:g}"
        return (f"cosine >= {self.min_cosine:g} per row, norm within {self.max_norm_error:g}, "
                f"top-1 agreement for logits ({self.reason})")


def tolerance_for(dtype: str = "float32", quantize: str | None = None, *, atol: float = 1e-4,
                  rtol: float = 1e-4) -> Tolerance:
    """The validation tolerance an export with this dtype/quantization must meet (fp32: allclose)."""
    key = quantize or (dtype if dtype != "float32" else None)
    if key is None:
        return Tolerance("allclose", atol, rtol)
    t = REDUCED_PRECISION[key]
    return Tolerance("cosine", atol, rtol, t["min_cosine"], t["max_norm_error"], t["top1_tie"],
                     reason=f"{key} vs float32 eager")


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
    max_norm_error: dict[str, float] = field(default_factory=dict)
    top1_agreement: dict[str, float] = field(default_factory=dict)  # fraction of rows (logits outputs)
    thresholds: dict = field(default_factory=dict)
    note: str | None = None
    ran: bool = True  # False: the module could not be executed here (e.g. compiled for a Neuron device)
    text: dict | None = None  # the text check's record (textcheck.TextReport.to_json()), once it ran
    answers: dict | None = None  # answers on real text at reduced precision (answers.AnswerReport.to_json())

    def _text_summary(self) -> str:
        out = f"; {self.text['summary']}" if self.text else ""
        if self.answers and self.answers.get("ran"):
            out += f"; {self.answers['summary']}"
        return out

    def to_json(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        if not self.ran:
            return f"validation not run: {self.note}{self._text_summary()}"
        # Never "passed" next to an inf/NaN difference or an empty grid, whatever set ``passed``.
        ok = self.passed and bool(self.cases) and all(math.isfinite(v) for v in self.max_abs_diff.values())
        head = "passed" if ok else "FAILED"
        diffs = ", ".join(f"{k} {v:.2e}" for k, v in self.max_abs_diff.items())
        if self.mode == "cosine":
            cos = ", ".join(f"{k} {v:.5f}" for k, v in self.min_cosine.items())
            return (f"validation {head} ({self.mode}): {len(self.cases)} cases, min cosine {cos}; max abs diff {diffs}"
                    f"{self._text_summary()}")
        return f"validation {head}: {len(self.cases)} cases, max abs diff {diffs}{self._text_summary()}"

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
    traced_choices: int = 3,
    traced_decoder_length: int = 9,
) -> list[Case]:
    """The shapes and paddings to check, from the strategy's own edges.

    dynamic: lengths 1, 2, traced-1, traced, traced+1, 2*traced+1 and the max;
    buckets/static: 1 and every bucket edge b-1, b, b+1 (b+1 lands in the next bucket);
    batch 1 and a batch larger than the traced one, whose rows are unpadded, right padded,
    padded after the first token, and (decoders) left padded. Every other symbolic axis cycles
    through 1, its traced size and a larger one (num_choices; decoder lengths also follow L/2), so
    no axis published as symbolic goes unexercised.
    """
    choice_sizes = sorted({1, traced_choices, traced_choices + 2})
    decoder_sizes = sorted({1, traced_decoder_length, traced_decoder_length + 3})
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
            k = len(cases)
            if choices:
                dims["num_choices"] = choice_sizes[k % len(choice_sizes)]
            if decoder_inputs:
                options = decoder_sizes + [max(1, (L or 2) // 2)]
                dims["decoder_sequence_length"] = options[k % len(options)]
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
    tolerance: Tolerance | None = None,
    progress=None,
) -> ValidationReport:
    """Run every case through ``exported`` and ``reference`` (both take positional tensors).

    ``tolerance``: None means allclose with ``atol``/``rtol``; a cosine Tolerance for reduced precision.
    ``progress``: told about each case (see hf_torchscript.progress).
    """
    tol = tolerance or Tolerance("allclose", atol, rtol)
    report = ValidationReport(passed=True, atol=atol, rtol=rtol, mode=tol.mode, thresholds=tol.thresholds())
    report.max_abs_diff = {o.name: 0.0 for o in outputs}
    stats: dict = {}
    for i, case in enumerate(cases):
        tell(progress, "validate", f"{case.label} vs eager ({tol.mode})", i, len(cases))
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
                                  diffs=entry["max_abs_diff"], row_references=row_references, patterns=case.patterns,
                                  tolerance=tol, stats=stats)
        for name, d in entry["max_abs_diff"].items():
            report.max_abs_diff[name] = max(report.max_abs_diff.get(name, 0.0), d)
        entry["ok"] = not failures
        report.cases.append(entry)
        report.failures.extend(failures)
    if not cases:
        report.failures.append("no validation case was run: nothing was compared")
    for o in outputs:
        if cases and not stats.get(("n", o.name)):
            report.failures.append(f"{o.name}: no value was compared in {len(cases)} cases (every position padded?)")
    if tol.mode == "cosine":
        report.min_cosine = {o.name: stats.get(("cos", o.name), 1.0) for o in outputs}
        report.max_norm_error = {o.name: stats.get(("norm", o.name), 0.0) for o in outputs}
        report.top1_agreement = {
            o.name: 1.0 - stats[("top1_bad", o.name)] / max(1, stats[("top1_n", o.name)])
            for o in outputs if ("top1_n", o.name) in stats
        }
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
    tolerance: Tolerance | None = None,
    stats: dict | None = None,
) -> list[str]:
    """Compare ``exported`` with ``reference`` on one batch; returns failure lines (empty if equal)."""
    diffs = {} if diffs is None else diffs
    tol = tolerance or Tolerance("allclose", atol, rtol)
    stats = {} if stats is None else stats
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
    _check_reference_finite(outputs, ref, masks, label)
    failures = []
    for o, g, r in zip(outputs, got, ref):
        msg = _compare(o, g, r, masks, tol, diffs, stats)
        if msg:
            failures.append(f"{o.name} at {label}: {msg}")
    if row_references and masks:
        failures.extend(_row_checks(reference, specs, outputs, inputs, got, label, tol, diffs, patterns, stats))
    return failures


def _row_checks(reference, specs, outputs, inputs, got, label, tol, diffs, patterns, stats) -> list[str]:
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
        _check_reference_finite(outputs, ref, masks, f"{label} row {b} alone")
        pattern = patterns[b % len(patterns)] if patterns else "padded"
        for o, g, r in zip(outputs, got, ref):
            g = g[b : b + 1]
            for axis, idx in keep.items():
                if axis in o.shape:
                    g = g.index_select(o.shape.index(axis), idx)
            msg = _compare(o, g, r, masks, tol, diffs, stats)
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


def _check_reference_finite(outputs, ref, masks, label: str) -> None:
    """The eager model itself returning NaN/inf is a broken model, not a tolerance question: stop."""
    for o, r in zip(outputs, ref):
        valid = _valid(o, masks, r.shape)
        bad = ~torch.isfinite(r) if valid is None else ~torch.isfinite(r) & valid
        if bool(bad.any()):
            kind = "NaN" if bool(torch.isnan(r).any()) else "inf"
            raise ValidationError(
                f"the original model itself returns {kind} for {o.name} at {label} ({int(bad.sum())} values): the "
                "checkpoint is broken (NaN/inf weights, or a config that overflows), so there is nothing to prove "
                "an export against; check the weights (e.g. torch.isfinite on each tensor) and re-save the model"
            )


def _compare(o: OutputSpec, got: torch.Tensor, ref: torch.Tensor, masks, tol: Tolerance, diffs, stats) -> str | None:
    if got.shape != ref.shape:
        return f"shape {tuple(got.shape)} != eager {tuple(ref.shape)}"
    atol, rtol = tol.atol, tol.rtol
    got, ref = got.double(), ref.double()
    diff = (got - ref).abs()
    # NaN compares False with everything: count it as bad explicitly (the reference is finite here).
    bad = (diff > atol + rtol * ref.abs()) | ~torch.isfinite(got)
    valid = _valid(o, masks, got.shape)
    if valid is not None:
        bad = bad & valid
        diff = torch.where(valid, diff, torch.zeros_like(diff))
    n_valid = int(valid.expand(got.shape).sum()) if valid is not None else got.numel()
    stats[("n", o.name)] = stats.get(("n", o.name), 0) + n_valid
    d = float(torch.nan_to_num(diff, nan=float("inf")).max()) if diff.numel() else 0.0
    diffs[o.name] = max(diffs.get(o.name, 0.0), d)
    non_finite = int((~torch.isfinite(got) & (valid if valid is not None else True)).sum())
    if non_finite:
        return f"{non_finite} NaN/inf values in the exported output where eager is finite"
    if tol.mode == "cosine":
        return _compare_cosine(o, got, ref, valid, tol, stats)
    n_bad = int(bad.sum())
    if n_bad:
        return f"max diff {d:.3g} > atol {atol:g} + rtol {rtol:g}*|eager| ({n_bad} of {bad.numel()} values)"
    return None


def _compare_cosine(o: OutputSpec, got: torch.Tensor, ref: torch.Tensor, valid, tol: Tolerance, stats) -> str | None:
    """Rows = every index but the last axis; padded positions excluded (zeroed when on the last axis)."""
    if valid is not None:
        valid = valid.expand(got.shape)
    else:
        valid = torch.ones(got.shape, dtype=torch.bool)
    if got.dim() == 0 or got.shape[-1] < 2:
        # A last axis of size 1 (a regression score) has no direction: compare the valid values as one vector.
        g, r = got[valid].reshape(1, -1), ref[valid].reshape(1, -1)
        v = torch.ones(g.shape, dtype=torch.bool)
    else:
        g, r = got.reshape(-1, got.shape[-1]), ref.reshape(-1, ref.shape[-1])
        v = valid.reshape(-1, got.shape[-1])
        keep = v.any(-1)  # rows with at least one valid value
        g, r, v = g[keep], r[keep], v[keep]
        g, r = g.masked_fill(~v, 0.0), r.masked_fill(~v, 0.0)
    if g.numel() == 0:
        return None
    rn, gn = r.norm(dim=-1), g.norm(dim=-1)
    # A row of 1-3 values (QA logits of a 2-token input) has no meaningful direction or norm: its
    # values must instead be within max_norm_error of eager, relative to the output's scale.
    short = v.sum(-1) < 4
    scale = max(1.0, float(r.abs().max()))
    short_err = ((g - r).abs().amax(-1) / scale)
    tiny = rn < 1e-6
    cos = torch.where(tiny | short, torch.ones_like(rn), (g * r).sum(-1) / (gn * rn).clamp(min=1e-12))
    norm_err = torch.where(short, short_err, torch.where(tiny, gn, (gn / rn.clamp(min=1e-12) - 1).abs()))
    # NaN is never within tolerance: map it to the worst value so the comparisons below fail.
    cos, norm_err = torch.nan_to_num(cos, nan=-1.0), torch.nan_to_num(norm_err, nan=float("inf"))
    cmin, nmax = float(cos.min()), float(norm_err.max())
    stats[("cos", o.name)] = min(stats.get(("cos", o.name), 1.0), cmin)
    stats[("norm", o.name)] = max(stats.get(("norm", o.name), 0.0), nmax)
    msgs = []
    if cmin < tol.min_cosine:
        msgs.append(f"min cosine {cmin:.5f} < {tol.min_cosine:g} ({int((cos < tol.min_cosine).sum())} of {cos.numel()} rows)")
    if nmax > tol.max_norm_error:
        off = int((norm_err > tol.max_norm_error).sum())
        msgs.append(f"norm off by {nmax:.3g} > {tol.max_norm_error:g} ({off} of {cos.numel()} rows)")
    if o.name.endswith("logits"):
        neg = torch.finfo(g.dtype).min
        gm, rm = g.masked_fill(~v, neg), r.masked_fill(~v, neg)
        gi, ri = gm.argmax(-1), rm.argmax(-1)
        rvalid = r.masked_fill(~v, float("inf")).amin(-1)
        span = (rm.amax(-1) - rvalid).clamp(min=1e-12)
        # A flip between two near-equal eager logits is precision, not a broken model.
        margin = rm.gather(-1, ri[:, None])[:, 0] - rm.gather(-1, gi[:, None])[:, 0]
        flips = (gi != ri) & (margin > tol.top1_tie * span)
        stats[("top1_bad", o.name)] = stats.get(("top1_bad", o.name), 0) + int(flips.sum())
        stats[("top1_n", o.name)] = stats.get(("top1_n", o.name), 0) + int(gi.numel())
        if bool(flips.any()):
            msgs.append(f"top-1 differs from eager in {int(flips.sum())} of {gi.numel()} rows")
    return "; ".join(msgs) or None


def _last_line(e: Exception) -> str:
    lines = [l.strip() for l in str(e).strip().splitlines() if l.strip()]
    return f"{type(e).__name__}: {lines[-1] if lines else ''}"


def run_grid(p, module, shapes_info: dict, *, atol: float | None = None, rtol: float | None = None,
             progress=None) -> ValidationReport:
    """Check ``module`` against ``p.reference`` (a ``prepare.Prepared``) on the grid ``shapes_info`` implies."""
    traced = shapes_info["traced"][0]
    lengths = shapes_info["buckets"] or [shapes_info["max_length"]]
    grid = build_grid(
        shapes_info["strategy"],
        traced_batch=traced["batch_size"],
        traced_length=traced["sequence_length"],
        max_length=shapes_info["max_length"],
        lengths=lengths,
        static_batch=shapes_info["batch_size"] or 0,
        has_sequence=p.has_sequence,
        decoder=p.arch.decoder,
        choices=p.task.choices,
        decoder_inputs=p.has_decoder_inputs,
        traced_choices=traced.get("num_choices", 3),
        traced_decoder_length=traced.get("decoder_sequence_length", 9),
    )
    # Sizes a backend asks to prove on top of the strategy's grid (aoti: where a shape guard that
    # torch.export recorded breaks, backends/aoti.guard_cases).
    for dims in shapes_info.get("extra_cases") or []:
        B = dims["batch_size"]
        multi = ("full", "right", "first", "left") if p.arch.decoder else ("full", "right", "first")
        grid.append(Case(dict(dims), ("full",) if B == 1 else tuple(multi[i % len(multi)] for i in range(B))))
    atol = p.options.atol if atol is None else atol
    rtol = p.options.rtol if rtol is None else rtol
    return check(
        module, p.reference, p.specs, p.outputs, grid,
        atol=atol, rtol=rtol, tolerance=tolerance_for(p.options.dtype, p.options.quantize, atol=atol, rtol=rtol),
        vocab_size=p.vocab_size, type_vocab_size=p.type_vocab_size,
        avoid_ids=(p.pad_token_id,), seed=p.options.seed + 100, progress=progress,
    )


def not_run(backend, atol: float, rtol: float) -> ValidationReport:
    """The report of a module that cannot execute here: never a pass."""
    # Compiling needs no device, running does: say so instead of claiming a pass.
    return ValidationReport(passed=False, ran=False, atol=atol, rtol=rtol, mode="not-run",
                            note=f"the {backend.name} module needs a Neuron device to execute and this "
                            "machine has none; run `hf-torchscript validate OUTPUT_DIR` on the instance")
