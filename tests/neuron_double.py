"""TEST DOUBLES for the AWS Neuron SDKs (torch_neuronx and torch.neuron) — not the real SDKs.

Neither SDK can be installed here (they are not on PyPI and pin their own torch). These stand-ins
mirror the documented signatures of ``torch_neuronx.trace`` / ``torch_neuronx.dynamic_batch``
(PyTorch NeuronX Tracing API for Inference) and ``torch.neuron.trace`` (PyTorch-Neuron trace
python API), so a keyword the real API does not have raises TypeError here too; test_neuron_double.py
pins them to a recorded copy of those documented signatures (tests/data/neuron_documented_signatures.json). They record
every call and return ``torch.jit.trace`` of the module, which runs on the CPU — so tests can
check what hf-torchscript asks the SDK for, not what the Neuron compiler would produce.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field

import torch


@dataclass
class Call:
    function: str  # "torch_neuronx.trace", "torch_neuronx.dynamic_batch", "torch.neuron.trace"
    shapes: list[tuple[int, ...]] = field(default_factory=list)
    dtypes: list[str] = field(default_factory=list)
    compiler_args: object = None
    compiler_workdir: str | None = None
    kwargs: dict = field(default_factory=dict)
    shared_parameters: list[list[str]] = field(default_factory=list)  # names aliasing one tensor (tied weights)


def _shared_parameters(func) -> list[list[str]]:
    if not isinstance(func, torch.nn.Module):
        return []
    names: dict[int, list[str]] = {}
    for name, p in func.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), []).append(name)
    return [group for group in names.values() if len(group) > 1]


def _record(function, example_inputs, func=None, **kw) -> Call:
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    return Call(
        function,
        shapes=[tuple(t.shape) for t in inputs],
        dtypes=[str(t.dtype).replace("torch.", "") for t in inputs],
        shared_parameters=_shared_parameters(func),
        **kw,
    )


class RecordingNeuronX(types.ModuleType):
    """Test double standing in for ``torch_neuronx`` (Inf2/Trn1)."""

    __version__ = "2.9.0.2.13.0+testdouble"

    def __init__(self):
        super().__init__("torch_neuronx")
        self.calls: list[Call] = []

    def trace(self, func, example_inputs, *_, input_output_aliases={}, compiler_workdir=None,  # noqa: B006
              compiler_args=None, partitioner_config=None, inline_weights_to_neff=True, cpu_backend=False):
        self.calls.append(_record(
            "torch_neuronx.trace", example_inputs, func, compiler_args=compiler_args,
            compiler_workdir=compiler_workdir,
            kwargs=dict(inline_weights_to_neff=inline_weights_to_neff, cpu_backend=cpu_backend,
                        partitioner_config=partitioner_config),
        ))
        return torch.jit.trace(func, example_inputs, check_trace=False)

    def dynamic_batch(self, neuron_script):
        self.calls.append(Call("torch_neuronx.dynamic_batch"))
        return neuron_script


class RecordingTorchNeuron(types.ModuleType):
    """Test double standing in for ``torch.neuron`` (Inf1, registered by ``import torch_neuron``)."""

    __version__ = "1.13.1.2.11.13.0+testdouble"

    def __init__(self):
        super().__init__("torch.neuron")
        self.calls: list[Call] = []

    def trace(self, model, example_inputs, *, compiler_args=None, compiler_timeout=None, compiler_workdir=None,
              subgraph_builder_function=None, minimum_segment_size=2, single_fusion_ratio_threshold=0.6,
              fallback=True, dynamic_batch_size=False, optimizations=None, **jit_trace_kwargs):
        self.calls.append(_record(
            "torch.neuron.trace", example_inputs, model, compiler_args=compiler_args,
            compiler_workdir=compiler_workdir,
            kwargs=dict(dynamic_batch_size=dynamic_batch_size, fallback=fallback, **jit_trace_kwargs),
        ))
        # Documented: remaining keywords are forwarded to torch.jit.trace.
        return torch.jit.trace(model, example_inputs, check_trace=False, **jit_trace_kwargs)
