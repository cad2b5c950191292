"""What counts as text: every entry point (CLI arguments, ``--input`` lines, the Python API, ``map`` rows)
checks its texts here before a tokenizer sees them, so a bad one is a one-line InputError, not a
TypeError from inside tokenizers.

Not text: a non-string, a string that cannot be encoded as UTF-8. Python decodes command-line
arguments and file names with ``surrogateescape``, so an argument holding the byte 0xff arrives as
the lone surrogate U+DCFF; a JSON ``"\\ud800"`` escape also gives a lone surrogate. Neither is a
character, and the Rust tokenizers refuse both with a bare TypeError.

No torch import here: the CLI checks its texts before loading anything heavy.
"""

from __future__ import annotations

from .errors import InputError


def text_problem(value) -> str | None:
    """Why ``value`` is not text, in a few words; None if it is a str that encodes as UTF-8."""
    if not isinstance(value, str):
        return f"must be a string, got {type(value).__name__}"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        c = ord(value[e.start])
        if 0xDC80 <= c <= 0xDCFF:  # surrogateescape: a byte that was not UTF-8 where the text was read
            return f"is not valid UTF-8 (byte 0x{c - 0xDC00:02x} at character {e.start})"
        return f"holds a lone surrogate U+{c:04X} at character {e.start}, which is not a character"
    return None


def check_text(value, where: str = "text") -> str:
    """``value`` if it is text, else InputError naming ``where``, why, and what to pass."""
    why = text_problem(value)
    if why is not None:
        shown = repr(value)[:60] if isinstance(value, str) else ""
        raise InputError(f"{where} {why}{': ' + shown if shown else ''}; pass UTF-8 text")
    return value


def check_inputs(texts) -> list:
    """The shapes ExportedModel(texts) takes: str, (text, pair) or (text, [choices]), or a sequence of those;
    returns them as a list."""
    if isinstance(texts, (str, tuple)):
        texts = [texts]
    if isinstance(texts, (bytes, bytearray, dict)) or not hasattr(texts, "__iter__"):
        raise InputError(f"texts must be a string or a list of strings / (text, text_pair) tuples, got "
                         f"{type(texts).__name__}")
    texts = list(texts)
    for i, t in enumerate(texts):
        if isinstance(t, (tuple, list)):
            if len(t) != 2:
                raise InputError(f"input {i} is a {type(t).__name__} of {len(t)} items; pass (text, text_pair) or "
                                 "(text, [choices])")
            check_text(t[0], f"input {i}'s text")
            if isinstance(t[1], list):
                for j, c in enumerate(t[1]):
                    check_text(c, f"input {i}'s choice {j}")
            else:
                check_text(t[1], f"input {i}'s text_pair")
        else:
            check_text(t, f"input {i}")
    return texts
