"""Every difference between the supported transformers releases, in one place.

hf-torchscript is tested on two stacks (``.ci/run``): torch 2.9 + transformers 4.57 (Python 3.10:
where AWS Neuron's torch-neuronx and optimum-neuron users are) and torch 2.13 + transformers 5.x.
No other module looks at a version number; each difference that matters is a function here:

- ``from_pretrained_kwargs``: the load dtype keyword. ``dtype=`` exists since transformers 4.56
  (``torch_dtype=`` before it, now a deprecated alias) and 5 loads checkpoints in their saved dtype
  unless told, so both stacks get ``dtype=float32`` spelled the same way.
- ``traceable``: transformers 4.57 builds attention masks with ``torch.vmap`` (masking_utils), which
  ``torch.jit.trace`` cannot record ("RuntimeError: unordered_map::at"); transformers 5 builds the
  same masks by broadcasting. Tracing runs inside this context manager, which gives 4.x the
  broadcasting construction for the duration of the trace and restores everything afterwards.

Differences that need no code, recorded so nobody adds a check for them:

- ``config.torchscript``: 4.x still has the flag (5 removed it). It makes models return tuples
  unless ``return_dict`` is passed (the export wrapper always passes ``return_dict=True``) and makes
  ``tie_weights`` clone the LM head instead of sharing it (the manifest then says the weights are
  not tied, which is true). tests/test_compat.py exports such a model on whichever stack runs it.
- tokenizer files: 4.x ``save_pretrained`` also writes ``special_tokens_map.json`` (and the
  slow tokenizer's vocabulary, e.g. ``vocab.txt``). The artifact's contract is ``tokenizer.json``;
  the extra files are shipped and hashed like every other file in the directory.
- ``output_loading_info``: both return a dict whose ``missing_keys`` lists newly initialised weights.
"""

from __future__ import annotations

import contextlib
from functools import cache


@cache
def transformers_major() -> int:
    """The installed transformers' major version (4 or 5)."""
    import transformers

    return int(transformers.__version__.split(".")[0])


def from_pretrained_kwargs(dtype) -> dict:
    """Keyword arguments that make ``from_pretrained`` load in ``dtype`` on every supported release."""
    # `dtype=` is accepted from 4.56 on (pyproject's floor is 4.57), so one spelling serves both.
    return {"dtype": dtype}


def _broadcast_bhqkv(mask_function, bh_indices: bool = True):
    """Stand-in for transformers 4.x ``masking_utils._vmap_for_bhqkv``: the same (B, H, Q, KV) mask by broadcasting.

    transformers' mask functions are index arithmetic and tensor indexing (``kv_idx <= q_idx``,
    ``padding_mask[batch_idx, kv_idx]``), so feeding them broadcastable index grids gives what
    vmapping them over every index does, with ops torch.jit.trace records (transformers 5's
    ``_non_vmap_expansion_sdpa`` does the same).
    """
    import torch

    def build(batch_idx, head_idx, q_idx, kv_idx):
        if not bh_indices:  # (Q, KV), as the vmapped function returns without batch/head indices
            return mask_function(None, None, q_idx[:, None], kv_idx[None, :])
        grids = (batch_idx[:, None, None, None], head_idx[None, :, None, None], q_idx[None, None, :, None],
                 kv_idx[None, None, None, :])
        mask = mask_function(*grids)
        # A mask function that ignores some indices (plain causal ignores the batch) broadcasts to
        # fewer dimensions than vmap would produce; expand to the full (B, H, Q, KV) like vmap.
        return torch.broadcast_tensors(mask, *grids)[0]

    return build


@contextlib.contextmanager
def traceable():
    """Run ``torch.jit.trace`` (or a tracing SDK) of a transformers model inside this context.

    On transformers 4.x it swaps the vmap-based attention-mask construction for a broadcasting
    one while the context is open (see the module docstring); on 5.x it does nothing. Only the
    trace sees the swap: eager reference runs keep transformers' own masks, so validation still
    compares against an independent implementation.
    """
    if transformers_major() >= 5:
        yield
        return
    from transformers import masking_utils

    saved = {name: getattr(masking_utils, name) for name in ("_vmap_for_bhqkv", "TransformGetItemToIndex")
             if hasattr(masking_utils, name)}
    try:
        # Why: torch.vmap inside a jit trace fails ("unordered_map::at"); broadcasting is traceable.
        masking_utils._vmap_for_bhqkv = _broadcast_bhqkv
        if "TransformGetItemToIndex" in saved:
            # Why: this TorchFunctionMode only exists to let vmap index tensors by tensors; without
            # vmap, plain advanced indexing is what we want recorded (it also warns under trace).
            masking_utils.TransformGetItemToIndex = contextlib.nullcontext
        yield
    finally:
        for name, value in saved.items():
            setattr(masking_utils, name, value)


def kv_cache_export_supported() -> bool:
    """Whether ``--task text-generation`` can be exported here: proven on transformers 5 (CI's current leg).
    On 4.57 + torch 2.9 (the legacy leg) the traced static-cache module fails when it runs (a RuntimeError from
    the TorchScript interpreter inside transformers' cache update), so export refuses it up front."""
    return transformers_major() >= 5
