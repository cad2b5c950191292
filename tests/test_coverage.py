"""Every (architecture x task) in the registries exports, validates and matches transformers eager
at shapes other than the traced one, with padding; and the registry cannot grow untested."""

from __future__ import annotations

import pytest
import torch

import hf_torchscript as hts
from hf_torchscript.architectures import REGISTRY
from models import TINY_CONFIGS
from reference import assert_close_valid, eager_model, eager_outputs, random_batch

CASES = [(mt, task) for mt, arch in REGISTRY.items() for task in arch.tasks if task not in arch.unsupported]


def test_every_registered_architecture_has_a_test_model():
    # "Not testing all models": adding a registry entry without a tiny config fails here.
    assert set(REGISTRY) == set(TINY_CONFIGS), (
        f"no tiny test model for {sorted(set(REGISTRY) - set(TINY_CONFIGS))}; add it to tests/models.py"
    )


def test_registry_covers_the_issue_architectures():
    encoders = {"bert", "distilbert", "roberta", "xlm-roberta", "albert", "electra", "mpnet", "deberta-v2", "camembert"}
    assert encoders <= set(REGISTRY) and {"gpt2", "llama", "t5", "vit"} <= set(REGISTRY)
    assert len(REGISTRY) >= 12


@pytest.mark.parametrize("model_type,task", CASES, ids=[f"{m}-{t}" for m, t in CASES])
def test_export_matches_eager(model_type, task, tiny_model_dir, tmp_path):
    src = tiny_model_dir(model_type, task)
    result = hts.export(src, tmp_path / "out", task=task)
    m = result.manifest
    assert m["validation"]["passed"] and m["validation"]["cases"], m["validation"]["failures"]
    module = torch.jit.load(str(tmp_path / "out" / "model.pt"))
    eager = eager_model(src, model_type, task)
    padding = "left" if REGISTRY[model_type].decoder else "right"
    traced_len = m["shapes"]["traced"][0]["sequence_length"]
    for batch, length in [(3, 37), (1, 5), (4, traced_len + 1)]:
        inputs = random_batch(m, batch, length, seed=length, padding=padding)
        got = module(*inputs.values())
        want = eager_outputs(eager, m, inputs)
        mask = inputs.get("attention_mask")
        for o, g in zip(m["outputs"], got):
            if "decoder_sequence_length" in o["shape"]:
                mask_o = inputs["decoder_attention_mask"]
            else:
                mask_o = mask
            assert_close_valid(g, want[o["name"]], o, mask_o, what=f"{model_type}/{task} at ({batch},{length})")


def test_unsupported_task_lists_what_is_supported(tiny_model_dir, tmp_path):
    with pytest.raises(hts.UnsupportedModelError) as e:
        hts.export(tiny_model_dir("gpt2", "feature-extraction"), tmp_path / "o", task="fill-mask")
    msg = str(e.value)
    assert "task 'fill-mask' is not supported for gpt2" in msg
    assert "supported for gpt2: feature-extraction, causal-lm, text-classification" in msg
    assert not (tmp_path / "o").exists()
