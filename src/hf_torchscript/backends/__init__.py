"""Tracing backends: each turns one prepared module and one example input into a ScriptModule.

Only "trace one shape" differs between backends; the rest of the flow (prepare, dummy inputs,
shape strategies, validation, artifact) is shared. SDKs are imported lazily, so a missing
Neuron SDK only matters when that backend is asked for.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from ..errors import OptionError


@dataclass(frozen=True)
class Backend:
    name: str
    trace: Callable  # trace(module, example_inputs: tuple[Tensor, ...], options: ExportOptions) -> ScriptModule
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

    def can_run_here(self) -> bool:
        """Whether a module traced by this backend can execute on this machine right now."""
        return bool(self.runs_on_host() if callable(self.runs_on_host) else self.runs_on_host)


_MODULES = {"torchscript": "torchscript", "neuronx": "neuronx", "neuron": "neuron"}


def get_backend(name: str) -> Backend:
    if name not in _MODULES:
        raise OptionError(f"unknown backend {name!r}; choose one of {', '.join(_MODULES)}")
    module = importlib.import_module(f"{__name__}.{_MODULES[name]}")
    return module.BACKEND
