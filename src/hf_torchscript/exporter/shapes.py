"""Step 4 of the flow: shape strategies, their planning and fallback, and the scripted dispatcher
that every artifact's top-level module is.

  dynamic  one trace, proven by the validation grid to work at every (batch, length) it accepts
  buckets  one trace per sequence-length bucket; inputs are padded to the smallest bucket that
           fits and per-token outputs sliced back, so callers pass any length
  static   one trace at a fixed length (and optionally a fixed batch), padded to like a bucket

All three are wrapped in one generated, scripted ``ShapeDispatcher`` that checks inputs (rank,
dtype, equal shapes, length limits) and raises a readable error inside TorchScript, so a C++
or serving caller gets "input length 600 exceeds the maximum 512" instead of an index error.
Traces share the original parameters, so the weights are stored once however many buckets.
"""

from __future__ import annotations

import contextlib
import itertools
import linecache
import warnings
from collections.abc import Sequence

import torch

from ..compat import traceable
from ..deprecation import jit_api
from ..errors import OptionError, ShapeError, TraceError, option
from ..options import DEFAULT_SHAPES
from ..progress import report as tell
from ..runtime.schema import range_text
from .inputs import InputSpec
from .source import quiet_transformers

MIN_BUCKET = 16


class StrategyRefused(Exception):
    """A backend cannot build this strategy for this model (the message says why): try the next candidate.

    aoti raises it when torch.export cannot make the length range dynamic; the exporter records it
    like a failed validation and falls back (auto), or reports it (a requested strategy).
    """


def default_buckets(max_length: int) -> tuple[int, ...]:
    """Powers of two from 16 below ``max_length``, then ``max_length`` itself."""
    out = []
    b = MIN_BUCKET
    while b < max_length:
        out.append(b)
        b *= 2
    out.append(max_length)
    return tuple(out)


def check_buckets(buckets: Sequence[int], max_length: int) -> tuple[int, ...]:
    b = tuple(int(x) for x in buckets)
    if any(x >= y for x, y in zip(b, b[1:])):
        raise ShapeError(f"buckets must be strictly increasing, got {list(b)}")
    if b[-1] > max_length:
        raise ShapeError(
            f"bucket {b[-1]} is above the model's max positions ({max_length}); "
            f"use buckets <= {max_length}, e.g. {option('buckets', tuple(x for x in b if x <= max_length) or (max_length,))}"
        )
    return b


_counter = itertools.count()

_TEMPLATE = '''
import torch
from torch import Tensor
from typing import List, Tuple


def _pad_last(x: Tensor, n: int, value: int) -> Tensor:
    if n == 0:
        return x
    shape: List[int] = []
    for d in range(x.dim() - 1):
        shape.append(x.size(d))
    shape.append(n)
    return torch.cat([x, torch.full(shape, value, dtype=x.dtype, device=x.device)], -1)


def _dtype_name(x: Tensor) -> str:
    # str(dtype) is a bare enum number inside TorchScript; name the common ones for the error.
    names = ["uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64"]
    for i, name in enumerate(names):
        if int(x.dtype) == i:
            return name
    if x.dtype == torch.bool:
        return "bool"
    if x.dtype == torch.bfloat16:
        return "bfloat16"
    return "dtype code " + str(int(x.dtype))


def _pad_batch(x: Tensor, n: int) -> Tensor:
    # Filler rows repeat row 0: a real row, so no all-padding row can produce NaN in a kernel.
    if n == 0:
        return x
    reps: List[int] = [n]
    for d in range(x.dim() - 1):
        reps.append(1)
    return torch.cat([x, x.narrow(0, 0, 1).repeat(reps)], 0)


class ShapeDispatcher(torch.nn.Module):
    def __init__(self, traces: List[torch.nn.Module], lengths: List[int], pad: bool, batch: int):
        super().__init__()
        self.traces = torch.nn.ModuleList(traces)
        self.lengths = lengths
        self.pad = pad
        self.batch = batch

    def _run(self, {sig}) -> {ret}:
{run_body}

    def forward(self, {sig}) -> {ret}:
{checks}
        if self.batch == 0:
            return self._run({args})
        B = {first}.size(0)
{chunk_init}
        start = 0
        while start < B:
            n = min(self.batch, B - start)
            o = self._run({chunk_args})
{chunk_append}
            start += n
        return ({chunk_return})
'''


