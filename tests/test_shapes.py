"""Any input size, proven. Buckets, static, dynamic, auto; the grid rejects baked shapes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import zipfile

import pytest
import torch
import transformers
from reference import assert_close_valid, eager_model, eager_outputs, random_batch

import hf_torchscript as hts
from hf_torchscript.cli import main
from hf_torchscript.compat import traceable, transformers_major
from hf_torchscript.exporter.inputs import OutputSpec, input_specs
from hf_torchscript.exporter.parity import build_grid, check

MANY = textwrap.dedent(
    """
    import sys
    sys.modules["transformers"] = None
    sys.modules["hf_torchscript"] = None
    import torch
    module = torch.jit.load(sys.argv[1])
    cases = torch.load(sys.argv[2])
    results = []
    for args in cases:
        try:
            results.append(module(*args))
        except Exception as e:
            results.append(str(e).strip().splitlines()[-1])
    torch.save(results, sys.argv[3])
    """
)


def run_many_clean(model_pt, cases, tmp_path):
    """Call a plain torch.jit.load-ed model.pt on many inputs, in a process without our code."""
    torch.save(cases, tmp_path / "cases.pt")
    proc = subprocess.run([sys.executable, "-c", MANY, str(model_pt), str(tmp_path / "cases.pt"), str(tmp_path / "r.pt")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return torch.load(tmp_path / "r.pt")


@pytest.fixture(scope="module")
def bucketed(tmp_path_factory):
    from models import save_tiny

    base = tmp_path_factory.mktemp("buckets")
    src = save_tiny("bert", "token-classification", base / "src")
    result = hts.export(src, base / "out", shapes="buckets", buckets=(16, 32, 64, 128))
    return src, base / "out", result.manifest


def test_buckets_manifest(bucketed):
    _, out, m = bucketed
    s = m["shapes"]
    assert s["strategy"] == "buckets" and s["buckets"] == [16, 32, 64, 128] and s["max_length"] == 128
    assert [t["sequence_length"] for t in s["traced"]] == [16, 32, 64, 128]
    lengths = {c["shape"]["sequence_length"] for c in m["validation"]["cases"]}
    assert {15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128} <= lengths, "grid must hit every bucket edge"


@pytest.mark.slow
def test_buckets_every_length_and_batch_in_a_clean_process(bucketed, tmp_path):
    src, out, m = bucketed
    eager = eager_model(src, "bert", "token-classification")
    cases = [(1 + (L % 4), L) for L in range(1, 129)] + [(B, L) for B in range(1, 17) for L in (7, 16, 33)]
    inputs = [random_batch(m, B, L, seed=B * 1000 + L) for B, L in cases]
    results = run_many_clean(out / "model.pt", [tuple(x.values()) for x in inputs], tmp_path)
    for (B, L), x, got in zip(cases, inputs, results):
        assert not isinstance(got, str), f"({B},{L}) raised {got}"
        want = eager_outputs(eager, m, x)["logits"]
        assert_close_valid(got[0], want, m["outputs"][0], x["attention_mask"], what=f"({B},{L})")


def test_buckets_over_the_largest_bucket_error_in_torchscript(bucketed, tmp_path):
    _, out, m = bucketed
    x = random_batch(m, 2, 129)
    [err] = run_many_clean(out / "model.pt", [tuple(x.values())], tmp_path)
    assert "hf-torchscript: input length 129 exceeds the maximum 128 this artifact accepts" in err


def _tensor_bytes(model_pt) -> int:
    with zipfile.ZipFile(model_pt) as z:
        return sum(i.file_size for i in z.infolist() if "/data/" in i.filename)


def test_bucket_weights_are_stored_once(bucketed, tmp_path):
    src, out, _ = bucketed
    hts.export(src, tmp_path / "dyn", shapes="dynamic")
    assert _tensor_bytes(out / "model.pt") == _tensor_bytes(tmp_path / "dyn" / "model.pt")


def test_runtime_and_cli_use_buckets_transparently(bucketed, capsys):
    _, out, _ = bucketed
    texts = ["jim henson was a puppeteer", "the city " * 20]
    model = hts.load(out)
    results = model(texts)
    assert [len(r) for r in results] == [5, 40]  # one entry per real token, padding sliced away
    assert {r["label"] for row in results for r in row} <= {"O", "B-PER", "I-PER", "B-LOC", "I-LOC"}
    assert main(["run", str(out), *texts, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)["results"]
    assert [[t["label"] for t in r["output"]["tokens"]] for r in printed] == [[t["label"] for t in row] for row in results]


def test_auto_picks_dynamic_when_the_grid_proves_it(tiny_model_dir, tmp_path):
    m = hts.export(tiny_model_dir("gpt2"), tmp_path / "o").manifest
    assert m["shapes"]["strategy"] == "dynamic" and m["shapes"]["requested"] == "auto"
    assert m["shapes"]["reason"].startswith("dynamic: the validation grid passed")


class LengthBakedBert(transformers.BertModel):
    """Bakes the traced length: int() makes it a constant, as real models do with Python shape math."""

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, **kwargs):
        length = int(input_ids.shape[-1])
        kwargs["position_ids"] = torch.arange(length).unsqueeze(0)
        return super().forward(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                               **kwargs)


@pytest.fixture(scope="module")
def baked_model():
    from models import tiny_config

    torch.manual_seed(0)
    return LengthBakedBert(tiny_config("bert", "feature-extraction")).eval()


def test_auto_falls_back_to_buckets_for_a_length_baking_model(baked_model, tmp_path):
    # No buckets=: given buckets mean "use buckets" (no dynamic attempt); max_length=128 makes the
    # default buckets 16, 32, 64, 128.
    result = hts.export(baked_model, tmp_path / "o", max_length=128)
    s = result.manifest["shapes"]
    assert s["strategy"] == "buckets" and s["buckets"] == [16, 32, 64, 128]
    # The baked length shows up as wrong values (transformers 5 broadcasts the baked position ids)
    # or as a shape error at another length (4.x adds them in place); either way dynamic is refused.
    assert "after dynamic failed (" in s["reason"]
    assert "last_hidden_state at" in s["reason"] or "exported module raised" in s["reason"]
    assert any("Converting a tensor to a Python integer" in w for w in result.manifest["tracer_warnings"])
    # ... and the bucketed module is right at lengths between buckets, vs the eager model.
    module = torch.jit.load(str(tmp_path / "o" / "model.pt"))
    for B, L in [(1, 3), (3, 20), (2, 100)]:
        x = random_batch(result.manifest, B, L, seed=L)
        with torch.no_grad():
            want = baked_model(**x)
        got = module(*x.values())
        assert_close_valid(got[0], want.last_hidden_state, result.manifest["outputs"][0], x["attention_mask"])


def test_dynamic_is_refused_for_a_length_baking_model(baked_model, tmp_path):
    with pytest.raises(hts.ValidationError) as e:
        hts.export(baked_model, tmp_path / "o", shapes="dynamic")
    msg = str(e.value)
    assert "the exported dynamic module does not match the eager model" in msg
    assert "try shapes='buckets'" in msg  # the Python API's spelling; the CLI says --shapes buckets
    assert "exported module raised" in msg or "max diff" in msg
    assert not (tmp_path / "o").exists()


def test_grid_rejects_gpt2_traced_at_batch_1_without_a_mask(tiny_model_dir):
    """The classic failure: GPT-2 traced at batch 1 with no mask breaks at batch 2."""
    model = transformers.AutoModel.from_pretrained(str(tiny_model_dir("gpt2"))).eval()

    class NoMask(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return (self.m(input_ids=input_ids, use_cache=False).last_hidden_state,)

    with torch.no_grad(), traceable():  # transformers 4.x masks need it to trace at all (see compat.py)
        baked = torch.jit.trace(NoMask(model), (torch.randint(5, 100, (1, 16)), torch.ones(1, 16, dtype=torch.long)),
                                check_trace=False)

    def eager(input_ids, attention_mask):
        pos = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            return (model(input_ids=input_ids, attention_mask=attention_mask, position_ids=pos,
                          use_cache=False).last_hidden_state,)

    specs = input_specs(["input_ids", "attention_mask"], config=model.config, pad_token_id=0)
    outputs = [OutputSpec("last_hidden_state", "float32", ("batch_size", "sequence_length", 32))]
    grid = build_grid("dynamic", traced_batch=1, traced_length=16, max_length=128, decoder=True)
    report = check(baked, eager, specs, outputs, grid, atol=1e-4, rtol=1e-4, vocab_size=128, avoid_ids=(0,))
    assert not report.passed
    # Every batch > 1 breaks with the error users hit, including at the traced length itself.
    assert any(f.startswith("(4x16) ") and "index 1 is out of bounds for dimension 0 with size 1" in f
               for f in report.failures), report.failures[:5]
    assert all(c["ok"] for c in report.cases if c["shape"]["batch_size"] == 1)


def test_llama_traced_at_length_1_is_decided_by_the_grid(tiny_model_dir, tmp_path):
    """Tracing at length 1 is the classic way to bake a shape; the grid decides, on either stack.

    torch 2.13 + transformers 5: llama's attention reshapes keep the traced length (1), so every
    other length raises and the export is refused. torch 2.9 + transformers 4.57: the same trace
    generalises (the mask is materialised while tracing and no reshape keeps the length), so the
    export passes the grid, and must then match eager at other lengths, with padding.
    """
    src = tiny_model_dir("llama")
    if transformers_major() >= 5:
        with pytest.raises(hts.ValidationError, match="does not match the eager model"):
            hts.export(src, tmp_path / "o", shapes="dynamic", sequence_length=1)
        assert not (tmp_path / "o").exists()
        return
    m = hts.export(src, tmp_path / "o", shapes="dynamic", sequence_length=1).manifest
    assert m["shapes"]["traced"] == [{"batch_size": m["shapes"]["traced"][0]["batch_size"], "sequence_length": 1}]
    eager = eager_model(src, "llama", "feature-extraction")
    module = torch.jit.load(str(tmp_path / "o" / "model.pt"))
    for B, L in [(3, 7), (2, 40)]:
        x = random_batch(m, B, L, seed=L, padding="left")
        got = dict(zip([o["name"] for o in m["outputs"]], module(*x.values())))
        want = eager_outputs(eager, m, x)
        for o in m["outputs"]:
            assert_close_valid(got[o["name"]], want[o["name"]], o, x["attention_mask"], what=f"({B}x{L})")


def test_static_pads_to_its_length_and_runtime_is_transparent(tiny_model_dir, tmp_path):
    src = tiny_model_dir("roberta", "text-classification")
    m = hts.export(src, tmp_path / "o", shapes="static", sequence_length=48).manifest
    s = m["shapes"]
    assert s["strategy"] == "static" and s["max_length"] == 48 and s["batch_size"] is None
    eager = eager_model(src, "roberta", "text-classification")
    model = hts.load(tmp_path / "o")
    for B, L in [(1, 5), (3, 48), (5, 30)]:
        x = random_batch(m, B, L, seed=L)
        torch.testing.assert_close(model.run(**x)["logits"], eager_outputs(eager, m, x)["logits"], atol=1e-4, rtol=1e-4)


def test_static_batch_splits_and_pads_batches(tiny_model_dir, tmp_path):
    src = tiny_model_dir("distilbert", "question-answering")
    m = hts.export(src, tmp_path / "o", shapes="static", sequence_length=32, batch_size=2, static_batch=True).manifest
    assert m["shapes"]["batch_size"] == 2
    assert {c["shape"]["batch_size"] for c in m["validation"]["cases"]} == {1, 2, 3}
    eager = eager_model(src, "distilbert", "question-answering")
    module = torch.jit.load(str(tmp_path / "o" / "model.pt"))
    x = random_batch(m, 5, 19, seed=5)
    got = module(*x.values())
    want = eager_outputs(eager, m, x)
    for o, g in zip(m["outputs"], got):
        assert_close_valid(g, want[o["name"]], o, x["attention_mask"])


def test_grid_shape_edges_and_paddings():
    grid = build_grid("buckets", traced_batch=2, traced_length=16, max_length=64, lengths=[16, 64], decoder=True)
    lengths = sorted({c.dims["sequence_length"] for c in grid})
    assert lengths == [1, 15, 16, 17, 63, 64]
    assert {c.dims["batch_size"] for c in grid} == {1, 4}
    big = [c for c in grid if c.dims["batch_size"] == 4][0]
    assert big.patterns == ("full", "right", "first", "left")
    dyn = build_grid("dynamic", traced_batch=2, traced_length=16, max_length=128)
    assert sorted({c.dims["sequence_length"] for c in dyn}) == [1, 2, 15, 16, 17, 33, 128]
    assert all("left" not in c.patterns for c in dyn), "encoders are not left padded"


def test_vision_has_no_sequence_axis(tiny_model_dir, tmp_path):
    with pytest.raises(hts.ShapeError, match="vit inputs have no sequence axis; buckets do not apply"):
        hts.export(tiny_model_dir("vit", "image-classification"), tmp_path / "o", shapes="buckets")
