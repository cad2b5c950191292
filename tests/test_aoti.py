"""--backend aoti: torch.export + AOTInductor model.pt2 with the TorchScript artifact's promise.

Every artifact here is checked against the eager transformers model (tests/reference.py), at shapes
other than the traced one, with padded rows, from Python (hts.load), from a process that imports
neither transformers nor hf_torchscript (torch's own package loader) and from C++ (cpp/hts_run).

Compiling costs ~20-60 s per package on 2 cores, so the packages are built once per session by
module-scoped fixtures and shared by every test; the bf16, int8 and buckets packages are `slow`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from reference import assert_close_valid, eager_model, eager_outputs, random_batch

import hf_torchscript as hts
from hf_torchscript.cli import main
from hf_torchscript.errors import ArtifactError, InputError, OptionError
from hf_torchscript.runtime.artifact import sha256_file

TEXTS = ["jim henson was a puppeteer", "paris is the capital of france and the city is big", "the dog"]


@pytest.fixture(scope="module")
def pt2(tiny_model_dir, tmp_path_factory):
    """Tiny BERT feature-extraction exported with --backend aoti (dynamic): (source dir, artifact dir, result)."""
    src = tiny_model_dir("bert", "feature-extraction")
    out = tmp_path_factory.mktemp("aoti") / "out"
    result = hts.export(src, out, task="feature-extraction", backend="aoti")
    return src, out, result


def _check_vs_eager(src, out, model_type, task, shapes, module=None):
    manifest = json.loads((out / "manifest.json").read_text())
    model = module or hts.load(out)
    eager = eager_model(src, model_type, task)
    for B, L in shapes:
        x = random_batch(manifest, B, L, seed=B * 1000 + L)
        want = eager_outputs(eager, manifest, x)
        got = model.run(**x) if module is None else dict(zip(want, module(*x.values())))
        for o in manifest["outputs"]:
            assert_close_valid(got[o["name"]], want[o["name"]], o, x.get("attention_mask"), what=f"({B}x{L})")


# -- the artifact --------------------------------------------------------------------------------


def test_manifest_contract(pt2):
    _, out, result = pt2
    m = json.loads((out / "manifest.json").read_text())
    assert m == result.manifest
    assert m["format"] == "aoti-pt2" and m["backend"] == "aoti"
    assert (out / "model.pt2").is_file() and not (out / "model.pt").exists()
    # sha256 of every file in the directory, and of the package itself under the usual key.
    on_disk = {p.name for p in out.iterdir() if p.is_file() and p.name != "manifest.json"}
    assert set(m["files"]) == on_disk and {"model.pt2", "tokenizer.json"} <= on_disk
    assert all(m["files"][n] == sha256_file(out / n) for n in on_disk)
    assert m["sha256"] == sha256_file(out / "model.pt2")
    # Dynamic over the real bounds, traced at sizes >= 2 (0/1 specialisation), and recorded why.
    s = m["shapes"]
    assert s["strategy"] == "dynamic" and (s["min_length"], s["max_length"]) == (1, 128)
    assert s["reason"].startswith("dynamic: the validation grid passed")
    assert s["traced"][0]["batch_size"] >= 2 and s["traced"][0]["sequence_length"] >= 2
    assert m["aoti"]["dynamic_ranges"] == {"batch_size": [1, None], "sequence_length": [1, 128]}
    assert m["aoti"]["models"] == ["model"] and m["aoti"]["torch"] == torch.__version__
    # What the runtimes check, from the manifest: token ids inside the vocabulary, masks 0/1.
    ranges = {i["name"]: i.get("range") for i in m["inputs"]}
    assert ranges == {"input_ids": [0, 128], "attention_mask": [0, 2], "token_type_ids": [0, 2]}  # [low, high)
    v = m["validation"]
    assert v["passed"] and v["mode"] == "allclose"
    lengths = {c["shape"]["sequence_length"] for c in v["cases"]}
    assert {1, 128} <= lengths and len(lengths) >= 5
    assert any("first" in c["padding"] for c in v["cases"])
    # The text check ran on the written package too: real texts through the shipped tokenizer.json.
    assert v["text"]["ran"] and v["text"]["passed"], v["text"]


def test_matches_eager_at_other_shapes_with_padding(pt2):
    src, out, _ = pt2
    _check_vs_eager(src, out, "bert", "feature-extraction", [(1, 1), (1, 5), (3, 37), (4, 128), (2, 17)])


CLEAN_PT2 = textwrap.dedent(
    """
    import json, sys
    sys.modules["transformers"] = None      # importing either would raise ImportError
    sys.modules["hf_torchscript"] = None
    import torch
    from torch._inductor import aoti_load_package
    out_dir, inputs_file, result_file = sys.argv[1:4]
    manifest = json.load(open(out_dir + "/manifest.json"))
    model = aoti_load_package(out_dir + "/model.pt2")
    inputs = torch.load(inputs_file)
    outputs = model(*[inputs[i["name"]] for i in manifest["inputs"]])   # positional, in manifest order
    torch.save({o["name"]: t for o, t in zip(manifest["outputs"], outputs)}, result_file)
    """
)


def test_plain_aoti_load_package_in_a_clean_process(pt2, tmp_path):
    src, out, result = pt2
    m = result.manifest
    x = random_batch(m, 3, 29, seed=3)
    torch.save(x, tmp_path / "in.pt")
    proc = subprocess.run([sys.executable, "-c", CLEAN_PT2, str(out), str(tmp_path / "in.pt"), str(tmp_path / "r.pt")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = torch.load(tmp_path / "r.pt")
    want = eager_outputs(eager_model(src, "bert", "feature-extraction"), m, x)
    assert_close_valid(got["last_hidden_state"], want["last_hidden_state"], m["outputs"][0], x["attention_mask"])


def test_text_api_matches_eager_with_the_shipped_tokenizer(pt2):
    from transformers import AutoTokenizer

    src, out, _ = pt2
    tok = AutoTokenizer.from_pretrained(str(src))
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        want = eager_model(src, "bert", "feature-extraction")(**enc).last_hidden_state
    got = hts.load(out)(TEXTS)
    assert len(got) == len(TEXTS)
    for i, row in enumerate(got):
        n = int(enc["attention_mask"][i].sum())
        assert row["tokens"] == tok.convert_ids_to_tokens(enc["input_ids"][i, :n].tolist())
        torch.testing.assert_close(row["last_hidden_state"], want[i, :n], atol=1e-4, rtol=1e-4)


# -- bad input: the checks a .pt2 cannot make itself ----------------------------------------------


def _ids(B: int, L: int, **override):
    x = {"input_ids": torch.full((B, L), 7), "attention_mask": torch.ones(B, L, dtype=torch.long),
         "token_type_ids": torch.zeros(B, L, dtype=torch.long)}
    x.update(override)
    return x


BAD = [
    ("too-long", _ids(1, 129), "input length 129 exceeds the maximum 128 this artifact accepts; truncate the input"),
    ("id-over-vocab", _ids(2, 4, input_ids=torch.tensor([[7, 8, 9, 10], [7, 8, 128, 3]])),
     "input input_ids holds values from 3 to 128 but must be token ids in [0, 128) (the vocabulary has 128 "
     "entries); use the tokenizer shipped with the artifact"),
    ("negative-id", _ids(1, 3, input_ids=torch.tensor([[7, -1, 9]])), "input input_ids holds values from -1 to 9"),
    ("type-id", _ids(1, 3, token_type_ids=torch.tensor([[0, 1, 2]])),
     "input token_type_ids holds values from 0 to 2 but must be in [0, 2) (the model has 2 token types)"),
    ("mask-value", _ids(1, 3, attention_mask=torch.tensor([[1, 1, 3]])),
     "input attention_mask holds values from 1 to 3 but must be 0 or 1"),
    ("float-ids", _ids(1, 3, input_ids=torch.ones(1, 3)), "input input_ids must be int64 (token ids), got float32"),
    ("rank", _ids(1, 3, input_ids=torch.ones(3, dtype=torch.long)),
     "input input_ids must have rank 2 (batch_size, sequence_length), got shape (3,)"),
    ("batch-mismatch", _ids(2, 3, attention_mask=torch.ones(3, 3, dtype=torch.long)),
     "input attention_mask has batch 3 but input_ids has 2; pass inputs of one shape"),
    ("length-mismatch", _ids(2, 3, token_type_ids=torch.zeros(2, 4, dtype=torch.long)),
     "input token_type_ids has length 4 but input_ids has 3; pass inputs of one shape"),
    ("empty", _ids(1, 0), "input input_ids is empty (shape (1, 0)); pass at least one row and one token"),
]


@pytest.mark.parametrize("inputs,message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_gives_one_readable_line(pt2, inputs, message):
    _, out, _ = pt2
    with pytest.raises(InputError) as e:
        hts.load(out).run(**inputs)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_int32_ids_are_refused_by_the_module_itself(pt2):
    # runtime.run converts integer tensors to int64; the loaded module object itself is strict,
    # since the compiled kernels would read int32 memory as int64.
    _, out, _ = pt2
    module = hts.load(out).module
    with pytest.raises(InputError, match="input input_ids must be int64, got int32"):
        module(*_ids(1, 3, input_ids=torch.ones(1, 3, dtype=torch.int32)).values())


def test_the_graph_itself_refuses_an_out_of_range_id(pt2):
    """A caller that bypasses our runtimes gets an error from the package, not an aborted process."""
    _, out, _ = pt2
    code = textwrap.dedent(
        """
        import sys, torch
        from torch._inductor import aoti_load_package
        model = aoti_load_package(sys.argv[1])
        try:
            model(torch.tensor([[7, 500]]), torch.ones(1, 2, dtype=torch.long), torch.zeros(1, 2, dtype=torch.long))
        except RuntimeError as e:
            print("raised:", str(e).strip().splitlines()[-1])
        """
    )
    proc = subprocess.run([sys.executable, "-c", code, str(out / "model.pt2")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and "raised:" in proc.stdout, proc.stderr  # an exception, the process alive
    # torch 2.13 puts the message in the exception; torch 2.9 prints it to stderr and raises
    # "run_func_(...) API call failed".
    assert "hf-torchscript: input input_ids holds a value outside [0, 128)" in proc.stdout + proc.stderr


def test_the_graph_itself_refuses_an_input_past_the_max_length(pt2):
    """Without our runtimes, a raw model.pt2 given max length + 1 tokens raises (measured before the check:
    outputs for BERT past its max length, SIGABRT for GPT-2 past its positions); the max length itself runs."""
    _, out, result = pt2
    L = result.manifest["max_length"]
    code = textwrap.dedent(
        """
        import sys, torch
        from torch._inductor import aoti_load_package
        model = aoti_load_package(sys.argv[1])
        for n in (int(sys.argv[2]), int(sys.argv[2]) + 1):
            ids = torch.full((1, n), 7)
            try:
                model(ids, torch.ones_like(ids), torch.zeros_like(ids))
                print(n, "ran")
            except RuntimeError as e:
                print(n, "raised:", str(e).strip().splitlines()[-1])
        """
    )
    proc = subprocess.run([sys.executable, "-c", code, str(out / "model.pt2"), str(L)], capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr  # the process is alive
    assert f"{L} ran" in proc.stdout and f"{L + 1} raised:" in proc.stdout, proc.stdout + proc.stderr
    assert (f"hf-torchscript: input input_ids is longer than this artifact's max length {L}"
            in proc.stdout + proc.stderr)


def test_tampered_or_mixed_package_is_refused(pt2, tiny_model_dir, tmp_path):
    _, out, _ = pt2
    art = tmp_path / "art"
    shutil.copytree(out, art)
    with open(art / "model.pt2", "ab") as f:
        f.write(b"x")
    with pytest.raises(ArtifactError, match=r"model.pt2 sha256 .* does not match manifest.json"):
        hts.load(art)
    # An edited manifest: the package embeds the manifest (extra/manifest.json, like model.pt) ...
    shutil.copy(out / "model.pt2", art / "model.pt2")
    m = json.loads((art / "manifest.json").read_text())
    m["validation"]["passed"], m["max_length"] = True, 512
    (art / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match="manifest.json differs from the manifest embedded in model.pt2"):
        hts.load(art)
    # ... and, compiled in, its signature: refused even without the sha256 and embedded-manifest checks.
    with pytest.raises(ArtifactError, match="was compiled for a different signature than manifest.json describes"):
        hts.load(art, verify=False)


def test_tokenizer_files_are_hashed_too(pt2, tmp_path):
    _, out, _ = pt2
    art = tmp_path / "art"
    shutil.copytree(out, art)
    (art / "tokenizer.json").write_text((art / "tokenizer.json").read_text().replace("puppeteer", "puppeteers"))
    with pytest.raises(ArtifactError, match=r"tokenizer.json sha256 .* does not match manifest.json"):
        hts.load(art)


def test_options_that_do_not_apply_to_aoti(tiny_model_dir, tmp_path, capsys):
    src = tiny_model_dir("bert")
    with pytest.raises(OptionError, match="optimize=True applies to the torchscript backend"):
        hts.export(src, tmp_path / "o", backend="aoti", optimize=True)
    with pytest.raises(OptionError, match="static_batch=True applies to the torchscript backend"):
        hts.export(src, tmp_path / "o", backend="aoti", shapes="static", static_batch=True)
    with pytest.raises(OptionError, match="auto_cast only apply to backend='neuronx' or backend='neuron'"):
        hts.export(src, tmp_path / "o", backend="aoti", auto_cast="matmult")
    with pytest.raises(OptionError, match="onednn_fusion=True applies to the torchscript backend"):
        hts.export(src, tmp_path / "o", backend="aoti", onednn_fusion=True)
    with pytest.raises(OptionError, match=r"keep_float applies to quantize.py's schemes; with backend='aoti' use "
                                          r"quantize='dynamic-int8-aten'"):
        hts.export(src, tmp_path / "o", backend="aoti", quantize="dynamic-int8", keep_float=("model.pooler.*",))
    # The CLI names its own flags.
    assert main(["export", str(src), str(tmp_path / "o"), "--backend", "aoti", "--optimize"]) == 1
    assert "error: --optimize applies to the torchscript backend" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# -- CLI ------------------------------------------------------------------------------------------


def test_cli_info_run_validate(pt2, capsys):
    src, out, result = pt2
    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "format aoti-pt2 v2, model.pt2 sha256" in info and f"{len(result.manifest['files'])} files verified" in info
    assert "validation    passed" in info and "aoti          1 compiled model(s) for CPU ISA" in info
    assert main(["run", str(out), "the dog", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    [one] = got["results"]
    assert one["output"]["tokens"] == ["[CLS]", "the", "dog", "[SEP]"]
    assert one["output"]["outputs"]["last_hidden_state"]["shape"] == [4, 32]
    assert main(["validate", str(out), "--model", str(src)]) == 0
    assert capsys.readouterr().out.startswith("validation passed:")


def test_cli_validate_detects_a_different_model(pt2, tmp_path, capsys):
    from models import save_tiny

    _, out, _ = pt2
    other = save_tiny("bert", "feature-extraction", tmp_path / "other", seed=1)
    assert main(["validate", str(out), "--model", str(other)]) == 1
    err = capsys.readouterr().err
    assert "does not match" in err and "max diff" in err


# -- C++ ------------------------------------------------------------------------------------------


def _run_cpp(runner, artifact, payload: dict | str):
    text = payload if isinstance(payload, str) else json.dumps({k: v.tolist() for k, v in payload.items()})
    return subprocess.run([str(runner), str(artifact), "-"], input=text, capture_output=True, text=True, timeout=300)


@pytest.mark.cpp
@pytest.mark.slow
@pytest.mark.parametrize("B,L", [(1, 7), (3, 40), (2, 128)])
def test_cpp_runner_matches_eager(runner, pt2, B, L):
    src, out, result = pt2
    m = result.manifest
    x = random_batch(m, B, L, seed=L)
    proc = _run_cpp(runner, out, x)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)["outputs"]["last_hidden_state"]
    assert got["shape"] == [B, L, 32]
    want = eager_outputs(eager_model(src, "bert", "feature-extraction"), m, x)
    assert_close_valid(torch.tensor(got["data"]), want["last_hidden_state"], m["outputs"][0], x["attention_mask"])


CPP_BAD = [
    ("too-long", _ids(1, 129), "input length 129 exceeds the maximum 128 this artifact accepts; truncate the input"),
    ("id-over-vocab", _ids(1, 3, input_ids=torch.tensor([[7, 300, 9]])),
     "input input_ids holds values from 7 to 300 but must be token ids in [0, 128) (the vocabulary has 128 "
     "entries); use the tokenizer shipped with the artifact"),
    ("mask-value", _ids(1, 2, attention_mask=torch.tensor([[1, 2]])),
     "input attention_mask holds values from 1 to 2 but must be 0 or 1"),
    ("length-mismatch", _ids(1, 3, attention_mask=torch.ones(1, 2, dtype=torch.long)),
     "input attention_mask has length 2 but input_ids has 3; pass inputs of one shape"),
    ("float-ids", '{"input_ids": [[5, 6.5]], "attention_mask": [[1, 1]], "token_type_ids": [[0, 0]]}',
     "input input_ids must be int64, got float32 (token ids are integers)"),
]


@pytest.mark.cpp
@pytest.mark.slow
@pytest.mark.parametrize("payload,message", [b[1:] for b in CPP_BAD], ids=[b[0] for b in CPP_BAD])
def test_cpp_runner_errors(runner, pt2, payload, message):
    _, out, _ = pt2
    proc = _run_cpp(runner, out, payload)
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0] == f"error: {message}", proc.stderr


@pytest.mark.cpp
@pytest.mark.slow
def test_cpp_refuses_a_package_from_another_export(runner, pt2, tmp_path):
    _, out, _ = pt2
    art = tmp_path / "art"
    shutil.copytree(out, art)
    m = json.loads((art / "manifest.json").read_text())
    m["max_length"] = 64
    (art / "manifest.json").write_text(json.dumps(m))
    proc = _run_cpp(runner, art, _ids(1, 3))
    assert proc.returncode == 1
    assert f"error: {art}/manifest.json differs from the manifest embedded in {art}/model.pt2" in proc.stderr
    assert "re-export the model" in proc.stderr


# -- fallback to buckets, reduced precision ------------------------------------------------------


@pytest.fixture(scope="module")
def baked(tmp_path_factory):
    """A BERT whose forward bakes the input length (int() of a shape): torch.export cannot make it dynamic."""
    from models import tiny_config
    from test_shapes import LengthBakedBert

    torch.manual_seed(0)
    model = LengthBakedBert(tiny_config("bert", "feature-extraction")).eval()
    out = tmp_path_factory.mktemp("aoti-baked") / "out"
    # Two small buckets keep this to two compiles: max_length 32's default buckets are 16 and 32
    # (no buckets=: given buckets mean buckets, without the dynamic attempt this test is about).
    result = hts.export(model, out, backend="aoti", max_length=32)
    return model, out, result


@pytest.mark.slow
def test_auto_falls_back_to_buckets_when_export_cannot_prove_the_range(baked):
    model, out, result = baked
    s = result.manifest["shapes"]
    assert s["strategy"] == "buckets" and s["buckets"] == [16, 32]
    assert "after dynamic refused (torch.export could not make lengths 1..32 dynamic" in s["reason"]
    assert result.manifest["aoti"]["models"] == ["model_16", "model_32"]
    loaded = hts.load(out)
    for B, L in [(1, 1), (3, 5), (2, 16), (2, 17), (1, 32)]:
        x = random_batch(result.manifest, B, L, seed=L)
        with torch.no_grad():
            want = model(**x).last_hidden_state
        assert_close_valid(loaded.run(**x)["last_hidden_state"], want, result.manifest["outputs"][0],
                           x["attention_mask"], what=f"({B}x{L})")


@pytest.mark.cpp
@pytest.mark.slow
def test_cpp_runner_pads_to_the_bucket(runner, baked):
    model, out, result = baked
    x = random_batch(result.manifest, 2, 11, seed=11)
    proc = _run_cpp(runner, out, x)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)["outputs"]["last_hidden_state"]
    assert got["shape"] == [2, 11, 32]
    with torch.no_grad():
        want = model(**x).last_hidden_state
    assert_close_valid(torch.tensor(got["data"]), want, result.manifest["outputs"][0], x["attention_mask"])


def _row_cosines(got, want, mask):
    keep = mask.bool()
    return torch.nn.functional.cosine_similarity(got[keep].double(), want[keep].double(), dim=-1)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["bf16", "int8", "int8-aten"])
def test_reduced_precision_is_validated_by_cosine_against_fp32_eager(variant, tiny_model_dir, tmp_path):
    if variant == "int8":
        pytest.importorskip("torchao", reason="pip install 'hf-torchscript[aoti-int8]' (torchao; CI installs it in the current-stack leg)")  # noqa: E501
    kw = {"bf16": dict(dtype="bfloat16"), "int8": dict(quantize="dynamic-int8"),
          "int8-aten": dict(quantize="dynamic-int8-aten")}[variant]
    src = tiny_model_dir("bert", "fill-mask")
    result = hts.export(src, tmp_path / "o", backend="aoti", **kw)
    m = result.manifest
    assert m["validation"]["passed"] and m["validation"]["mode"] == "cosine"
    assert {"bf16": "bfloat16", "int8": "torchao", "int8-aten": "aten::_int_mm"}[variant] in m["precision"]["compute"]
    if variant == "int8-aten":  # quantize.py's sensitivity pass, as for TorchScript: every Linear accounted for
        q = m["quantization"]
        assert q["scheme"] == "dynamic-int8-aten" and q["layers_quantized"] > 0
        assert len(q["layers"]) == q["layers_total"] and all(layer["reason"] for layer in q["layers"])
    # Independently of the exporter's grid: fp32 eager, padded rows, lengths other than the traced one.
    eager, loaded = eager_model(src, "bert", "fill-mask"), hts.load(tmp_path / "o")
    for B, L in [(1, 9), (3, 50)]:
        x = random_batch(m, B, L, seed=L)
        with torch.no_grad():
            want = eager(**x).logits
        got = loaded.run(**x)["logits"]
        assert got.dtype == torch.float32
        cos = _row_cosines(got, want, x["attention_mask"])
        assert float(cos.min()) >= 0.99, (variant, B, L, float(cos.min()))
        assert not torch.equal(got, want)  # really reduced precision, not an fp32 copy


# -- torch.export's shape guards: AOTInductor does not check them, the grid must prove them -------


class TripleLengthBert(__import__("transformers").BertModel):
    """Computes something else when length == 3 x batch: a branch on sizes that a trace at 2x16 cannot see.

    torch.export refuses a guard that narrows one dimension's range (Constraints violated), but
    keeps a relation between two as a guard, which the compiled package then does not check.
    """

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, **kwargs):
        out = super().forward(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                              **kwargs)
        if input_ids.shape[1] == 3 * input_ids.shape[0]:
            out.last_hidden_state = out.last_hidden_state * 2
        return out


def test_guard_cases_find_the_sizes_a_trace_assumed(tiny_model_dir):
    """The guard `sequence_length != 3*batch_size` becomes a validation case at batch 1, length 3."""
    from models import tiny_config

    from hf_torchscript.exporter.backends import get_backend
    from hf_torchscript.exporter.backends.aoti import build
    from hf_torchscript.exporter.prepare import prepare
    from hf_torchscript.exporter.source import load_source
    from hf_torchscript.options import ExportOptions

    torch.manual_seed(0)
    model = TripleLengthBert(tiny_config("bert", "feature-extraction")).eval()
    opts = ExportOptions(task="feature-extraction", backend="aoti")
    p = prepare(load_source(model, task="feature-extraction"), opts, get_backend("aoti"))
    exported, info = build(p, "dynamic", [])  # export only: the compile happens when the artifact is saved
    assert info["extra_cases"] == [{"batch_size": 1, "sequence_length": 3}]
    [guard] = exported.guards
    assert "3*batch_size" in guard["guard"].replace(" ", "") and "sequence_length" in guard["guard"]
    assert guard["breaks_at"] == {"batch_size": 1, "sequence_length": 3} and guard["validated"]
    # Nothing is added for a model whose guards hold at every accepted size.
    plain = prepare(load_source(str(tiny_model_dir("bert")), task="feature-extraction"), opts, get_backend("aoti"))
    exported, info = build(plain, "dynamic", [])
    assert exported.guards == [] and "extra_cases" not in info


@pytest.mark.slow
def test_a_broken_guard_that_changes_the_answer_fails_validation(tmp_path):
    from models import tiny_config

    torch.manual_seed(0)
    model = TripleLengthBert(tiny_config("bert", "feature-extraction")).eval()
    with pytest.raises(hts.ValidationError) as e:
        hts.export(model, tmp_path / "o", backend="aoti", shapes="dynamic")
    msg = str(e.value)
    assert "the exported dynamic module does not match the eager model" in msg and "(1x3)" in msg
    assert not (tmp_path / "o").exists()
