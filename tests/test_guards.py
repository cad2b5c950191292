"""Guards that matter, each with a test that fails without it (fast and deterministic: no race, no big model).

- prepare.check_axes: a model whose outputs contradict its task's declared axes is refused before tracing;
- the int8 validation bar (parity.REDUCED_PRECISION): an output that drifts beyond it fails validation;
- the int8 sensitivity pass (quantize.quantize): the layer that breaks int8 is the one kept in float32;
- atomic.commit: OUTPUT_DIR is a complete artifact (the old one or the new one) at every moment of the swap.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

import hf_torchscript as hts
from hf_torchscript import atomic
from hf_torchscript.errors import TraceError, ValidationError
from hf_torchscript.exporter.parity import REDUCED_PRECISION, tolerance_for
from hf_torchscript.exporter.prepare import check_axes
from hf_torchscript.exporter.quantize import Calibration, quantize

# ------------------------------------------------------------------------------------------ check_axes

def test_check_axes_refuses_outputs_that_contradict_the_declaration():
    dims_a, dims_b = {"batch_size": 2, "sequence_length": 7}, {"batch_size": 3, "sequence_length": 5}
    # What text-classification declares, (batch_size, *), and a model that fits it: the label axis is fixed.
    assert check_axes("logits", ("batch_size", "*"), (2, 4), dims_a, (3, 4), dims_b, "m", "t") == ("batch_size", 4)
    # A per-token output where a per-row one is declared: the rank differs.
    with pytest.raises(TraceError, match=r"output logits has shape \(2, 7, 4\).*declares axes \(batch_size, \*\)"):
        check_axes("logits", ("batch_size", "*"), (2, 7, 4), dims_a, (3, 5, 4), dims_b, "m", "t")
    # A "fixed" axis that follows the sequence length: tracing would bake one length in.
    with pytest.raises(TraceError, match="does not fit the task"):
        check_axes("logits", ("batch_size", "*"), (2, 7), dims_a, (3, 5), dims_b, "m", "t")
    # A symbolic axis that does not follow its input.
    with pytest.raises(TraceError, match="does not fit the task"):
        check_axes("x", ("batch_size", "sequence_length"), (2, 7), dims_a, (3, 7), dims_b, "m", "t")


def test_export_refuses_a_model_whose_outputs_contradict_the_task(tmp_path):
    """End to end: a token classifier exported as text-classification returns per-token logits."""
    from transformers import BertConfig, BertForTokenClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=64, num_labels=3)
    model = BertForTokenClassification(config).eval()
    with pytest.raises(TraceError, match=r"output logits has shape .* task text-classification declares axes"):
        hts.export(model, tmp_path / "out", task="text-classification", progress=False)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------ the int8 bar

def _drifted(ref: torch.Tensor, cosine: float, seed: int = 0) -> torch.Tensor:
    """``ref`` rotated per row to exactly ``cosine`` with it, same norm (an independent construction)."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    r = ref.double()
    unit = r / r.norm(dim=-1, keepdim=True)
    ortho = noise - (noise * unit).sum(-1, keepdim=True) * unit
    ortho = ortho / ortho.norm(dim=-1, keepdim=True)
    sin = (1 - cosine ** 2) ** 0.5
    return ((cosine * unit + sin * ortho) * r.norm(dim=-1, keepdim=True)).float()


@pytest.mark.parametrize("scheme", ["dynamic-int8", "dynamic-int8-aten", "bfloat16"])
def test_reduced_precision_bar_rejects_drift_beyond_it(scheme):
    """The bar validation applies to a reduced-precision export (tolerance_for, from REDUCED_PRECISION): an output
    drifted just inside it passes, one drifted just past it fails. Loosen the bar and the second assert fails."""
    from hf_torchscript.exporter.inputs import InputSpec, OutputSpec
    from hf_torchscript.exporter.parity import compare_inputs

    bar = REDUCED_PRECISION[scheme]["min_cosine"]
    assert 0.98 <= bar < 1, f"{scheme}'s bar {bar} is not a bar"
    tol = tolerance_for(quantize=scheme) if scheme.startswith("dynamic") else tolerance_for(scheme)
    specs = [InputSpec("input_ids", "int64", ("batch_size", "sequence_length"), 0),
             InputSpec("attention_mask", "int64", ("batch_size", "sequence_length"), 0)]
    outputs = [OutputSpec("last_hidden_state", "float32", ("batch_size", "sequence_length", 16))]
    table = torch.randn(50, 16, generator=torch.Generator().manual_seed(1))
    ids = torch.tensor([[3, 4, 5, 6], [7, 8, 0, 0]])
    inputs = {"input_ids": ids, "attention_mask": (ids != 0).long()}

    def ref(i, mask):
        return (table[i] * mask[..., None],)

    def drifted(cosine):
        return lambda i, mask: (_drifted(table, cosine)[i] * mask[..., None],)

    def run(fn):
        return compare_inputs(fn, ref, specs, outputs, inputs, scheme, atol=1e-4, rtol=1e-4, tolerance=tol)

    assert run(drifted(1 - (1 - bar) / 10)) == []
    failures = run(drifted(bar - 0.005))
    assert failures and "min cosine" in failures[0], failures


# ------------------------------------------------------------------------------------------ sensitivity pass

