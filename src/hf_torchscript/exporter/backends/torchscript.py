"""The default backend: ``torch.jit.trace`` on the host CPU."""

from __future__ import annotations

import torch

from ...deprecation import jit_api
from . import Backend


def trace(module, example_inputs, options=None):
    # check_trace re-runs the same inputs only; the validation grid (other shapes, padding)
    # is the real check, so skip the duplicate work and its noisy warnings.
    with jit_api():
        return torch.jit.trace(module, tuple(example_inputs), check_trace=False)


BACKEND = Backend("torchscript", trace, static_shapes=False, unties_weights=False, runs_on_host=True)
