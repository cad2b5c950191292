"""Timing: warm-up, interleaved rounds, medians and paired ratios; FLOPs, a GEMM ceiling, top ops.

Made fair for a shared CPU: every function is warmed up, then each round runs every function
once in a rotating order, so a burst of load from another process hits all of them alike; a
ratio is taken per round (paired with the baseline's time in the same round) and the median of
those ratios is reported, next to the ratio of the fastest calls (best case vs best case).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Timing:
    """One function's times in one workload, and its ratios to the baseline timed in the same rounds."""

    times_s: tuple[float, ...]
    ratio: float  # median over rounds of (time / baseline time in the same round)
    ratio_of_mins: float  # fastest call / baseline's fastest call

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s)

    @property
    def p90_s(self) -> float:
        return percentile(self.times_s, 0.9)

    @property
    def min_s(self) -> float:
        return min(self.times_s)


def interleaved(fns: Mapping[str, Callable[[], object]], *, rounds: int, warmup: int, baseline: str,
                tick: Callable[[], None] = lambda: None) -> dict[str, Timing]:
    """Time every function ``rounds`` times, interleaved, after ``warmup`` untimed calls each.

    ``tick`` is called once per warm-up pass and per round (progress). Ratios are to ``baseline``.
    """
    names = list(fns)
    if baseline not in fns:
        raise KeyError(f"baseline {baseline!r} is not among {names}")
    for _ in range(warmup):
        for n in names:
            fns[n]()
        tick()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        k = r % len(names)
        for n in names[k:] + names[:k]:  # rotate so no function always runs right after another
            start = time.perf_counter()
            fns[n]()
            times[n].append(time.perf_counter() - start)
        tick()
    base = times[baseline]
    return {
        n: Timing(tuple(ts), statistics.median(t / b for t, b in zip(ts, base)), min(ts) / min(base))
        for n, ts in times.items()
    }


def percentile(xs, q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def gemm_ceiling(m: int = 1024, k: int = 768, n: int = 3072, reps: int = 10, budget_s: float = 2.0) -> dict[str, float]:
    """Best-of GFLOP/s of an (m, k) @ (k, n) matmul in fp32 and bf16 (BERT-base's FFN shape at 8x128).

    Where one call is slow (bf16 emulated on a CPU without bf16 instructions: ~0.7 GFLOP/s, 7 s a call on
    an AVX2 EPYC) fewer rows are timed, so the ceiling costs about ``budget_s`` per dtype, not minutes:
    GFLOP/s of an emulated kernel does not depend on m."""
    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
        probe = min(m, 64)  # a small call first, to estimate what a full one costs
        a[:probe] @ b
        start = time.perf_counter()
        a[:probe] @ b
        full = (time.perf_counter() - start) * m / probe
        rows = m
        if full * (reps + 2) > budget_s:  # shrink so the warm-up and reps fit the budget (at least 16 rows)
            rows = max(16, min(m, int(m * budget_s / (full * (reps + 2)))))
            a = a[:rows].contiguous()
        for _ in range(2):
            a @ b
        best = float("inf")
        for _ in range(reps):
            start = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - start)
        out[str(dtype).replace("torch.", "")] = 2 * rows * k * n / best / 1e9
    return out


def count_flops(fn: Callable[[], object]) -> float:
    """FLOPs of one call (matmuls, attention), counted by torch.utils.flop_counter."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        fn()
    return float(counter.get_total_flops())


def top_ops(fn: Callable[[], object], n: int = 8) -> list[dict]:
    """torch.profiler's top ``n`` ops by self CPU time for one call of ``fn`` (after one warm call)."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    with profile(activities=[ProfilerActivity.CPU]) as p:
        fn()
    events = p.key_averages()
    total = sum(e.self_cpu_time_total for e in events) or 1
    rows = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:n]
    return [{"op": e.key, "self_ms": e.self_cpu_time_total / 1e3, "share": e.self_cpu_time_total / total,
             "calls": e.count} for e in rows]
