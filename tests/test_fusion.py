"""oneDNN fusion: validated with the switch on, switched on only around calls, never left changed."""

from __future__ import annotations

import threading

import pytest
import torch
from reference import eager_model, random_batch

import hf_torchscript as hts
from hf_torchscript.errors import OptionError, ShapeError
from hf_torchscript.runtime.fusion import onednn_fusion


@pytest.fixture
def switch_off():
    before = torch.jit.onednn_fusion_enabled()
    torch.jit.enable_onednn_fusion(False)
    yield
    torch.jit.enable_onednn_fusion(before)


def test_switch_is_restored_after_nested_and_overlapping_calls(switch_off):
    with onednn_fusion():
        assert torch.jit.onednn_fusion_enabled()
        with onednn_fusion():
            pass
        assert torch.jit.onednn_fusion_enabled()  # the inner block must not switch it off under the outer one
    assert not torch.jit.onednn_fusion_enabled()

    inside, release = threading.Event(), threading.Event()

    def worker():
        with onednn_fusion():
            inside.set()
            release.wait(10)

    t = threading.Thread(target=worker)
    t.start()
    inside.wait(10)
    with onednn_fusion():
        pass  # ends while the other thread is still inside: the switch stays on for it
    assert torch.jit.onednn_fusion_enabled()
    release.set()
    t.join()
    assert not torch.jit.onednn_fusion_enabled()

    torch.jit.enable_onednn_fusion(True)  # a caller's own choice is kept
    with pytest.raises(RuntimeError):
        with onednn_fusion():
            raise RuntimeError("boom")
    assert torch.jit.onednn_fusion_enabled()


def test_fused_export_is_validated_and_leaves_the_process_as_it_was(tiny_model_dir, tmp_path, switch_off):
    src = tiny_model_dir("bert", "feature-extraction")
    out = tmp_path / "art"
    result = hts.export(src, out, onednn_fusion=True, max_length=64, sequence_length=48)
    m = result.manifest
    assert not torch.jit.onednn_fusion_enabled()
    assert m["shapes"]["strategy"] == "static"  # auto means static: fused graphs specialise on shapes
    assert m["shapes"]["max_length"] == 48
    assert m["precision"]["optimizations"] == ["torch.jit.freeze", "onednn-fusion"]
    assert "RegisterLlgaFuseGraph::setEnabled(true)" in m["precision"]["onednn_fusion"]["libtorch"]
    assert m["validation"]["mode"] == "allclose" and result.validation.passed
    eager = eager_model(src, "bert", "feature-extraction")
    model = hts.load(out)
    plain = torch.jit.load(str(out / "model.pt"))  # a consumer that never switches fusion on
    for length, seed in ((7, 1), (48, 2)):
        batch = random_batch(m, 3, length, seed=seed)
        with torch.no_grad():
            ref = eager(**batch).last_hidden_state
        valid = batch["attention_mask"].bool()
        for _ in range(3):  # the profiling executor fuses on the first calls: check after them too
            got = model.run(**batch)["last_hidden_state"]
            assert torch.allclose(got[valid], ref[valid], atol=1e-4, rtol=1e-4)
            assert not torch.jit.onednn_fusion_enabled()
        unfused = plain(*(batch[i["name"]] for i in m["inputs"]))[0]
        assert torch.allclose(unfused[valid], ref[valid], atol=1e-4, rtol=1e-4)
    report = hts.validate(out, src)
    assert report.passed and not torch.jit.onednn_fusion_enabled()


def test_fusion_option_errors_name_the_fix(tiny_model_dir, tmp_path):
    for shapes in ("dynamic", "buckets"):
        with pytest.raises(ShapeError, match="onednn_fusion works with shapes='static' only.*bad optional access.*"
                                             "use shapes='static' with sequence_length=128, one artifact per length"):
            hts.export(tiny_model_dir("bert", "feature-extraction"), tmp_path / "a", onednn_fusion=True, shapes=shapes)
    with pytest.raises(OptionError, match="onednn_fusion is measured and validated for float32 and bfloat16 only"):
        hts.export(tiny_model_dir("bert", "feature-extraction"), tmp_path / "b", onednn_fusion=True,
                   quantize="dynamic-int8")
