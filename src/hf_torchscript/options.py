"""Export and benchmark options: frozen dataclasses, the single source of the API keywords and the CLI flags.

Each field's metadata says how it is shown to people: ``help`` (the flag's help text), ``choices``,
``commands`` (which CLI commands take it: "export", "validate") and ``parse`` (how a flag's text becomes
the value, for tuples). ``cli.py`` builds the export and validate flags from these fields, so a new
option is one field here; ``tests/test_options.py`` fails if a field has no flag or a flag no field.
Values are checked once, on construction; errors name options with ``errors.option``, so the
CLI shows the flag (``--batch-size 2``) and Python the keyword (``batch_size=2``).
"""

from __future__ import annotations

import dataclasses
import inspect
import shlex
import textwrap
import typing
from dataclasses import dataclass, field

from .errors import OptionError, ShapeError, option
from .tasks import POOLED_TASK, TASKS

# Dummy shapes for tracing. Batch 2 and length 16, not 1 and 1: a batch-1 trace can bake the
# batch into the graph (GPT-2 without a mask fails at batch 2) and a length-1 trace bakes the
# length (Llama). Every symbolic axis gets a different size, so no output axis can be mistaken
# for another when the declared output axes are checked against a real run.
DEFAULT_SHAPES = {"batch_size": 2, "sequence_length": 16, "num_choices": 3, "decoder_sequence_length": 9}

# fp32 tolerances. Tracing replays the same kernels, so anything above ~1e-5 is a real difference;
# 1e-4 leaves room for padding changing the summation order of attention softmax.
DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-4

SHAPE_STRATEGIES = ("auto", "dynamic", "buckets", "static")
# The task registry (tasks/) lists the tasks once; the flag choices come from it.
TASK_NAMES = tuple(TASKS)
DTYPES = ("float32", "bfloat16", "float16")
# optimum's and torch's other spellings of the same dtypes (optimum-cli export onnx --dtype fp16).
DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16", "float": "float32",
                 "torch.float32": "float32", "torch.bfloat16": "bfloat16", "torch.float16": "float16"}


def dtype_name(text: str) -> str:
    """``"bf16"`` -> ``"bfloat16"``: the canonical name of a dtype spelling, for --dtype (others pass through)."""
    return DTYPE_ALIASES.get(text.strip().lower(), text) if isinstance(text, str) else text
QUANTIZATIONS = ("dynamic-int8", "dynamic-int8-aten")  # quantize.SCHEMES says what each is
BACKENDS = ("torchscript", "aoti", "neuronx", "neuron")
NEURON_BACKENDS = ("neuronx", "neuron")


def int_list(text: str) -> tuple[int, ...]:
    """``"32,64,128"`` -> (32, 64, 128), for --buckets."""
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"expected comma-separated integers like 32,64,128, got {text!r}") from None


def name_list(text: str) -> tuple[str, ...]:
    """``"a.b,*.c"`` -> ("a.b", "*.c"), for --keep-float."""
    return tuple(x.strip() for x in text.split(",") if x.strip())


def shell_words(text: str) -> tuple[str, ...]:
    """``"--optlevel 1"`` -> ("--optlevel", "1"), for --compiler-args."""
    try:
        return tuple(shlex.split(text))
    except ValueError as e:
        raise ValueError(f"cannot split {text!r} like a shell would: {e}") from None


def shape_list(text: str) -> tuple[tuple[int, int], ...]:
    """``"1x16,8x128"`` -> ((1, 16), (8, 128)), for --grid."""
    try:
        pairs = tuple((int(b), int(n)) for b, n in (x.lower().split("x") for x in text.split(",") if x.strip()))
    except ValueError:
        raise ValueError(f"expected BATCHxLENGTH pairs like 1x16,8x128, got {text!r}") from None
    if any(b < 1 or n < 1 for b, n in pairs):
        raise ValueError(f"expected positive BATCHxLENGTH pairs like 1x16,8x128, got {text!r}")
    return pairs


