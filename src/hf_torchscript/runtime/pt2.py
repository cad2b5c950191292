"""AOTInductor packages (``model.pt2``): load one, check inputs against the manifest, pad to buckets.

A TorchScript artifact checks its inputs inside ``model.pt`` (the scripted dispatcher). A ``.pt2``
cannot: its compiled kernels trust their inputs. Measured on torch 2.13 with a tiny BERT: a row
longer than the position table makes a kernel throw from an OpenMP worker thread and the whole
process aborts (``index out of bounds: 0 <= tmp13 < 128L``, std::terminate); a length the
guards would refuse is only checked when the process sets ``AOTI_RUNTIME_CHECK_INPUTS=1``, and
then with messages like ``input_handles[1]: dim value is too large at 1``. So every check the
dispatcher makes runs here, from the manifest, before the call (and the C++ header makes the same
checks from the same fields). The one check that also lives in the graph is the value range
(``torch._assert_async``, backends/aoti.RangeGuard): a bad id from a caller that bypasses both
runtimes gives a readable error there instead of an abort.

Needs only torch (no transformers): the runtime and C++ users depend on this format.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from ..errors import ArtifactError, InputError
from .schema import range_text

FORMAT = "aoti-pt2"
PT2_FILE = "model.pt2"
# Package metadata key holding the signature (inputs, outputs, shapes) the package was compiled
# for; load checks it against manifest.json so a package and a manifest from different exports
# cannot be mixed. (The full manifest cannot be embedded: validation runs after compiling.)
SIGNATURE_KEY = "hf_torchscript.signature"

_DTYPES = {"int64": torch.int64, "int32": torch.int32, "float32": torch.float32, "float16": torch.float16,
           "bfloat16": torch.bfloat16, "float64": torch.float64, "bool": torch.bool}


def signature(manifest: dict) -> dict:
    """The part of a manifest fixed at compile time, embedded in the package's metadata."""
    s = manifest["shapes"]
    return {
        "inputs": manifest["inputs"],
        "outputs": manifest["outputs"],
        "max_length": manifest["max_length"],
        "strategy": s["strategy"],
        "buckets": s.get("buckets"),
        "models": manifest["aoti"]["models"],
    }


def _dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).replace("torch.", "")


