"""oneDNN graph fusion for TorchScript, switched on only around the calls that need it.

``torch.jit.enable_onednn_fusion`` is a process-wide switch, read when a graph is optimised (on
its first, profiling calls) and when it runs. Measured on BERT-base, 2 threads (bench/RESULTS.md,
`python bench/optimize_research.py`): a frozen trace run with fusion takes 0.3-0.65x of eager
fp32 where the plain frozen trace takes 0.85-1.0x, and switching it on only around each call
(then restoring it) is as fast as leaving it on. The library must not leave a process-wide
setting changed, so every call that needs fusion goes through :func:`onednn_fusion`, which
restores the previous value when the last such call in any thread returns.

The fused graphs are not in model.pt (they are rebuilt at run time): an artifact exported with
``onednn_fusion`` runs unfused, with the same results, wherever the switch is off.
"""

from __future__ import annotations

import contextlib
import threading

import torch

OPTIMIZATION = "onednn-fusion"  # its name in manifest.precision.optimizations
HOW = {
    "python": "hf_torchscript.load() switches it on around each call; with plain torch: "
              "torch.jit.enable_onednn_fusion(True) before the first call",
    "libtorch": "torch::jit::RegisterLlgaFuseGraph::setEnabled(true); (torch/csrc/jit/codegen/onednn/interface.h) "
                "before the first forward, profiling executor on (the default)",
    "triton": "the pytorch backend has no parameter for it: a custom backend build or a Python-backend model that "
              "sets it",
    "without_it": "model.pt runs unfused: same results, the speed of a frozen trace",
}

_lock = threading.Lock()
_depth = 0
_saved = False


@contextlib.contextmanager
def onednn_fusion():
    """Fusion on inside the block; the value found before the first of overlapping blocks is restored after the last."""
    global _depth, _saved
    with _lock:
        if _depth == 0:
            _saved = torch.jit.onednn_fusion_enabled()
            torch.jit.enable_onednn_fusion(True)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                torch.jit.enable_onednn_fusion(_saved)


class Fused:
    """``module`` called with oneDNN fusion switched on around each call (what validation runs)."""

    def __init__(self, module):
        self.module = module

    def __call__(self, *args):
        with onednn_fusion():
            return self.module(*args)


def wanted(manifest: dict) -> bool:
    """Whether an artifact was exported (and validated) to run with oneDNN fusion."""
    return OPTIMIZATION in (manifest.get("precision") or {}).get("optimizations", [])