def at_least(least: int):
    """A flag parser for a count: checked when the command line is read, before torch is imported."""
    want = "a positive integer" if least == 1 else f"an integer >= {least}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = least - 1
        if value < least:
            raise ValueError(f"expected {want}, got {text!r}")
        return value
    return parse


def optimize_value(text: str):
    """``--optimize`` (True), ``--optimize auto``, ``--optimize=no``: the flag's value as ExportOptions takes it."""
    t = text.strip().lower()
    if t == "auto":
        return "auto"
    if t in ("yes", "true", "on", "1"):
        return True
    if t in ("no", "false", "off", "0"):
        return False
    raise ValueError(f"expected nothing or auto, got {text!r}")


def _opt(default, help: str, *, commands=("export",), choices=None, parse=None, metavar=None, optional_value=False):
    meta = {"help": help, "commands": tuple(commands)}
    if optional_value:  # a flag alone means True; it may also take a value (--optimize auto)
        meta["optional_value"] = True
    if choices is not None:
        meta["choices"] = tuple(choices)
    if parse is not None:
        meta["parse"] = parse
    if metavar is not None:
        meta["metavar"] = metavar
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ExportOptions:
    """Everything `export` can be told, checked once on construction."""

    task: str | None = _opt(None, "task to export (default: inferred from the checkpoint's architectures, "
                            f"or {POOLED_TASK} for a sentence-transformers folder)", choices=TASK_NAMES)
    batch_size: int = _opt(DEFAULT_SHAPES["batch_size"], "batch of the dummy input traced (>= 2 keeps the batch "
                           "axis symbolic; with --static-batch, the fixed batch)")
    sequence_length: int | None = _opt(None, f"length traced (default {DEFAULT_SHAPES['sequence_length']}; "
                                       "with --shapes static, the fixed length, default the max length)")
    shapes: str = _opt("auto", "auto: dynamic if the validation grid proves it, else buckets; dynamic: one trace "
                       "for every length; buckets: one trace per length bucket; static: one fixed length",
                       choices=SHAPE_STRATEGIES)
    buckets: tuple[int, ...] | None = _opt(None, "bucket lengths for --shapes buckets, e.g. 32,64,128,384 "
                                           "(default: powers of two from 16 to the max length)",
                                           parse=int_list, metavar="L,L,...")
    static_batch: bool = _opt(False, "with --shapes static: fix the batch to --batch-size too")
    max_length: int | None = _opt(None, "longest input accepted (default: the model's positions, the "
                                  "tokenizer's limit and sentence-transformers' max_seq_length, whichever is least)")
    atol: float = _opt(DEFAULT_ATOL, f"fp32 check: |exported - eager| <= atol + rtol*|eager| "
                       f"(default {DEFAULT_ATOL:g}; validate: the value recorded at export)",
                       commands=("export", "validate"))
    rtol: float = _opt(DEFAULT_RTOL, f"see --atol (default {DEFAULT_RTOL:g})", commands=("export", "validate"))
    untie_weights: bool = _opt(False, "store the LM head and the input embeddings as two tensors")
    dtype: str = _opt("float32", "compute dtype; bfloat16/float16 keep float32 inputs and outputs and are "
                      "validated by cosine against float32 eager (also spelt fp32, bf16, fp16)", choices=DTYPES,
                      parse=dtype_name)
    quantize: str | None = _opt(None, "int8 nn.Linear layers with per-channel weight scales; the layers int8 hurts "
                                "most (measured on real text) stay float32; validated by cosine against float32 "
                                "eager. dynamic-int8: torch.ao kernels (fast); dynamic-int8-aten: plain aten ops, "
                                "per-token activations (more accurate; under TorchScript not faster than float32). With "
                                "--backend aoti: dynamic-int8 is torchao's int8 on every Linear, dynamic-int8-aten "
                                "the same sensitivity pass compiled by Inductor",
                                choices=QUANTIZATIONS)
    keep_float: tuple[str, ...] = _opt((), "with --quantize: Linear layers (names or globs, comma-separated, e.g. "
                                       "'model.encoder.layer.4.*') kept float32 besides those the sensitivity pass "
                                       "keeps", parse=name_list, metavar="LAYERS")
    optimize: bool | str = _opt(False, "torch.jit.freeze the module (weights become constants); auto: build the "
                                "candidates this CPU supports (float32 frozen, oneDNN-fused, bfloat16 only with bf16 "
                                "instructions, int8 only if it passes validation on real text), time them here on "
                                "--tune-texts or the bundled real sentences, keep the fastest (docs/performance.md)",
                                parse=optimize_value, metavar="auto", optional_value=True)
    pack_linears: bool = _opt(False, "float32 Linear weights reordered by oneDNN when the artifact loads (the file "
                              "keeps plain weights): faster at few tokens per call on CPUs where MKL's small GEMMs "
                              "are slow, level or slower at many (docs/performance.md); one trace (dynamic or "
                              "static shapes); --optimize auto times it as a candidate")
    tune_texts: str | None = _opt(None, "with --optimize auto: a UTF-8 text file, one text per line, to time the "
                                  "candidates on (default: real sentences bundled with the package)", metavar="FILE")
    onednn_fusion: bool = _opt(False, "freeze, then validate and run with oneDNN graph fusion, switched on only "
                               "around each call (hf_torchscript.load does; C++ and Triton must switch it on "
                               "themselves: docs/performance.md); fused graphs specialise on shapes: with "
                               "--shapes static only (auto means static)")
    backend: str = _opt("torchscript", "torchscript (model.pt, CPU/GPU), aoti (torch.export + AOTInductor "
                        "model.pt2, CPU; docs/formats.md), neuronx (AWS Inf2/Trn1/Trn2, torch-neuronx), "
                        "neuron (AWS Inf1, torch-neuron)", choices=BACKENDS)
    compiler_args: tuple[str, ...] = _opt((), "Neuron: arguments for neuronx-cc/neuron-cc, one quoted string, "
                                          "e.g. '--optlevel 1'", parse=shell_words, metavar="'ARGS'")
    auto_cast: str | None = _opt(None, "Neuron: cast fp32 ops (none, matmult, all; type bf16, fp16 ...), "
                                 "e.g. matmult:bf16", metavar="MODE[:TYPE]")
    dynamic_batch: bool = _opt(False, "Neuron: the compiled module accepts any batch (split/padded to the "
                               "traced batch)")
    compiler_workdir: str | None = _opt(None, "Neuron: keep the compiler's work files in DIR, one folder per "
                                        "compiled shape", metavar="DIR")
    allow_new_weights: bool = _opt(False, "export even if the checkpoint lacks weights of the model for this task "
                                   "(they would be random: a new head); the manifest, info and run say so")
    allow_unused_weights: bool = _opt(False, "export even if the checkpoint holds tensors of the base model that "
                                      "config.json does not build (e.g. layers past num_hidden_layers): they are "
                                      "dropped; the manifest and info say so")
    allow_tokenizer_mismatch: bool = _opt(False, "export even if the tokenizer does not fit the model (casing vs the "
                                          "vocabulary, special-token ids vs config.json, ids past the embedding "
                                          "table, max length past the positions); the manifest and info say so")
    allow_pickle: bool = _opt(False, "accept pytorch_model.bin (pickle) weights, which can run code when loaded",
                              commands=("export", "validate"))
    trust_remote_code: bool = _opt(False, "run the model repository's own code (auto_map in config.json)",
                                   commands=("export", "validate"))
    seed: int = _opt(0, "seed of the dummy and validation inputs")
    max_cache_len: int | None = _opt(None, "generation (a KV-cache task): positions the static KV cache holds, prompt plus new "
                                     "tokens (default: the model's positions, at most 2048: the cache is allocated in "
                                     "full and every decode step attends over all of it)")

    def __post_init__(self):
        _check_types(self)
        if self.batch_size < 1:
            raise ShapeError(f"batch size must be >= 1, got {self.batch_size}; pass e.g. {option('batch_size', 2)}")
        if self.sequence_length is not None and self.sequence_length < 1:
            raise ShapeError(
                f"sequence length must be >= 1, got {self.sequence_length}; pass e.g. {option('sequence_length', 16)}"
            )
        if self.buckets is not None:
            b = tuple(self.buckets)
            if not b:
                raise ShapeError(f"buckets are empty; pass increasing lengths such as {option('buckets', (32, 64, 128))}")
            if any(x < 1 for x in b):
                raise ShapeError(f"buckets must be positive lengths, got {list(b)}; pass e.g. {option('buckets', (32, 64, 128))}")
            if any(x >= y for x, y in zip(b, b[1:])):
                raise ShapeError(
                    f"buckets must be strictly increasing, got {list(b)}; sort them, e.g. "
                    f"{option('buckets', tuple(sorted(set(b))))}"
                )
            if self.shapes not in ("auto", "buckets"):
                raise ShapeError(f"{option('buckets')} only applies to {option('shapes', 'buckets')} "
                                 f"(got {option('shapes', self.shapes)})")
        if self.static_batch and self.shapes != "static":
            raise ShapeError(f"{option('static_batch', True)} needs {option('shapes', 'static')}: only a static trace "
                             "fixes the batch size")
        if self.max_cache_len is not None and not (self.task in TASKS and TASKS[self.task].kv_cache):
            cached = " or ".join(option("task", name) for name, t in TASKS.items() if t.kv_cache)
            raise OptionError(f"{option('max_cache_len')} sizes the KV cache of {cached}; drop it, or pass {cached}")
        if self.max_length is not None and self.max_length < 1:
            raise ShapeError(f"max length must be >= 1, got {self.max_length}; pass e.g. {option('max_length', 128)}")
        for name in ("atol", "rtol"):
            v = getattr(self, name)
            if not (v >= 0 and v != float("inf")):  # also refuses NaN
                raise OptionError(f"{option(name)} must be a finite number >= 0, got {v}; the default is {DEFAULT_ATOL:g}")
        if self.quantize and self.dtype != "float32":
            raise OptionError(f"{option('quantize', self.quantize)} works on a float32 model; drop {option('dtype')} or "
                              f"{option('quantize')}")
        if self.backend == "aoti" and (self.static_batch or self.optimize or self.onednn_fusion):
            what = option("static_batch", True) if self.static_batch else option("optimize", True) if self.optimize \
                else option("onednn_fusion", True)
            raise OptionError(f"{what} applies to the torchscript backend; an AOTInductor package takes any batch "
                              f"and is compiled and optimized by Inductor: drop it, or use {option('backend', 'torchscript')}")
        if self.backend == "aoti" and self.quantize == "dynamic-int8" and self.keep_float:
            # aoti's dynamic-int8 is torchao's, on every Linear; the sensitivity pass and --keep-float are
            # quantize.py's, which the aoti backend compiles as dynamic-int8-aten.
            raise OptionError(f"{option('keep_float')} applies to quantize.py's schemes; with {option('backend', 'aoti')} "
                              f"use {option('quantize', 'dynamic-int8-aten')} (sensitivity pass, compiled by Inductor)")
        if self.onednn_fusion and self.shapes not in ("auto", "static"):
            raise ShapeError(
                f"{option('onednn_fusion')} works with {option('shapes', 'static')} only: a dynamic trace is re-fused "
                f"for every new length (measured: no faster than eager), and the buckets module fails inside "
                f"oneDNN's fusion pass on torch 2.13 (RuntimeError: bad optional access); use "
                f"{option('shapes', 'static')} with {option('sequence_length', 128)}, one artifact per length")
        if self.onednn_fusion and self.quantize:
            raise OptionError(f"{option('onednn_fusion')} is measured and validated for float32 and bfloat16 only; drop "
                              f"{option('onednn_fusion')} or {option('quantize')}")
        if self.pack_linears:
            conflict = [option(name, getattr(self, name)) for name, on in (
                ("backend", self.backend != "torchscript"), ("dtype", self.dtype != "float32"),
                ("quantize", self.quantize is not None), ("optimize", self.optimize is True),
                ("onednn_fusion", self.onednn_fusion), ("shapes", self.shapes == "buckets")) if on]
            if conflict:
                raise OptionError(f"{option('pack_linears')} packs the float32 Linear weights of one TorchScript trace "
                                  f"at load (freezing would fold the CPU-specific packed copy into the file); drop "
                                  f"{', '.join(conflict)} or drop {option('pack_linears')}")
        if self.optimize == "auto":
            # auto picks the precision, freezing and fusion itself: a fixed one beside it is a contradiction.
            fixed = [option(name, getattr(self, name)) for name, on in (
                ("dtype", self.dtype != "float32"), ("quantize", self.quantize is not None),
                ("onednn_fusion", self.onednn_fusion), ("pack_linears", self.pack_linears),
                ("backend", self.backend != "torchscript")) if on]
            if fixed:
                raise OptionError(f"{option('optimize', 'auto')} chooses the precision, freezing and fusion by timing "
                                  f"the candidates on this CPU (torchscript backend); drop {', '.join(fixed)}, or drop "
                                  f"{option('optimize', 'auto')} to export exactly what you asked for")
        if self.tune_texts is not None and self.optimize != "auto":
            raise OptionError(f"{option('tune_texts')} is the workload of {option('optimize', 'auto')}; add "
                              f"{option('optimize', 'auto')} or drop {option('tune_texts')}")
        if self.keep_float and not self.quantize:
            raise OptionError(f"{option('keep_float')} names layers to keep out of int8; it needs {option('quantize')}")
        if self.backend not in NEURON_BACKENDS:
            neuron_only = [option(name) for name, on in (("compiler_args", bool(self.compiler_args)),
                                                          ("auto_cast", self.auto_cast is not None),
                                                          ("dynamic_batch", self.dynamic_batch),
                                                          ("compiler_workdir", bool(self.compiler_workdir))) if on]
            if neuron_only:
                raise OptionError(f"{', '.join(neuron_only)} only apply to {option('backend', 'neuronx')} or "
                                  f"{option('backend', 'neuron')}")
        else:
            if self.shapes == "dynamic":
                raise ShapeError(f"backend {self.backend} compiles static shapes; use {option('shapes', 'buckets')} or "
                                 f"{option('shapes', 'static')}")
            if self.optimize or self.quantize or self.onednn_fusion:
                flag = option("optimize") if self.optimize else option("quantize") if self.quantize else option(
                    "onednn_fusion")
                raise OptionError(
                    f"{flag} applies to the torchscript backend only; the {self.backend} compiler optimizes its own "
                    f"graph (use {option('auto_cast')} / {option('compiler_args')} there): drop {flag} or use "
                    f"{option('backend', 'torchscript')}"
                )
            # Runs back up the stack (options -> export/backends), lazily: the Neuron compilers' flag grammar is
            # that backend's knowledge, and checking it here makes a bad --auto-cast fail before any model loads.
            from .exporter.backends._neuron import compiler_args_for

            compiler_args_for(self)  # bad --auto-cast values or conflicts fail now, not after loading
        if self.shapes == "static" and self.sequence_length is None and self.buckets:
            raise ShapeError(f"{option('buckets')} does not apply to {option('shapes', 'static')}; use "
                             f"{option('sequence_length')} for its length")

    @classmethod
    def fields(cls, command: str | None = None) -> list[dataclasses.Field]:
        """The option fields, optionally only those a CLI command takes."""
        return [f for f in dataclasses.fields(cls) if command is None or command in f.metadata["commands"]]


