"""hf-torchscript: Hugging Face Transformers models to validated TorchScript artifacts.

Import cost is kept low: the export side (transformers) loads only when `export`/`validate` run.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import (
    ArtifactError,
    BackendUnavailableError,
    HFTorchScriptError,
    InputError,
    OptionError,
    ShapeError,
    SourceError,
    TraceError,
    UnsupportedModelError,
    ValidationError,
)
from .options import DEFAULT_SHAPES, ExportOptions

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
    "InputError",
    "OptionError",
    "ShapeError",
    "SourceError",
    "TraceError",
    "UnsupportedModelError",
    "ValidationError",
]


def export(model, output_dir, **kwargs):
    from .exporter import export as _export

    return _export(model, output_dir, **kwargs)


export.__doc__ = "Export a transformers model to a validated TorchScript artifact. See hf_torchscript.exporter.export."


def load(directory, **kwargs):
    """Load an artifact directory as an :class:`ExportedModel` (torch + tokenizers only)."""
    from .runtime import load as _load

    return _load(directory, **kwargs)


def validate(directory, model, **kwargs):
    """Re-run the validation grid of an artifact against the eager model. See hf_torchscript.revalidate."""
    from .revalidate import validate as _validate

    return _validate(directory, model, **kwargs)


def benchmark(*args, **kwargs):
    """Benchmark eager vs exported variants. See hf_torchscript.bench.benchmark."""
    from .bench import benchmark as _benchmark

    return _benchmark(*args, **kwargs)


def __getattr__(name):
    if name == "ExportResult":
        from .exporter import ExportResult

        return ExportResult
    if name == "ExportedModel":
        from .runtime import ExportedModel

        return ExportedModel
    if name == "ValidationReport":
        from .parity import ValidationReport

        return ValidationReport
    raise AttributeError(f"module 'hf_torchscript' has no attribute {name!r}")