def _generate_source(specs: Sequence[InputSpec], out_seq_dims: Sequence[int]) -> str:
    names = [s.name for s in specs]
    sig = ", ".join(f"{n}: Tensor" for n in names)
    n_out = len(out_seq_dims)
    ret = "Tuple[" + ", ".join(["Tensor"] * n_out) + "]"
    seq = [s for s in specs if s.mask == "attention_mask"]
    first = names[0]

    checks = [
        f"        if {first}.dim() > 0 and {first}.size(0) == 0:\n"
        f"            raise RuntimeError('hf-torchscript: the batch has 0 rows; pass at least one')"
    ]
    for s in specs:
        rank = len(s.shape)
        want = "torch.float32" if s.dtype.startswith("float") else "torch.int64"
        dtype_ok = f"{s.name}.is_floating_point()" if s.dtype.startswith("float") else f"{s.name}.dtype == {want}"
        checks.append(
            f"        if {s.name}.dim() != {rank}:\n"
            f"            raise RuntimeError('hf-torchscript: input {s.name} must have rank {rank} "
            f"({', '.join(map(str, s.shape))}), got rank ' + str({s.name}.dim()))\n"
            f"        if not ({dtype_ok}):\n"
            f"            raise RuntimeError('hf-torchscript: input {s.name} must be {s.dtype}, got ' + _dtype_name({s.name}))"
        )
        if s.value_range is not None:
            lo, hi = s.value_range
            what = range_text(s.name, lo, hi)
            checks.append(
                f"        if {s.name}.numel() > 0:\n"
                f"            if bool({s.name}.min() < {lo}) or bool({s.name}.max() >= {hi}):\n"
                f"                raise RuntimeError('hf-torchscript: input {s.name} holds values from ' + "
                f"str(int({s.name}.min())) + ' to ' + str(int({s.name}.max())) + ' but must be {what}')"
            )
        if s.name != first:
            checks.append(
                f"        if {s.name}.size(0) != {first}.size(0):\n"
                f"            raise RuntimeError('hf-torchscript: input {s.name} has batch ' + str({s.name}.size(0)) + "
                f"' but {first} has ' + str({first}.size(0)) + '; pass inputs of one batch size')"
            )
        for d, ax in enumerate(s.shape):
            if isinstance(ax, int):
                checks.append(
                    f"        if {s.name}.size({d}) != {ax}:\n"
                    f"            raise RuntimeError('hf-torchscript: input {s.name} must have size {ax} at dim {d}, got ' "
                    f"+ str({s.name}.size({d})))"
                )
    if seq:
        lead = seq[0].name
        checks.append(f"        L = {lead}.size(-1)")
        checks.append(
            f"        if L < 1:\n"
            f"            raise RuntimeError('hf-torchscript: {lead} has length 0; pass at least one token per row')"
        )
        for s in seq[1:]:
            checks.append(
                f"        if {s.name}.size(-1) != L:\n"
                f"            raise RuntimeError('hf-torchscript: input {s.name} has length ' + str({s.name}.size(-1)) + "
                f"' but {lead} has ' + str(L) + '; pass inputs of one shape')"
            )
        checks.append(
            "        if L > self.lengths[-1]:\n"
            "            raise RuntimeError('hf-torchscript: input length ' + str(L) + ' exceeds the maximum '"
            " + str(self.lengths[-1]) + ' this artifact accepts; truncate the input')"
        )
        padded = ", ".join(
            f"_pad_last({s.name}, P, {s.pad_value})" if s.mask == "attention_mask" else s.name for s in specs
        )
        outs = ", ".join(f"o[{i}].narrow({d}, 0, L)" if d >= 0 else f"o[{i}]" for i, d in enumerate(out_seq_dims))
        run_body = (
            f"        L = {seq[0].name}.size(-1)\n"
            "        for i, t in enumerate(self.traces):\n"
            "            if L <= self.lengths[i]:\n"
            "                P = self.lengths[i] - L if self.pad else 0\n"
            f"                o = t({padded})\n"
            f"                return ({outs},)\n"
            "        raise RuntimeError('hf-torchscript: no bucket holds length ' + str(L))"
        )
    else:
        outs = ", ".join(f"o[{i}]" for i in range(n_out))
        run_body = (
            "        for t in self.traces:\n"
            f"            o = t({', '.join(names)})\n"
            f"            return ({outs},)\n"
            "        raise RuntimeError('hf-torchscript: artifact holds no trace')"
        )
    chunk_init = "\n".join(f"        outs{i}: List[Tensor] = []" for i in range(n_out))
    chunk_args = ", ".join(f"_pad_batch({n}.narrow(0, start, n), self.batch - n)" for n in names)
    chunk_append = "\n".join(f"            outs{i}.append(o[{i}].narrow(0, 0, n))" for i in range(n_out))
    chunk_return = ", ".join(f"torch.cat(outs{i}, 0)" for i in range(n_out)) + ","
    return (
        _TEMPLATE.replace("{sig}", sig)
        .replace("{ret}", ret)
        .replace("{run_body}", run_body)
        .replace("{checks}", "\n".join(checks))
        .replace("{args}", ", ".join(names))
        .replace("{first}", first)
        .replace("{chunk_init}", chunk_init)
        .replace("{chunk_args}", chunk_args)
        .replace("{chunk_append}", chunk_append)
        .replace("{chunk_return}", chunk_return)
    )


