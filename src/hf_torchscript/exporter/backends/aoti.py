"""AOTInductor backend: ``torch.export`` the prepared wrapper, compile it with AOTInductor into ``model.pt2``.

The format PyTorch is moving to from TorchScript (docs/formats.md). Same product as the
torchscript backend: one command, the same validation grid run on the package as reloaded from
disk, the same manifest (``format: "aoti-pt2"``), the Python runtime and the C++ header.

Shapes. ``dynamic``: one ``torch.export`` with a ``torch.export.Dim`` for every symbolic axis, with
the model's real bounds (batch >= 1, 1 <= length <= max length), traced at sizes >= 2 so the
tracer's 0/1 specialisation cannot bake a size (torch 2.13 accepts ``min=1`` and keeps the range
[1, max]). Where export cannot prove that range, or the grid rejects the result, ``auto`` falls
back to ``buckets`` as for TorchScript, and the manifest says why: one export per bucket length
(batch still dynamic), all compiled models in the one ``model.pt2`` under the names in
``manifest["aoti"]["models"]``; the runtimes pad to the smallest bucket that fits.

Input checks live in the runtimes (pt2.py, cpp/hf_torchscript.hpp): see pt2.py for what a compiled
package does with bad input. The graph keeps two guards for callers that bypass them: the value range
of the id inputs, and the sequence length (<= max length).
"""

from __future__ import annotations

import itertools
import json
import math
import platform
import re
import time
import warnings
from pathlib import Path

import torch

from ...errors import TraceError
from ...progress import report as tell
from ...runtime.pt2 import FORMAT, PT2_FILE, SIGNATURE_KEY, Pt2Module, signature
from ..shapes import StrategyRefused, plan
from ..source import quiet_transformers
from . import Backend

# Inductor settings for every compile, recorded in the manifest. None today: torch's defaults are
# what it documents and tests; the key exists so that a change shows in the artifact.
INDUCTOR_CONFIGS: dict = {}


class RangeGuard(torch.nn.Module):
    """Assert in the graph that every ranged input (token ids, segment ids, masks) is in range, then run ``inner``.

    Measured (torch 2.13, AOTInductor on CPU): an index outside a table reaches a kernel that throws
    from an OpenMP worker thread, and the process aborts. With ``torch._assert_async`` the package
    raises ``RuntimeError: hf-torchscript: ...`` instead, for any caller, including one that loads
    the .pt2 without our runtimes (which check first, with the offending values in the message).
    """

    def __init__(self, inner: torch.nn.Module, specs, max_length: int | None = None):
        super().__init__()
        self.inner = inner
        self.checks = [(i, s.name, *s.value_range) for i, s in enumerate(specs) if s.value_range is not None]
        # Lengths too. The Dim's range [1, max] is not checked at run time by the compiled package (AOTInductor
        # checks sizes only with AOTI_RUNTIME_CHECK_INPUTS=1, which also refuses batch 1). Measured without
        # this: a raw model.pt2 returned outputs for 40 tokens past a max length of 32, and a GPT-2 past its
        # positions aborted the process. ``arange(n).max()`` is data to the compiler, so the check stays.
        self.lengths = [(i, s.name, s.shape.index(axis)) for i, s in enumerate(specs) if max_length
                        for axis in ("sequence_length", "decoder_sequence_length") if axis in s.shape]
        self.max_length = max_length

    def forward(self, *tensors: torch.Tensor):
        for i, name, lo, hi in self.checks:
            t = tensors[i]
            torch._assert_async(
                ((t >= lo) & (t < hi)).all(),
                f"hf-torchscript: input {name} holds a value outside [{lo}, {hi}); "
                "encode text with the tokenizer shipped with the artifact",
            )
        for i, name, axis in self.lengths:
            t = tensors[i]
            torch._assert_async(
                torch.arange(t.shape[axis], device=t.device).max() < self.max_length,
                f"hf-torchscript: input {name} is longer than this artifact's max length {self.max_length}; "
                "truncate it (the tokenizer shipped with the artifact does, with truncation to the max length)",
            )
        return self.inner(*tensors)


