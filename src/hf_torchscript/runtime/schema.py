"""The manifest's shape, checked before anything reads it: a bad manifest is one clear line, not a KeyError.

Only what readers (runtime, `info`, `validate`, the C++ header) rely on is required; every other
key is checked for its type when present, and unknown keys are allowed (newer writers add some).
"""

from __future__ import annotations

import math

from ..errors import ArtifactError

# A spec is a type, a tuple of alternatives, a ("list", spec), a ("map", spec) (str keys),
# or a dict {key: (required, spec)}.
_INT = ("int",)
_NUM = ("number",)
_ANY = ("any",)
_NAME = ("name",)  # a file name inside the artifact: no directories, no "..", not hidden
_TENSOR = {"name": (True, str), "dtype": (True, str), "shape": (True, ("list", (str, _INT)))}
# Formats 1 and 2 (2 added ``files``); readers accept both.
MANIFEST = {
    "format_version": (True, _INT),
    "format": (False, str),  # "torchscript" (model.pt) or "aoti-pt2" (model.pt2); absent: torchscript
    "task": (True, str),
    "model_type": (True, str),
    "inputs": (True, ("list", _TENSOR)),
    "outputs": (True, ("list", _TENSOR)),
    "max_length": (True, _INT),
    "pad_token_id": (True, _INT),
    "shapes": (True, {
        "strategy": (True, str),
        "max_length": (True, _INT),
        "min_length": (False, _INT),
        "buckets": (False, (None, ("list", _INT))),
        "batch_size": (False, (None, _INT)),
        "traced": (False, ("list", {"batch_size": (True, _INT), "sequence_length": (True, _INT)})),
        "reason": (False, str),
    }),
    "sha256": (False, str),
    "files": (False, ("map", str)),
    "producer": (False, str),
    "backend": (False, str),
    "dtype": (False, str),
    "quantize": (False, (None, str)),
    "optimize": (False, bool),
    "padding_side": (False, str),
    "model_class": (False, str),
    "source": (False, {"model": (False, str), "weights": (False, str)}),
    "tokenizer": (False, (None, {"file": (True, _NAME), "pad_token": (False, (None, str)),
                                  "mask_token": (False, (None, str)), "padding": (False, _ANY),
                                  "truncation": (False, (None, _INT))})),
    "cpp_tokenizer": (False, {"supported": (True, bool), "unsupported": (True, ("list", str))}),
    "id2label": (False, (None, ("map", str))),
    "validation": (False, {"passed": (False, bool), "ran": (False, bool), "cases": (False, ("list", _ANY)),
                           "atol": (False, (None, _NUM)), "rtol": (False, (None, _NUM)),
                           "max_abs_diff": (False, ("map", (None, _NUM))), "note": (False, (None, str))}),
    "tracer_warnings": (False, ("list", str)),
    "versions": (False, ("map", (None, str))),
    "weights": (False, ("map", _ANY)),
    "precision": (False, ("map", _ANY)),
    "neuron": (False, ("map", _ANY)),
    "aoti": (False, {"models": (True, ("list", str)), "cpu_isa": (False, (None, str)), "torch": (False, str)}),
    "generation": (False, {"decoder_start_token_id": (False, _INT), "eos_token_id": (False, (None, _INT))}),
    "sentence_embedding": (False, ("map", _ANY)),
    "newly_initialized_weights": (False, ("list", str)),
    "cpu": (False, {"model": (False, (None, str)), "flags": (False, ("list", str)),
                    "requires": (False, ("list", str)), "capability": (False, (None, str))}),
    "tuning": (False, ("map", _ANY)),
}


def _describe(spec) -> str:
    if spec is None:
        return "null"
    if spec is str:
        return "a string"
    if spec is bool:
        return "true or false"
    if spec == _INT:
        return "an integer"
    if spec == _NUM:
        return "a number"
    if spec == _NAME:
        return "a plain file name"
    if isinstance(spec, dict):
        return "an object"
    if isinstance(spec, tuple) and spec and spec[0] == "list":
        return "a list"
    if isinstance(spec, tuple) and spec and spec[0] == "map":
        return "an object"
    if isinstance(spec, tuple):
        return " or ".join(_describe(s) for s in spec)
    return str(spec)


def _ok_scalar(value, spec) -> bool:
    if spec is None:
        return value is None
    if spec is str:
        return isinstance(value, str)
    if spec is bool:
        return isinstance(value, bool)
    if spec == _INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if spec == _NUM:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if spec == _NAME:
        return (isinstance(value, str) and value not in ("", ".", "..") and "/" not in value and "\\" not in value
                and "\0" not in value and not value.startswith("."))
    if spec == _ANY:
        return True
    raise TypeError(spec)  # pragma: no cover


def _problem(value, spec, path: str) -> str | None:
    """The first mismatch as 'PATH must be ..., got ...', or None."""
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            return f"{path or 'the manifest'} must be an object, got {_short(value)}"
        for key, (required, sub) in spec.items():
            where = f"{path}.{key}" if path else key
            if key not in value:
                if required:
                    return f"{where} is missing"
                continue
            p = _problem(value[key], sub, where)
            if p:
                return p
        return None
    if isinstance(spec, tuple) and spec and spec[0] == "list":
        if not isinstance(value, list):
            return f"{path} must be a list, got {_short(value)}"
        for i, v in enumerate(value):
            p = _problem(v, spec[1], f"{path}[{i}]")
            if p:
                return p
        return None
    if isinstance(spec, tuple) and spec and spec[0] == "map":
        if not isinstance(value, dict):
            return f"{path} must be an object, got {_short(value)}"
        for k, v in value.items():
            p = _problem(v, spec[1], f"{path}.{k}")
            if p:
                return p
        return None
    if isinstance(spec, tuple) and spec and spec[0] in ("int", "number", "name", "any"):
        return None if _ok_scalar(value, spec) else f"{path} must be {_describe(spec)}, got {_short(value)}"
    if isinstance(spec, tuple):  # alternatives
        for alt in spec:
            simple = isinstance(alt, tuple) and alt and alt[0] in ("int", "number", "name", "any")
            if alt is None or alt in (str, bool) or simple:
                if _ok_scalar(value, alt):
                    return None
            elif isinstance(value, list if isinstance(alt, tuple) and alt[0] == "list" else dict):
                return _problem(value, alt, path)  # the right kind of container: name what is wrong inside
        return f"{path} must be {_describe(spec)}, got {_short(value)}"
    return None if _ok_scalar(value, spec) else f"{path} must be {_describe(spec)}, got {_short(value)}"


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_manifest(manifest, where: str) -> dict:
    """Raise ArtifactError naming the first field of ``manifest`` (read from ``where``) that is wrong."""
    problem = _problem(manifest, MANIFEST, "")
    if problem is None:
        if not manifest["inputs"]:
            problem = "inputs is empty"
        elif manifest["max_length"] < 1:
            problem = f"max_length must be >= 1, got {manifest['max_length']}"
    if problem:
        raise ArtifactError(f"{where} is not a valid hf-torchscript manifest: {problem}; re-export the model")
    return manifest

def range_text(name: str, lo: int, hi: int) -> str:
    """What an input's values must be, as the error for an out-of-range value says it (both formats)."""
    if name in ("attention_mask", "decoder_attention_mask"):
        return "0 or 1"
    if name == "token_type_ids":
        return f"in [{lo}, {hi}) (the model has {hi} token types)"
    return f"token ids in [{lo}, {hi}) (the vocabulary has {hi} entries); use the tokenizer shipped with the artifact"