def build_dispatcher(
    traces: Sequence[torch.nn.Module],
    lengths: Sequence[int],
    specs: Sequence[InputSpec],
    out_seq_dims: Sequence[int],
    *,
    pad: bool,
    batch: int = 0,
) -> torch.jit.ScriptModule:
    """Script a ShapeDispatcher over ``traces`` (one per entry of ``lengths``, increasing).

    ``pad``: pad inputs up to the chosen trace's length (buckets, static); dynamic traces take
    the length as is and ``lengths`` holds only the max. ``batch`` > 0 fixes the batch: inputs
    are split into chunks of that size, the last padded with copies of a real row.
    """
    src = _generate_source(specs, out_seq_dims)
    # TorchScript reads class source through inspect/linecache; register the generated text
    # under a unique fake filename so scripting works without writing a file.
    filename = f"<hf_torchscript.exporter.shapes.generated-{next(_counter)}>"
    linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
    namespace: dict = {"__name__": "hf_torchscript_generated"}
    exec(compile(src, filename, "exec"), namespace)
    module = namespace["ShapeDispatcher"](list(traces), [int(x) for x in lengths], bool(pad), int(batch))
    with jit_api():
        return torch.jit.script(module)


# -- planning ---------------------------------------------------------------------------------------


def candidates(p, backend) -> list[str]:
    """The strategies to try, in order; the exporter falls back to the next when validation fails."""
    requested = p.options.shapes
    if not p.has_sequence:
        if requested == "buckets":
            raise ShapeError(f"{p.arch.model_type} inputs have no sequence axis; buckets do not apply: "
                             f"use {option('shapes', 'dynamic')}")
        return ["static"] if requested == "static" or backend.static_shapes else ["dynamic"]
    if requested == "dynamic" and backend.static_shapes:
        raise ShapeError(f"backend {backend.name} compiles static shapes; use {option('shapes', 'buckets')} or "
                         f"{option('shapes', 'static')}")
    if requested != "auto":
        return [requested]
    if p.options.onednn_fusion:
        return ["static"]  # the only strategy oneDNN fusion works with (options.py says why)
    if backend.static_shapes or p.options.buckets:
        # Buckets given under auto say what the user wants; trying dynamic first would ignore them.
        return ["buckets"]
    # Reduced precision fails by precision, not by shape: trying buckets after a failed dynamic bf16/int8
    # export would triple the time and end in the same failure, so auto means dynamic there.
    if p.options.dtype != "float32" or p.options.quantize:
        return ["dynamic"]
    return ["dynamic", "buckets"]


def plan(p, strategy: str):
    """(lengths the dispatcher knows, the (batch, length) of each trace, whether to pad)."""
    opts, B0 = p.options, p.options.batch_size
    if not p.has_sequence:
        return [p.max_length], [(B0, 0)], False
    if strategy == "dynamic":
        L0 = min(opts.sequence_length or DEFAULT_SHAPES["sequence_length"], p.max_length)
        return [p.max_length], [(B0, L0)], False
    if strategy == "buckets":
        buckets = check_buckets(opts.buckets, p.max_length) if opts.buckets else default_buckets(p.max_length)
        return list(buckets), [(B0, b) for b in buckets], True
    L = opts.sequence_length or p.max_length
    if L > p.max_length:
        raise ShapeError(f"static length {L} is above the model's max length {p.max_length}; "
                         f"pass {option('sequence_length', p.max_length)} or less")
    return [L], [(B0, L)], True


def build(p, backend, strategy: str, tracer_warnings: list[str], *, progress=None):
    """Trace every shape ``strategy`` needs and wrap the traces in one dispatcher; returns (module, shapes info).

    A backend with its own format (aoti) builds its model itself; it may raise StrategyRefused.
    """
    if backend.build is not None:
        return backend.build(p, strategy, tracer_warnings, progress=progress)
    opts = p.options
    lengths, traced_at, pad = plan(p, strategy)
    traces = []
    with _linears(p, strategy):
        for i, (B, L) in enumerate(traced_at):
            tell(progress, "trace", f"{strategy} with {backend.name}: batch {B}, length {L}", i, len(traced_at))
            traces.append(_trace_one(p, backend, B, L, tracer_warnings))
    tell(progress, "trace", f"{strategy}: one scripted module over {len(traces)} trace(s)", len(traces), len(traces))
    batch = opts.batch_size if (opts.static_batch or (backend.static_shapes and not opts.dynamic_batch)) else 0
    module = build_dispatcher(traces, lengths, p.specs, [o.sequence_dim for o in p.outputs], pad=pad, batch=batch)
    if opts.onednn_fusion:
        from ..runtime.fusion import onednn_fusion

        with onednn_fusion():  # freezing with the switch on prepares the graph for fusion
            module = optimize_module(module)
    elif opts.optimize:
        module = optimize_module(module)
    info = {
        "strategy": strategy,
        "requested": opts.shapes,
        "min_length": 1,
        "max_length": lengths[-1],
        "buckets": list(lengths) if strategy == "buckets" else None,
        "batch_size": batch or None,
        "traced": [{"batch_size": B, "sequence_length": L, **p.dims(B, L)} for B, L in traced_at],
    }
    return module, info


