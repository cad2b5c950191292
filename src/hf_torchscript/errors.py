"""Typed errors: one base class, so callers (and the CLI) can catch everything we raise.

Every message says what was wrong (with the offending value), what is supported, and
what to do; the CLI prints it once, on one line.

A message that tells the user to set an option names it with ``option(keyword, value)``, which
keeps both spellings: ``str(error)`` reads ``force=True`` (the Python API), and the CLI's main()
prints ``error.cli_message()``, which reads ``--force``. Each interface speaks its own terms and
no message is written twice.
"""

from __future__ import annotations

import ast
import re

_MARK = "\x1f"  # ASCII unit separator: never part of a real message
_OPTION = re.compile(_MARK + "([A-Za-z_][A-Za-z0-9_]*)([=:]?)(.*?)" + _MARK, re.S)
_NO_VALUE = object()

# Options whose flag is not "--" + the keyword with dashes, or that a value turns into another flag.
_CLI_SPELLING = {
    ("verify", False): "--no-verify",
    ("truncation", "error"): "--no-truncate",
    ("truncation", "warn"): "no --no-truncate",
    ("use_ray", True): "--ray",  # hf_torchscript.serving.ray_data.map_file(use_ray=True) is `map --ray`
}


def option(keyword: str, value=_NO_VALUE, *, metavar: str | None = None) -> str:
    """An option named inside an error message, spelled for the interface that shows it.

    ``option("force", True)`` reads ``force=True`` from Python and ``--force`` on the CLI;
    ``option("shapes", "buckets")``: ``shapes='buckets'`` / ``--shapes buckets``;
    ``option("atol")`` (no value): ``atol`` / ``--atol``;
    ``option("model", metavar="MODEL")``: ``model=MODEL`` / ``--model MODEL``.
    """
    if metavar is not None:
        return f"{_MARK}{keyword}:{metavar}{_MARK}"
    return f"{_MARK}{keyword}{'' if value is _NO_VALUE else '=' + repr(value)}{_MARK}"


def render(message: str, interface: str = "python") -> str:
    """``message`` with every ``option(...)`` spelled for ``interface``: "python" or "cli"."""
    def spell(m: re.Match) -> str:
        keyword, kind, text = m.groups()
        flag = "--" + keyword.replace("_", "-")
        if not kind:
            return keyword if interface == "python" else flag
        if kind == ":":
            return f"{keyword}={text}" if interface == "python" else f"{flag} {text}"
        return f"{keyword}={text}" if interface == "python" else cli_flag(keyword, ast.literal_eval(text))

    return _OPTION.sub(spell, message)


def cli_flag(keyword: str, value) -> str:
    """How the CLI spells ``keyword=value``: ``--force``, ``--shapes buckets``, ``--buckets 16,32``."""
    try:
        special = _CLI_SPELLING.get((keyword, value))
    except TypeError:  # an unhashable value (a list) is never special
        special = None
    if special:
        return special
    flag = "--" + keyword.replace("_", "-")
    if value is True:
        return flag
    if value is False:
        return f"--no-{keyword.replace('_', '-')}"
    if isinstance(value, (tuple, list)):
        return f"{flag} {','.join(str(v) for v in value)}"
    return f"{flag} {value:g}" if isinstance(value, float) else f"{flag} {value}"


class HFTorchScriptError(Exception):
    """Base class of every error hf-torchscript raises on purpose.

    ``str(error)`` names options as Python keywords; ``error.cli_message()`` as CLI flags.
    """

    def __init__(self, message="", *args):
        self.template = message if isinstance(message, str) else str(message)
        super().__init__(render(self.template) if isinstance(message, str) else message, *args)

    def cli_message(self) -> str:
        """The message with options spelled as command-line flags (what ``hf-torchscript`` prints)."""
        return render(getattr(self, "template", str(self)), "cli")


class SourceError(HFTorchScriptError):
    """The model could not be found or loaded (path, config, weights, remote code)."""


class ConsistencyError(SourceError):
    """The source folder disagrees with itself: config vs checkpoint, non-finite weights, tokenizer vs model."""


class UnsupportedModelError(HFTorchScriptError):
    """The architecture or the task is not supported."""


class TraceError(HFTorchScriptError):
    """Tracing the prepared model failed."""


class ValidationError(HFTorchScriptError):
    """The exported module does not compute the same function as the eager model.

    ``report`` holds the full :class:`~hf_torchscript.exporter.parity.ValidationReport`.
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


class ServingError(HFTorchScriptError):
    """A serving system we hand off to (Ray) failed on its own: reported as its failure, with what to do."""


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