def _dims(p, strategy: str):
    """dynamic_shapes for the wrapper's ``*tensors``: per input, axis index -> Dim (None: static)."""
    from torch.export import Dim

    L = p.max_length
    dims = {
        "batch_size": Dim("batch_size", min=1),
        "num_choices": Dim("num_choices", min=1),
        "sequence_length": Dim("sequence_length", min=1, max=L) if strategy == "dynamic" else None,
        "decoder_sequence_length": Dim("decoder_sequence_length", min=1, max=L),
    }
    return (tuple({i: dims[a] for i, a in enumerate(s.shape) if isinstance(a, str) and dims.get(a) is not None}
                  for s in p.specs),)


def _trace_sizes(p, length: int) -> dict:
    # Every symbolic axis at >= 2 (torch.export specialises a dimension traced at 0 or 1) and the
    # sizes pairwise distinct (p.dims), so no axis can be mistaken for another.
    dims = p.dims(max(2, p.options.batch_size), length)
    return {k: max(2, v) if k != "sequence_length" else v for k, v in dims.items()}


def _export(module, p, strategy: str, length: int):
    dims = _trace_sizes(p, length)
    pad = "left" if p.arch.decoder else "right"
    example = tuple(p.inputs(dims, ("full", pad), p.options.seed).values())
    with warnings.catch_warnings(), torch.no_grad(), quiet_transformers():
        warnings.simplefilter("ignore")  # export's notes on deprecated pytree registrations and the like
        try:
            return torch.export.export(module, example, dynamic_shapes=_dims(p, strategy), strict=False), dims
        except Exception as e:
            text = " ".join(line.strip() for line in str(e).strip().splitlines()[:3] if line.strip())
            if strategy == "dynamic":
                # Typically "Constraints violated": a guard narrower than 1..max. auto falls back to buckets.
                raise StrategyRefused(f"torch.export could not make lengths 1..{p.max_length} dynamic: "
                                      f"{type(e).__name__}: {text[:300]}") from e
            raise TraceError(
                f"torch.export failed on {p.arch.model_type} ({p.task.name}) at length {length}: "
                f"{type(e).__name__}: {text[:400]}"
            ) from e


# Sizes at which the shape guards torch.export recorded are evaluated (see guard_cases): every
# length 1..max; batch, choices and decoder lengths sampled (a product over all of them would be
# millions of points), with the powers of two and their neighbours.
_SAMPLES = {
    "batch_size": [*range(1, 17), 31, 32, 33, 63, 64, 65, 127, 128, 129, 1000],
    "num_choices": list(range(1, 9)),
    "decoder_sequence_length": [*range(1, 33), 63, 64, 65, 127, 128, 129, 255, 256, 257, 511, 512, 513],
}
_SIZE_REF = re.compile(r"L\['tensors'\]\[(\d+)\]\.size\(\)\[(\d+)\]")
_GRID_CAP = 1024  # a guard case with more rows than this is recorded, not run


class _Sizes:
    def __init__(self, shape):
        self.shape = shape

    def size(self):
        return self.shape


def guard_cases(ep, p, lengths: list[int] | None) -> list[tuple[str, dict]]:
    """For each shape guard of ``ep`` that some accepted input breaks: (the guard, the first such sizes).

    torch.export records the conditions its trace relied on (``ep._guards_code``; deberta-v2
    multiple-choice gives ``((batch_size*num_choices) // num_choices) != (batch_size*num_choices)``,
    false at batch 1). ``ExportedProgram.module()`` asserts them on every call; AOTInductor does not
    (aot_compile drops the guard function; its own checks cover per-dimension ranges only, behind
    AOTI_RUNTIME_CHECK_INPUTS), so such an input runs a graph traced under another condition. A
    guard is often conservative (that deberta package matched eager at batch 1 and at 1 choice), so
    a broken guard is not a refusal: its sizes join the validation grid, which must prove them as it
    proves every TorchScript trace (which records no guards at all). The runtimes enforce the
    equalities (one batch size, one length), so only sizes consistent with them are tried.
    """
    from torch.fx.experimental.symbolic_shapes import SYMPY_INTERP

    samples = dict(_SAMPLES, sequence_length=lengths or list(range(1, p.max_length + 1)))
    samples["decoder_sequence_length"] = [n for n in samples["decoder_sequence_length"] if n <= p.max_length]
    namespace = {**SYMPY_INTERP, "math": math, "inf": float("inf")}
    found = []
    for guard in getattr(ep, "_guards_code", None) or []:  # absent on an older torch: the grid alone decides
        refs = {(int(i), int(d)) for i, d in _SIZE_REF.findall(guard)}
        axes = sorted({p.specs[i].shape[d] for i, d in refs if isinstance(p.specs[i].shape[d], str)})
        code = compile(guard, "<torch.export guard>", "eval")
        for values in itertools.product(*(samples[a] for a in axes)):
            size = dict(zip(axes, values))
            L = {"tensors": [_Sizes(tuple(size.get(a, a) if isinstance(a, str) else a for a in s.shape)) for s in p.specs]}
            if not eval(code, namespace, {"L": L}):
                found.append((_SIZE_REF.sub(lambda m: str(p.specs[int(m[1])].shape[int(m[2])]), guard), size))
                break
    return found


