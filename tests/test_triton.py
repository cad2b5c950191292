"""`hf-torchscript triton`: every generated config parsed with Triton's ModelConfig protobuf and checked
against the manifest and the TorchScript module; the Python-backend tokenizer run through its
execute() with a stand-in for triton_python_backend_utils. No Triton server runs here (none is on PyPI).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import types
import warnings

import numpy as np
import pytest
import torch

import hf_torchscript as hts
from hf_torchscript.cli import main

pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="pip install 'hf-torchscript[triton]'")
from google.protobuf import json_format, text_format  # noqa: E402
from tritonclient.grpc import model_config_pb2 as mc  # noqa: E402

TYPE = {"int64": mc.TYPE_INT64, "float32": mc.TYPE_FP32}


def _parse(path) -> mc.ModelConfig:
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def _dims(shape, batching=True):
    """Triton's rule, written out again: batch axis left to max_batch_size, -1 for every named axis."""
    rest = shape[1:] if batching else shape
    return [d if isinstance(d, int) else -1 for d in rest]


def _artifacts(tiny_artifact, minilm_artifact):
    return {"minilm": minilm_artifact, "tokcls": tiny_artifact("bert", "token-classification"),
            "gpt2": tiny_artifact("gpt2", "causal-lm"), "t5": tiny_artifact("t5", "seq2seq-lm"),
            "qa": tiny_artifact("bert", "question-answering")}


def test_every_config_parses_and_matches_the_manifest_and_the_module(tiny_artifact, minilm_artifact, tmp_path, capsys):
    repo = tmp_path / "repo"
    for name, art in _artifacts(tiny_artifact, minilm_artifact).items():
        assert main(["triton", str(art), str(repo), "--name", name, "--max-batch-size", "16", "--instances", "2"]) == 0
        assert f"wrote Triton model {name} into {repo}" in capsys.readouterr().out
        manifest = json.loads((art / "manifest.json").read_text())
        text = (repo / name / "config.pbtxt").read_text()
        cfg = _parse(repo / name / "config.pbtxt")
        assert (cfg.name, cfg.platform, cfg.max_batch_size) == (name, "pytorch_libtorch", 16)
        assert [(i.name, i.data_type, list(i.dims)) for i in cfg.input] == [
            (i["name"], TYPE[i["dtype"]], _dims(i["shape"])) for i in manifest["inputs"]]
        assert [(o.name, o.data_type, list(o.dims)) for o in cfg.output] == [
            (f"OUTPUT__{k}", TYPE[o["dtype"]], _dims(o["shape"])) for k, o in enumerate(manifest["outputs"])]
        for k, o in enumerate(manifest["outputs"]):
            assert f"#   OUTPUT__{k} = {o['name']} " in text  # the comment that maps names
        assert cfg.HasField("dynamic_batching")
        assert [(g.kind, g.count) for g in cfg.instance_group] == [(mc.ModelInstanceGroup.KIND_CPU, 2)]

        # The module Triton loads: the same file, and inputs named (and ordered) as forward's arguments,
        # which is how Triton's PyTorch backend binds them.
        model_pt = repo / name / "1" / "model.pt"
        assert model_pt.read_bytes() == (art / "model.pt").read_bytes()
        module = torch.jit.load(str(model_pt))
        assert [a.name for a in module.forward.schema.arguments[1:]] == [i.name for i in cfg.input]


def test_unbatched_config_keeps_the_batch_axis(tiny_artifact, tmp_path):
    art = tiny_artifact("bert", "token-classification")
    assert main(["triton", str(art), str(tmp_path), "--name", "m", "--max-batch-size", "0"]) == 0
    cfg = _parse(tmp_path / "m" / "config.pbtxt")
    manifest = json.loads((art / "manifest.json").read_text())
    assert cfg.max_batch_size == 0 and not cfg.HasField("dynamic_batching")
    assert [list(i.dims) for i in cfg.input] == [_dims(i["shape"], batching=False) for i in manifest["inputs"]]
    assert list(cfg.output[0].dims) == [-1, -1, 5]


