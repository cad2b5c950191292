"""Independent references for tests: the eager transformers model called directly, and random
padded inputs built here (not by hf_torchscript.exporter.inputs), so a bug there cannot hide itself.
"""

from __future__ import annotations

import inspect

import torch
import transformers

from hf_torchscript.architectures import REGISTRY
from hf_torchscript.tasks import get_task


def eager_model(model_dir, model_type: str, task: str):
    cls = REGISTRY[model_type].task_classes.get(task, get_task(task).auto_class)
    return getattr(transformers, cls).from_pretrained(str(model_dir)).eval()


def random_batch(manifest: dict, batch: int, length: int, *, seed: int = 0, padding: str = "right",
                 vocab: int = 128) -> dict[str, torch.Tensor]:
    """Inputs for every manifest input; row 0 unpadded, later rows padded to random lengths."""
    g = torch.Generator().manual_seed(seed)
    pad = manifest["pad_token_id"]
    out = {}
    names = [i["name"] for i in manifest["inputs"]]
    if names == ["pixel_values"]:
        shape = [batch] + manifest["inputs"][0]["shape"][1:]
        return {"pixel_values": torch.randn(shape, generator=g)}
    choices = "num_choices" in manifest["inputs"][0]["shape"]
    lead = (batch, 2) if choices else (batch,)

    def mask_for(L):
        m = torch.ones(*lead, L, dtype=torch.long)
        flat = m.view(-1, L)
        for r in range(1, flat.shape[0]):
            k = int(torch.randint(1, L + 1, (1,), generator=g))
            if padding == "right":
                flat[r, k:] = 0
            else:
                flat[r, : L - k] = 0
        return m

    mask = mask_for(length)
    ids = torch.randint(5, vocab, (*lead, length), generator=g)
    ids = torch.where(mask.bool(), ids, torch.full_like(ids, pad))
    ids = torch.where(ids == pad, torch.full_like(ids, 5 if pad != 5 else 6), ids) * mask + pad * (1 - mask)
    out["input_ids"], out["attention_mask"] = ids, mask
    if "token_type_ids" in names:
        tt = torch.zeros_like(ids)
        tt[..., length // 2:] = 1
        out["token_type_ids"] = tt * mask
    if "decoder_input_ids" in names:
        T = max(1, length // 2)
        dmask = torch.ones(batch, T, dtype=torch.long)
        dmask[1:, max(1, T // 2):] = 0
        dids = torch.randint(5, vocab, (batch, T), generator=g)
        out["decoder_input_ids"] = torch.where(dmask.bool(), dids, torch.full_like(dids, pad))
        out["decoder_attention_mask"] = dmask
    return {n: out[n] for n in names}


def eager_outputs(model, manifest: dict, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What the exported module must return, computed by transformers directly."""
    kwargs = dict(inputs)
    params = inspect.signature(model.forward).parameters
    if REGISTRY[manifest["model_type"]].decoder:
        # The convention generate() uses for padded batches: real tokens numbered from 0.
        kwargs["position_ids"] = (inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    if "use_cache" in params:
        kwargs["use_cache"] = False
    with torch.no_grad():
        out = model(**kwargs, return_dict=True)
    if manifest["task"] == "sentence-embedding":
        tokens, m = out["last_hidden_state"], inputs["attention_mask"].unsqueeze(-1).float()
        emb = (tokens * m).sum(1) / m.sum(1).clamp(min=1e-9)  # sentence-transformers mean pooling
        if manifest["sentence_embedding"]["normalize"]:
            emb = torch.nn.functional.normalize(emb, dim=1)
        return {"sentence_embedding": emb}
    return {o["name"]: out[o["name"]] for o in manifest["outputs"]}


def assert_close_valid(got: torch.Tensor, want: torch.Tensor, output: dict, mask: torch.Tensor | None,
                       atol: float = 1e-4, rtol: float = 1e-4, what: str = ""):
    """allclose on the positions that hold real tokens (per-token outputs), everything else otherwise."""
    assert got.shape == want.shape, f"{what} {output['name']}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    if mask is not None and "sequence_length" in output["shape"]:
        view = [s if output["shape"][i] in ("batch_size", "num_choices", "sequence_length") else 1
                for i, s in enumerate(got.shape)]
        valid = mask.bool().reshape(view).expand_as(got)
        got, want = got[valid], want[valid]
    torch.testing.assert_close(got.float(), want.float(), atol=atol, rtol=rtol, msg=lambda m: f"{what} {output['name']}: {m}")