def _grid_dims(p, traced: dict, size: dict) -> dict | None:
    """The full sizes of a validation case at a guard's breaking ``size`` (other axes as traced)."""
    dims = {k: v for k, v in traced.items() if k in ("batch_size", "sequence_length", "num_choices",
                                                       "decoder_sequence_length")}
    if not p.has_sequence:
        dims.pop("sequence_length", None)
    dims.update(size)
    if dims["batch_size"] * dims.get("num_choices", 1) > _GRID_CAP:
        return None
    return dims


class Pt2Build:
    """Exported programs for one shape strategy; compiled into ``model.pt2`` when the artifact code saves it.

    ``roundtrip`` (artifact.roundtrip) compiles and packages them into the staging directory and
    loads the package back for validation; ``finish`` (artifact.write_artifact) keeps that package
    and says what the manifest records about it. One compile per strategy tried, never two.
    """

    def __init__(self, p, info: dict, programs: dict, guards: list[dict], export_seconds: float, progress=None):
        self.p, self.info, self.programs, self.guards, self.progress = p, info, programs, guards, progress
        self.models = list(programs)
        self.export_seconds = export_seconds
        self.compile_seconds: float | None = None
        self.loaded: Pt2Module | None = None

    def stub_manifest(self) -> dict:
        """What the runtime needs from a manifest to run the package (and what its signature embeds)."""
        return {"inputs": [s.to_json() for s in self.p.specs], "outputs": [o.to_json() for o in self.p.outputs],
                "max_length": self.info["max_length"], "shapes": self.info, "aoti": {"models": self.models}}

    def roundtrip(self, staging: Path) -> Pt2Module:
        from torch._inductor import aot_compile
        from torch._inductor.package import package_aoti

        path = staging / PT2_FILE
        metadata = {SIGNATURE_KEY: json.dumps(signature(self.stub_manifest()), sort_keys=True)}
        options = {**INDUCTOR_CONFIGS, "aot_inductor.package": True, "aot_inductor.metadata": metadata}
        t0 = time.perf_counter()
        files = {}
        tell(self.progress, "compile", f"AOTInductor: {len(self.programs)} model(s) -> {PT2_FILE} (about a minute each)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # One program named "model" is what torch._inductor.aoti_compile_and_package does; several
            # are the multi-model package its docstring describes (aot_compile with aot_inductor.package,
            # then package_aoti), loaded by name.
            for name, ep in self.programs.items():
                args, kwargs = ep.example_inputs
                files[name] = aot_compile(_module_of(ep), args, kwargs, options=dict(options))
        package_aoti(str(path), files)
        self.files = files
        self.compile_seconds = time.perf_counter() - t0
        self.loaded = Pt2Module(path, self.stub_manifest())
        return self.loaded

    def embed_manifest(self, staging: Path, text: str) -> None:
        """Package the validated model files again, now with ``extra/manifest.json`` (as model.pt embeds it).

        The manifest holds the validation result, so it exists only after the package was compiled,
        loaded and checked; the compiled files are packaged unchanged (checked member by member).
        """
        from torch.export.pt2_archive._package import package_pt2

        path = staging / PT2_FILE
        before = {k: v for k, v in _members(path).items() if not k.startswith("extra/")}
        scratch = staging / ".repack"  # same file name: the archive's top folder is named after it
        scratch.mkdir()
        tmp = scratch / PT2_FILE
        package_pt2(str(tmp), aoti_files=self.files, extra_files={"manifest.json": text})
        after = {k: v for k, v in _members(tmp).items() if not k.startswith("extra/")}
        if after != before:
            changed = sorted(k for k in set(after) | set(before) if after.get(k) != before.get(k))
            raise RuntimeError(f"re-packaging {path} changed {changed}; this is a bug in hf-torchscript")
        tmp.replace(path)
        scratch.rmdir()

    def finish(self, staging: Path, manifest: dict) -> str:
        """Record the package in ``manifest``; returns the model file's name (compiled by roundtrip)."""
        if self.loaded is None or not (staging / PT2_FILE).is_file():
            self.roundtrip(staging)
        manifest["aoti"] = {
            "package": PT2_FILE,
            "models": self.models,
            "input_checks": "in the runtimes (hf_torchscript.runtime.pt2, cpp/hf_torchscript.hpp) from this manifest; "
                            "value ranges and lengths also asserted in the graph",
            "cpu_isa": self.loaded.runners[0].get_metadata().get("AOTI_CPU_ISA"),
            "machine": platform.machine(),
            "torch": torch.__version__,
            "inductor_configs": INDUCTOR_CONFIGS,
            "export_seconds": round(self.export_seconds, 1),
            "compile_seconds": round(self.compile_seconds or 0.0, 1),
            "dynamic_ranges": {
                "batch_size": [1, None],
                **({"sequence_length": [1, self.p.max_length]}
                   if self.info["strategy"] == "dynamic" and self.p.has_sequence else {}),
            },
            # Shape guards of the trace that some accepted input breaks; their sizes were validated
            # like the rest of the grid (guard_cases).
            "guards": self.guards,
        }
        from ...runtime.cpu import isa_flags

        # Its kernels were compiled for this ISA: loading checks the CPU has it (an illegal instruction is SIGILL).
        manifest.setdefault("cpu", {})["requires"] = isa_flags(manifest["aoti"]["cpu_isa"])
        return PT2_FILE


def _members(path: Path) -> dict:
    import zipfile

    with zipfile.ZipFile(path) as z:
        # .data/serialization_id is a fresh random id per write, not content.
        return {name: (i.CRC, i.file_size) for i in z.infolist()
                if (name := i.filename.split("/", 1)[-1]) != ".data/serialization_id"}


def _module_of(ep):
    try:
        return ep.module(check_guards=False)  # what aoti_compile_and_package compiles (torch >= 2.10)
    except TypeError:
        return ep.module()


def build(p, strategy: str, tracer_warnings: list[str], *, progress=None):
    """torch.export every shape ``strategy`` needs; returns (Pt2Build, shapes info) like shapes.build."""

    if strategy == "static" and not p.has_sequence:
        strategy = "dynamic"  # only the batch varies, and it stays dynamic
    lengths, traced_at, _ = plan(p, strategy)
    module = RangeGuard(p.wrapper, p.specs, p.max_length).eval()
    t0 = time.perf_counter()
    if strategy == "dynamic":
        L0 = max(2, traced_at[0][1]) if p.has_sequence and p.max_length >= 2 else traced_at[0][1]
        tell(progress, "trace", f"dynamic with torch.export: lengths 1..{p.max_length}, traced at {L0}")
        ep, dims = _export(module, p, strategy, L0)
        programs, traced = {"model": ep}, [dims]
    else:
        programs, traced = {}, []
        for i, L in enumerate(lengths):
            tell(progress, "trace", f"{strategy} with torch.export: length {L}", i, len(lengths))
            ep, dims = _export(module, p, strategy, L)
            programs[f"model_{L}"] = ep
            traced.append(dims)
    export_seconds = time.perf_counter() - t0
    info = {
        "strategy": strategy,
        "requested": p.options.shapes,
        "min_length": 1,
        "max_length": lengths[-1],
        "buckets": list(lengths) if strategy == "buckets" else None,
        "batch_size": None,
        "traced": [dict(d, sequence_length=d.get("sequence_length", 0)) for d in traced],
    }
    guards, extra = [], []
    for ep, L in zip(programs.values(), lengths if strategy != "dynamic" else [None]):
        for guard, size in guard_cases(ep, p, None if L is None else [L]):
            dims = _grid_dims(p, info["traced"][0], size)
            guards.append({"guard": guard, "breaks_at": size, "validated": dims is not None})
            if dims is not None and dims not in extra:
                extra.append(dims)
    if extra:
        info["extra_cases"] = extra  # parity.run_grid validates these sizes too
    return Pt2Build(p, info, programs, guards, export_seconds, progress), info


BACKEND = Backend(
    "aoti",
    trace=None,
    static_shapes=False,
    unties_weights=False,
    runs_on_host=True,
    build=build,
    format=FORMAT,
)
