"""The package version: pyproject.toml's, read from the installed metadata (CHANGELOG.md says what changed)."""

from importlib import metadata as _metadata

try:  # a source tree that is not installed has no metadata
    __version__ = _metadata.version("hf-torchscript")
except _metadata.PackageNotFoundError:
    __version__ = "0+unknown"
