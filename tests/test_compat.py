"""compat.py, the one place that knows transformers 4.57 from 5.x, tested on whichever stack runs
the suite (.ci/run runs it on both): the broadcasting mask construction against a hand-computed
mask, the patch restored even on error, and the old recipe's ``torchscript=True`` config exporting
correctly. The models that need the patch (gpt2, llama) are covered end to end by test_coverage.py.
"""

from __future__ import annotations

import pytest
import torch
import transformers
from models import tiny_config
from reference import assert_close_valid, eager_outputs, random_batch
from transformers import masking_utils

import hf_torchscript as hts
from hf_torchscript import compat


def test_broadcast_mask_matches_a_hand_computed_mask():
    B, Q, KV, window = 3, 4, 7, 3
    padding = torch.tensor([[1] * 7, [1] * 5 + [0] * 2, [0] * 2 + [1] * 5], dtype=torch.bool)
    q_idx = torch.arange(KV - Q, KV)  # the last Q positions, as when a query block follows earlier tokens
    kv_idx = torch.arange(KV)
    fn = masking_utils.and_masks(masking_utils.causal_mask_function, masking_utils.sliding_window_overlay(window),
                                 masking_utils.padding_mask_function(padding))
    got = compat._broadcast_bhqkv(fn)(torch.arange(B), torch.arange(1), q_idx, kv_idx)
    want = torch.zeros(B, 1, Q, KV, dtype=torch.bool)
    for b in range(B):
        for i, q in enumerate(q_idx.tolist()):
            for k in range(KV):
                want[b, 0, i, k] = k <= q and q - k < window and bool(padding[b, k])
    assert torch.equal(got, want)
    # A function that ignores the batch index still gets the full (B, H, Q, KV) shape, as vmap gives.
    causal = compat._broadcast_bhqkv(masking_utils.causal_mask_function)(torch.arange(B), torch.arange(1), q_idx, kv_idx)
    assert causal.shape == (B, 1, Q, KV)
    for b in range(B):
        for i, q in enumerate(q_idx.tolist()):
            assert causal[b, 0, i].tolist() == [k <= q for k in range(KV)]


def test_traceable_patches_only_inside_and_restores_on_error():
    before = dict(vars(masking_utils))
    with pytest.raises(RuntimeError, match="boom"):
        with compat.traceable():
            if compat.transformers_major() < 5:
                assert masking_utils._vmap_for_bhqkv is compat._broadcast_bhqkv
            raise RuntimeError("boom")
    after = vars(masking_utils)
    assert after.keys() == before.keys()
    assert [k for k, v in before.items() if after[k] is not v] == []


def test_the_old_recipes_torchscript_flag_exports_and_matches_eager(tmp_path):
    """The docs' recipe sets ``torchscript=True``: on 4.x the model then returns tuples and clones its
    LM head; the export passes return_dict=True and reports the weights as they really are."""
    cfg = tiny_config("gpt2", "causal-lm")
    cfg.torchscript = True
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    shared = model.lm_head.weight is model.transformer.wte.weight
    if compat.transformers_major() < 5:
        assert not shared, "transformers 4.x clones the LM head under torchscript=True"
        assert isinstance(model(input_ids=torch.tensor([[5, 6]])), tuple)
    result = hts.export(model, tmp_path / "o", task="causal-lm")
    m = result.manifest
    assert m["weights"]["tied_embeddings"] == ("shared" if shared else "none")
    module = torch.jit.load(str(tmp_path / "o" / "model.pt"))
    x = random_batch(m, 3, 11, seed=3, padding="left")
    got = dict(zip([o["name"] for o in m["outputs"]], module(*x.values())))
    want = eager_outputs(model, m, x)
    for o in m["outputs"]:
        assert_close_valid(got[o["name"]], want[o["name"]], o, x["attention_mask"])