def check_inputs(manifest: dict, tensors: Sequence[torch.Tensor]) -> None:
    """Raise InputError unless ``tensors`` (manifest order) are what the artifact was compiled for.

    Checks, with the TorchScript dispatcher's wording: count, type, rank, exact dtype, fixed sizes,
    one batch size, one length per sequence axis, lengths 1..max, values inside each input's
    ``range`` ([low, high): token ids inside the vocabulary, masks 0/1), CPU tensors.
    """
    specs = manifest["inputs"]
    if len(tensors) != len(specs):
        raise InputError(f"expected {len(specs)} tensors ({', '.join(s['name'] for s in specs)}), got {len(tensors)}")
    sizes: dict[str, tuple[int, str]] = {}  # axis name -> (size, the input that set it)
    for spec, x in zip(specs, tensors):
        name, shape = spec["name"], spec["shape"]
        if not isinstance(x, torch.Tensor):
            raise InputError(f"input {name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != len(shape):
            raise InputError(f"input {name} must have rank {len(shape)} ({', '.join(map(str, shape))}), got rank {x.dim()}")
        want = _DTYPES.get(spec["dtype"])
        if x.dtype != want:
            raise InputError(f"input {name} must be {spec['dtype']}, got {_dtype_name(x)}")
        if x.device.type != "cpu":
            raise InputError(f"input {name} is on {x.device}; this package was compiled for the CPU: pass CPU tensors")
        for d, axis in enumerate(shape):
            n = int(x.shape[d])
            if isinstance(axis, int):
                if n != axis:
                    raise InputError(f"input {name} must have size {axis} at dim {d}, got {n}")
                continue
            if n == 0:
                raise InputError(f"input {name} is empty (shape {tuple(x.shape)}); pass at least one row and one token")
            if axis in sizes and sizes[axis][0] != n:
                other, first = sizes[axis][1], sizes[axis][0]
                what = "batch" if axis == "batch_size" else "length" if axis.endswith("sequence_length") else axis
                raise InputError(f"input {name} has {what} {n} but {other} has {first}; pass inputs of one shape")
            sizes.setdefault(axis, (n, name))
    limit = int(manifest["max_length"])
    for axis in ("sequence_length", "decoder_sequence_length"):
        if axis in sizes and sizes[axis][0] > limit:
            raise InputError(
                f"input length {sizes[axis][0]} exceeds the maximum {limit} this artifact accepts; truncate the input"
            )
    for spec, x in zip(specs, tensors):
        if spec.get("range") is None:
            continue
        lo, hi = spec["range"]  # [lo, hi)
        x_min, x_max = int(x.min()), int(x.max())
        if x_min < lo or x_max >= hi:
            raise InputError(f"input {spec['name']} holds values from {x_min} to {x_max} but must be "
                             f"{range_text(spec['name'], lo, hi)}")


class Pt2Module:
    """A loaded ``model.pt2``: ``module(*tensors) -> tuple`` like a TorchScript artifact's forward.

    dynamic: one compiled model takes every (batch, length). buckets/static: one compiled model
    per length in ``shapes.buckets``, all in the one package; inputs are padded to the smallest
    bucket that fits (each input's ``pad_value``, mask 0) and per-token outputs sliced back.
    """

    def __init__(self, path: str | Path, manifest: dict):
        # The multi-model loader documented by torch._inductor.aoti_load_package ("to load a
        # specific model, call the load API"); a single model is named "model".
        from torch._inductor.package import load_package

        self.path = Path(path)
        self.manifest = manifest
        shapes = manifest["shapes"]
        self.lengths = list(shapes.get("buckets") or [shapes["max_length"]])
        self.pad = shapes["strategy"] != "dynamic"
        models = manifest["aoti"]["models"]
        from .cpu import check_runs_here

        check_runs_here(manifest, self.path)  # before torch maps its kernels: a missing ISA is SIGILL, not an error
        try:
            self.runners = [load_package(str(self.path), model_name=n) for n in models]
        except Exception as e:
            raise ArtifactError(
                f"torch could not load {self.path} ({type(e).__name__}: {_first_line(e)}); a .pt2 runs only with the "
                f"torch it was compiled with (torch {manifest.get('versions', {}).get('torch', '?')}) on a CPU with "
                f"the ISA it was compiled for ({manifest['aoti'].get('cpu_isa') or '?'}): re-export it here"
            ) from None
        embedded = self.runners[0].get_metadata().get(SIGNATURE_KEY)
        if embedded is not None:
            if json.loads(embedded) != signature(manifest):
                raise ArtifactError(
                    f"{self.path} was compiled for a different signature than manifest.json describes: they come "
                    "from different exports, or one was edited; re-export the model"
                )
        specs = manifest["inputs"]
        self._seq_inputs = [i for i, s in enumerate(specs) if s["shape"] and s["shape"][-1] == "sequence_length"]
        self._pad_values = [int(s.get("pad_value", 0)) for s in specs]
        self._out_seq_dims = [
            o["shape"].index("sequence_length") if "sequence_length" in o["shape"] else -1 for o in manifest["outputs"]
        ]

    def __call__(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        check_inputs(self.manifest, tensors)
        # The compiled kernels index raw memory: give them the layout they were compiled for.
        args = [t.contiguous() for t in tensors]
        i, L, P = 0, None, 0
        if self._seq_inputs:
            L = args[self._seq_inputs[0]].shape[-1]
            i = next(k for k, bucket in enumerate(self.lengths) if L <= bucket)  # L <= max: checked above
            P = self.lengths[i] - L if self.pad else 0
        if P:
            for j in self._seq_inputs:
                x = args[j]
                args[j] = torch.cat([x, x.new_full((*x.shape[:-1], P), self._pad_values[j])], -1)
        try:
            out = tuple(self.runners[i](*args))
        except RuntimeError as e:  # the graph's own range guard (RangeGuard), for a caller that skipped ours
            if "hf-torchscript: " not in str(e):
                raise
            raise InputError(str(e)[str(e).index("hf-torchscript: ") + len("hf-torchscript: "):].splitlines()[0]) from None
        if len(out) != len(self._out_seq_dims):
            raise ArtifactError(
                f"{self.path} returned {len(out)} outputs but manifest.json lists {len(self._out_seq_dims)}; "
                "re-export the model"
            )
        if P:
            out = tuple(o.narrow(d, 0, L) if d >= 0 else o for o, d in zip(out, self._out_seq_dims))
        return out

    def eval(self):  # the TorchScript module's interface, for callers that treat both alike
        return self


def load_pt2(directory: str | Path, manifest: dict) -> Pt2Module:
    """Load ``directory/model.pt2`` for ``manifest`` (its sha256 is checked by the caller)."""
    path = Path(directory) / PT2_FILE
    if not path.is_file():
        raise ArtifactError(f"{str(Path(directory))!r} has no {PT2_FILE}; re-export the model")
    return Pt2Module(path, manifest)


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    return lines[0] if lines else ""
