"""Int8 quantisation that survives trained weights: per-channel weight scales and a measured
sensitivity pass that keeps the Linear layers int8 hurts most in float32.

Why not plain ``torch.ao.quantization.quantize_dynamic`` (one scale per weight tensor): on the
trained all-MiniLM-L6-v2 and 320 real sentences it drops per-row cosine to 0.88 (sentence
embeddings) and 0.70 (token rows), in eager mode, before any export. Measured there
(bench/int8_research.py), one change at a time:

- one weight scale per output channel instead of per tensor: weight-only error goes from
  cosine 0.94 to 0.999 (a few output channels of every layer have outlier weights);
- activations quantised per token (one scale per row) instead of per tensor: token rows from
  0.95 to 0.989 (a few tokens, [CLS]/[SEP] and punctuation, carry outlier activations and set a
  per-tensor scale for everyone); torch.ao's dynamic kernels quantise per tensor, 7-bit;
- the damage is not spread evenly: with one layer at a time in int8, the FFN intermediate/output
  and attention value layers cost 100x what query/key/attention-output layers do (the softmax
  absorbs those errors; nothing dampens the last blocks' output layers), so keeping the worst
  in float32 buys most of the accuracy back. SmoothQuant-style channel scaling (alpha 0.5-0.8)
  did not help these kernels. A layer's own output error is a poor guide to its damage.

Two schemes (``--quantize``):

``dynamic-int8``
    torch.ao dynamic quantisation with per-channel weight scales (fbgemm/oneDNN int8 kernels,
    activations quantised per tensor at run time). The fast one; torch 2.13 deprecates the
    quantized tensor types it is built on (torchao replaces them, and torchao's path produces
    an AOTInductor ``.pt2``, not TorchScript).
``dynamic-int8-aten``
    plain aten ops, nothing deprecated: int8 weights per output channel, activations quantised
    per token, ``aten::_int_mm`` (int8 x int8 -> int32) rescaled in float32. More accurate; on
    torch 2.13 CPU it is slower than float32 because TorchScript runs the (de)quantisation as
    separate elementwise passes (no CPU fuser in the pip wheel): choose it for size (int8
    weights), not speed. bench/RESULTS.md has both.

Both run the same sensitivity pass on calibration inputs (real sentences through the model's
own tokenizer, plus padded random-id batches like validation's): each Linear is put in int8
alone and the damage to the model's outputs measured (1 - min per-row cosine), then the fewest
most damaging layers are kept in float32 so that the whole model meets ``CALIBRATION_TARGET``
on the calibration set (a margin over the validation thresholds; bisection on how many). The
manifest's ``quantization`` lists every layer, whether it was quantised, its measured damage
and own error, and why.
"""

from __future__ import annotations

import copy
import fnmatch
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .parity import REDUCED_PRECISION

SCHEMES = {
    "dynamic-int8": "torch.ao dynamic int8 Linear: int8 weights per output channel, activations quantised per tensor "
                    "at run time (fbgemm/oneDNN kernels; torch.ao quantized tensors are deprecated in torch 2.13)",
    "dynamic-int8-aten": "int8 Linear in plain aten ops: int8 weights per output channel, activations quantised per "
                         "token at run time, aten::_int_mm int8 GEMM rescaled in float32",
}
# What the quantised model must reach on the calibration inputs, with margin over what validation
# then demands (parity.REDUCED_PRECISION: cosine 0.99, norm 0.1): calibration and validation
# inputs differ, and a model that only just passes calibration can fail validation.
# Near-ties (top1_tie, as validation's) do not count as top-1 flips on random ids; on real text they do.
# One source of numbers (issue 24): the pass mark is parity.REDUCED_PRECISION's; calibration demands
# CALIBRATION_MARGIN of its allowed error (cosine 1 - 0.01 x 0.5 = 0.995 for a pass mark of 0.99).
PASS_MARK = REDUCED_PRECISION["dynamic-int8"]
CALIBRATION_MARGIN = {"min_cosine": 0.5, "max_norm_error": 0.7}
CALIBRATION_TARGET = {
    "min_cosine": round(1 - (1 - PASS_MARK["min_cosine"]) * CALIBRATION_MARGIN["min_cosine"], 6),
    "max_norm_error": round(PASS_MARK["max_norm_error"] * CALIBRATION_MARGIN["max_norm_error"], 6),
    "top1_agreement": 0.995,
    "top1_tie": PASS_MARK["top1_tie"],
}


