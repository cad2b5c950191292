"""Typed errors: one base class, so callers (and the CLI) can catch everything we raise.

Every message says what was wrong (with the offending value), what is supported, and
what to do; the CLI prints it once, on one line.
"""

from __future__ import annotations


class HFTorchScriptError(Exception):
    """Base class of every error hf-torchscript raises on purpose."""


class SourceError(HFTorchScriptError):
    """The model could not be found or loaded (path, config, weights, remote code)."""


class UnsupportedModelError(HFTorchScriptError):
    """The architecture or the task is not supported."""


class TraceError(HFTorchScriptError):
    """Tracing the prepared model failed."""


class ValidationError(HFTorchScriptError):
    """The exported module does not compute the same function as the eager model.

    ``report`` holds the full :class:`~hf_torchscript.parity.ValidationReport`.
    """

    def __init__(self, message: str, report=None):
        super().__init__(message)
        self.report = report


class OptionError(HFTorchScriptError):
    """An option value or a combination of options is not valid."""


class ShapeError(OptionError):
    """Bad shape options (buckets, batch size, lengths) or inputs of the wrong shape."""


class ArtifactError(HFTorchScriptError):
    """The artifact directory is missing, incomplete, tampered with, or would be overwritten."""


class InputError(HFTorchScriptError):
    """Inputs given to an exported model at run time are wrong (empty, too long, wrong dtype)."""


class BackendUnavailableError(HFTorchScriptError):
    """A tracing backend's SDK (e.g. AWS Neuron) is not installed."""


class BuildError(HFTorchScriptError):
    """Building the C++ runner failed (cmake or a compiler missing, sources not found, compile error)."""


class ExtraNotInstalledError(HFTorchScriptError):
    """A command needs an optional extra (``ray``, ``triton``) that is not installed."""


def require_extra(extra: str, command: str, *modules: str) -> None:
    """Import ``modules`` or raise one line naming the pip extra that provides them."""
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as e:
            why = f"{name} is not installed" if isinstance(e, ModuleNotFoundError) else f"importing {name} failed: {e}"
            raise ExtraNotInstalledError(
                f"{command} needs the '{extra}' extra ({why}): pip install 'hf-torchscript[{extra}]'"
            ) from None