def _linears(p, strategy: str):
    """--pack-linears: the traces record oneDNN-packed Linear modules (exporter/packed.py)."""
    if not p.options.pack_linears:
        return contextlib.nullcontext()
    from . import packed

    if strategy == "buckets":  # each trace would save and load its own packed copy of every weight
        raise StrategyRefused(f"{option('pack_linears')} packs the weights of one trace; the dynamic trace did not "
                              f"validate, and buckets would hold one packed copy per bucket: drop {option('pack_linears')}")
    if not packed.available():
        raise OptionError(f"{option('pack_linears')} needs oneDNN (torch.backends.mkldnn), which this torch build lacks; "
                          f"drop {option('pack_linears')}")
    return packed.swapped_linears(p.wrapper, packed.packed)


def reason(strategy: str, requested: str, report, attempts: Sequence[str], backend) -> str:
    """Why the artifact has the strategy it has, for the manifest."""
    if not report.ran:
        why = "requested" if requested != "auto" else f"backend {backend.name} compiles static shapes"
        return f"{strategy}: {why} (not validated: no device here)"
    if requested == "auto" and strategy == "buckets" and attempts == [] and not backend.static_shapes:
        return f"buckets: --buckets given; the validation grid passed ({len(report.cases)} cases)"
    if requested == "auto":
        return (f"{strategy}: the validation grid passed ({len(report.cases)} cases)"
                + (f" after {'; '.join(attempts)}" if attempts else ""))
    return f"{strategy}: requested"


def failure_hint(p, strategy: str, backend) -> str:
    """What to try after the last candidate failed validation."""
    if p.options.quantize:
        from .quantize import precision_hint

        return f" This is a precision failure of {p.options.quantize}, not a shape problem. " + precision_hint(
            p.options, p.quantization)
    if p.options.dtype != "float32":
        what = p.options.dtype
        return (f" This is a precision failure of {what}, not a shape problem: export float32 (drop "
                f"{option('dtype')}), or see bench/RESULTS.md for what each precision costs on real weights.")
    hint = f" Next: try {option('shapes', 'buckets')} (one trace per length bucket)." if strategy == "dynamic" else ""
    if backend.static_shapes:
        hint += (f" {backend.name} may compute in bf16/fp16 (Inf1 matmuls always; {option('auto_cast')} on Inf2/Trn1):"
                 f" if that is expected, loosen the tolerances, e.g. {option('atol', 1e-2)} {option('rtol', 1e-2)}.")
    return hint


def optimize_module(module: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
    """torch.jit.freeze the whole dispatcher: weights become constants, the traces are inlined.

    Not also torch.jit.optimize_for_inference: on torch 2.13 (BERT-base, 2 CPU threads) its result
    saves, reloads and stays exact, but measured against freeze alone it only wins at tiny shapes
    (1x16: 0.73x vs 0.80x of eager) and loses at 8x128 (1.00x vs 0.91x); bench/RESULTS.md has both.
    """
    with jit_api():
        return torch.jit.freeze(module.eval())


def _trace_one(p, backend, batch: int, length: int, sink: list[str]):
    example = p.example(batch, length, p.options.seed)
    # quiet_transformers: torch.jit.trace probes every attribute of every submodule, which makes
    # transformers log advisories about properties nobody uses here (loss_function's "loss_type=None").
    with warnings.catch_warnings(record=True) as caught, torch.no_grad(), quiet_transformers():
        warnings.simplefilter("always", torch.jit.TracerWarning)
        try:
            with traceable():  # transformers 4.x attention masks, see compat.py
                traced = backend.trace(p.wrapper, tuple(example.values()), p.options)
        except Exception as e:
            raise TraceError(
                f"{backend.name} could not trace {p.arch.model_type} ({p.task.name}) at batch {batch}, length {length}: "
                f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
            ) from e
    for w in caught:
        if issubclass(w.category, torch.jit.TracerWarning):
            line = f"{w.filename}:{w.lineno}: {str(w.message).splitlines()[0]}"
            if line not in sink:
                sink.append(line)
    return traced
