"""The AWS Neuron backends (neuronx: Inf2/Trn1, neuron: Inf1), checked against recording test
doubles of the SDKs (tests/neuron_double.py) — no Neuron SDK or device is involved.

What is checked: one compile per bucket at the right static shapes, the compiler arguments and
keywords passed through, tied weights untied, the manifest (backend, SDK, compiler args, buckets,
validation not claimed without a device), validation against eager when a device is reported,
the missing-SDK error, and the refusal of --shapes dynamic.
"""

from __future__ import annotations

import json
import sys

import pytest
import torch
from neuron_double import RecordingNeuronX, RecordingTorchNeuron
from reference import eager_model, random_batch

import hf_torchscript as hts
from hf_torchscript.cli import main
from hf_torchscript.errors import BackendUnavailableError, OptionError, ShapeError
from hf_torchscript.exporter.backends import _neuron

BUCKETS = (8, 24, 48)  # the last bucket is the max length accepted


@pytest.fixture
def device(monkeypatch):
    """device(True/False): whether the Neuron driver reports a device (/dev/neuronN)."""
    state = {"present": False}
    monkeypatch.setattr(_neuron, "device_paths", lambda: ["/dev/neuron0"] if state["present"] else [])

    def set_present(present: bool):
        state["present"] = present

    return set_present


@pytest.fixture
def neuronx(monkeypatch, device):
    sdk = RecordingNeuronX()
    monkeypatch.setitem(sys.modules, "torch_neuronx", sdk)
    return sdk


@pytest.fixture
def torch_neuron(monkeypatch, device):
    ns = RecordingTorchNeuron()
    monkeypatch.setitem(sys.modules, "torch_neuron", None)  # `import torch_neuron` fails: only the namespace exists
    monkeypatch.setitem(sys.modules, "torch.neuron", ns)
    monkeypatch.setattr(torch, "neuron", ns, raising=False)
    return ns


def _traces(sdk, function):
    return [c for c in sdk.calls if c.function == function]


