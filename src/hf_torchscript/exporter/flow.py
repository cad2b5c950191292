"""The export flow, one direction, each step in the module named after it:

    source.load_source   config, weights (safetensors), tokenizer; the task's Auto class
    prepare.prepare      traceable wrapper, input specs, declared output axes, precision
    shapes.candidates    which shape strategies to try, in order
    shapes.build         trace every shape a strategy needs (backends/), one scripted dispatcher
    parity.run_grid      the proof, on the saved-and-reloaded module; fall back or fail
    artifact.*           manifest, files with their hashes, atomic commit
    textcheck            real texts through the written tokenizer.json + model.pt vs the reference library

This module only orchestrates them; see docs/architecture.md for where new things go.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..atomic import check_space, interruptible, write_error
from ..deprecation import NOTICE as TORCHSCRIPT_NOTICE
from ..errors import OptionError, TraceError, ValidationError
from ..options import ExportOptions
from ..progress import Progress
from ..progress import report as tell
from ..runtime import cpu, fusion
from ..runtime.artifact import MODEL_FILES
from ..tasks import get_task
from . import answers, artifact, parity, shapes, textcheck
from .backends import get_backend
from .parity import ValidationReport, tolerance_for
from .prepare import prepare
from .source import artifact_size_estimate, load_source, resolve_path


@dataclass
class ExportResult:
    """What `export` produced: where, the manifest written, the validation report."""

    output_dir: Path
    manifest: dict
    validation: ValidationReport
    strategy: str
    seconds: float = 0.0
    attempts: list[str] = field(default_factory=list)
    tuning: dict | None = None  # --optimize auto: the manifest's tuning block (the measured table)

    def __str__(self) -> str:
        s = self.manifest["shapes"]
        text = (
            f"exported {self.manifest['model_type']} ({self.manifest['task']}) to {self.output_dir} "
            f"[shapes: {self.strategy}, lengths 1..{s['max_length']}] in {self.seconds:.1f}s; {self.validation.summary()}"
        )
        if self.tuning:
            text += f"; {self._tuning_line()}"
        if self.manifest.get("format", "torchscript") == "torchscript":
            text += f"; {TORCHSCRIPT_NOTICE}"  # said once per export; each torch.jit call is quiet (deprecation.py)
        return text

    def lines(self) -> list[str]:
        """The summary as the CLI prints it: a headline, then shapes, validation, text check, note (one each)."""
        s = self.manifest["shapes"]
        v = self.validation
        text = v._text_summary()
        validation = v.summary()
        if text and validation.endswith(text):
            validation = validation[: -len(text)]
        out = [(f"exported {self.manifest['model_type']} ({self.manifest['task']}) to {self.output_dir} "
                f"in {self.seconds:.1f}s"),
               f"  shapes: {self.strategy}, lengths 1..{s['max_length']}",
               f"  {validation}"]
        if v.text:
            out.append(f"  {v.text['summary']}")
        if self.tuning:
            out.append(f"  {self._tuning_line()}")
        if self.manifest.get("format", "torchscript") == "torchscript":
            out.append(f"  {TORCHSCRIPT_NOTICE}")
        return out

    def _tuning_line(self) -> str:
        t = self.tuning
        quiet = "" if t.get("quiet") else ", the machine was busy while it timed: not evidence"
        return f"--optimize auto chose {t['winner']} ({t['why']}{quiet})"


@interruptible()  # SIGTERM cleans up like Ctrl-C while an export runs; the previous handler comes back
def export(model, output_dir, *, task: str | None = None, tokenizer=None, force: bool = False,
           options: ExportOptions | None = None, progress: Progress = None, **option_fields) -> ExportResult:
    """Export a transformers model to a validated TorchScript artifact directory (see hf_torchscript.export).

    ``progress``: called with a ``progress.Step`` as each step starts and advances (None: silent).
    """
    start = time.perf_counter()
    options = make_options(options, task=task, **option_fields)
    if options.optimize == "auto":  # build, validate and time the candidates; the fastest is written (tune.py)
        from .tune import export_auto

        return export_auto(model, output_dir, options=options, tokenizer=tokenizer, force=force, progress=progress)
    output_dir = Path(output_dir)
    # A precision this CPU has no instructions for is slower than float32, not faster: say so before minutes of work.
    cpu.warn_slow(artifact.cpu_notes(options), progress)
    # Everything about the destination is checked before the model is loaded (minutes for big ones).
    model_dir = resolve_path(model) if isinstance(model, (str, os.PathLike)) else None
    artifact.check_writable(output_dir, force, model=model_dir)
    check_space(output_dir, artifact_size_estimate(model_dir or model, dtype=options.dtype))
    backend = get_backend(options.backend)
    if backend.import_sdk is not None:
        backend.import_sdk()  # a missing Neuron SDK fails here, before the model is loaded

    tell(progress, "load", f"loading {model if isinstance(model, (str, Path)) else type(model).__name__}")
    src = load_source(model, task=options.task, tokenizer=tokenizer, allow_pickle=options.allow_pickle,
                      trust_remote_code=options.trust_remote_code, allow_new_weights=options.allow_new_weights,
                      allow_unused_weights=options.allow_unused_weights,
                      allow_tokenizer_mismatch=options.allow_tokenizer_mismatch)
    if get_task(src.task).kv_cache:  # a static KV cache in the graph, proven against generate (its own flow)
        from .generation import export_generation

        return export_generation(src, output_dir, options, force=force, progress=progress, start=start)
    tell(progress, "prepare", f"{src.config.model_type} for {src.task}: wrapper, inputs, output axes")
    p = prepare(src, options, backend)
    tolerance = tolerance_for(options.dtype, options.quantize, atol=options.atol, rtol=options.rtol)
    staging = artifact.staging_dir(output_dir)
    try:
        attempts: list[str] = []
        tracer_warnings: list[str] = []
        report = None
        for strategy in shapes.candidates(p, backend):
            try:
                module, info = shapes.build(p, backend, strategy, tracer_warnings, progress=progress)
            except shapes.StrategyRefused as e:  # aoti: torch.export cannot make the range dynamic
                attempts.append(f"{strategy} refused ({e})")
                continue
            if backend.can_run_here():
                loaded = artifact.roundtrip(module, staging)
                if options.onednn_fusion:  # validated as it will run: fused, switched on around each call
                    loaded = fusion.Fused(loaded)
                report = parity.run_grid(p, loaded, info, progress=progress)
            else:
                report = parity.not_run(backend, options.atol, options.rtol)
            if report.passed or not report.ran:
                break
            attempts.append(f"{strategy} failed ({report.failures[0]})")
        else:
            if report is None or attempts[-1].startswith(f"{strategy} refused"):
                raise TraceError(f"{backend.name} cannot export {p.arch.model_type} ({p.task.name}) with --shapes "
                                 f"{options.shapes}: {'; '.join(attempts)}.{shapes.failure_hint(p, strategy, backend)}")
            raise ValidationError(
                f"the exported {strategy} module does not match the eager model in {len(report.failures)} checks "
                f"({tolerance.describe()}); nothing was written.{shapes.failure_hint(p, strategy, backend)}\n"
                f"{report.failure_text()}",
                report,
            )
        info["reason"] = shapes.reason(strategy, options.shapes, report, attempts, backend)
        manifest = artifact.build_manifest(p, backend, report, info, tracer_warnings, tolerance)
        model_file = MODEL_FILES[backend.format]
        tell(progress, "save", f"{model_file}, manifest.json, tokenizer files -> {output_dir}")
        artifact.write_artifact(staging, module, manifest, src.tokenizer)
        # Real texts through the written tokenizer.json and model.pt, as a user runs them; the
        # result goes into the manifest model.pt embeds, so the staged artifact is sealed again.
        tell(progress, "text check", f"real texts through the written tokenizer.json and {model_file} vs the reference")
        text = textcheck.check_texts(p, staging, tolerance) if report.ran else textcheck.not_run(report.note)
        report.text = manifest["validation"]["text"] = text.to_json()
        if text.ran and not text.passed:
            raise ValidationError(text.error_message(f"the exported {strategy} artifact"), report)
        # Reduced precision: the same answers as float32 on real sentences (answers.py), each figure with its bar.
        if tolerance.mode == "cosine":
            tell(progress, "answers", "real sentences: the answers users see vs float32")
        ans = answers.check_answers(p, staging, tolerance) if report.ran else answers.not_run(str(report.note))
        report.answers = manifest["validation"]["answers"] = ans.to_json()
        if ans.ran and not ans.passed:
            raise ValidationError(ans.error_message(f"the exported {strategy} artifact"), report)
        artifact.seal(staging, module, manifest)
        artifact.commit(staging, output_dir, force)
    except OSError as e:  # disk full, I/O error, permissions changed meanwhile: one line, earlier artifact kept
        shutil.rmtree(staging, ignore_errors=True)
        raise write_error(e, output_dir) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportResult(output_dir, manifest, report, strategy, time.perf_counter() - start, attempts)


def make_options(options: ExportOptions | None = None, **fields) -> ExportOptions:
    """An ExportOptions from keywords, or ``options`` with some fields replaced; unknown names listed."""
    fields = {k: v for k, v in fields.items() if not (k == "task" and v is None and options is not None)}
    try:
        return ExportOptions(**fields) if options is None else dataclasses.replace(options, **fields)
    except TypeError as e:
        valid = ", ".join(f.name for f in dataclasses.fields(ExportOptions))
        raise OptionError(f"{e}; export() accepts these options: {valid}") from None