class Toy(nn.Module):
    """Four Linear layers; ``fragile`` reads an activation with one huge channel that it ignores, so int8 with
    per-token activation scales wipes out the channels it does use. Every other layer survives int8."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.first = nn.Linear(16, 64)
        self.second = nn.Linear(64, 64)
        self.fragile = nn.Linear(64, 64)
        self.last = nn.Linear(64, 8)
        for m in (self.first, self.second, self.fragile, self.last):
            nn.init.normal_(m.weight, std=0.2, generator=g)
            nn.init.zeros_(m.bias)
        with torch.no_grad():
            self.second.weight[0].zero_()
            self.second.bias[0] = 5000.0  # the outlier channel
            self.fragile.weight[:, 0].zero_()  # ...that fragile ignores

    def forward(self, x):
        h = torch.relu(self.first(x))
        h = self.second(h)
        return (self.last(torch.relu(self.fragile(h))),)


def test_sensitivity_pass_keeps_exactly_the_fragile_layer_float():
    model = Toy().eval()
    g = torch.Generator().manual_seed(2)
    batches = [(torch.randn(8, 16, generator=g),) for _ in range(4)]
    calib = Calibration(batches, [[None] for _ in batches], [False], "toy batches", real=[True] * len(batches))
    quantized, plan = quantize(model, "dynamic-int8-aten", calib)
    kept = [layer["name"] for layer in plan["layers"] if not layer["quantized"]]
    assert kept == ["fragile"], plan["layers"]
    ranked = max(plan["layers"], key=lambda layer: layer["output_damage"])["name"]
    assert ranked == "fragile"
    # The independent check: the kept model is close to float, the all-int8 model is not.
    with torch.no_grad():
        x = torch.randn(32, 16, generator=g)
        ref, got = model(x)[0], quantized(x)[0]
    assert torch.nn.functional.cosine_similarity(got, ref, dim=-1).min() > 0.995
    assert plan["calibration"]["all_int8"]["real text, output 0"]["min_cosine"] < 0.9


def test_sensitivity_pass_refuses_when_nothing_can_be_int8():
    model = Toy().eval()
    batches = [(torch.randn(8, 16, generator=torch.Generator().manual_seed(3)),)]
    calib = Calibration(batches, [[None]], [False], "toy batches", real=[True])
    # A target no int8 layer can meet: the pass says so instead of returning a float model called int8.
    with pytest.raises(ValidationError, match="cannot meet .* with any Linear layer in int8"):
        quantize(model, "dynamic-int8-aten", calib, target={"min_cosine": 0.9999999999, "max_norm_error": 1e-12})


# ------------------------------------------------------------------------------------------ atomic commit

def _artifact(directory: Path, tag: str) -> Path:
    """A directory --force takes for an artifact: a manifest by hf-torchscript listing every file's sha256."""
    import hashlib
    import json

    directory.mkdir()
    (directory / "model.pt").write_text(tag)
    sha = hashlib.sha256(tag.encode()).hexdigest()
    manifest = {"producer": "hf-torchscript", "format_version": 2, "tag": tag, "sha256": sha, "files": {"model.pt": sha}}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


def _state(out: Path) -> str:
    """'old' or 'new' when OUTPUT_DIR is a complete artifact; anything else is a gap."""
    try:
        tags = {(out / "model.pt").read_text()}
        tags.add(__import__("json").loads((out / "manifest.json").read_text())["tag"])
    except OSError:
        return "missing"
    return tags.pop() if len(tags) == 1 else "torn"


@pytest.mark.parametrize("have_exchange", [True, False], ids=["renameat2", "fallback"])
def test_commit_never_leaves_output_dir_incomplete(tmp_path, monkeypatch, have_exchange):
    out = _artifact(tmp_path / "out", "old")
    staging = atomic.staging_dir(out)
    shutil.rmtree(staging)
    _artifact(staging, "new")
    seen: list[str] = []

    def observe(*_):
        seen.append(_state(out))

    if not have_exchange:
        monkeypatch.setattr(atomic, "_renameat2_fn", False)
    elif atomic._load_renameat2() is None:
        pytest.skip("this filesystem/kernel has no renameat2: the fallback case covers it")
    # Look at OUTPUT_DIR around every filesystem step commit takes, and at each of its named steps.
    real_rename, real_rmtree = os.rename, shutil.rmtree
    monkeypatch.setattr(atomic, "_HOOK", observe)
    monkeypatch.setattr(atomic.os, "rename", lambda *a, **k: (observe(), real_rename(*a, **k), observe())[1])
    monkeypatch.setattr(atomic.shutil, "rmtree", lambda *a, **k: (observe(), real_rmtree(*a, **k), observe())[1])
    atomic.commit(staging, out, force=True)
    assert _state(out) == "new"
    assert not [p for p in tmp_path.iterdir() if p.name != "out"], "leftovers beside OUTPUT_DIR"
    assert seen and set(seen) <= {"old", "new"} | ({"missing"} if not have_exchange else set()), seen
    if have_exchange:  # the whole point of RENAME_EXCHANGE: no moment without an artifact
        assert "missing" not in seen
    else:  # the documented fallback gap is exactly one step wide, between the two renames
        assert seen.count("missing") <= 3, seen
