"""AWS Inferentia2 / Trainium backend: ``torch_neuronx.trace`` compiles one static shape with neuronx-cc.

Documented API (PyTorch NeuronX Tracing API for Inference): ``torch_neuronx.trace(func,
example_inputs, *, compiler_workdir=None, compiler_args=None, inline_weights_to_neff=True, ...)``
returns a ScriptModule that consumes CPU tensors of exactly the traced shapes and runs on a
NeuronCore; ``torch_neuronx.dynamic_batch(neuron_script)`` lets it take other batch sizes by
splitting/padding along dim 0. So the shared flow compiles one module per length bucket.
"""

from __future__ import annotations

from . import Backend
from ._neuron import NEURONX, describe, device_present, import_neuronx, neuronx_compiler_args, workdir_for


def trace(module, example_inputs, options):
    sdk = import_neuronx()
    example_inputs = tuple(example_inputs)
    traced = sdk.trace(
        module,
        example_inputs,
        compiler_args=neuronx_compiler_args(options),
        compiler_workdir=workdir_for(options, example_inputs),
    )
    if options.dynamic_batch:
        # Documented to modify the module in place and return it; keep the return value anyway.
        traced = sdk.dynamic_batch(traced)
    return traced


def _describe(options) -> dict:
    return describe(NEURONX, import_neuronx(), options, neuronx_compiler_args(options),
                    inline_weights_to_neff=True)


# Tied weights are untied: the Neuron tracing docs say nothing about shared parameters, and the
# transformers TorchScript guide ("Export to TorchScript": TorchScript flag and tied weights, the
# recipe its AWS Neuron section builds on) unties and clones them before tracing. Untying costs
# nothing on the device: with inline_weights_to_neff=True (the default we keep) every compiled
# bucket carries its own copy of the weights inside its NEFF anyway, and it keeps one name per
# tensor for torch_neuronx.replace_weights (keyed by state_dict names) if weights are ever split.
BACKEND = Backend(
    "neuronx",
    trace,
    static_shapes=True,
    unties_weights=True,
    runs_on_host=device_present,
    import_sdk=import_neuronx,
    describe=_describe,
)
