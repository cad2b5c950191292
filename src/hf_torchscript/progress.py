"""Progress of the long steps (load, prepare, trace, validate, save), told to a callback the caller picks.

The library never prints on its own: ``export(..., progress=fn)`` and ``validate(..., progress=fn)``
call ``fn(Step(...))`` when a step starts and after each unit of work in it (one trace per shape
bucket, one validation case). ``None`` (the default) reports nothing. Unless ``--quiet``, the CLI passes a
``TerminalProgress`` (one stderr line, rewritten in place) when stderr is a terminal, else a
``LineProgress`` (one stderr line per step, with the elapsed time: CI logs see each step as it starts);
the summary goes to stdout.

    >>> seen = []
    >>> hts.export("model/", "out/", progress=seen.append)  # doctest: +SKIP
    >>> [s.stage for s in seen][:3]  # doctest: +SKIP
    ['load', 'prepare', 'trace']
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO


@dataclass(frozen=True)
class Step:
    """One progress report: which step, what it is doing, and how far it is (``total`` 0: unknown)."""

    stage: str  # load | prepare | trace | validate | save (and other steps' own names)
    detail: str = ""
    done: int = 0
    total: int = 0

    def __str__(self) -> str:
        count = f" {self.done}/{self.total}" if self.total else ""
        return f"{self.stage}{count}" + (f": {self.detail}" if self.detail else "")


Progress = Callable[[Step], None] | None


def checked(progress) -> Progress:
    """The public verbs' ``progress=``: a callable, or None / False for silence (as ``benchmark(progress=False)``)."""
    if progress is None or progress is False:
        return None
    if not callable(progress):
        from .errors import OptionError, option

        raise OptionError(f"{option('progress')} takes a function called with each progress.Step, or None/False for "
                          f"silence; got {progress!r}")
    return progress


def report(progress: Progress, stage: str, detail: str = "", done: int = 0, total: int = 0) -> None:
    """Tell ``progress`` (if any) about a step; the one call the library's steps make."""
    if progress is not None:
        progress(Step(stage, detail, done, total))


class TerminalProgress:
    """A progress printer for a terminal: one stderr line, rewritten, with the time since start.

    ``close()`` erases the line, so the summary the CLI prints afterwards stands alone.
    """

    def __init__(self, stream: TextIO | None = None, *, width: int = 100):
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.start = time.perf_counter()
        self.shown = False

    def __call__(self, step: Step) -> None:
        line = f"[{time.perf_counter() - self.start:6.1f}s] {step}"
        if len(line) > self.width:
            line = line[: self.width - 3] + "..."
        self.stream.write("\r\x1b[K" + line)  # carriage return + erase to end of line
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False

    def __enter__(self) -> TerminalProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LineProgress:
    """A progress printer for logs and pipes: one line per step (and one when a counted step ends), with the
    time since start, so a CI log shows where a 20-minute export is. Never rewrites a line."""

    def __init__(self, stream: TextIO | None = None, *, width: int = 160):
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.start = time.perf_counter()
        self.last: tuple | None = None

    def __call__(self, step: Step) -> None:
        # A counted step (validate 1/20, 2/20 ...) prints when it starts and when it ends, not per unit.
        key = (step.stage, step.detail if not step.total else "")
        finished = bool(step.total) and step.done >= step.total
        if key == self.last and not finished:
            return
        self.last = key if not finished else None
        line = f"[{time.perf_counter() - self.start:6.1f}s] {step}"
        if len(line) > self.width:
            line = line[: self.width - 3] + "..."
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed log must not fail the export
            pass

    def close(self) -> None:
        pass


def for_terminal(quiet: bool = False, stream: TextIO | None = None) -> TerminalProgress | LineProgress | None:
    """The CLI's progress on ``stream`` (stderr): a line rewritten in place on a terminal, one line per step
    elsewhere (logs, pipes, CI); None when ``quiet``."""
    stream = stream if stream is not None else sys.stderr
    if quiet:
        return None
    try:
        interactive = stream.isatty()
    except (AttributeError, ValueError):  # a closed or fake stream
        return None
    return TerminalProgress(stream) if interactive else LineProgress(stream)
