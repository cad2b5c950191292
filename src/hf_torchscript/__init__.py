"""hf-torchscript: Hugging Face Transformers models to validated TorchScript artifacts.

    export(MODEL, OUT)   source -> prepare -> shapes/backends -> parity -> artifact (see exporter.py)
    load(OUT)            the artifact as an ExportedModel: torch + tokenizers only
    validate(OUT)        re-run the proof against the eager model (the one the manifest records, or MODEL)
    benchmark(MODEL)     eager vs exported variants, one interleaved run

Import cost is kept low: torch loads only when a verb runs, transformers only for export/validate.
"""

from __future__ import annotations

import inspect as _inspect

from .errors import (
    ArtifactError,
    BackendUnavailableError,
    ConsistencyError,
    HFTorchScriptError,
    InputError,
    OptionError,
    ShapeError,
    SourceError,
    TraceError,
    UnsupportedModelError,
    ValidationError,
)
from .options import DEFAULT_SHAPES, ExportOptions, bench_options, bench_signature
from .version import __version__  # noqa: F401  (the public version attribute)

__all__ = [
    "export",
    "load",
    "validate",
    "benchmark",
    "ExportOptions",
    "ExportResult",
    "ExportedModel",
    "ValidationReport",
    "DEFAULT_SHAPES",
    "HFTorchScriptError",
    "ArtifactError",
    "BackendUnavailableError",
    "ConsistencyError",
    "InputError",
    "OptionError",
    "ShapeError",
    "SourceError",
    "TraceError",
    "UnsupportedModelError",
    "ValidationError",
]


def export(model, output_dir, *, task=None, tokenizer=None, force=False, options=None, progress=None, **option_fields):
    from .exporter.flow import export as _export
    from .progress import checked

    return _export(model, output_dir, task=task, tokenizer=tokenizer, force=force, options=options,
                   progress=checked(progress), **option_fields)


def _export_doc() -> str:
    lines = [
        "Export a transformers model to a validated TorchScript artifact directory (all or nothing).",
        "",
        "Args:",
        "    model: a directory saved with ``save_pretrained``, a model id in the local Hugging Face cache or",
        "        bundled by an installed package (never downloaded), or an in-memory ``PreTrainedModel``.",
        "    output_dir: the artifact directory to create; an earlier artifact there is replaced only with force.",
        "    task: one of ``options.TASK_NAMES`` (the task registry, ``hf_torchscript.tasks``); None infers it",
        "        from the checkpoint.",
        "    tokenizer: a transformers tokenizer to ship with an in-memory model.",
        "    force: replace an earlier artifact in ``output_dir``.",
        "    options: an :class:`ExportOptions`; keywords below replace its fields.",
        "    progress: called with a ``progress.Step`` as each step starts and advances (load, prepare, trace,",
        "        validate, save); None (default) or False reports nothing. The library itself never prints.",
    ]
    for f in ExportOptions.fields():
        if f.name != "task":
            lines.append(f"    {f.name}: {f.metadata['help']} (default {f.default!r})")
    lines += [
        "",
        "Returns:",
        "    ExportResult: ``output_dir``, ``manifest``, ``validation`` (a ValidationReport), ``strategy``.",
        "",
        "Raises:",
        "    SourceError, UnsupportedModelError, OptionError/ShapeError, TraceError, ValidationError (nothing",
        "    written), ArtifactError. All derive from HFTorchScriptError.",
        "",
        "Example:",
        "    >>> import hf_torchscript as hts",
        "    >>> hts.export(\"sentence-transformers/all-MiniLM-L6-v2\", \"out/minilm\")  # doctest: +SKIP",
    ]
    return "\n".join(lines)