def test_ensemble_wires_text_through_the_tokenizer_to_the_model(minilm_artifact, tmp_path):
    assert main(["triton", str(minilm_artifact), str(tmp_path), "--name", "m", "--with-tokenizer"]) == 0
    model, tok, ens = (_parse(tmp_path / n / "config.pbtxt") for n in ("m", "m_tokenizer", "m_ensemble"))
    assert (tok.backend, ens.platform) == ("python", "ensemble")
    assert model.max_batch_size == tok.max_batch_size == ens.max_batch_size == 8
    assert [(i.name, i.data_type, list(i.dims)) for i in tok.input] == [("TEXT", mc.TYPE_STRING, [1])]
    assert [(i.name, i.data_type, list(i.dims)) for i in ens.input] == [("TEXT", mc.TYPE_STRING, [1])]
    # The tokenizer produces exactly what the model takes.
    assert [(o.name, o.data_type, list(o.dims)) for o in tok.output] == [
        (i.name, i.data_type, list(i.dims)) for i in model.input]
    first, second = ens.ensemble_scheduling.step
    assert (first.model_name, second.model_name) == ("m_tokenizer", "m")
    assert dict(first.input_map) == {"TEXT": "TEXT"}
    assert set(first.output_map) == {o.name for o in tok.output}
    # Each intermediate tensor is produced by the tokenizer output of the same name as the model input it feeds.
    assert {v: k for k, v in first.output_map.items()} == {v: k for k, v in second.input_map.items()}
    assert set(second.input_map) == {i.name for i in model.input}
    assert dict(second.output_map) == {"OUTPUT__0": "sentence_embedding"}
    assert [(o.name, o.data_type, list(o.dims)) for o in ens.output] == [("sentence_embedding", mc.TYPE_FP32, [384])]
    assert not ens.instance_group  # Triton forbids instance_group on an ensemble
    assert (tmp_path / "m_tokenizer" / "1" / "tokenizer.json").read_bytes() == (
        minilm_artifact / "tokenizer.json").read_bytes()


# -- the Python-backend tokenizer, run through execute() with a stand-in for Triton's utils ---------------

def _pb_utils():
    pb = types.ModuleType("triton_python_backend_utils")

    class Tensor:
        def __init__(self, name, array):
            self._name, self._array = name, array

        def name(self):
            return self._name

        def as_numpy(self):
            return self._array

    class TritonError:
        def __init__(self, msg):
            self._msg = msg

        def message(self):
            return self._msg

    class InferenceResponse:
        def __init__(self, output_tensors, error=None):
            self.output_tensors, self.error = output_tensors, error

    class InferenceRequest:
        def __init__(self, inputs):
            self.inputs = inputs

    pb.Tensor, pb.TritonError, pb.InferenceResponse, pb.InferenceRequest = (Tensor, TritonError, InferenceResponse,
                                                                            InferenceRequest)
    pb.get_input_tensor_by_name = lambda request, name: next((t for t in request.inputs if t.name() == name), None)
    return pb


