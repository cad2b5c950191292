"""``--pack-linears``: float32 Linear layers whose weights oneDNN reorders for its GEMM when the artifact loads.

Why (measured on a quiet 2-core AVX2 AMD EPYC, torch 2.13, BERT-base's linears): at few rows torch's
``linear`` (MKL sgemm on an unpacked weight) is far from what the CPU can do: 52 ms for the 72
linears of BERT-base at 16 tokens, 33 ms with oneDNN on a weight reordered once
(``mkldnn::_reorder_linear_weight``); 9.2 vs 4.7 ms at 4 rows of a small llama. At many rows the
two are level or MKL wins (the whole BERT-base at 8 x 128 tokens: 1.17 s plain, 1.34 s packed), so this
is a candidate that ``--optimize auto`` times on the workload, not a default.

How: a reordered weight is an opaque oneDNN tensor, specific to the CPU's instruction set, and cannot
be saved. So each Linear becomes a small TorchScript module whose ``__getstate__`` saves the plain
weight and whose ``__setstate__`` reorders it when the file loads (in Python and in C++ libtorch
alike: TorchScript runs ``__setstate__`` on load). The file holds ordinary float32 weights; memory
holds only the reordered copy. The export validates the written, reloaded artifact as usual, so the
proof covers the packed path.
"""

# No `from __future__ import annotations`: TorchScript compiles PackedLinear from its real annotations.
import contextlib

import torch

# oneDNN picks its blocking for this many rows: measured best on BERT-base at 16 to 128 tokens
# (a weight packed for 1 row ran 1.14 ms at 16 rows vs 0.74 ms packed for 16).
ROWS_HINT = 16


def available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


class PackedLinear(torch.nn.Module):
    """``linear(x, W, b)`` on a oneDNN-reordered W; saved as the plain W (see the module docstring)."""

    bias: torch.Tensor | None
    __constants__ = ["rows"]  # compiled into the saved code, so __setstate__ knows it at load

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.rows = ROWS_HINT
        self.bias = None if bias is None else bias.detach().contiguous()
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), self.rows)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scalars: list[int | float | complex | None] = []
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", scalars, "")

    @torch.jit.export
    def __getstate__(self):
        return (self.packed.to_dense(), self.bias, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, torch.Tensor | None, bool]):
        self.packed = torch.ops.mkldnn._reorder_linear_weight(state[0], self.rows)
        self.bias = state[1]
        self.training = state[2]


@contextlib.contextmanager
def swapped_linears(model: torch.nn.Module, make):
    """Replace every ``nn.Linear`` of ``model`` by ``make(linear)`` until the block ends, then put them back.

    A Linear whose weight an Embedding shares (tied input/output embeddings) is left alone: a second,
    differently laid out copy would hold the vocabulary matrix twice. The model outside the block
    (the eager reference of every proof) is the caller's own."""
    shared = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    swapped = []
    try:
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if type(child) is torch.nn.Linear and id(child.weight) not in shared:
                    setattr(parent, name, make(child))
                    swapped.append((parent, name, child))
        yield len(swapped)
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)


def packed(linear: torch.nn.Linear) -> torch.jit.ScriptModule:
    from ..deprecation import jit_api

    with jit_api():
        return torch.jit.script(PackedLinear(linear.weight, linear.bias))