def test_neuronx_compiles_each_bucket_at_the_static_batch_and_passes_compiler_args(
        neuronx, tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    workdir = tmp_path / "work"
    result = hts.export(
        tiny_model_dir("bert"), out, backend="neuronx", buckets=BUCKETS, max_length=BUCKETS[-1], batch_size=3,
        compiler_args=("--optlevel", "1", "--model-type", "transformer"), auto_cast="matmult:bf16",
        compiler_workdir=str(workdir),
    )
    traces = _traces(neuronx, "torch_neuronx.trace")
    assert len(traces) == len(BUCKETS)  # one compile per bucket, nothing else
    assert _traces(neuronx, "torch_neuronx.dynamic_batch") == []
    names = [i["name"] for i in result.manifest["inputs"]]
    assert names == ["input_ids", "attention_mask", "token_type_ids"]
    for call, length in zip(traces, BUCKETS):
        assert call.shapes == [(3, length)] * 3  # static batch: every example has batch_size rows
        assert call.dtypes == ["int64"] * 3
        assert call.compiler_args == ["--optlevel", "1", "--model-type", "transformer",
                                      "--auto-cast", "matmult", "--auto-cast-type", "bf16"]
        assert call.kwargs["inline_weights_to_neff"] is True
    # one work directory per compiled shape, under --compiler-workdir
    assert [c.compiler_workdir for c in traces] == [str(workdir / f"shape_3x{L}") for L in BUCKETS]

    m = json.loads((out / "manifest.json").read_text())
    assert m["backend"] == "neuronx"
    assert m["shapes"]["strategy"] == "buckets" and m["shapes"]["buckets"] == list(BUCKETS)
    assert m["shapes"]["batch_size"] == 3  # the dispatcher pads/chunks rows to the compiled batch
    assert [t["sequence_length"] for t in m["shapes"]["traced"]] == list(BUCKETS)
    assert m["neuron"]["sdk"] == "torch-neuronx" and m["neuron"]["sdk_version"] == RecordingNeuronX.__version__
    assert m["neuron"]["compiler_args"] == traces[0].compiler_args
    assert m["neuron"]["auto_cast"] == "matmult:bf16" and m["neuron"]["dynamic_batch"] is False
    v = m["validation"]
    assert v["ran"] is False and v["passed"] is False and v["cases"] == []
    assert "needs a Neuron device" in v["note"] and "hf-torchscript validate" in v["note"]
    assert "passed" not in m["shapes"]["reason"]


def test_neuronx_defaults_to_no_auto_cast_and_dynamic_batch_wraps_each_compile(neuronx, tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    hts.export(tiny_model_dir("bert"), out, backend="neuronx", buckets=(16, 32), max_length=32, dynamic_batch=True)
    traces = _traces(neuronx, "torch_neuronx.trace")
    assert [c.shapes[0] for c in traces] == [(2, 16), (2, 32)]
    # the compiler's default cast differs between releases; fp32 is asked for explicitly
    assert all(c.compiler_args == ["--auto-cast", "none"] for c in traces)
    assert all(c.compiler_workdir is None for c in traces)
    assert [c.function for c in neuronx.calls] == ["torch_neuronx.trace", "torch_neuronx.dynamic_batch"] * 2
    m = json.loads((out / "manifest.json").read_text())
    assert m["shapes"]["batch_size"] is None  # any batch: the SDK splits/pads on dim 0
    assert m["neuron"]["dynamic_batch"] is True


def test_neuron_inf1_passes_fast_math_and_dynamic_batch_size(torch_neuron, tiny_model_dir, tmp_path):
    hts.export(tiny_model_dir("bert"), tmp_path / "a", backend="neuron", buckets=(16, 32), max_length=32)
    hts.export(tiny_model_dir("bert"), tmp_path / "b", backend="neuron", buckets=(32,), max_length=32,
               dynamic_batch=True, auto_cast="all:fp16", compiler_args=("--neuroncore-pipeline-cores", "1"))
    first, second, third = torch_neuron.calls
    assert [c.function for c in torch_neuron.calls] == ["torch.neuron.trace"] * 3
    assert [first.shapes[0], second.shapes[0], third.shapes[0]] == [(2, 16), (2, 32), (2, 32)]
    assert first.compiler_args == ["--fast-math", "none"]  # neuron-cc's most accurate setting
    assert first.kwargs == {"dynamic_batch_size": False, "fallback": True}
    assert third.compiler_args == ["--neuroncore-pipeline-cores", "1", "--fast-math", "fp32-cast-all-fp16"]
    assert third.kwargs["dynamic_batch_size"] is True
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert m["backend"] == "neuron" and m["neuron"]["sdk"] == "torch-neuron"
    assert m["neuron"]["instances"] == "Inf1" and m["validation"]["ran"] is False


def test_tied_embeddings_are_untied_before_compiling(neuronx, tiny_model_dir, tmp_path):
    model_dir = tiny_model_dir("bert", "fill-mask")
    eager = eager_model(model_dir, "bert", "fill-mask")
    assert eager.get_output_embeddings().weight is eager.get_input_embeddings().weight  # the source is tied
    result = hts.export(model_dir, tmp_path / "out", backend="neuronx", buckets=(16,), max_length=16)
    (call,) = _traces(neuronx, "torch_neuronx.trace")
    # No tensor is both the input embedding and the LM head any more. (BERT's head also aliases its
    # own bias as decoder.bias: an alias inside one Linear, not an embedding tie, left as it is.)
    tied = [g for g in call.shared_parameters if any("word_embeddings" in n for n in g)]
    assert tied == []
    assert not any(any("decoder.weight" in n for n in g) for g in call.shared_parameters)
    assert result.manifest["weights"]["tied_embeddings"] == "untied"


def test_with_a_device_validation_runs_and_matches_eager(neuronx, device, tiny_model_dir, tmp_path):
    device(True)
    model_dir = tiny_model_dir("bert")
    out = tmp_path / "out"
    result = hts.export(model_dir, out, backend="neuronx", buckets=(16, 32), max_length=32, batch_size=2)
    v = result.manifest["validation"]
    assert v["ran"] is True and v["passed"] is True and len(v["cases"]) > 2
    assert {c["shape"]["sequence_length"] for c in v["cases"]} - {16, 32}, "validated only at the compiled lengths"
    assert {c["shape"]["batch_size"] for c in v["cases"]} - {2}, "validated only at the compiled batch"

    # Independent check: the artifact vs the transformers model, 3 padded rows (not the compiled
    # batch of 2) at a length between buckets.
    model = hts.load(out)
    batch = random_batch(model.manifest, 3, 21, seed=7)
    got = model.run(**batch)
    with torch.no_grad():
        want = eager_model(model_dir, "bert", "feature-extraction")(**batch).last_hidden_state
    mask = batch["attention_mask"].bool()
    torch.testing.assert_close(got["last_hidden_state"][mask], want[mask], atol=1e-4, rtol=1e-4)


def test_info_says_validation_was_not_run(neuronx, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["export", str(tiny_model_dir("bert")), str(out), "--backend", "neuronx", "--buckets", "16,32",
               "--max-length", "32", "--compiler-args=--optlevel 1 --enable-fast-loading-neuron-binaries",
               "--auto-cast", "matmult", "--dynamic-batch"])
    assert rc == 0
    (call, _) = neuronx.calls[:2]
    assert call.compiler_args == ["--optlevel", "1", "--enable-fast-loading-neuron-binaries", "--auto-cast", "matmult"]
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "validation    not run (the neuronx module needs a Neuron device" in text
    assert "passed" not in text.split("validation")[1].splitlines()[0]
    assert "torch-neuronx 2.9.0.2.13.0+testdouble" in text and "--auto-cast matmult" in text


def test_missing_neuronx_sdk_says_package_instances_torch_pin_and_guide(monkeypatch, tiny_model_dir, tmp_path):
    monkeypatch.setitem(sys.modules, "torch_neuronx", None)  # import torch_neuronx -> ImportError
    with pytest.raises(BackendUnavailableError) as e:
        hts.export(tiny_model_dir("bert"), tmp_path / "out", backend="neuronx")
    msg = str(e.value)
    for part in ("torch-neuronx", "Inf2, Trn1 and Trn2", "pins its own torch (2.9",
                 "Setup Guide for torch-neuronx", "backend='torchscript'"):
        assert part in msg
    assert "\n" not in msg
    assert not (tmp_path / "out").exists()


def test_missing_torch_neuron_sdk_names_inf1_and_torch_113(monkeypatch, tiny_model_dir, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "torch_neuron", None)
    monkeypatch.delitem(sys.modules, "torch.neuron", raising=False)
    monkeypatch.delattr(torch, "neuron", raising=False)
    rc = main(["export", str(tiny_model_dir("bert")), str(tmp_path / "out"), "--backend", "neuron"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "error: backend 'neuron' needs the AWS Neuron SDK package torch-neuron" in err
    assert "Inf1" in err and "1.13 at most" in err and "Setup Guide for torch-neuron" in err


def test_dynamic_shapes_are_refused_for_neuron_backends(tiny_model_dir, tmp_path, capsys):
    rc = main(["export", str(tiny_model_dir("bert")), str(tmp_path / "out"), "--backend", "neuronx",
               "--shapes", "dynamic"])
    assert rc == 1
    assert "error: backend neuronx compiles static shapes; use --shapes buckets or --shapes static" in capsys.readouterr().err
    with pytest.raises(ShapeError, match="backend neuron compiles static shapes"):
        hts.ExportOptions(backend="neuron", shapes="dynamic")


@pytest.mark.parametrize("fields, text", [
    (dict(backend="neuronx", auto_cast="fast"), "auto_cast='fast' is not valid for backend neuronx"),
    (dict(backend="neuron", auto_cast="all:tf32"), "TYPE one of bf16, fp16"),
    (dict(backend="neuronx", auto_cast="none:bf16"), "MODE one of none, matmult, all"),
    (dict(compiler_args=("--optlevel", "1")), "compiler_args only apply to backend='neuronx' or backend='neuron'"),
    (dict(dynamic_batch=True, auto_cast="all"), "auto_cast, dynamic_batch only apply"),
])
def test_neuron_option_errors(fields, text):
    with pytest.raises(OptionError) as e:
        hts.ExportOptions(**fields)
    assert text in str(e.value)


def test_auto_cast_given_twice_is_refused(neuronx, tiny_model_dir, tmp_path):
    with pytest.raises(OptionError, match="also given inside compiler_args"):
        hts.export(tiny_model_dir("bert"), tmp_path / "out", backend="neuronx", buckets=(16,), max_length=16,
                   auto_cast="all", compiler_args=("--auto-cast", "matmult"))
    assert not (tmp_path / "out").exists()


def test_loading_a_neuron_artifact_imports_the_sdk_first(neuronx, monkeypatch, tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    hts.export(tiny_model_dir("bert"), out, backend="neuronx", buckets=(16,), max_length=16)
    assert hts.load(out).manifest["backend"] == "neuronx"  # loads while the SDK (double) is importable
    monkeypatch.setitem(sys.modules, "torch_neuronx", None)
    with pytest.raises(BackendUnavailableError, match="needs the AWS Neuron SDK package torch-neuronx"):
        hts.load(out)
