"""AWS Inferentia (Inf1) backend: ``torch.neuron.trace`` compiles one static shape with neuron-cc.

Documented API (PyTorch-Neuron trace python API): ``torch.neuron.trace(model, example_inputs,
compiler_args=[...], compiler_workdir=..., dynamic_batch_size=False, fallback=True, ...)``;
other keywords go to torch.jit.trace. Operators neuron-cc does not support run on CPU
(``fallback=True``, the default we keep). torch-neuron runs on torch <= 1.13 only.
"""

from __future__ import annotations

from . import Backend
from ._neuron import NEURON, describe, device_present, import_torch_neuron, neuron_compiler_args, workdir_for


def trace(module, example_inputs, options):
    neuron = import_torch_neuron()
    example_inputs = tuple(example_inputs)
    kwargs = {
        "compiler_args": neuron_compiler_args(options),
        # dim 0 only, as documented; without it the module takes exactly the traced batch and the
        # dispatcher pads/chunks rows to it.
        "dynamic_batch_size": bool(options.dynamic_batch),
    }
    workdir = workdir_for(options, example_inputs)
    if workdir:
        kwargs["compiler_workdir"] = workdir
    return neuron.trace(module, example_inputs, **kwargs)


def _describe(options) -> dict:
    return describe(NEURON, import_torch_neuron(), options, neuron_compiler_args(options), fallback=True)


# Tied weights are untied, for the same reason as the neuronx backend: the transformers TorchScript
# guide, whose AWS Neuron section is the Inf1 recipe, unties and clones them before tracing, and the
# torch-neuron docs make no promise about parameters shared between graph partitions (CPU fallback
# can split the embedding and the LM head into different subgraphs).
BACKEND = Backend(
    "neuron",
    trace,
    static_shapes=True,
    unties_weights=True,
    runs_on_host=device_present,
    import_sdk=import_torch_neuron,
    describe=_describe,
)
