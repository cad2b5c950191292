"""Run an exported artifact from Python with torch + tokenizers only (no transformers import).

    model = hf_torchscript.load("out/")
    model(["Paris is the [MASK] of France."])        # text in, task outputs out
    model(input_ids=ids, attention_mask=mask)        # tensors in, {output name: tensor} out
                                                     # (token_type_ids left out: zeros, as transformers)
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from ..atomic import as_path
from ..errors import ArtifactError, InputError, OptionError, option
from ..textinput import check_inputs, check_text
from .artifact import load_module
from .fusion import onednn_fusion
from .fusion import wanted as _fusion_wanted


class TruncationWarning(UserWarning):
    """An input was longer than the artifact's max length and was cut."""


class NonFiniteOutputWarning(UserWarning):
    """The artifact returned NaN or infinite values: its answers for those inputs mean nothing.

    ``count`` holds how many values, ``outputs`` the names of the outputs that hold them.
    """

    def __init__(self, message: str, count: int = 0, outputs: tuple = ()):
        super().__init__(message)
        self.count, self.outputs = count, tuple(outputs)


class UntrainedWeightsWarning(UserWarning):
    """The artifact holds weights that were not in the checkpoint (exported with --allow-new-weights)."""


class ExportedModel:
    """A loaded artifact: the TorchScript module, its manifest and (if shipped) its tokenizer."""

    def __init__(self, directory, *, verify: bool = True, truncation: str = "warn"):
        if truncation not in ("warn", "error"):
            raise InputError(f"truncation must be 'warn' or 'error', got {truncation!r}")
        self.directory = Path(directory)
        self.module, self.manifest = load_module(self.directory, verify_sha=verify)
        # Exported with onednn_fusion: the switch goes on around each call only (fusion.py says why).
        self._fused = _fusion_wanted(self.manifest)
        self.task: str = self.manifest["task"]
        self.input_names = [i["name"] for i in self.manifest["inputs"]]
        self.output_names = [o["name"] for o in self.manifest["outputs"]]
        self.max_length: int = self.manifest["max_length"]
        new = self.manifest.get("newly_initialized_weights")
        if new:
            warnings.warn(
                f"{self.directory} holds {len(new)} UNTRAINED tensors ({', '.join(new[:3])}...) that were not in the "
                "checkpoint: its answers are random until those weights are trained",
                UntrainedWeightsWarning, stacklevel=3,
            )
        self.truncation = truncation
        self.tokenizer = None
        tok = self.manifest.get("tokenizer")
        if tok:
            from tokenizers import Tokenizer

            path = self.directory / tok["file"]
            link = f" (a symlink to {os.readlink(path)!r})" if path.is_symlink() else ""
            if not path.is_file():
                raise ArtifactError(f"{path}{link} is listed in the manifest but missing; re-export the model")
            try:
                self.tokenizer = Tokenizer.from_file(str(path))
            except Exception as e:  # noqa: BLE001 - tokenizers raises a bare Exception for a bad file
                first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
                raise ArtifactError(f"{path}{link} is not a tokenizer that loads ({first}); re-export the model") from None
            self.tokenizer.no_padding()
            self.tokenizer.no_truncation()

    def __repr__(self) -> str:
        s = self.manifest["shapes"]
        return (
            f"ExportedModel({str(self.directory)!r}, task={self.task!r}, model_type={self.manifest['model_type']!r}, "
            f"shapes={s['strategy']!r}, max_length={self.max_length})"
        )

    # -- tensors ---------------------------------------------------------------------------------

    def run(self, *args: torch.Tensor, **tensors: torch.Tensor) -> dict[str, torch.Tensor]:
        """Call the module with tensors (positional in manifest order, or by name); returns named outputs.

        Inputs the manifest gives a ``default`` (token_type_ids: zeros) may be left out, by name or at
        the end of the positional ones; they are filled as transformers fills them.
        """
        if args and tensors:
            raise InputError("pass tensors either positionally or by name, not both")
        if args:
            if len(args) > len(self.input_names):
                raise InputError(f"expected at most {len(self.input_names)} tensors ({self._takes()}), got {len(args)}")
            tensors = dict(zip(self.input_names, args))
        unknown = [n for n in tensors if n not in self.input_names]
        if unknown:
            raise InputError(f"unknown input{'s' * (len(unknown) > 1)} {', '.join(unknown)}; this artifact takes "
                             f"{self._takes()}")
        args = self._with_defaults(tensors)
        for spec, x in zip(self.manifest["inputs"], args):
            if not isinstance(x, torch.Tensor):
                raise InputError(f"input {spec['name']} must be a torch.Tensor, got {type(x).__name__}")
            if x.dim() != len(spec["shape"]):
                raise InputError(
                    f"input {spec['name']} must have rank {len(spec['shape'])} ({', '.join(map(str, spec['shape']))}), "
                    f"got shape {tuple(x.shape)}"
                )
            if spec["dtype"] == "int64" and (x.is_floating_point() or x.is_complex()):
                raise InputError(f"input {spec['name']} must be int64 (token ids), got {str(x.dtype).replace('torch.', '')}")
            if x.numel() == 0:
                raise InputError(f"input {spec['name']} is empty (shape {tuple(x.shape)}); pass at least one row and one token")
        args = tuple(
            x.to(torch.long) if spec["dtype"] == "int64" and not x.is_floating_point() else x
            for spec, x in zip(self.manifest["inputs"], args)
        )
        with torch.no_grad(), (onednn_fusion() if self._fused else contextlib.nullcontext()):
            try:
                out = self.module(*args)
            except (torch.jit.Error, RuntimeError) as e:  # the module's own checks; errors inside kernels
                raise InputError(_script_error(e)) from None
        named = dict(zip(self.output_names, out))
        _warn_nonfinite(named, self.directory)
        return named

    def _takes(self) -> str:
        defaults = [f"{i['name']}: {i['default']}" for i in self.manifest["inputs"] if i.get("default")]
        return ", ".join(self.input_names) + (f" ({'; '.join(defaults)} if left out)" if defaults else "")

    def _with_defaults(self, tensors: dict) -> tuple:
        """Every input in manifest order; left-out inputs with a default are made like a given input of their axes."""
        missing = [i["name"] for i in self.manifest["inputs"] if i["name"] not in tensors and not i.get("default")]
        if missing:
            raise InputError(f"missing input{'s' * (len(missing) > 1)} {', '.join(missing)}; this artifact takes "
                             f"{self._takes()}")
        out = []
        for spec in self.manifest["inputs"]:
            x = tensors.get(spec["name"])
            if x is None:
                like = next((tensors[o["name"]] for o in self.manifest["inputs"]
                             if o["name"] in tensors and o["shape"] == spec["shape"]
                             and isinstance(tensors[o["name"]], torch.Tensor)), None)
                if like is None or spec["default"] != "zeros":
                    raise InputError(f"missing input {spec['name']}; this artifact takes {self._takes()}")
                x = torch.zeros(like.shape, dtype=torch.long if spec["dtype"] == "int64" else torch.float32,
                                device=like.device)
            out.append(x)
        return tuple(out)

    # -- text-generation (generation.py) ---------------------------------------------------------

    def generator(self):
        """The decode loop over this artifact (text-generation only): one sequence at a time, behind a lock."""
        if getattr(self, "_generator", None) is None:
            from .generation import make_generator

            self._generator = make_generator(self.module, self.manifest, self.tokenizer)
        return self._generator

    def generate(self, prompt: str, *, max_new_tokens: int = 32, do_sample: bool = False, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
                 stop: Sequence[str] = (), details: bool = False):
        """Generate text after ``prompt`` (a text-generation artifact); greedy unless ``do_sample``.

        Stops at EOS, after ``max_new_tokens``, when the KV cache is full, or before the first ``stop``
        string. Returns the new text, or with ``details=True`` a ``generation.Generation`` (text, token
        ids, finish reason, timings). Raises InputError for a prompt longer than the cache.

        Example: ``hts.load("out/").generate("In the beginning", max_new_tokens=20)``
        """
        from .generation import sampling

        cfg = sampling(max_new_tokens, do_sample, temperature, top_k, top_p, seed, stop)
        result = self.generator().generate(prompt, cfg)
        return result if details else result.text

    def stream(self, prompt: str, *, max_new_tokens: int = 32, do_sample: bool = False, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
               stop: Sequence[str] = ()):
        """Like ``generate``, but an iterator of text pieces as the tokens arrive."""
        from .generation import sampling

        return self.generator().stream(prompt, sampling(max_new_tokens, do_sample, temperature, top_k, top_p, seed,
                                                        stop))

    # -- text ------------------------------------------------------------------------------------

    def encode(self, texts: Sequence, pairs: Sequence | None = None) -> tuple[dict[str, torch.Tensor], list]:
        """Tokenize like the exporter's tokenizer; returns (tensors, encodings)."""
        if self.tokenizer is None:
            raise InputError(
                "this artifact has no tokenizer (exported from an in-memory model without tokenizer=); "
                "call it with tensors: model(input_ids=..., attention_mask=...)"
            )
        if isinstance(texts, str):
            texts = [texts]
        if len(texts) == 0:
            raise InputError("no input texts; pass at least one string")
        for i, t in enumerate(texts):
            check_text(t, f"input {i}")
        if pairs is not None:
            for i, t in enumerate(pairs):
                check_text(t, f"input {i}'s text_pair")
        if pairs is not None:
            encs = self.tokenizer.encode_batch(list(zip(texts, pairs)))
        else:
            encs = self.tokenizer.encode_batch(list(texts))
        too_long = [i for i, e in enumerate(encs) if len(e.ids) > self.max_length]
        if too_long:
            worst = max(len(encs[i].ids) for i in too_long)
            msg = (
                f"{len(too_long)} input(s) have up to {worst} tokens, more than this artifact's max length "
                f"{self.max_length}"
            )
            if self.truncation == "error":
                raise InputError(msg + f"; shorten them, or let them be cut ({option('truncation', 'warn')})")
            warnings.warn(msg + "; they were truncated", TruncationWarning, stacklevel=3)
            self.tokenizer.enable_truncation(self.max_length)
            try:
                encs = self.tokenizer.encode_batch(list(zip(texts, pairs)) if pairs is not None else list(texts))
            finally:
                self.tokenizer.no_truncation()
        return self._pack(encs), encs

    def _pack(self, encs) -> dict[str, torch.Tensor]:
        L = max(len(e.ids) for e in encs)
        pad = int(self.manifest["pad_token_id"])
        ids = torch.full((len(encs), L), pad, dtype=torch.long)
        mask = torch.zeros((len(encs), L), dtype=torch.long)
        types = torch.zeros((len(encs), L), dtype=torch.long)
        for i, e in enumerate(encs):
            n = len(e.ids)
            ids[i, :n] = torch.tensor(e.ids)
            mask[i, :n] = 1
            types[i, :n] = torch.tensor(e.type_ids)
        out = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.input_names:
            out["token_type_ids"] = types
        return out

    def __call__(self, texts=None, /, *, top_k: int = 5, **tensors):
        """Text in -> task outputs (see docs); or tensors by name -> {output name: tensor}."""
        if texts is None:
            if not tensors:
                raise InputError("no inputs; pass a list of texts, or tensors by name")
            return self.run(**tensors)
        if tensors:
            raise InputError("pass texts or tensors, not both")
        from . import postprocess

        return postprocess.run_task(self, check_inputs(texts), top_k=top_k)