class Int8Linear(nn.Module):
    """``nn.Linear`` with int8 weights (one scale per output channel) and per-token int8 activations.

    Plain aten ops only (``aten::_int_mm``), so it traces to TorchScript and runs in libtorch.
    """

    def __init__(self, linear: nn.Linear, *, emulate: bool = False):
        super().__init__()
        w = linear.weight.detach().float()  # (N, K)
        scale = w.abs().amax(1).clamp(min=1e-12) / 127  # (N,)
        self.out_features = w.shape[0]
        self.register_buffer("weight_int8", torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8).t().contiguous())
        self.register_buffer("weight_scale", scale)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float().clone())
        # Calibration only (never traced): the int8 GEMM as a float64 matmul of the same integers. Bit-exact
        # (|products| <= 127^2, sums below 2^53, exactly as int32 accumulates them below 2^31) and, on a CPU
        # without int8 dot-product instructions, 4-8x faster than aten::_int_mm's fallback kernel, which ran
        # 40x slower than a float32 matmul on an AVX2 EPYC (512x384 @ 384x1536): the sensitivity pass runs
        # the model ~50 times. A plain attribute, not a buffer: nothing of it reaches the artifact.
        self.emulate = emulate
        self.weight_f64 = self.weight_int8.double() if emulate else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])  # (M, K)
        scale = torch.linalg.vector_norm(x2, float("inf"), -1, True).clamp(min=1e-8) / 127  # (M, 1)
        xq = torch.round(x2 / scale).to(torch.int8)
        if self.emulate:
            acc = (xq.double() @ self.weight_f64).to(x.dtype)
        else:
            acc = torch.ops.aten._int_mm(xq, self.weight_int8).to(x.dtype)
        y = acc * (scale * self.weight_scale)  # (M, N)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(shape[:-1] + (self.out_features,))


def _ao_linear(linear: nn.Linear) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch 2.13: quantized tensor types are deprecated (see module docstring)
        q = torch.ao.quantization.quantize_dynamic(
            nn.Sequential(copy.deepcopy(linear)), {nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig})
    return q[0]


QUANTIZERS: dict[str, Callable[[nn.Linear], nn.Module]] = {"dynamic-int8": _ao_linear, "dynamic-int8-aten": Int8Linear}


def _calibration_quantizer(scheme: str) -> Callable[[nn.Linear], nn.Module]:
    """What the sensitivity pass and the bisection run: the scheme's own layer, or for the aten scheme on a
    CPU without int8 dot-product instructions its bit-exact float64 emulation (Int8Linear.emulate)."""
    from ..runtime import cpu

    if scheme == "dynamic-int8-aten" and not cpu.has_int8_dot():
        return lambda linear: Int8Linear(linear, emulate=True)
    return QUANTIZERS[scheme]


@dataclass
class Agreement:
    """How closely one output follows the float32 reference, per row (last axis, valid positions)."""

    min_cosine: float
    mean_cosine: float
    max_norm_error: float
    top1_agreement: float | None  # fraction of rows with the same argmax (logits outputs only)
    rows: int

    def meets(self, target: dict) -> bool:
        return (self.min_cosine >= target["min_cosine"] and self.max_norm_error <= target["max_norm_error"]
                and (self.top1_agreement is None or self.top1_agreement >= target["top1_agreement"]))

    def to_json(self) -> dict:
        return {"min_cosine": self.min_cosine, "mean_cosine": self.mean_cosine, "max_norm_error": self.max_norm_error,
                "top1_agreement": self.top1_agreement, "rows": self.rows}


