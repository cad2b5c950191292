"""``--optimize auto``: build the candidates this CPU supports, time them here, keep the fastest that validated.

What is fastest depends on the CPU (bench/RESULTS.md, issue 26): on an AVX2-only EPYC bf16 is emulated
and 2.2-7.2x *slower* than float32; with AMX it is 3-4x faster; oneDNN graph fusion won 2x on one host
and is a per-shape specialisation. So the choice is measured on the machine that exports, not guessed:

1. candidates (``candidates``): float32 as exported by default, float32 frozen, float32 with oneDNN
   fusion (static shapes: fused graphs specialise on them), bfloat16 frozen and fused *only* where the
   CPU has bf16 instructions, dynamic int8 (its sensitivity pass and validation on real text decide
   whether it exists at all). Each is a normal export (flow.export) into a scratch folder beside
   OUTPUT_DIR: validated by the grid and the real-text check like every artifact; one that fails is
   recorded as failed, not kept.
2. timing (``measure``, replaceable: tests inject a fake): each candidate loaded with
   ``hf_torchscript.load`` and run over the workload (the user's texts, or real sentences bundled with
   the package, in batches, through the artifact's own tokenizer), in interleaved rounds whose order
   rotates; a candidate's time is the median over rounds. The load average is recorded before the builds
   and around the timing: the table is quiet when nothing else ran (under 1 before the builds, at most
   torch's threads + 1 at the end of the timing).
3. the winner (lowest median; ties to the earlier, simpler candidate) is re-sealed into OUTPUT_DIR with
   a ``tuning`` block in its manifest: the CPU, the workload, the table, and why it won.
"""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import HFTorchScriptError, OptionError, ValidationError, option
from ..progress import Progress
from ..progress import report as tell
from ..runtime import cpu

BASELINE = "fp32"
WORKLOAD_TEXTS = 64  # bundled sentences timed per pass: real lengths (KJV), a few seconds on BERT-base
BATCH_SIZE = 8
ROUNDS = 5
WARMUP = 2


@dataclass
class Candidate:
    """One variant to build: its name, the options it changes, and why it is skipped (None: built)."""

    name: str
    overrides: dict
    what: str
    skip: str | None = None


def candidates(options, cpu_flags=None) -> list[Candidate]:
    """The variants worth building on this CPU, in order of simplicity (ties go to the earlier)."""
    f = cpu.flags() if cpu_flags is None else frozenset(cpu_flags)
    fusable = options.shapes in ("auto", "static")
    no_fusion = (None if fusable else f"fused graphs need static shapes; {option('shapes', options.shapes)} was "
                 "asked (torch 2.13's oneDNN pass fails on the buckets module: RuntimeError bad optional access)")
    from . import packed

    no_pack = ("this torch build has no oneDNN" if not packed.available() else
               f"packing holds one trace; {option('shapes', 'buckets')} was asked" if options.shapes == "buckets" else None)
    bf16 = None if cpu.has_bf16(f) else ("this CPU has no bf16 instructions (avx512_bf16, amx_bf16): bf16 would be "
                                         "emulated; " + cpu.BF16_MEASURED)
    out = [
        Candidate(BASELINE, dict(optimize=False), "float32, the default export"),
        Candidate("fp32-frozen", dict(optimize=True), "float32, torch.jit.freeze"),
        Candidate("fp32-packed", dict(optimize=False, pack_linears=True),
                  "float32, Linear weights packed by oneDNN at load (faster GEMMs at few tokens per call)", no_pack),
        Candidate("fp32-onednn", dict(optimize=False, onednn_fusion=True, shapes="static"),
                  "float32, frozen, oneDNN graph fusion around each call, padded to the max length", no_fusion),
        Candidate("bf16-frozen", dict(optimize=True, dtype="bfloat16"), "bfloat16, frozen", bf16),
        Candidate("bf16-onednn", dict(optimize=False, dtype="bfloat16", onednn_fusion=True, shapes="static"),
                  "bfloat16, frozen, oneDNN graph fusion, padded to the max length", bf16 or no_fusion),
        Candidate("int8", dict(optimize=True, quantize="dynamic-int8"),
                  "dynamic int8 Linear layers (torch.ao, per-channel weights; the most damaging layers float32), "
                  "frozen"),
    ]
    return out


