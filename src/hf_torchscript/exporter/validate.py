"""Re-run an artifact's validation grid and text check against the eager model (``hf-torchscript validate``)."""

from __future__ import annotations

import dataclasses

from ..errors import ArtifactError, SourceError, ValidationError, option
from ..options import ExportOptions
from ..progress import Progress
from ..progress import report as tell
from ..runtime.artifact import load_module
from .backends import get_backend
from .parity import ValidationReport, tolerance_for
from .source import load_source, resolve_path
from .textcheck import check_texts


def validate(directory, model=None, *, atol: float | None = None, rtol: float | None = None,
             allow_pickle: bool = False, trust_remote_code: bool = False, progress: Progress = None) -> ValidationReport:
    """Check an exported artifact against the eager model it came from: the artifact's grid, then real texts.

    Args:
        directory: the artifact directory.
        model: the source model (path, cached/bundled id, or in-memory model); None: the one recorded in
            the manifest (``source``), found offline like export finds a model.
        atol, rtol: tolerances; default: those recorded at export.
        progress: called with each ``progress.Step`` (None: silent).

    Returns:
        The ValidationReport (also when it passed).

    Raises:
        ValidationError: some output is out of tolerance (``.report`` has the details).
        ArtifactError: the artifact does not match the model's signature.
        SourceError: no ``model`` given and the recorded one cannot be found offline.
    """
    from ..runtime.fusion import Fused
    from ..runtime.fusion import wanted as fusion_wanted
    from .parity import run_grid
    from .prepare import prepare

    tell(progress, "load", f"artifact {directory}")
    module, manifest = load_module(directory)
    recorded = manifest.get("validation", {})
    shapes = manifest["shapes"]
    options = ExportOptions(
        task=manifest["task"],
        batch_size=shapes["traced"][0]["batch_size"],
        sequence_length=shapes["traced"][0]["sequence_length"] or None,
        max_length=manifest["max_length"],
        atol=recorded.get("atol", ExportOptions.atol) if atol is None else atol,
        rtol=recorded.get("rtol", ExportOptions.rtol) if rtol is None else rtol,
        # bf16/fp16/int8 artifacts are checked in the cosine mode they were exported under.
        dtype=manifest.get("dtype") or "float32",
        quantize=manifest.get("quantize"),
        allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code,
    )
    if manifest.get("newly_initialized_weights"):
        raise ArtifactError(
            f"{directory} was exported with {len(manifest['newly_initialized_weights'])} untrained (randomly "
            f"initialised) tensors ({option('allow_new_weights', True)}): every load of the checkpoint draws them "
            "anew, so there is nothing to validate against; export a checkpoint that holds the trained weights"
        )
    if model is None:
        model = recorded_model(directory, manifest)
    tell(progress, "load", f"model {model if isinstance(model, str) else type(model).__name__}")
    # An override recorded at export (consistency.py) is honoured again: the same folder, the same decision.
    allowed = manifest.get("consistency") or {}
    src = load_source(model, task=options.task, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code,
                      allow_unused_weights=bool(allowed.get("unused_weights")),
                      allow_tokenizer_mismatch=bool(allowed.get("tokenizer_mismatches")))
    tell(progress, "prepare", f"{src.config.model_type} for {src.task}")
    # Only the float32 reference is needed: no bf16 copy, no int8 calibration; the recorded options
    # then pick the tolerance (cosine mode for bf16/int8).
    p = prepare(src, dataclasses.replace(options, dtype="float32", quantize=None), get_backend("torchscript"))
    p.options = options
    want_in = [i["name"] for i in manifest["inputs"]]
    want_out = [o["name"] for o in manifest["outputs"]]
    if [s.name for s in p.specs] != want_in or [o.name for o in p.outputs] != want_out:
        raise ArtifactError(
            f"{directory} takes {want_in} -> {want_out}, but {src.description} as {src.task} gives "
            f"{[s.name for s in p.specs]} -> {[o.name for o in p.outputs]}: not the model it was exported from"
        )
    if fusion_wanted(manifest):
        module = Fused(module)  # checked as it runs: with oneDNN fusion, switched on around each call
    report = run_grid(p, module, shapes, progress=progress)
    if not report.passed:
        raise ValidationError(
            f"{directory} does not match {src.description} in {len(report.failures)} checks "
            f"({', '.join(f'{k} {v:g}' for k, v in report.thresholds.items())})\n{report.failure_text()}",
            report,
        )
    tolerance = tolerance_for(options.dtype, options.quantize, atol=options.atol, rtol=options.rtol)
    tell(progress, "text check", "real texts through the artifact's tokenizer.json and model.pt vs the reference")
    text = check_texts(p, directory, tolerance)
    report.text = text.to_json()
    if text.ran and not text.passed:
        raise ValidationError(text.error_message(str(directory)), report)
    # Reduced precision: the answers on real sentences, with the bars export applied (answers.py).
    from .answers import check_answers

    answers = check_answers(p, directory, tolerance)
    report.answers = answers.to_json()
    if answers.ran and not answers.passed:
        raise ValidationError(answers.error_message(str(directory)), report)
    return report


def recorded_model(directory, manifest: dict) -> str:
    """The model ``manifest["source"]`` names, if it can be found offline (as given, then its recorded path)."""
    source = manifest.get("source") or {}
    recorded = source.get("model")
    if not recorded or str(recorded).startswith("<in-memory"):
        raise SourceError(
            f"{directory} was exported from an in-memory model, so its manifest names no model to load; pass "
            f"{option('model', metavar='MODEL')}, the model it was exported from"
        )
    for candidate in (recorded, source.get("path")):
        if not candidate:
            continue
        try:
            resolve_path(candidate)
        except SourceError:
            continue
        return candidate
    where = f" (at {source['path']})" if source.get("path") and source["path"] != recorded else ""
    raise SourceError(
        f"the model {directory} was exported from, {recorded!r}{where}, cannot be found offline: not a directory "
        "here, not in the local Hugging Face cache, not bundled by an installed package; pass "
        f"{option('model', metavar='MODEL')}, the model it was exported from"
    )