def agreement(got: Sequence[torch.Tensor], ref: Sequence[torch.Tensor], valid: Sequence[torch.Tensor | None],
              logits: bool, *, top1_tie: float = 0.0) -> Agreement:
    """Per-row cosine, norm error and (``logits``) top-1 agreement of ``got`` vs ``ref`` over several batches.

    ``valid[i]``: a bool mask over the leading axes of batch i (padded positions excluded), or None.
    ``top1_tie``: a different argmax still agrees when the reference's own margin between the two
    picks is under this fraction of the row's range (a near-tie: precision, not a wrong answer).
    """
    cos, norm, same = [], [], []
    for g, r, v in zip(got, ref, valid):
        g, r = g.double(), r.double()
        if g.dim() < 2:
            g, r = g.reshape(1, -1), r.reshape(1, -1)
        g, r = g.reshape(-1, g.shape[-1]), r.reshape(-1, r.shape[-1])
        if v is not None:
            keep = v.reshape(-1).bool()
            g, r = g[keep], r[keep]
        rn, gn = r.norm(dim=-1), g.norm(dim=-1)
        tiny = rn < 1e-6
        cos.append(torch.where(tiny, torch.ones_like(rn), (g * r).sum(-1) / (gn * rn).clamp(min=1e-12)))
        norm.append(torch.where(tiny, gn, (gn / rn.clamp(min=1e-12) - 1).abs()))
        if logits:
            gi, ri = g.argmax(-1), r.argmax(-1)
            margin = r.gather(-1, ri[:, None])[:, 0] - r.gather(-1, gi[:, None])[:, 0]
            span = (r.amax(-1) - r.amin(-1)).clamp(min=1e-12)
            same.append(((gi == ri) | (margin <= top1_tie * span)).double())
    c, n = torch.cat(cos), torch.cat(norm)
    top1 = float(torch.cat(same).mean()) if logits else None
    return Agreement(float(c.min()), float(c.mean()), float(n.max()), top1, int(c.numel()))


@dataclass
class Calibration:
    """Inputs the sensitivity pass runs: positional tensors per batch, and which rows are valid per output."""

    batches: list[tuple[torch.Tensor, ...]]
    valid: list[list[torch.Tensor | None]]  # [batch][output] mask over the output's leading axes
    logits: list[bool]  # per output: compare top-1
    source: str
    real: list[bool] | None = None  # per batch: real text (top-1 flips count even on near-ties there)


TEXT_INPUTS = {"input_ids", "attention_mask", "token_type_ids"}


