"""bf16 / int8 / frozen exports: validated against the fp32 eager model, honest about their tolerance.

Each export is checked here again, independently of the exporter's own grid: the eager transformers
model on padded batches at lengths other than the traced one, row by row on valid positions.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from reference import eager_model, random_batch

import hf_torchscript as hts
from hf_torchscript.cli import main as cli_main
from hf_torchscript.errors import ValidationError
from hf_torchscript.exporter.parity import REDUCED_PRECISION, Tolerance, compare_inputs

VARIANTS = {
    "bf16": dict(dtype="bfloat16"),
    "int8": dict(quantize="dynamic-int8"),
    "frozen": dict(optimize=True),
    "packed": dict(pack_linears=True),
}


@pytest.fixture(scope="module")
def exports(tiny_model_dir, tmp_path_factory):
    """One fill-mask export per variant (module-scoped: each export runs its full validation grid)."""
    src = tiny_model_dir("bert", "fill-mask")
    out = {}
    for name, kw in VARIANTS.items():
        d = tmp_path_factory.mktemp(name) / "art"
        out[name] = (hts.export(src, d, shapes="dynamic", **kw), d)
    return src, out


def _row_cosines(got: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    keep = mask.bool()
    return torch.nn.functional.cosine_similarity(got[keep].double(), ref[keep].double(), dim=-1)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_export_matches_eager_fp32_at_other_shapes_with_padding(exports, variant):
    src, results = exports
    result, d = results[variant]
    eager = eager_model(src, "bert", "fill-mask")
    module = torch.jit.load(str(d / "model.pt"))
    for length, seed in ((5, 1), (23, 2), (77, 3)):  # traced at 16
        batch = random_batch(result.manifest, 3, length, seed=seed)
        assert int(batch["attention_mask"].sum()) < batch["attention_mask"].numel()  # some padding
        args = [batch[i["name"]] for i in result.manifest["inputs"]]
        (got,) = module(*args)
        with torch.no_grad():
            ref = eager(**batch).logits
        assert got.dtype == torch.float32  # the float32 output contract holds for every variant
        valid = batch["attention_mask"].bool()
        if variant in ("frozen", "packed"):
            # fp32, optimized: the fp32 tolerance, not a loosened one.
            assert torch.allclose(got[valid], ref[valid], atol=1e-4, rtol=1e-4)
        else:
            floor = REDUCED_PRECISION["bfloat16" if variant == "bf16" else "dynamic-int8"]["min_cosine"]
            assert float(_row_cosines(got, ref, valid).min()) >= floor
            agree = (got[valid].argmax(-1) == ref[valid].argmax(-1)).double().mean()
            assert float(agree) >= 0.9  # near-ties may flip, most rows must not
            assert not torch.equal(got[valid], ref[valid])  # really computed in reduced precision


def test_manifest_states_mode_and_thresholds(exports):
    _, results = exports
    bf16 = results["bf16"][0].manifest
    assert bf16["dtype"] == "bfloat16"
    assert bf16["validation"]["mode"] == "cosine"
    assert bf16["validation"]["thresholds"] == REDUCED_PRECISION["bfloat16"]
    assert bf16["validation"]["min_cosine"]["logits"] >= REDUCED_PRECISION["bfloat16"]["min_cosine"]
    assert bf16["validation"]["top1_agreement"]["logits"] == 1.0
    assert bf16["outputs"][0]["dtype"] == "float32"
    assert "cast back to float32" in bf16["precision"]["compute"]

    int8 = results["int8"][0].manifest
    assert int8["quantize"] == "dynamic-int8" and int8["validation"]["mode"] == "cosine"
    assert int8["validation"]["thresholds"] == REDUCED_PRECISION["dynamic-int8"]

    frozen = results["frozen"][0].manifest
    assert frozen["optimize"] is True and frozen["precision"]["optimizations"] == ["torch.jit.freeze"]
    assert frozen["validation"]["mode"] == "allclose"
    assert frozen["validation"]["thresholds"] == {"atol": 1e-4, "rtol": 1e-4}

    packed = results["packed"][0].manifest
    assert packed["precision"]["optimizations"] == ["onednn-packed-linear"] and packed["optimize"] is False
    assert packed["validation"]["mode"] == "allclose" and packed["validation"]["thresholds"] == {"atol": 1e-4,
                                                                                                  "rtol": 1e-4}


def test_packed_linears_pack_at_load_and_save_plain_weights(exports):
    """--pack-linears: the loaded module holds oneDNN-reordered weights (its __setstate__ ran), the file plain ones
    equal to the checkpoint's, and the tied output projection keeps the embedding's single copy."""
    from hf_torchscript.deprecation import jit_api

    src, results = exports
    d = results["packed"][1]
    eager = eager_model(src, "bert", "fill-mask")
    with jit_api():
        module = torch.jit.load(str(d / "model.pt"))
    packed = {name: m for name, m in module.named_modules() if m.original_name == "PackedLinear"}
    plain = {name: m for name, m in eager.named_modules() if isinstance(m, torch.nn.Linear)}
    assert packed and all(m.packed.is_mkldnn for m in packed.values())
    # every Linear but the decoder (its weight is the word embedding's) is packed
    inner = {n.split(".model.", 1)[1]: m for n, m in packed.items()}  # traces.0.model.<the model's own name>
    assert set(inner) == {n for n in plain if n != "cls.predictions.decoder"}
    for name, m in inner.items():
        assert torch.equal(m._c._get_method("__getstate__")()[0], plain[name].weight)  # what the file holds


def test_artifacts_reload_with_plain_torch(exports):
    """A process with neither transformers nor hf_torchscript loads and runs every variant."""
    _, results = exports
    code = (
        "import json, sys, torch\n"
        "for d in sys.argv[1:]:\n"
        "    m = torch.jit.load(d + '/model.pt')\n"
        "    ids = torch.randint(5, 100, (2, 9)); mask = torch.ones_like(ids); mask[1, 4:] = 0\n"
        "    (out,) = m(ids, mask, torch.zeros_like(ids))\n"
        "    print(json.dumps([list(out.shape), str(out.dtype), bool(torch.isfinite(out).all())]))\n"
        "assert 'transformers' not in sys.modules and 'hf_torchscript' not in sys.modules\n"
    )
    dirs = [str(results[v][1]) for v in VARIANTS]
    proc = subprocess.run([sys.executable, "-c", code, *dirs], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(l) for l in proc.stdout.splitlines()]
    assert lines == [[[2, 9, 128], "torch.float32", True]] * len(VARIANTS)


def test_revalidate_uses_the_recorded_mode(exports):
    src, results = exports
    # The public function, called after exports have imported every submodule (it once got shadowed).
    report = hts.validate(results["bf16"][1], src)
    assert report.passed and report.mode == "cosine"
    assert report.thresholds == REDUCED_PRECISION["bfloat16"]


def test_corrupted_reduced_precision_module_is_rejected(tiny_model_dir, tmp_path, monkeypatch):
    """The cosine check can fail: noise in the bf16 copy's weights is caught and nothing is written."""
    import hf_torchscript.exporter.prepare as prepare

    real = prepare.convert

    def corrupt(wrapper, opts, p=None):
        module = real(wrapper, opts, p)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for lin in [m for m in module.modules() if isinstance(m, torch.nn.Linear)]:
                lin.weight.add_((torch.randn(lin.weight.shape, generator=g) * lin.weight.float().std()).to(lin.weight.dtype))
        return module

    monkeypatch.setattr(prepare, "convert", corrupt)
    out = tmp_path / "art"
    with pytest.raises(ValidationError) as e:
        hts.export(tiny_model_dir("bert", "fill-mask"), out, dtype="bfloat16", shapes="dynamic")
    assert "min cosine" in str(e.value) and "< 0.995" in str(e.value)
    assert "cosine >= 0.995 per row" in str(e.value)
    assert not out.exists()


