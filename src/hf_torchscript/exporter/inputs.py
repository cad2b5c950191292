"""Input specs (name, dtype, symbolic shape) and seeded dummy inputs with padding patterns.

A padding pattern says which positions of one row are real tokens:
  full   every position
  right  a random prefix of 1..L-1 tokens, padding after it (the usual batched case)
  first  only the first token; everything else padding (the extreme case)
  left   a random suffix of 1..L-1 tokens (decoders padded for generation)
Padded positions hold the pad token id and a 0 in the mask, exactly as a tokenizer writes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

PATTERNS = ("full", "right", "first", "left")

# Which mask governs which input's sequence axis; inputs absent here carry no sequence axis.
_MASK_OF = {
    "input_ids": "attention_mask",
    "attention_mask": "attention_mask",
    "token_type_ids": "attention_mask",
    "decoder_input_ids": "decoder_attention_mask",
    "decoder_attention_mask": "decoder_attention_mask",
}
_SEQ_DIM_OF_MASK = {"attention_mask": "sequence_length", "decoder_attention_mask": "decoder_sequence_length"}
# Inputs a caller may leave out, and what transformers uses then (BERT-like models: a buffer of zeros,
# i.e. every token in segment 0). Readers (runtime.py, cpp/hf_torchscript.hpp) fill them from the
# manifest's "default", shaped like the inputs with the same axes. attention_mask is NOT optional here:
# transformers' all-ones default silently attends to padding in a padded batch.
_DEFAULTS = {"token_type_ids": "zeros"}


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: str  # torch dtype name without the prefix: "int64", "float32"
    shape: tuple  # symbolic axis names (str) or fixed sizes (int)
    pad_value: int = 0  # what padding positions hold (input_ids: the pad token id)
    # [low, high): the values the model can take (ids below the vocabulary size); checked inside the
    # exported module, so an out-of-range id is a readable error instead of an index error deep in a trace.
    value_range: tuple[int, int] | None = None
    default: str | None = None  # "zeros": may be omitted by callers, who then get what transformers uses

    @property
    def mask(self) -> str | None:
        return _MASK_OF.get(self.name)

    def to_json(self) -> dict:
        out = {"name": self.name, "dtype": self.dtype, "shape": list(self.shape), "pad_value": self.pad_value}
        if self.value_range is not None:
            out["range"] = list(self.value_range)
        if self.default is not None:
            out["default"] = self.default
        return out



def input_specs(names: Sequence[str], *, config, pad_token_id: int, choices: bool = False) -> list[InputSpec]:
    specs = []
    for name in names:
        if name == "pixel_values":
            size = getattr(config, "image_size", 224)
            h, w = (size, size) if isinstance(size, int) else tuple(size)
            specs.append(InputSpec(name, "float32", ("batch_size", int(getattr(config, "num_channels", 3)), h, w)))
            continue
        mask = _MASK_OF.get(name)
        if mask is None:
            raise ValueError(f"no input spec for {name!r}")  # registry bug, not user input
        seq = _SEQ_DIM_OF_MASK[mask]
        shape = ("batch_size", "num_choices", seq) if choices and seq == "sequence_length" else ("batch_size", seq)
        pad = pad_token_id if name in ("input_ids", "decoder_input_ids") else 0
        specs.append(InputSpec(name, "int64", shape, pad, _value_range(name, config), _DEFAULTS.get(name)))
    return specs


def _value_range(name: str, config) -> tuple[int, int] | None:
    if name in ("attention_mask", "decoder_attention_mask"):
        return (0, 2)
    size = getattr(config, "type_vocab_size" if name == "token_type_ids" else "vocab_size", None)
    return (0, int(size)) if isinstance(size, int) and size > 0 else None


def row_mask(pattern: str, length: int, gen: torch.Generator) -> torch.Tensor:
    """(L,) int64 mask for one row."""
    m = torch.zeros(length, dtype=torch.long)
    if pattern == "full" or length == 1:
        m[:] = 1
        return m
    if pattern == "first":
        m[0] = 1
        return m
    k = int(torch.randint(1, length, (1,), generator=gen))
    if pattern == "right":
        m[:k] = 1
    elif pattern == "left":
        m[length - k :] = 1
    else:
        raise ValueError(f"unknown padding pattern {pattern!r}; known: {PATTERNS}")
    return m


def make_inputs(
    specs: Sequence[InputSpec],
    dims: dict[str, int],
    patterns: Sequence[str],
    *,
    vocab_size: int,
    type_vocab_size: int = 2,
    seed: int = 0,
    avoid_ids: Sequence[int] = (),
) -> dict[str, torch.Tensor]:
    """Random inputs for ``specs`` at ``dims`` (axis name -> size); row i is padded as ``patterns[i % n]``.

    Token ids are drawn from the whole vocabulary minus ``avoid_ids`` (the pad id at least: a real
    token equal to it would look like padding to models that find padding from input_ids).
    """
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    masks: dict[str, torch.Tensor] = {}
    for spec in specs:
        shape = [dims[d] if isinstance(d, str) else d for d in spec.shape]
        if spec.dtype.startswith("float"):
            out[spec.name] = torch.randn(shape, generator=gen, dtype=getattr(torch, spec.dtype))
            continue
        mask_name = spec.mask
        if mask_name not in masks:
            rows = 1
            for d in shape[:-1]:
                rows *= d
            # Decoder inputs of an encoder-decoder are never left padded.
            pats = [p if not (mask_name == "decoder_attention_mask" and p == "left") else "right" for p in patterns]
            masks[mask_name] = torch.stack([row_mask(pats[i % len(pats)], shape[-1], gen) for i in range(rows)]).reshape(
                shape
            )
        mask = masks[mask_name]
        if spec.name == mask_name:
            out[spec.name] = mask.clone()
        elif spec.name == "token_type_ids":
            # Second segment from a random split point on: exercises both token type embeddings.
            split = torch.randint(0, shape[-1] + 1, shape[:-1] + [1], generator=gen)
            pos = torch.arange(shape[-1]).expand(shape)
            tt = (pos >= split).long() if type_vocab_size > 1 else torch.zeros(shape, dtype=torch.long)
            out[spec.name] = tt * mask
        else:
            ids = _random_ids(shape, vocab_size, avoid_ids, gen)
            out[spec.name] = torch.where(mask.bool(), ids, torch.full_like(ids, spec.pad_value))
    return out


def _random_ids(shape, vocab_size: int, avoid_ids: Sequence[int], gen: torch.Generator) -> torch.Tensor:
    allowed = torch.ones(vocab_size, dtype=torch.bool)
    for i in avoid_ids:
        if i is not None and 0 <= i < vocab_size:
            allowed[i] = False
    pool = allowed.nonzero().flatten()
    return pool[torch.randint(0, len(pool), shape, generator=gen)]


@dataclass(frozen=True)
class OutputSpec:
    name: str
    dtype: str
    shape: tuple  # symbolic axis names (str) or fixed sizes (int)

    @property
    def sequence_dim(self) -> int:
        """Index of the (encoder) sequence axis, -1 when the output is per row, not per token."""
        return self.shape.index("sequence_length") if "sequence_length" in self.shape else -1

    def to_json(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}