def _load_tokenizer_model(folder, monkeypatch):
    pb = _pb_utils()
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", pb)
    spec = importlib.util.spec_from_file_location("hts_triton_tokenizer", folder / "1" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.TritonPythonModel()
    # What Triton passes: the config as JSON (protobuf field names), the model's folder and version.
    cfg = json_format.MessageToJson(_parse(folder / "config.pbtxt"), preserving_proto_field_name=True)
    model.initialize({"model_config": cfg, "model_repository": str(folder), "model_version": "1",
                      "model_instance_kind": "CPU", "model_name": folder.name})
    return model, pb


def _request(pb, texts):
    return pb.InferenceRequest([pb.Tensor("TEXT", np.array([[t.encode()] for t in texts], dtype=object))])


def test_tokenizer_then_model_pt_is_the_local_runtime_bitwise(minilm_artifact, tmp_path, monkeypatch):
    assert main(["triton", str(minilm_artifact), str(tmp_path), "--name", "m", "--with-tokenizer"]) == 0
    tok, pb = _load_tokenizer_model(tmp_path / "m_tokenizer", monkeypatch)
    texts = ["A man is eating food.", "Hi", "Someone in a gorilla costume is playing a set of drums."]
    (response,) = tok.execute([_request(pb, texts)])
    assert response.error is None
    got = {t.name(): t.as_numpy() for t in response.output_tensors}

    local = hts.load(minilm_artifact)
    want, _ = local.encode(texts)
    assert list(got) == local.input_names
    for k in want:
        assert got[k].dtype == np.int64 and torch.equal(torch.from_numpy(got[k]), want[k]), k
    # The second ensemble step, as Triton's libtorch backend runs it: positional, in config input order.
    cfg = _parse(tmp_path / "m" / "config.pbtxt")
    module = torch.jit.load(str(tmp_path / "m" / "1" / "model.pt"))
    with torch.no_grad():
        (embedding,) = module(*[torch.from_numpy(got[i.name]) for i in cfg.input])
    assert torch.equal(embedding, local(texts))


def test_tokenizer_truncates_like_the_runtime_and_fails_only_the_bad_request(tiny_artifact, tmp_path, monkeypatch):
    art = tiny_artifact("bert", "token-classification")
    assert main(["triton", str(art), str(tmp_path), "--name", "t", "--with-tokenizer"]) == 0
    tok, pb = _load_tokenizer_model(tmp_path / "t_tokenizer", monkeypatch)
    long = " ".join(["paris"] * 300)
    good, bad = _request(pb, ["jim henson was a puppeteer", long]), _request(pb, ["the city", " "])
    r_good, r_bad = tok.execute([good, bad])
    assert r_bad.error.message() == "TEXT[1] is empty; send text" and r_bad.output_tensors == []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the runtime warns that it truncated; the Triton model cannot
        want, _ = hts.load(art).encode(["jim henson was a puppeteer", long])
    got = {t.name(): t.as_numpy() for t in r_good.output_tensors}
    assert got["input_ids"].shape == (2, 128)
    for k in want:
        assert np.array_equal(got[k], want[k].numpy()), k


# -- refusals: one line each, nothing written ---------------------------------------------------------

def _edited_copy(art, tmp_path, **changes):
    dst = tmp_path / "edited"
    shutil.copytree(art, dst)
    m = json.loads((dst / "manifest.json").read_text())
    for key, value in changes.items():
        if key == "output_dtype":
            m["outputs"][0]["dtype"] = value
        else:
            m[key] = value
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


@pytest.mark.parametrize("case,message", [
    ("bf16", "sentence_embedding are bfloat16, which Triton's PyTorch backend has no type for: export with "
             "--dtype float32"),
    ("neuron", "was compiled for neuronx (AWS Neuron); Triton's libtorch backend cannot run it: export with "
               "--backend torchscript"),
    ("pt2", "holds an AOTInductor package (.pt2), not TorchScript; Triton's pytorch_libtorch platform loads "
            "model.pt only"),
])
def test_refuses_what_the_libtorch_backend_cannot_take(minilm_artifact, tmp_path, capsys, case, message):
    if case == "bf16":
        art = _edited_copy(minilm_artifact, tmp_path, output_dtype="bfloat16")
    elif case == "neuron":
        art = _edited_copy(minilm_artifact, tmp_path, backend="neuronx")
    else:
        art = _edited_copy(minilm_artifact, tmp_path)
        (art / "model.pt").rename(art / "model.pt2")
    assert main(["triton", str(art), str(tmp_path / "repo")]) == 1
    err = capsys.readouterr().err
    assert message in err.splitlines()[0]
    assert not (tmp_path / "repo").exists()


def test_other_refusals_are_one_line(tiny_artifact, minilm_artifact, tmp_path, capsys, monkeypatch):
    repo = tmp_path / "repo"
    cases = [
        ([str(tiny_artifact("t5", "seq2seq-lm")), str(repo), "--with-tokenizer"],
         "--with-tokenizer covers models that take (batch, tokens) from one text; this seq2seq-lm model takes "
         "input_ids, attention_mask, decoder_input_ids, decoder_attention_mask"),
        ([str(tiny_artifact("bert", "question-answering")), str(repo), "--with-tokenizer"],
         "question-answering needs (question, context) pairs"),
        ([str(minilm_artifact), str(repo), "--name", "a b"], "model name 'a b' is not a plain folder name"),
    ]
    for argv, message in cases:
        assert main(["triton", *argv]) == 1
        assert message in capsys.readouterr().err.splitlines()[0]
    assert not repo.exists()
    assert main(["triton", str(minilm_artifact), str(repo), "--name", "m"]) == 0
    assert main(["triton", str(minilm_artifact), str(repo), "--name", "m"]) == 1
    assert "m exists; pass --force to replace it" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "tritonclient.grpc.model_config_pb2", None)
    assert main(["triton", str(minilm_artifact), str(repo), "--name", "n"]) == 1
    assert "error: hf-torchscript triton needs the 'triton' extra" in capsys.readouterr().err