def load(directory, *, verify: bool = True, truncation: str = "warn", **unknown) -> ExportedModel:
    """Load an artifact directory.

    Args:
        directory: what ``hf-torchscript export`` wrote.
        verify: check model.pt's sha256 against manifest.json (refuse a tampered file).
        truncation: ``"warn"`` cuts over-long texts with a TruncationWarning; ``"error"`` raises InputError.

    Raises:
        ArtifactError: missing files, unknown format version, sha256 mismatch.
        OptionError: ``directory`` is not a path; an unknown keyword (one line, not Python's TypeError).
    """
    if unknown:
        import difflib

        key = next(iter(unknown))
        if key == "device":
            raise OptionError(f"load() takes no device: an artifact runs on the CPU (TorchScript traced on CPU, or "
                              f"an AOTInductor package compiled for this CPU); got device={unknown[key]!r}")
        close = difflib.get_close_matches(key, ["verify", "truncation"], n=1)
        raise OptionError(f"load() got an unknown keyword {key!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                          + "; it takes verify=True|False and truncation='warn'|'error'")
    as_path(directory, "load()'s directory")
    if not isinstance(verify, bool):
        raise OptionError(f"verify must be True or False, got {verify!r}")
    return ExportedModel(directory, verify=verify, truncation=truncation)


def nonfinite_count(outputs: dict) -> dict[str, int]:
    """{output name: number of NaN/inf values} for the float outputs that hold any."""
    bad = {}
    for name, t in outputs.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            n = int((~torch.isfinite(t)).sum())
            if n:
                bad[name] = n
    return bad


def _warn_nonfinite(outputs: dict, directory) -> None:
    """Never a quiet NaN: warn (NonFiniteOutputWarning) when any output holds a non-finite value."""
    bad = nonfinite_count(outputs)
    if bad:
        total = sum(bad.values())
        where = ", ".join(f"{k}: {v}" for k, v in bad.items())
        warnings.warn(NonFiniteOutputWarning(
            f"{directory} returned {total} NaN/infinite values ({where}): the answers for those inputs mean nothing; "
            "the model or its weights are broken for them (re-export: export refuses non-finite weights)",
            total, tuple(bad)), stacklevel=3)


def _script_error(e: Exception) -> str:
    text = str(e)
    # The message as raised ("RuntimeError: hf-torchscript: ..."), not the same words quoted in the
    # source listing of TorchScript's traceback, which an unrelated error also prints.
    marker = "Error: hf-torchscript: "
    if marker in text:
        line = text[text.rindex(marker) + len(marker):].strip().splitlines()[0]
        return line
    lines = [l.strip() for l in text.strip().splitlines() if l.strip()]
    return f"the exported module failed: {lines[-1] if lines else type(e).__name__}"
