"""The ``hf-torchscript`` command: commands assembled from the options, every error formatted once (``main``)."""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