def test_cosine_mode_catches_scale_and_top1_and_fp32_is_not_loosened():
    from hf_torchscript.exporter.inputs import InputSpec, OutputSpec

    specs = [InputSpec("input_ids", "int64", ("batch_size", "sequence_length"), 0),
             InputSpec("attention_mask", "int64", ("batch_size", "sequence_length"), 0)]
    outputs = [OutputSpec("logits", "float32", ("batch_size", "sequence_length", 7))]
    w = torch.randn(50, 7, generator=torch.Generator().manual_seed(1)) * 3

    def ref(ids, mask):
        return (w[ids] * mask[..., None],)

    ids = torch.tensor([[3, 4, 5, 6], [7, 8, 0, 0]])
    inputs = {"input_ids": ids, "attention_mask": (ids != 0).long()}
    cosine = Tolerance("cosine", 1e-4, 1e-4, 0.995, 0.05, 0.02)

    def run(fn, tol):
        return compare_inputs(fn, ref, specs, outputs, inputs, "case", atol=1e-4, rtol=1e-4, tolerance=tol)

    assert run(lambda *a: ref(*a), cosine) == []
    # 1.2x everywhere: cosine 1.0, but the norm check rejects it.
    assert any("norm off by 0.2" in f for f in run(lambda *a: (ref(*a)[0] * 1.2,), cosine))
    # Swap the two largest logits of every row: cosine stays high-ish, top-1 flips.
    def swapped(*a):
        (x,) = ref(*a)
        top2 = x.topk(2, -1).indices
        y = x.clone()
        y.scatter_(-1, top2, x.gather(-1, top2.flip(-1)))
        return (y,)
    assert any("top-1 differs from eager" in f for f in run(swapped, cosine))
    # Garbage in padded positions is ignored (valid positions only), in both modes.
    def noisy_padding(*a):
        (x,) = ref(*a)
        return (torch.where(a[1][..., None].bool(), x, torch.full_like(x, 1e3)),)
    assert run(noisy_padding, cosine) == []
    # fp32 mode: a 1e-3 error that cosine would accept is rejected by atol/rtol.
    small = lambda *a: (ref(*a)[0] + 1e-3,)  # noqa: E731
    assert run(small, cosine) == []
    fails = run(small, None)
    assert fails and "> atol 0.0001 + rtol 0.0001*|eager|" in fails[0]


