"""One benchmark run: build the variants, time them interleaved, measure their accuracy on real text."""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import tempfile
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..options import DEFAULT_GRID, bench_args_doc, bench_options, bench_signature
from . import timing, workload
from .report import BenchmarkReport, evaluate_targets, load_targets
from .variants import ALL_VARIANTS, EXPORTED, Variant, exported, missing_extras, peer, weights_digest

__all__ = ["DEFAULT_GRID", "Subject", "benchmark"]


@dataclass
class Subject:
    """A model loaded once and prepared the way export prepares it: the fp32 function every variant computes."""

    model: object  # what was passed (directory, id or in-memory model): exports load it themselves
    description: str
    task: str
    wrapper: torch.nn.Module  # the fp32 ExportWrapper (positional tensors in, tuple out)
    input_names: list[str]
    outputs: list
    max_length: int
    pad_token_id: int
    vocab_size: int
    tokenizer: object | None
    digest: str | None  # sha256 of the weights and config: exported artifacts are reused only on a match

    @classmethod
    def load(cls, model, *, task: str | None, max_length: int | None) -> Subject:
        from ..exporter.backends import get_backend
        from ..exporter.prepare import prepare
        from ..exporter.source import load_source
        from ..options import ExportOptions

        src = load_source(model, task=task)
        p = prepare(src, ExportOptions(task=src.task, max_length=max_length), get_backend("torchscript"))
        return cls(model, src.description, src.task, p.reference, [s.name for s in p.specs], p.outputs, p.max_length,
                   p.pad_token_id, p.vocab_size, src.tokenizer, weights_digest(src.path))

    def batch(self, lengths: list[int], length: int, seed: int) -> dict:
        return workload.synthetic_batch(self.input_names, lengths, length, self.vocab_size, self.pad_token_id, seed)

    def variants(self, wanted: Sequence[str], workdir: Path, step) -> dict[str, Variant]:
        out = {}
        example = self.batch([16, 9], 16, 0)
        for name in wanted:
            step(name)
            if name in EXPORTED:
                kw = dict(EXPORTED[name][0], task=self.task, max_length=self.max_length)
                if kw["shapes"] == "static":
                    kw["sequence_length"] = None  # the max length: pad-to-max, as the seed did
                out[name] = exported(name, self.model, kw, workdir, self.digest)
            else:
                out[name] = peer(name, self.wrapper, self.input_names, example, workdir)
        return out


