"""Bad input: each case gets a clear message naming the problem and the fix, and nothing half-written."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import hf_torchscript as hts
from hf_torchscript.cli import main
from hf_torchscript.exporter import artifact


def test_model_path_missing(tmp_path):
    with pytest.raises(hts.SourceError, match=r"MODEL '.*nope' not found: no such directory, and not a model id"):
        hts.export(tmp_path / "nope", tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_hub_id_resolves_from_the_local_cache_offline(tiny_model_dir, tmp_path, monkeypatch):
    # The layout huggingface_hub writes: models--ORG--NAME/{refs/main, snapshots/REVISION/...}.
    repo = tmp_path / "cache" / "models--acme--tiny-bert"
    snap = repo / "snapshots" / "0123456789abcdef"
    shutil.copytree(tiny_model_dir("bert"), snap)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123456789abcdef")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    result = hts.export("acme/tiny-bert", tmp_path / "o")
    assert result.manifest["source"]["model"] == "acme/tiny-bert"
    with pytest.raises(hts.SourceError, match="MODEL 'acme/other' not found: no such directory, and not a model id in the local"):
        hts.export("acme/other", tmp_path / "o2")


def test_model_dir_without_config(tmp_path):
    (tmp_path / "m").mkdir()
    with pytest.raises(hts.SourceError, match="has no config.json; pass the folder that holds config.json"):
        hts.export(tmp_path / "m", tmp_path / "o")


def test_unknown_model_type_lists_supported(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps({"model_type": "mamba"}))
    with pytest.raises(hts.UnsupportedModelError) as e:
        hts.export(tmp_path / "m", tmp_path / "o")
    assert "model_type 'mamba' is not supported; supported: albert, bert," in str(e.value)


def test_unknown_task(tiny_model_dir, tmp_path):
    with pytest.raises(hts.UnsupportedModelError, match="unknown task 'summarize'; supported tasks: feature-extraction"):
        hts.export(tiny_model_dir("bert"), tmp_path / "o", task="summarize")


def test_output_dir_not_empty_needs_force(tiny_model_dir, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(hts.ArtifactError, match=r"exists and is not empty; pass force=True to replace it"):
        hts.export(tiny_model_dir("bert"), out)
    assert (out / "keep.txt").read_text() == "mine"
    # --force replaces only an empty directory or an earlier artifact, never someone's files.
    with pytest.raises(hts.ArtifactError, match="is not empty and is not an hf-torchscript artifact"):
        hts.export(tiny_model_dir("bert"), out, force=True)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    (out / "keep.txt").unlink()
    hts.export(tiny_model_dir("bert"), out)  # empty: no --force needed
    first = artifact.sha256_file(out / "model.pt")
    hts.export(tiny_model_dir("bert"), out, force=True, shapes="buckets", buckets=(16, 32))
    assert artifact.sha256_file(out / "model.pt") != first


def test_pickle_weights_refused_unless_allowed(tiny_model_dir, tmp_path):
    import transformers

    src = tmp_path / "pickled"
    model = transformers.AutoModel.from_pretrained(str(tiny_model_dir("bert")))
    model.save_pretrained(src, safe_serialization=False) if "safe_serialization" in \
        transformers.PreTrainedModel.save_pretrained.__code__.co_varnames else None
    if not (src / "pytorch_model.bin").exists():  # transformers 5 saves safetensors only: write the pickle by hand
        src.mkdir(exist_ok=True)
        for f in tiny_model_dir("bert").iterdir():
            if f.name != "model.safetensors":
                shutil.copy(f, src / f.name)
        torch.save(model.state_dict(), src / "pytorch_model.bin")
    (src / "model.safetensors").unlink(missing_ok=True)
    with pytest.raises(hts.SourceError, match=r"weights only as pickle \(pytorch_model.bin\).*pass allow_pickle=True if you trust"):  # noqa: E501
        hts.export(src, tmp_path / "o")
    result = hts.export(src, tmp_path / "o", allow_pickle=True)
    assert result.manifest["source"]["weights"] == "pickle"


def test_remote_code_refused_unless_trusted(tiny_model_dir, tmp_path):
    src = tmp_path / "remote"
    shutil.copytree(tiny_model_dir("bert"), src)
    cfg = json.loads((src / "config.json").read_text())
    cfg["auto_map"] = {"AutoModel": "modeling_custom.CustomModel"}
    (src / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(hts.SourceError, match="needs custom code from the model repository.*pass trust_remote_code=True"):
        hts.export(src, tmp_path / "o")


@pytest.fixture(scope="module")
def artifact_dir(tmp_path_factory):
    from models import save_tiny

    base = tmp_path_factory.mktemp("art")
    src = save_tiny("bert", "fill-mask", base / "src")
    hts.export(src, base / "out", task="fill-mask", max_length=24)
    return base / "out"


def test_text_longer_than_max_length_truncates_with_warning(artifact_dir):
    model = hts.load(artifact_dir)
    with pytest.warns(UserWarning, match=r"1 input\(s\) have up to 42 tokens, more than this artifact's max length 24; they were truncated"):  # noqa: E501
        out = model(["the [MASK] " * 20])
    assert len(out) == 1


def test_text_longer_than_max_length_errors_when_asked(artifact_dir):
    model = hts.load(artifact_dir, truncation="error")
    with pytest.raises(hts.InputError, match="more than this artifact's max length 24; shorten them"):
        model(["the [MASK] " * 20])


def test_empty_input_list(artifact_dir):
    with pytest.raises(hts.InputError, match="no input"):
        hts.load(artifact_dir)([])


def test_fill_mask_without_mask_token(artifact_dir):
    with pytest.raises(hts.InputError, match=r"text 0 has no \[MASK\] token"):
        hts.load(artifact_dir)(["the city"])


def test_tampered_model_is_refused(artifact_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(artifact_dir, bad)
    with open(bad / "model.pt", "ab") as f:
        f.write(b"\0")
    with pytest.raises(hts.ArtifactError, match="sha256 .* does not match manifest.json.*modified or replaced"):
        hts.load(bad)


def test_edited_manifest_is_refused(artifact_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(artifact_dir, bad)
    m = json.loads((bad / "manifest.json").read_text())
    m["max_length"] = 4096
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(hts.ArtifactError, match="differs from the manifest embedded in model.pt"):
        hts.load(bad)


def test_wrong_rank_dtype_and_mismatched_shapes_at_run_time(artifact_dir):
    model = hts.load(artifact_dir)
    ids = torch.randint(5, 40, (2, 7))
    ones = torch.ones_like(ids)
    with pytest.raises(hts.InputError, match=r"input input_ids must have rank 2 \(batch_size, sequence_length\), got shape \(7,\)"):  # noqa: E501
        model.run(input_ids=ids[0], attention_mask=ones[0], token_type_ids=ones[0])
    with pytest.raises(hts.InputError, match="input attention_mask has length 6 but input_ids has 7; pass inputs of one shape"):
        model.run(input_ids=ids, attention_mask=ones[:, :6], token_type_ids=ones)
    with pytest.raises(hts.InputError, match=r"input input_ids must be int64 \(token ids\), got float32"):
        model.run(input_ids=ids.float(), attention_mask=ones, token_type_ids=ones)
    module = torch.jit.load(str(artifact_dir / "model.pt"))  # the same check inside TorchScript, for C++ callers
    with pytest.raises(torch.jit.Error, match="hf-torchscript: input input_ids must be int64, got float32"):
        module(ids.float(), ones, ones)
    with pytest.raises(torch.jit.Error, match="hf-torchscript: input attention_mask must be int64, got int32"):
        module(ids, ones.int(), ones)
    with pytest.raises(hts.InputError, match="is empty"):
        model.run(input_ids=ids[:, :0], attention_mask=ones[:, :0], token_type_ids=ones[:, :0])
    takes = r"this artifact takes input_ids, attention_mask, token_type_ids \(token_type_ids: zeros if left out\)"
    with pytest.raises(hts.InputError, match="^missing input attention_mask; " + takes):
        model.run(input_ids=ids, token_type_ids=ones)
    with pytest.raises(hts.InputError, match="^missing inputs input_ids, attention_mask; " + takes):
        model.run(token_type_ids=ones)
    with pytest.raises(hts.InputError, match="^unknown input position_ids; " + takes):
        model.run(input_ids=ids, attention_mask=ones, position_ids=ones)
    with pytest.raises(hts.InputError, match="^expected at most 3 tensors"):
        model.run(ids, ones, ones, ones)


def test_length_zero_and_over_limit_raise_inside_torchscript(artifact_dir):
    module = torch.jit.load(str(artifact_dir / "model.pt"))
    empty = torch.zeros(2, 0, dtype=torch.long)
    with pytest.raises(torch.jit.Error, match="input_ids has length 0; pass at least one token per row"):
        module(empty, empty, empty)
    long = torch.ones(1, 25, dtype=torch.long)
    with pytest.raises(torch.jit.Error, match="input length 25 exceeds the maximum 24 this artifact accepts"):
        module(long, long, long)


def test_failed_export_leaves_no_output_and_keeps_earlier_artifact(tiny_model_dir, tmp_path, monkeypatch):
    out = tmp_path / "o"
    hts.export(tiny_model_dir("bert"), out)
    before = artifact.sha256_file(out / "model.pt")

    from hf_torchscript.exporter import parity

    def failing_grid(*a, **k):
        from hf_torchscript.exporter.parity import ValidationReport

        return ValidationReport(passed=False, atol=1e-4, rtol=1e-4, failures=["last_hidden_state at (3x5): max diff 1"])

    monkeypatch.setattr(parity, "run_grid", failing_grid)
    with pytest.raises(hts.ValidationError, match="does not match the eager model in 1 checks.*nothing was written"):
        hts.export(tiny_model_dir("bert"), out, force=True, shapes="dynamic")
    with pytest.raises(hts.ValidationError):
        hts.export(tiny_model_dir("bert"), tmp_path / "new")
    assert artifact.sha256_file(out / "model.pt") == before
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"], "no staging dirs may be left behind"


def test_interrupted_export_leaves_nothing(tiny_model_dir, tmp_path, monkeypatch):
    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(artifact, "write_manifest", interrupt)
    with pytest.raises(KeyboardInterrupt):
        hts.export(tiny_model_dir("bert"), tmp_path / "o")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"batch_size": 0}, "batch size must be >= 1, got 0"),
        ({"buckets": (32, 16)}, r"buckets must be strictly increasing, got \[32, 16\]; sort them, e.g. buckets=\(16, 32\)"),
        ({"buckets": (16, 16)}, "buckets must be strictly increasing"),
        ({"buckets": ()}, "buckets are empty"),
        ({"shapes": "static", "buckets": (16,)}, "buckets only applies to shapes='buckets'"),
        ({"static_batch": True}, "static_batch=True needs shapes='static'"),
        ({"shapes": "elastic"}, "unknown shape strategy 'elastic'; choose one of auto, dynamic, buckets, static"),
        ({"sequence_length": 0}, "sequence length must be >= 1"),
        ({"dtype": "int4"}, "unknown dtype 'int4'"),
        ({"not_an_option": 1}, "export\\(\\) accepts these options: task, batch_size"),
    ],
)
def test_bad_options(kwargs, message, tiny_model_dir, tmp_path):
    with pytest.raises(hts.OptionError, match=message):
        hts.export(tiny_model_dir("bert"), tmp_path / "o", **kwargs)
    assert not (tmp_path / "o").exists()


def test_bucket_above_max_positions(tiny_model_dir, tmp_path):
    with pytest.raises(hts.ShapeError, match=r"bucket 256 is above the model's max positions \(128\); use buckets <= 128"):
        hts.export(tiny_model_dir("bert"), tmp_path / "o", shapes="buckets", buckets=(16, 256))


def test_cli_formats_errors_once_with_exit_code_1(tmp_path, capsys):
    rc = main(["export", str(tmp_path / "nope"), str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert err[0].startswith("error: MODEL ") and "not found" in err[0]
    assert err[1] == "(set HF_TORCHSCRIPT_DEBUG=1 for the full traceback)"


def test_cli_run_without_texts(artifact_dir, capsys):
    assert main(["run", str(artifact_dir)]) == 1
    assert "no input texts; pass at least one TEXT" in capsys.readouterr().err