def test_cli_export_flags(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    rc = cli_main(["export", str(tiny_model_dir("bert", "text-classification")), str(out),
                   "--dtype", "bfloat16", "--optimize", "--shapes", "dynamic"])
    assert rc == 0
    m = json.loads((out / "manifest.json").read_text())
    assert (m["dtype"], m["optimize"], m["validation"]["mode"]) == ("bfloat16", True, "cosine")
    assert "validation passed (cosine)" in capsys.readouterr().out
    rc = cli_main(["export", str(tiny_model_dir("bert", "text-classification")), str(tmp_path / "x"),
                   "--dtype", "bfloat16", "--quantize", "dynamic-int8"])
    assert rc == 1
    assert "--quantize dynamic-int8 works on a float32 model; drop --dtype or --quantize" in capsys.readouterr().err


@pytest.mark.parametrize("kw, flag", [(dict(optimize=True), "--optimize"), (dict(quantize="dynamic-int8"), "--quantize")])
def test_optimize_and_quantize_are_torchscript_only(kw, flag):
    from hf_torchscript.errors import OptionError
    from hf_torchscript.options import ExportOptions

    with pytest.raises(OptionError) as e:
        ExportOptions(backend="neuronx", **kw)
    # Python callers read keyword names (the CLI renders the same error with flags: test_cli.py).
    name = flag.lstrip("-")
    assert f"{name} applies to the torchscript backend only" in str(e.value)
    assert f"drop {name} or use backend='torchscript'" in str(e.value)


def test_packed_artifact_on_a_torch_without_onednn_is_one_line(exports, monkeypatch):
    """Its __setstate__ packs with oneDNN at load: without it, say so before torch.jit.load fails inside."""
    from hf_torchscript.errors import ArtifactError

    d = exports[1]["packed"][1]
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    with pytest.raises(ArtifactError) as e:
        hts.load(d)
    assert "\n" not in str(e.value) and "exported with --pack-linears, which needs oneDNN" in str(e.value)
    assert "re-export it without --pack-linears" in str(e.value)
    hts.load(exports[1]["frozen"][1])  # the others do not care


@pytest.mark.parametrize("kw, named", [
    (dict(backend="aoti"), "backend='aoti'"), (dict(dtype="bfloat16"), "dtype='bfloat16'"),
    (dict(quantize="dynamic-int8"), "quantize='dynamic-int8'"), (dict(optimize=True), "optimize=True"),
    (dict(onednn_fusion=True, shapes="static"), "onednn_fusion=True"), (dict(shapes="buckets"), "shapes='buckets'"),
])
def test_pack_linears_refuses_what_it_cannot_pack_in_one_line(kw, named):
    from hf_torchscript.errors import OptionError
    from hf_torchscript.options import ExportOptions

    with pytest.raises(OptionError) as e:
        ExportOptions(pack_linears=True, **kw)
    text = str(e.value)
    assert "\n" not in text and f"drop {named}" in text and "or drop pack_linears" in text, text
