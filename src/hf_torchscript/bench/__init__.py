"""Benchmark: a small measuring core; the research runs and the project's targets live in the repo's bench/.

    timing.py    warm-up, interleaved rounds, medians and paired ratios; FLOPs, GEMM ceiling, top ops
    workload.py  fixed-shape batches, real request lengths, real sentences for accuracy
    variants.py  what is timed: exported artifacts, eager, torch.compile, ONNX Runtime fp32/int8
    report.py    BenchmarkReport (JSON, table, plot) and targets read from a file (--targets)
    run.py       benchmark(): one run, speed and accuracy side by side
"""

from __future__ import annotations

from .report import BenchmarkReport, evaluate_targets, load_targets
from .run import DEFAULT_GRID, benchmark
from .variants import ALL_VARIANTS, EXPORTED, PEERS
from .workload import sample_lengths

__all__ = ["benchmark", "BenchmarkReport", "ALL_VARIANTS", "EXPORTED", "PEERS", "DEFAULT_GRID", "sample_lengths",
           "load_targets", "evaluate_targets"]