def benchmark(model, **options) -> BenchmarkReport:
    """Time eager transformers, our exported variants and peers (ONNX Runtime, torch.compile) in one run.

    Speed is measured on ``model`` with random token ids at fixed shapes and on a mixed-length
    workload; accuracy (per-row cosine and top-1 vs eager fp32) on real sentences through
    ``accuracy_model`` (default: ``model`` itself), every variant built again for it. Use a
    trained model for accuracy: random weights say nothing about int8 on real activations.
    The keywords are ``options.BenchOptions``' fields (the ``bench`` command's flags come from them too).

    {args}

    Returns:
        BenchmarkReport (also written to ``output_dir`` when given).

    Raises:
        OptionError: unknown variant names, an unreadable targets file.

    Example:
        >>> hts.benchmark("out/bert-dir", output_dir="bench/results", variants=["ts-dynamic", "onnxruntime"])  # doctest: +SKIP
    """
    o = bench_options("benchmark", options)
    task, output_dir, workdir, variants, grid = o.task, o.output_dir, o.workdir, o.variants, o.grid
    rounds, warmup, mixed_requests, mixed_batch, mixed_rounds = (o.rounds, o.warmup, o.mixed_requests, o.mixed_batch,
                                                                 o.mixed_rounds)
    threads, max_length, accuracy_model, accuracy_task = o.threads, o.max_length, o.accuracy_model, o.accuracy_task
    accuracy_sentences, profile_shape, targets, seed = o.accuracy_sentences, o.profile_shape, o.targets, o.seed
    progress, description = o.progress, o.description
    from ..errors import OptionError, option, require_extra

    # Counts first: threads=0 used to fail inside torch ("internal error"), rounds=0 to measure nothing for minutes.
    for name, value, least in (("rounds", rounds, 1), ("warmup", warmup, 0), ("mixed_requests", mixed_requests, 0),
                               ("mixed_batch", mixed_batch, 1), ("mixed_rounds", mixed_rounds, 1), ("threads", threads, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise OptionError(f"{option(name)} must be an integer >= {least}, got {value!r}")
    if max_length is not None and (not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 1):
        raise OptionError(f"{option('max_length')} must be a positive integer, got {max_length!r}")
    require_extra("export", "benchmark", "transformers")  # before minutes of measuring
    wanted = list(variants or ALL_VARIANTS)
    unknown = [v for v in wanted if v not in ALL_VARIANTS]
    if unknown:
        raise OptionError(f"unknown benchmark variants {unknown}; choose from {', '.join(ALL_VARIANTS)}")
    if "eager" not in wanted:
        wanted.insert(0, "eager")  # every ratio is to eager fp32 in the same run
    wanted = [n for n in ALL_VARIANTS if n in wanted]
    target_specs = load_targets(targets) if targets is not None else []
    missing = missing_extras(wanted)
    if missing and progress:
        print("bench: not installed, so not measured: " + "; ".join(f"{p} ({why})" for p, why in missing.items())
              + ". pip install 'hf-torchscript[bench]'", file=sys.stderr)
    if workdir is None:
        workdir = Path(output_dir) / "artifacts" if output_dir is not None else Path(tempfile.mkdtemp(prefix="hts-bench-"))
    workdir = Path(workdir)
    load_start = os.getloadavg()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with _progress(progress) as bar:
            report, subject, vs = _run(model, task, wanted, workdir / "speed", grid, rounds, warmup, mixed_requests,
                                       mixed_batch, mixed_rounds, max_length, profile_shape, seed, bar)
            if accuracy_model is False:
                report.accuracy = {"skipped": "not requested"}
            else:
                if accuracy_model is not None:  # another (trained) model: every variant is built again for it
                    subject = Subject.load(accuracy_model, task=accuracy_task, max_length=max_length)
                    vs = None
                report.accuracy = _accuracy(subject, vs, wanted, workdir / "accuracy", accuracy_sentences, bar)
    finally:
        torch.set_num_threads(previous_threads)
    report.model = description or report.model
    report.environment = _environment(threads, load_start, missing)
    report.targets = evaluate_targets(report, target_specs)
    if output_dir is not None:
        report.save(output_dir)
    return report


# The keywords are BenchOptions' fields, listed once there: help() and inspect.signature show each with its default.
benchmark.__signature__ = bench_signature(BenchmarkReport)
if benchmark.__doc__:  # None under python -OO
    benchmark.__doc__ = benchmark.__doc__.replace("{args}", textwrap.indent(bench_args_doc(), "    ").strip())


def _run(model, task, wanted, workdir: Path, grid, rounds, warmup, mixed_requests, mixed_batch, mixed_rounds,
         max_length, profile_shape, seed, bar) -> tuple[BenchmarkReport, Subject, dict[str, Variant]]:
    torch.manual_seed(seed)
    subject = Subject.load(model, task=task, max_length=max_length)
    t = bar.add_task("build", total=len(wanted))
    vs = subject.variants(wanted, workdir, lambda name: (bar.update(t, description=f"build {name}"), bar.advance(t)))
    ok = [n for n, v in vs.items() if v.skipped is None]
    ceiling = timing.gemm_ceiling()

    grid_out = []
    t = bar.add_task("grid", total=len(grid) * (rounds + warmup))
    for B, L in grid:
        L = min(L, subject.max_length)
        batch = subject.batch([L] * B, L, seed)
        flops = timing.count_flops(lambda: subject.wrapper(*(batch[n] for n in subject.input_names)))
        fns = {n: (lambda v=vs[n]: v.run(batch)) for n in ok}
        bar.update(t, description=f"grid {B}x{L}")
        times = timing.interleaved(fns, rounds=rounds, warmup=warmup, baseline="eager", tick=lambda: bar.advance(t))
        grid_out.append({"batch": B, "length": L, "tokens": B * L, "gflop": flops / 1e9,
                         "results": _summarise(times, B * L, flops, ceiling, vs)})

    mixed = {}
    if mixed_requests:
        lengths = workload.sample_lengths(mixed_requests, subject.max_length, seed=seed)
        groups = [lengths[i:i + mixed_batch] for i in range(0, len(lengths), mixed_batch)]
        inputs = [subject.batch(g, max(g), seed + i) for i, g in enumerate(groups)]
        flops = sum(timing.count_flops(lambda x=x: subject.wrapper(*(x[n] for n in subject.input_names))) for x in inputs)
        t = bar.add_task("mixed", total=mixed_rounds + 1)
        fns = {n: (lambda v=vs[n]: [v.run(x) for x in inputs]) for n in ok}
        times = timing.interleaved(fns, rounds=mixed_rounds, warmup=1, baseline="eager", tick=lambda: bar.advance(t))
        results = _summarise(times, sum(lengths), flops, ceiling, vs)
        if "ts-static" in results:
            base = results["ts-static"]["tokens_per_s"]
            for r in results.values():
                r["throughput_vs_static"] = r["tokens_per_s"] / base
        mixed = {"requests": len(lengths), "batch": mixed_batch,
                 "batching": "arrival order, fixed batch, padded to the batch's longest",
                 "length_source": workload.length_source(), "length_stats": workload.stats(lengths),
                 "padded_tokens_dynamic": sum(max(g) * len(g) for g in groups),
                 "padded_tokens_static": subject.max_length * len(lengths), "real_tokens": sum(lengths),
                 "tokens": sum(lengths), "gflop": flops / 1e9, "results": results}

    prof = {}
    if profile_shape:
        B, L = profile_shape
        L = min(L, subject.max_length)
        batch = subject.batch([L] * B, L, seed)
        t = bar.add_task("profile", total=len(ok))
        for n in ok:
            prof[n] = timing.top_ops(lambda: vs[n].run(batch))
            bar.advance(t)

    variants_json = {n: {"description": v.description, "status": "ok" if v.skipped is None else "skipped",
                         "reason": v.skipped, "dtype": v.dtype, **v.info} for n, v in vs.items()}
    method = {"rounds": rounds, "warmup": warmup, "mixed_rounds": mixed_rounds, "seed": seed,
              "ratio": "median over rounds of (variant time / eager fp32 time in the same round)",
              "best_vs_best": "fastest call of the variant / fastest call of eager fp32",
              "order": "each round runs every variant once; the order rotates by one each round",
              "flops": "torch.utils.flop_counter on eager fp32 at the real shape (padding is not useful work)",
              "inputs": "random token ids at each shape (speed does not depend on the ids)"}
    report = BenchmarkReport(model=subject.description, task=subject.task, environment={}, method=method,
                             gemm_ceiling_gflops=ceiling, variants=variants_json, grid=grid_out, mixed=mixed,
                             accuracy={}, profile=prof)
    return report, subject, vs


def _summarise(times: dict[str, timing.Timing], tokens: int, flops: float, ceiling: dict, vs) -> dict:
    out = {}
    for n, tm in times.items():
        gflops = flops / tm.median_s / 1e9
        ceil = ceiling["bfloat16"] if vs[n].dtype == "bfloat16" else ceiling["float32"]
        out[n] = {"median_ms": tm.median_s * 1e3, "p90_ms": tm.p90_s * 1e3, "min_ms": tm.min_s * 1e3,
                  "ratio": tm.ratio, "ratio_of_mins": tm.ratio_of_mins, "tokens_per_s": tokens / tm.median_s,
                  "gflops": gflops, "ceiling_fraction": gflops / ceil, "times_ms": [x * 1e3 for x in tm.times_s]}
    return out


def _accuracy(subject: Subject, vs: dict[str, Variant] | None, wanted, workdir: Path, sentences: int, bar) -> dict:
    """Every variant of ``subject`` on real sentences vs its eager fp32 function: per-row cosine, top-1.

    ``vs``: the variants already built for ``subject`` (None: build them here).
    """
    from ..exporter.quantize import agreement

    if subject.tokenizer is None or not set(subject.input_names) <= {"input_ids", "attention_mask", "token_type_ids"}:
        return {"skipped": f"{subject.description} has no tokenizer for plain text; pass accuracy_model= "
                           "(e.g. sentence-transformers/all-MiniLM-L6-v2)"}
    rows = workload.real_sentences()
    texts = [r["text"] for r in rows[:: max(1, len(rows) // sentences)]][:sentences]
    batches = workload.text_batches(subject.tokenizer, subject.input_names, texts, batch=16,
                                    max_length=min(128, subject.max_length))
    if vs is None:
        t = bar.add_task("accuracy", total=len(wanted))
        vs = subject.variants(wanted, workdir, lambda name: (bar.update(t, description=f"accuracy {name}"),
                                                              bar.advance(t)))
    ref = [vs["eager"].run(b) for b in batches]
    out0 = subject.outputs[0]
    seq = tuple(out0.shape[:2]) == ("batch_size", "sequence_length")
    valid = [b["attention_mask"] if seq and "attention_mask" in b else None for b in batches]
    results = {}
    for n, v in vs.items():
        if v.skipped is None:
            results[n] = agreement([v.run(b) for b in batches], ref, valid, out0.name.endswith("logits")).to_json()
    return {"model": subject.description, "task": subject.task, "output": out0.name,
            "texts": dict(workload.real_text_source(), used=len(texts), batch=16, padding="to each batch's longest"),
            "skipped_variants": {n: v.skipped for n, v in vs.items() if v.skipped},
            "results": results}


def _environment(threads: int, load_start, missing: dict) -> dict:
    env = {"cpu": _cpu_name(), "cpu_flags": _cpu_flags(), "threads": threads, "loadavg_start": list(load_start),
           "loadavg_end": list(os.getloadavg()), "cores": os.cpu_count(), "torch": torch.__version__,
           "python": platform.python_version(), "missing_extras": missing}
    for mod in ("transformers", "onnxruntime"):
        try:
            env[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return env


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> list[str]:
    """The matrix extensions that decide which kernels run (AVX-512 bf16/VNNI, AMX)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                return sorted(f for f in flags if f.startswith(("avx512_bf16", "avx512_vnni", "amx", "avx_vnni",
                                                                 "avx512f", "avx2")))
    except OSError:
        pass
    return []


@contextlib.contextmanager
def _progress(enabled: bool):
    """rich progress bars on stderr when enabled and installed; otherwise nothing."""
    if enabled:
        try:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            with Progress(TextColumn("{task.description:<24}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                          TimeElapsedColumn(), console=Console(stderr=True), transient=False) as p:
                yield p
            return
        except ImportError:
            pass
    yield _NoProgress()


class _NoProgress:
    def add_task(self, *a, **k):
        return 0

    def update(self, *a, **k):
        pass

    def advance(self, *a, **k):
        pass