# The options are ExportOptions' fields, listed once there; the signature is built from them so that
# help() and inspect.signature show every keyword with its default.
export.__doc__ = _export_doc()
export.__signature__ = _inspect.Signature(
    [
        _inspect.Parameter("model", _inspect.Parameter.POSITIONAL_OR_KEYWORD),
        _inspect.Parameter("output_dir", _inspect.Parameter.POSITIONAL_OR_KEYWORD),
        _inspect.Parameter("task", _inspect.Parameter.KEYWORD_ONLY, default=None),
        _inspect.Parameter("tokenizer", _inspect.Parameter.KEYWORD_ONLY, default=None),
        _inspect.Parameter("force", _inspect.Parameter.KEYWORD_ONLY, default=False),
        _inspect.Parameter("options", _inspect.Parameter.KEYWORD_ONLY, default=None),
        _inspect.Parameter("progress", _inspect.Parameter.KEYWORD_ONLY, default=None),
        *(_inspect.Parameter(f.name, _inspect.Parameter.KEYWORD_ONLY, default=f.default)
          for f in ExportOptions.fields() if f.name != "task"),
    ]
)


def load(directory, *, verify: bool = True, truncation: str = "warn", **unknown):
    """Load an artifact directory as an :class:`ExportedModel` (torch + tokenizers only).

    Args:
        directory: what ``hf-torchscript export`` wrote.
        verify: check every file's sha256 against manifest.json (refuse a tampered artifact).
        truncation: ``"warn"`` cuts over-long texts with a TruncationWarning; ``"error"`` raises InputError.

    Returns:
        ExportedModel: call it with texts (task outputs) or tensors by name ({output name: tensor}).

    Raises:
        ArtifactError: missing files, unknown format version, a hash mismatch (naming the file).
        OptionError: ``directory`` is not a path, or a keyword load does not take (``device=``: artifacts
            run on the CPU they were exported for).

    Example:
        >>> model = hts.load("out/minilm")  # doctest: +SKIP
        >>> model(["A man is eating food."]).shape  # doctest: +SKIP
        torch.Size([1, 384])
    """
    from .runtime.model import load as _load

    return _load(directory, verify=verify, truncation=truncation, **unknown)


def validate(directory, model=None, *, atol: float | None = None, rtol: float | None = None,
             allow_pickle: bool = False, trust_remote_code: bool = False, progress=None):
    """Re-run an artifact's validation grid against the eager model it was exported from.

    Args:
        directory: the artifact directory.
        model: the source model (path, cached/bundled id, or in-memory model); None: the one the manifest
            records (``source``), found offline as export finds models.
        atol, rtol: fp32 tolerances; default: those recorded at export.
        allow_pickle, trust_remote_code: as for export.
        progress: called with each ``progress.Step`` (None or False: silent).

    Returns:
        ValidationReport (also when it passed).

    Raises:
        ValidationError: some output is out of tolerance (``.report`` has the details).
        ArtifactError: the artifact is tampered with or does not match the model's signature.
        SourceError: ``model`` is None and the recorded model cannot be found offline.
    """
    from .exporter.validate import validate as _validate
    from .progress import checked

    return _validate(directory, model, atol=atol, rtol=rtol, allow_pickle=allow_pickle,
                     trust_remote_code=trust_remote_code, progress=checked(progress))


def benchmark(model, **options):
    """Time eager transformers, exported variants and peers (ONNX Runtime, torch.compile) in one run,
    with each variant's accuracy on real text. See :func:`hf_torchscript.bench.benchmark` for the arguments
    (the fields of :class:`hf_torchscript.options.BenchOptions`).

    Returns:
        BenchmarkReport.

    Example:
        >>> hts.benchmark("out/bert-dir", output_dir="bench-results", variants=["ts-dynamic"])  # doctest: +SKIP
    """
    from .bench import benchmark as _benchmark

    bench_options("benchmark", options)  # an unknown keyword fails here, as for a spelled-out signature
    return _benchmark(model, **options)


# BenchOptions' fields, listed once there (importing bench/ here would pull torch into `import hf_torchscript`).
benchmark.__signature__ = bench_signature()


def __getattr__(name):
    if name == "ExportResult":
        from .exporter.flow import ExportResult

        return ExportResult
    if name == "ExportedModel":
        from .runtime.model import ExportedModel

        return ExportedModel
    if name == "ValidationReport":
        from .exporter.parity import ValidationReport

        return ValidationReport
    raise AttributeError(f"module 'hf_torchscript' has no attribute {name!r}")