def read_texts(path) -> list[str]:
    """``--tune-texts``: one text per non-blank line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise OptionError(f"cannot read {option('tune_texts', str(path))}: {e.strerror or e}; pass a text file, one "
                          "text per line") from None
    except UnicodeDecodeError as e:
        raise OptionError(f"{option('tune_texts', str(path))} is not UTF-8 text ({e.reason} at byte "
                          f"{e.start})") from None
    texts = [line for line in text.splitlines() if line.strip()]
    if not texts:
        raise OptionError(f"{option('tune_texts', str(path))} has no texts; give one text per line")
    return texts


def workload(options) -> tuple[list[str], dict]:
    """The texts to time, and their description for the manifest."""
    if options.tune_texts is not None:
        texts = read_texts(options.tune_texts)
        return texts, {"source": "file", "file": str(options.tune_texts), "texts": len(texts),
                       "batch_size": BATCH_SIZE,
                       "description": f"{len(texts)} texts from {options.tune_texts}, batches of {BATCH_SIZE}"}
    from ..texts import real_sentences, real_text_source

    pool = [s["text"] for s in real_sentences()]
    texts = random.Random(0).sample(pool, min(WORKLOAD_TEXTS, len(pool)))  # real lengths, all books mixed
    src = real_text_source()
    return texts, {"source": "bundled", "texts": len(texts), "batch_size": BATCH_SIZE, "from": src["source"],
                   "description": f"{len(texts)} real sentences ({src['source']}), batches of {BATCH_SIZE}"}


def runner(model, texts: list[str], batch_size: int = BATCH_SIZE) -> Callable[[], None]:
    """One pass over the workload with a loaded artifact, as a service would run it."""
    if model.tokenizer is not None:
        batches = [texts[i:i + batch_size] for i in range(0, len(texts), batch_size)]

        def run() -> None:
            for b in batches:
                model(b)
        return run
    # Tensors only (no tokenizer shipped): random ids at the texts' word counts, capped at the max length,
    # right-padded per batch (speed does not depend on the ids' values).
    import torch

    m = model.manifest
    vocab = next((s["range"][1] for s in m["inputs"] if s["name"] == "input_ids" and s.get("range")), 100)
    pad = int(m["pad_token_id"])
    lengths = [max(1, min(len(t.split()) + 2, model.max_length)) for t in texts]
    g = torch.Generator().manual_seed(0)
    batches = []
    for i in range(0, len(lengths), batch_size):
        rows = lengths[i:i + batch_size]
        mask = (torch.arange(max(rows))[None, :] < torch.tensor(rows)[:, None]).long()
        ids = torch.randint(min(5, vocab - 1), vocab, mask.shape, generator=g)
        ids = torch.where(ids == pad, torch.full_like(ids, (pad + 1) % vocab), ids)
        full = {"input_ids": torch.where(mask.bool(), ids, torch.full_like(ids, pad)), "attention_mask": mask,
                "token_type_ids": torch.zeros_like(ids)}
        batches.append({n: full[n] for n in model.input_names if n in full})

    def run_tensors() -> None:
        for b in batches:
            model.run(**b)
    return run_tensors


def measure(runs: dict[str, Callable[[], None]], *, rounds: int = ROUNDS,
            warmup: int = WARMUP) -> dict[str, list[float]]:
    """Seconds per workload pass, per candidate, in interleaved rounds (the order rotates by one each round)."""
    names = list(runs)
    for _ in range(warmup):
        for n in names:
            runs[n]()
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            t = time.perf_counter()
            runs[n]()
            out[n].append(time.perf_counter() - t)
    return out


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def export_auto(model, output_dir, *, options, tokenizer=None, force: bool = False, progress: Progress = None,
                timer=None, rounds: int = ROUNDS, warmup: int = WARMUP, cpu_flags=None):
    """Build, validate and time the candidates (module docstring); write the fastest to ``output_dir``.

    ``timer(runs, rounds=, warmup=) -> {name: [seconds per round]}`` replaces ``measure`` (tests).
    Returns the winner's ExportResult, its manifest carrying the ``tuning`` block.
    """
    import torch

    from ..atomic import write_error
    from ..deprecation import jit_api
    from ..runtime.model import TruncationWarning, load
    from . import artifact
    from .flow import ExportResult, export

    start = time.perf_counter()
    load_before = _load_average()  # before the builds: they load every core themselves
    output_dir = Path(output_dir)
    artifact.check_writable(output_dir, force)
    texts, work = workload(options)  # a bad --tune-texts fails before minutes of exports
    timer = timer or measure
    scratch = artifact.staging_dir(output_dir.parent / f"{output_dir.name}-tune")
    table: list[dict] = []
    results = {}
    try:
        cands = candidates(options, cpu_flags)
        built = [c for c in cands if c.skip is None]
        for c in cands:
            row = {"name": c.name, "what": c.what, "options": c.overrides}
            table.append(row)
            if c.skip is not None:
                row.update(status="skipped", reason=c.skip)
                continue
            tell(progress, "optimize", f"candidate {c.name}: {c.what}", built.index(c) + 1, len(built))
            opts = dataclasses.replace(options, tune_texts=None, **c.overrides)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", cpu.CpuWarning)  # candidates are chosen for this CPU already
                    res = export(model, scratch / c.name, tokenizer=tokenizer, options=opts, force=True)
            except HFTorchScriptError as e:  # failed validation, untraceable: recorded, not kept
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                row.update(status="failed", reason=f"{type(e).__name__}: {first[:300]}")
                continue
            results[c.name] = res
            row.update(status="built", export_seconds=round(res.seconds, 1), shapes=res.strategy,
                       validation=res.validation.summary())
        if not results:
            raise ValidationError("--optimize auto: no candidate exported and validated: " + "; ".join(
                f"{r['name']} {r['reason']}" for r in table))
        tell(progress, "optimize", f"timing {len(results)} candidates on {work['description']}")
        models = {n: load(r.output_dir) for n, r in results.items()}
        runs = {}
        with warnings.catch_warnings():
            # Texts over the max length are cut, as in service; the warning would repeat for every pass.
            warnings.simplefilter("ignore", TruncationWarning)
            for n, m in models.items():
                run = runner(m, texts, work["batch_size"])
                try:
                    run()  # one untimed pass: a candidate that cannot serve the workload is out, not the tune
                except HFTorchScriptError as e:
                    row = next(r for r in table if r["name"] == n)
                    row.update(status="failed", reason=f"on the workload: {type(e).__name__}: {str(e)[:300]}")
                    del results[n]
                    continue
                runs[n] = run
            if not runs:
                raise ValidationError("--optimize auto: no candidate ran the workload: " + "; ".join(
                    f"{r['name']} {r.get('reason')}" for r in table))
            load_start = _load_average()
            times = timer(runs, rounds=rounds, warmup=warmup)
            load_end = _load_average()
        medians = {n: statistics.median(times[n]) * 1000 for n in runs}
        base = medians.get(BASELINE)
        for row in table:
            n = row["name"]
            if n in medians:
                row.update(status="timed", median_ms=round(medians[n], 3),
                           rounds_ms=[round(x * 1000, 3) for x in times[n]],
                           ratio=round(medians[n] / base, 4) if base else None)
        winner = choose(medians, [r["name"] for r in table])
        # Quiet: nothing else ran before the export (1-minute load under 1 then; the builds and the timing
        # raise it themselves) and nothing beside the timing (at its end, no more than torch's threads + 1).
        quiet = bool(load_before and load_end and load_before[0] < 1.0
                     and load_end[0] <= torch.get_num_threads() + 1.0)
        tuning = {
            "mode": "auto",
            "winner": winner,
            "why": why(winner, medians, table),
            "baseline": BASELINE if base else None,
            "workload": {**work, "rounds": rounds, "warmup": warmup},
            "method": "each candidate loaded with hf_torchscript.load and run over the whole workload once per "
                      "round; rounds interleaved, order rotated by one each round; median over rounds",
            "load_average": {"before_builds": load_before, "start": load_start, "end": load_end},
            "quiet": quiet,
            "cpu": cpu.describe(),
            "candidates": table,
            "seconds": round(time.perf_counter() - start, 1),
        }
        del models, runs
        # The winner as validated, re-sealed with the tuning block (the manifest is inside model.pt too).
        win = results[winner]
        staging = artifact.staging_dir(output_dir)
        shutil.rmtree(staging)
        shutil.copytree(win.output_dir, staging)
        manifest = dict(win.manifest)
        manifest["tuning"] = tuning
        with jit_api():
            module = torch.jit.load(str(staging / "model.pt"))
        try:
            artifact.seal(staging, module, manifest)
            artifact.commit(staging, output_dir, force)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    except OSError as e:
        raise write_error(e, output_dir) from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return ExportResult(output_dir, manifest, win.validation, win.strategy, time.perf_counter() - start,
                        win.attempts, tuning=tuning)


def choose(medians: dict[str, float], order: list[str]) -> str:
    """The candidate with the lowest median; a tie goes to the one earlier in ``order`` (the simpler one)."""
    timed = [n for n in order if n in medians]
    return min(timed, key=lambda n: (medians[n], timed.index(n)))


def why(winner: str, medians: dict[str, float], table: list[dict]) -> str:
    """One sentence: the winner's time against the others, and what was not in the race."""
    ranked = sorted(medians, key=medians.get)
    text = f"lowest median over the workload: {medians[winner]:.2f} ms per pass"
    others = [n for n in ranked if n != winner]
    if others:
        text += "; then " + ", ".join(f"{n} {medians[n]:.2f} ms ({medians[n] / medians[winner]:.2f}x)"
                                      for n in others)
    out = [r["name"] + " " + r["status"] for r in table if r["status"] in ("skipped", "failed")]
    if out:
        text += "; not timed: " + ", ".join(out) + " (reasons in the table)"
    return text