def calibration_inputs(input_names: Sequence[str], outputs, *, tokenizer, example: Callable[[int, int, int], dict],
                       max_length: int, sentences: int = 128, batch: int = 16) -> Calibration:
    """Real sentences through ``tokenizer`` (when the model takes plain text) plus padded random-id batches.

    The random batches (``example(batch, length, seed)``, validation's generator) are there because
    validation checks random ids: the quantised model must hold on both.
    """
    from ..texts import real_sentences

    batches: list[tuple[torch.Tensor, ...]] = []
    parts = []
    if tokenizer is not None and set(input_names) <= TEXT_INPUTS and "input_ids" in input_names:
        rows = real_sentences()
        texts = [r["text"] for r in rows[:: max(1, len(rows) // sentences)]][:sentences]
        for i in range(0, len(texts), batch):
            enc = tokenizer(texts[i:i + batch], padding=True, truncation=True, max_length=min(128, max_length),
                            return_tensors="pt")
            if "token_type_ids" in input_names and "token_type_ids" not in enc:
                enc["token_type_ids"] = torch.zeros_like(enc["input_ids"])
            batches.append(tuple(enc[n] for n in input_names))
        parts.append(f"{len(texts)} real sentences (hf_torchscript.texts) through the model's tokenizer")
    # Validation's longest inputs drift furthest from the trained distribution: calibrate on one too.
    shapes = sorted({(4, min(32, max_length)), (2, min(16, max_length)), (2, min(128, max_length))})
    for i, (b, length) in enumerate(shapes):
        ex = example(b, length, 1000 + i)
        batches.append(tuple(ex[n] for n in input_names))
    parts.append(f"padded random-id batches like validation's ({', '.join(f'{b}x{n}' for b, n in shapes)})")
    mask_at = list(input_names).index("attention_mask") if "attention_mask" in input_names else None
    valid = []
    for b in batches:
        row = []
        for o in outputs:
            seq = tuple(o.shape[:2]) == ("batch_size", "sequence_length")
            row.append(b[mask_at].bool() if seq and mask_at is not None else None)
        valid.append(row)
    n_real = len(batches) - len(shapes)
    return Calibration(batches, valid, [o.name.endswith("logits") for o in outputs], " and ".join(parts),
                       real=[True] * n_real + [False] * len(shapes))


def quantize(wrapper: nn.Module, scheme: str, calibration: Calibration, *, keep_float: Sequence[str] = (),
             target: dict | None = None) -> tuple[nn.Module, dict]:
    """A copy of ``wrapper`` with int8 Linear layers except the most sensitive ones; and the plan.

    ``keep_float``: layer names or glob patterns (``*.output.dense``) kept in float32 regardless.
    The plan (manifest ``quantization``) names every Linear: quantised or not, its measured
    relative output error, and why.
    """
    from ..errors import OptionError, ValidationError, option

    if scheme not in QUANTIZERS:
        raise OptionError(f"unknown quantization {scheme!r}; choose one of {', '.join(QUANTIZERS)}")
    target = dict(CALIBRATION_TARGET, **(target or {}))
    quantizer = _calibration_quantizer(scheme)  # the artifact's own layers are QUANTIZERS[scheme] (build(k, final))
    linears = {n: m for n, m in wrapper.named_modules() if isinstance(m, nn.Linear)}
    if not linears:
        raise OptionError(f"{option('quantize', scheme)} quantises nn.Linear layers and this model has none; drop "
                          f"{option('quantize')}")
    forced = {n for n in linears if any(fnmatch.fnmatchcase(n, p) or n == p for p in keep_float)}
    unknown = [p for p in keep_float if not any(fnmatch.fnmatchcase(n, p) or n == p for n in linears)]
    if unknown:
        example = ", ".join(list(linears)[:3])
        raise OptionError(f"{option('keep_float', tuple(unknown))} matches no Linear layer; layer names look like "
                          f"{example}")

    with torch.no_grad():
        reference = [wrapper(*b) for b in calibration.batches]
        errors = _layer_errors(wrapper, linears, quantizer, calibration.batches)
        damage = _layer_damage(wrapper, linears, quantizer, calibration, reference)
    # Ranked by what each layer does to the model's outputs, not by its own error: measured on
    # all-MiniLM-L6-v2 + a classifier head, the last blocks' output layers have small errors of their
    # own that nothing downstream dampens, while query/key errors are absorbed by the softmax.
    order = sorted((n for n in linears if n not in forced), key=lambda n: -damage[n])

    def build(k: int, layer=quantizer) -> nn.Module:
        keep = forced | set(order[:k])
        model = copy.deepcopy(wrapper)
        modules = dict(model.named_modules())
        for name in linears:
            if name not in keep:
                parent, _, child = name.rpartition(".")
                setattr(modules[parent] if parent else model, child, layer(modules[name]))
        return model

    real = calibration.real or [False] * len(calibration.batches)

    def score(model: nn.Module) -> list[tuple[str, Agreement]]:
        with torch.no_grad():
            got = [model(*b) for b in calibration.batches]
        out = []
        # A near-tie on random ids is noise; on real text a flipped answer is a flipped answer.
        for kind, group, tie in (("real text", [j for j, r in enumerate(real) if r], 0.0),
                                 ("random ids", [j for j, r in enumerate(real) if not r], target["top1_tie"])):
            if group:
                out += [(f"{kind}, output {i}", agreement(
                    [got[j][i] for j in group], [reference[j][i] for j in group],
                    [calibration.valid[j][i] for j in group], calibration.logits[i], top1_tie=tie))
                        for i in range(len(calibration.logits))]
        return out

    # The fewest kept layers that meet the target: keeping more never hurts much, so bisect on k.
    scores: dict[int, list[tuple[str, Agreement]]] = {}

    def ok(k: int) -> bool:
        if k not in scores:
            scores[k] = score(build(k))
        return all(a.meets(target) for _, a in scores[k])

    lo, hi = 0, len(order)
    if not ok(0):
        if not ok(hi):
            raise AssertionError("the float32 copy does not match itself")  # build(len(order)) quantises nothing
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if ok(mid):
                hi = mid
            else:
                lo = mid
        k = hi
    else:
        k = 0
    if k == len(order):
        worst = ", ".join(f"{n} (1 - cosine {damage[n]:.4f} alone)" for n in order[:3])
        raise ValidationError(
            f"{option('quantize', scheme)} cannot meet {_describe(target)} on {calibration.source} with any Linear "
            f"layer in int8 (most damaging: {worst}); export without {option('quantize')}, or use "
            f"{option('dtype', 'bfloat16')}")
    kept = set(order[:k])
    model = build(k, QUANTIZERS[scheme])
    plan_layers = []
    for name in linears:
        reason = ("kept float32: --keep-float" if name in forced else
                  f"kept float32: among the {k} most sensitive, needed to meet the calibration target" if name in kept
                  else "int8")
        plan_layers.append({"name": name, "quantized": name not in forced and name not in kept,
                            "output_damage": damage[name], "relative_error": errors[name], "reason": reason})
    plan = {
        "scheme": scheme,
        "method": SCHEMES[scheme],
        "layers_total": len(linears),
        "layers_quantized": sum(1 for layer in plan_layers if layer["quantized"]),
        "calibration": {"inputs": calibration.source, "target": target,
                        # validation's bar; the target above is stricter by CALIBRATION_MARGIN (docs/performance.md)
                        "pass_mark": {k: PASS_MARK[k] for k in ("min_cosine", "max_norm_error")},
                        "margin": CALIBRATION_MARGIN,
                        "result": {label: a.to_json() for label, a in scores[k]},
                        "all_int8": {label: a.to_json() for label, a in scores[0]}},
        "selection": "output_damage: 1 - min per-row cosine of the model's outputs with only that Linear in int8 "
                     "(on part of the calibration inputs); relative_error: the layer's own output error; the fewest "
                     "most damaging layers kept float32 (bisection) so the whole model meets the target",
        "layers": plan_layers,
    }
    return model, plan


def _layer_damage(wrapper: nn.Module, linears: dict, quantizer, calibration: Calibration, reference,
                  batches: int = 3) -> dict[str, float]:
    """1 - min per-row cosine of the outputs with only one Linear in int8, per layer (a few calibration batches).

    The layer is swapped into ``wrapper`` in place and always swapped back.
    """
    last = len(calibration.batches) - 1  # one batch is enough to rank layers: index 1 may not exist
    idx = sorted({0, min(1, last), last})[:batches]
    modules = dict(wrapper.named_modules())
    out = {}
    for name, linear in linears.items():
        parent, _, child = name.rpartition(".")
        holder = modules[parent] if parent else wrapper
        setattr(holder, child, quantizer(linear))
        try:
            got = [wrapper(*calibration.batches[i]) for i in idx]
        finally:
            setattr(holder, child, linear)
        worst = 1.0
        for o in range(len(calibration.logits)):
            a = agreement([g[o] for g in got], [reference[i][o] for i in idx], [calibration.valid[i][o] for i in idx],
                          calibration.logits[o])
            worst = min(worst, a.min_cosine)
        out[name] = 1.0 - worst
    return out


def _layer_errors(wrapper: nn.Module, linears: dict, quantizer, batches) -> dict[str, float]:
    """Relative output error ||q(x) - lin(x)|| / ||lin(x)|| of each Linear alone, on its real inputs (one pass)."""
    quantized = {n: quantizer(m) for n, m in linears.items()}
    sq_err = {n: 0.0 for n in linears}
    sq_ref = {n: 0.0 for n in linears}

    def hook(name):
        def fn(module, args, out):
            q = quantized[name](args[0])
            sq_err[name] += float((q - out).double().pow(2).sum())
            sq_ref[name] += float(out.double().pow(2).sum())
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in linears.items()]
    try:
        for b in batches:
            wrapper(*b)
    finally:
        for h in handles:
            h.remove()
    return {n: (sq_err[n] / max(sq_ref[n], 1e-30)) ** 0.5 for n in linears}


def _describe(target: dict) -> str:
    return (f"per-row cosine >= {target['min_cosine']}, norm within {target['max_norm_error']}, "
            f"top-1 agreement >= {target['top1_agreement']}")


def precision_hint(options, plan: dict | None) -> str:
    """What to do when an int8 export fails validation: which layers to keep, or a lower-risk scheme."""
    from ..errors import option

    if plan:
        left = sorted((layer for layer in plan["layers"] if layer["quantized"]), key=lambda l: -l["output_damage"])
        names = tuple(layer["name"] for layer in left[:3])
        other = (option("quantize", "dynamic-int8-aten") + " (per-token activations, more accurate)"
                 if options.quantize == "dynamic-int8" else option("dtype", "bfloat16"))
        return (f"Keep more layers in float32, starting with the most damaging ones still in int8: "
                f"{option('keep_float', names)} (add to it until it passes; manifest.quantization.layers lists every "
                f"layer's measured damage), or use a lower-risk scheme: {other}.")
    return f"Export in float32 (drop {option('quantize')}), or use {option('dtype', 'bfloat16')}."
