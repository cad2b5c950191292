"""The Neuron SDK test doubles (tests/neuron_double.py) against the documented signatures they stand in for.

The SDKs cannot be installed here, so test_neuron.py trusts the doubles to reject what the real
functions would reject. This pins the doubles to a recorded copy of the documentation
(tests/data/neuron_documented_signatures.json, torch-neuronx 2.9 era; see docs/neuron.md): a
parameter renamed, added, reordered or given another default in the double fails here. With the
doubles pinned, test_neuron.py's exports through them prove the backends pass only documented
keywords (a keyword the real function lacks raises TypeError in the double too).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
from neuron_double import RecordingNeuronX, RecordingTorchNeuron

DOCUMENTED = json.loads((Path(__file__).parent / "data" / "neuron_documented_signatures.json").read_text())["functions"]


def documented(name: str) -> inspect.Signature:
    """The recorded signature text as an inspect.Signature (defaults are literals, so eval is exact)."""
    text = DOCUMENTED[name]["signature"]
    return inspect.signature(eval(f"lambda {text[1:-1]}: None"))  # noqa: S307 (our own recorded file)


def shape(sig: inspect.Signature) -> list[tuple]:
    return [(p.name, p.kind, p.default) for p in sig.parameters.values()]


@pytest.mark.parametrize("name, double", [
    ("torch_neuronx.trace", lambda: RecordingNeuronX().trace),
    ("torch_neuronx.dynamic_batch", lambda: RecordingNeuronX().dynamic_batch),
])
def test_neuronx_double_has_the_documented_signature(name, double):
    assert shape(inspect.signature(double())) == shape(documented(name))


def test_torch_neuron_double_spells_out_the_documented_keywords():
    """torch.neuron.trace is documented as (model, example_inputs, **kwargs) plus a list of keywords."""
    sig = inspect.signature(RecordingTorchNeuron().trace)
    params = list(sig.parameters.values())
    doc = DOCUMENTED["torch.neuron.trace"]
    doc_sig = documented("torch.neuron.trace")
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    assert [p.name for p in positional] == [p.name for p in doc_sig.parameters.values()
                                            if p.kind == p.POSITIONAL_OR_KEYWORD]
    keywords = {p.name: p.default for p in params if p.kind == p.KEYWORD_ONLY}
    assert keywords == doc["keywords"]
    # Everything else is forwarded to torch.jit.trace, as documented.
    assert params[-1].kind == inspect.Parameter.VAR_KEYWORD

