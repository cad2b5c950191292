"""Make a transformers model traceable: eval, no cache, an explicit tensor signature, tuple outputs.

transformers 5 removed the ``torchscript=True`` config flag the old recipe relied on; models
return ``ModelOutput`` dicts, which ``torch.jit.trace`` refuses at the top level. The wrapper
below is the replacement: positional tensors in, a tuple of named outputs out.
"""

from __future__ import annotations

import inspect
from typing import Sequence

import torch
from torch import nn

# ModelOutput fields that are never exported: caches and per-layer diagnostics.
_NOT_EXPORTED = {
    "loss",
    "past_key_values",
    "hidden_states",
    "attentions",
    "cross_attentions",
    "encoder_hidden_states",
    "encoder_attentions",
    "decoder_hidden_states",
    "decoder_attentions",
    "mems",
}


class Pooling(nn.Module):
    """sentence-transformers pooling (cls / mean / max, concatenated in that order) + optional L2 norm."""

    def __init__(self, modes: Sequence[str], normalize: bool):
        super().__init__()
        self.modes = tuple(modes)
        self.normalize = normalize

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # tokens (B, L, H), mask (B, L)
        m = mask.unsqueeze(-1).to(tokens.dtype)  # (B, L, 1)
        parts = []
        for mode in self.modes:
            if mode == "cls":
                parts.append(tokens[:, 0])
            elif mode == "mean":
                parts.append((tokens * m).sum(1) / m.sum(1).clamp(min=1e-9))
            elif mode == "max":
                parts.append(tokens.masked_fill(m == 0, -1e9).max(1).values)
            elif mode == "mean_sqrt_len":
                parts.append((tokens * m).sum(1) / m.sum(1).clamp(min=1e-9).sqrt())
        emb = torch.cat(parts, -1) if len(parts) > 1 else parts[0]
        if self.normalize:
            emb = nn.functional.normalize(emb, p=2.0, dim=1)
        return emb


class ExportWrapper(nn.Module):
    """``forward(*tensors)`` in ``input_names`` order -> tuple in ``output_names`` order."""

    def __init__(
        self,
        model: nn.Module,
        input_names: Sequence[str],
        output_names: Sequence[str],
        *,
        position_ids_from_mask: bool = False,
        pooling: Pooling | None = None,
    ):
        super().__init__()
        self.model = model
        self.input_names = tuple(input_names)
        self.output_names = tuple(output_names)
        self.position_ids_from_mask = position_ids_from_mask
        self.pooling = pooling
        self.call_kwargs = call_kwargs(model)

    def forward(self, *tensors: torch.Tensor):
        kwargs = dict(zip(self.input_names, tensors))
        if self.position_ids_from_mask:
            # Left-padded rows must number their real tokens 0..k-1, as generate() does; the
            # default arange would shift them by the padding and change the function.
            kwargs["position_ids"] = (kwargs["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        out = self.model(**kwargs, **self.call_kwargs)
        if self.pooling is not None:
            return (self.pooling(out["last_hidden_state"], kwargs["attention_mask"]),)
        return tuple(out[name] for name in self.output_names)


def call_kwargs(model: nn.Module) -> dict:
    """Keyword arguments that make a forward trace-friendly: dict outputs we pick from, no cache."""
    params = inspect.signature(model.forward).parameters
    kw = {"return_dict": True}
    for name in ("use_cache", "output_attentions", "output_hidden_states"):
        if name in params:
            kw[name] = False
    return kw


def discover_outputs(model: nn.Module, inputs: dict[str, torch.Tensor], wanted: Sequence[str] | None) -> list[str]:
    """Names of the outputs to export, from one eager call (the ModelOutput's keys, in order)."""
    with torch.no_grad():
        out = model(**inputs, **call_kwargs(model))
    available = [k for k, v in out.items() if isinstance(v, torch.Tensor) and k not in _NOT_EXPORTED]
    if wanted is None:
        return available
    missing = [w for w in wanted if w not in available]
    if missing:
        raise KeyError(f"model returned {available}, not {missing}")
    return list(wanted)


def tie_state(model: nn.Module) -> str:
    """'shared' when the LM head reuses the input embedding matrix, else 'none'."""
    get_in = getattr(model, "get_input_embeddings", None)
    get_out = getattr(model, "get_output_embeddings", None)
    if get_in is None or get_out is None:
        return "none"
    try:
        emb, head = get_in(), get_out()
    except (NotImplementedError, AttributeError):
        return "none"
    if emb is None or head is None:
        return "none"
    return "shared" if head.weight is emb.weight else "none"


def untie_weights(model: nn.Module) -> bool:
    """Give the LM head its own copy of the embedding matrix (for backends that cannot share).

    The model must not be trained afterwards: the two copies would drift apart.
    """
    if tie_state(model) != "shared":
        return False
    head = model.get_output_embeddings()
    head.weight = nn.Parameter(head.weight.detach().clone(), requires_grad=False)
    return True


class PrecisionWrapper(nn.Module):
    """Run ``inner`` (converted to ``dtype``) behind a float32 contract.

    Float inputs (pixel_values) are cast to ``dtype`` inside the module and float outputs cast
    back to float32, so callers and the manifest see the same dtypes as a float32 export.
    """

    def __init__(self, inner: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.inner = inner
        self.dtype = dtype

    def forward(self, *tensors: torch.Tensor):
        args = tuple(t.to(self.dtype) if t.is_floating_point() else t for t in tensors)
        out = self.inner(*args)
        return tuple(o.float() if o.is_floating_point() else o for o in out)
