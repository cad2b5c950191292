"""Backends: each turns the prepared module into the artifact's model.

torchscript, neuronx and neuron trace one shape into a ScriptModule (``trace``); shapes.py wraps the
traces in one scripted dispatcher. aoti writes another format (``model.pt2``), so it brings its own
``build`` for a shape strategy (torch.export, then an AOTInductor compile when the artifact code
saves it); the rest of the flow (prepare, candidates, the validation grid on the reloaded model,
manifest, atomic commit) is shared. SDKs are imported lazily, so a missing Neuron SDK only matters
when that backend is asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from ...errors import OptionError


@dataclass(frozen=True)
class Backend:
    name: str
    trace: Callable | None  # trace(module, example_inputs: tuple[Tensor, ...], options: ExportOptions) -> ScriptModule
    static_shapes: bool  # compiled per shape: `auto` means buckets, `dynamic` is refused
    unties_weights: bool  # the compiler cannot share a tensor between embedding and LM head
    # The traced module runs on this machine (so it can be validated here). A callable is asked at
    # export time: a Neuron module runs only where a Neuron device is present.
    runs_on_host: bool | Callable[[], bool]
    # Imports the backend's SDK or raises BackendUnavailableError; called before the model is loaded
    # (fail fast) and before torch.jit.load of an artifact (its custom ops must be registered first).
    import_sdk: Callable[[], object] | None = None
    # describe(options) -> dict recorded in the manifest (SDK, version, compiler arguments).
    describe: Callable[..., dict] | None = None
    # build(prepared, strategy, tracer_warnings) -> (model, shapes info), for a format that is not a
    # dispatcher over traces; the model then saves itself (artifact.roundtrip / write_artifact).
    build: Callable | None = None
    format: str = "torchscript"  # the manifest's "format": which model file, which loader

    def can_run_here(self) -> bool:
        """Whether a module traced by this backend can execute on this machine right now."""
        return bool(self.runs_on_host() if callable(self.runs_on_host) else self.runs_on_host)


_MODULES = {"torchscript": "torchscript", "aoti": "aoti", "neuronx": "neuronx", "neuron": "neuron"}


def get_backend(name: str) -> Backend:
    if name not in _MODULES:
        raise OptionError(f"unknown backend {name!r}; choose one of {', '.join(_MODULES)}")
    module = importlib.import_module(f"{__name__}.{_MODULES[name]}")
    return module.BACKEND