def flag(name: str) -> str:
    """The CLI flag of an option field: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def _check_types(opts: ExportOptions) -> None:
    """Name the option and the type it takes; without this a str "2" fails far away as a TypeError."""
    hints = typing.get_type_hints(ExportOptions)
    for f in dataclasses.fields(opts):
        value = getattr(opts, f.name)
        want = hints[f.name]
        args = typing.get_args(want)
        optional = type(None) in args
        if value is None:
            if optional:
                continue
            raise OptionError(f"option {option(f.name)} must not be None; its default is {f.default!r}")
        base = next((a for a in args if a is not type(None)), want) if args and optional else want
        if f.name == "optimize":  # bool | "auto": the one field whose type is a union of values
            if not (isinstance(value, bool) or value == "auto"):
                raise OptionError(f"option {option(f.name)} takes a bool or 'auto', got {type(value).__name__} "
                                  f"{value!r}")
            continue
        origin = typing.get_origin(base) or base
        if origin is tuple:
            item = typing.get_args(base)[0]
            if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)):
                raise OptionError(
                    f"option {option(f.name)} takes a list of {item.__name__}, got {type(value).__name__} "
                    f"{value!r}" + (" (the CLI splits the text for you)" if f.metadata.get("parse") else "")
                )
            bad = [x for x in value if not _is(x, item)]
            if bad:
                raise OptionError(
                    f"option {option(f.name)} takes a list of {item.__name__}, got {bad[0]!r} in {list(value)}"
                )
            object.__setattr__(opts, f.name, tuple(value))
            continue
        if not _is(value, origin):
            raise OptionError(
                f"option {option(f.name)} takes {'an' if origin is int else 'a'} {origin.__name__}, "
                f"got {type(value).__name__} {value!r}"
            )
        if origin is float:
            object.__setattr__(opts, f.name, float(value))
        if f.name == "dtype":
            value = dtype_name(value)
            object.__setattr__(opts, f.name, value)
        choices = f.metadata.get("choices")
        # An unknown task gets tasks.get_task's message (it lists what each task is for).
        if choices and value not in choices and f.name != "task":
            noun = _NOUNS.get(f.name, f.name.replace("_", " "))
            raise OptionError(f"unknown {noun} {value!r}; choose one of {', '.join(choices)}")


_NOUNS = {"shapes": "shape strategy", "quantize": "quantization"}


def _is(value, kind) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kind)


# -- benchmark -----------------------------------------------------------------------------------------

DEFAULT_GRID: tuple[tuple[int, int], ...] = ((1, 16), (1, 128), (8, 128), (1, 512))
# bench/variants.ALL_VARIANTS, spelled out so that `hf-torchscript --help` needs no torch
# (tests/test_bench.py keeps the two equal).
BENCH_VARIANTS = ("eager", "eager-bf16", "ts-dynamic", "ts-buckets", "ts-static", "ts-frozen", "ts-packed", "ts-bf16",
                  "ts-int8", "ts-int8-aten", "aoti", "aoti-bf16", "torch-compile", "onnxruntime", "onnxruntime-int8")


def _model_or_none(text: str):
    """--accuracy-model: 'none' skips the accuracy pass (the API's False)."""
    return False if text == "none" else text


def _shape_or_none(text: str):
    """--profile-shape: 8x128, or 'none'."""
    return None if text == "none" else shape_list(text)[0]


def _bench(default, help: str, *, flag: str | None = None, cli_default=None, parse=None, metavar=None, choices=None,
           cli: bool = True):
    """A BenchOptions field: ``help`` documents the keyword and the flag; ``cli_default`` is the flag's default
    where it differs from the keyword's (None: the keyword's default applies)."""
    meta = {"help": help, "cli": cli}
    for key, value in (("flag", flag), ("cli_default", cli_default), ("parse", parse), ("metavar", metavar),
                       ("choices", choices)):
        if value is not None:
            meta[key] = tuple(value) if key == "choices" else value
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class BenchOptions:
    """Everything ``benchmark`` can be told (besides the model); the API keywords and the ``bench`` flags."""

    task: str | None = _bench(None, "the export task (default: inferred from the checkpoint)", choices=TASK_NAMES)
    output_dir: object = _bench(None, "where report.json and plot.png go (API default None: not written)",
                                flag="--out", cli_default="bench-results", metavar="DIR")
    workdir: object = _bench(None, "where exported artifacts go (default OUT/artifacts); one is reused only if it was "
                             "exported from the same weights (sha256) with the same options and versions",
                             metavar="DIR")
    variants: typing.Sequence[str] | None = _bench(
        None, "subset of " + ",".join(BENCH_VARIANTS) + " (default: all; comma-separated on the command line; a peer "
        "whose package is missing is skipped with the reason, and missing packages are listed before anything runs)",
        parse=name_list, metavar="NAMES")
    grid: typing.Sequence[tuple[int, int]] = _bench(DEFAULT_GRID, "(batch, length) shapes of the fixed workload "
                                                    "(default 1x16,1x128,8x128,1x512)", parse=shape_list,
                                                    metavar="BxL,...")
    rounds: int = _bench(5, "timed rounds per shape", parse=at_least(1))
    warmup: int = _bench(2, "untimed warm-up passes per shape", parse=at_least(0))
    mixed_requests: int = _bench(64, "requests in the mixed-length workload (0: skip it)", parse=at_least(0))
    mixed_batch: int = _bench(8, "requests per batch in the mixed-length workload", parse=at_least(1))
    mixed_rounds: int = _bench(3, "timed rounds of the mixed-length workload", parse=at_least(1))
    threads: int = _bench(2, "torch threads for the run (restored afterwards)", parse=at_least(1))
    max_length: int | None = _bench(None, "the export's max length (default: the model's)", parse=at_least(1))
    accuracy_model: object = _bench(None, "trained model whose variants are checked on real text (default: the "
                                    "model itself; every variant is built again for it); False (CLI: 'none') skips it",
                                    parse=_model_or_none, metavar="MODEL")
    accuracy_task: str | None = _bench(None, "task of the accuracy model", choices=TASK_NAMES)
    accuracy_sentences: int = _bench(160, "how many real sentences the accuracy pass runs")
    profile_shape: tuple[int, int] | None = _bench((8, 128), "(batch, length) at which torch.profiler's top ops are "
                                                   "recorded, or None (CLI: 'none')", parse=_shape_or_none,
                                                   metavar="BxL")
    targets: object = _bench(None, "a JSON file of targets to evaluate in this run (the project's: "
                             "bench/targets.json); default: none", metavar="FILE")
    seed: int = _bench(0, "seed of the synthetic batches and the sampled request lengths")
    progress: bool = _bench(True, "progress bars and the missing-packages note on stderr (CLI: -q/--quiet turns "
                            "them off)", cli=False)
    description: str | None = _bench(None, "the model's name in the report (default: what was loaded)")

    @classmethod
    def fields(cls, cli: bool = False) -> list[dataclasses.Field]:
        """The option fields, optionally only those the ``bench`` command has a flag for."""
        return [f for f in dataclasses.fields(cls) if not cli or f.metadata["cli"]]


def bench_flag(f: dataclasses.Field) -> str:
    """The ``bench`` flag of a BenchOptions field (``output_dir`` -> ``--out``)."""
    return f.metadata.get("flag") or flag(f.name)


def bench_signature(returns=inspect.Signature.empty) -> inspect.Signature:
    """``benchmark(model, *, <every BenchOptions field>)``: the signature of hts.benchmark and bench.benchmark."""
    return inspect.Signature(
        [inspect.Parameter("model", inspect.Parameter.POSITIONAL_OR_KEYWORD),
         *(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default)
           for f in BenchOptions.fields())],
        return_annotation=returns,
    )


def bench_options(function: str, options: dict) -> BenchOptions:
    """``options`` (keywords) as BenchOptions; an unknown keyword is the TypeError Python gives a plain function."""
    names = {f.name for f in BenchOptions.fields()}
    for name in options:
        if name not in names:
            raise TypeError(f"{function}() got an unexpected keyword argument {name!r}")
    return BenchOptions(**options)


def bench_args_doc() -> str:
    """The ``Args:`` block of benchmark's docstring, from the fields' help."""
    lines = ["Args:",
             "    model: a model directory (or cached/bundled id) as accepted by :func:`hf_torchscript.export`."]
    for f in BenchOptions.fields():
        lines.append(textwrap.fill(f"{f.name}: {f.metadata['help']}.", 108, initial_indent="    ",
                                   subsequent_indent="        ", break_on_hyphens=False, break_long_words=False))
    return "\n".join(lines)
