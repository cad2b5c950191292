"""The export flow, one direction: source -> prepare -> inputs -> trace -> shapes -> validate -> artifact."""

from __future__ import annotations

import copy
import dataclasses
import platform
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import __version__
from .architectures import Architecture, get_architecture
from .artifact import FORMAT_VERSION, MODEL_FILE, check_writable, commit, save_module, sha256_file, staging_dir, write_manifest
from .backends import Backend, get_backend
from .errors import OptionError, ShapeError, TraceError, ValidationError
from .inputs import InputSpec, OutputSpec, infer_axes, input_specs, make_inputs
from .options import DEFAULT_SHAPES, ExportOptions
from .prepare import ExportWrapper, Pooling, PrecisionWrapper, discover_outputs, tie_state, untie_weights
from .shapes import build_dispatcher, check_buckets, default_buckets
from .source import Source, load_source
from .tasks import get_task
from .parity import Tolerance, ValidationReport, build_grid, check, tolerance_for

# Sequence length used when nothing (model config, tokenizer) states a limit.
FALLBACK_MAX_LENGTH = 512


@dataclass
class ExportResult:
    """What `export` produced: where, the manifest written, the validation report."""

    output_dir: Path
    manifest: dict
    validation: ValidationReport
    strategy: str
    seconds: float = 0.0
    attempts: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        s = self.manifest["shapes"]
        return (
            f"exported {self.manifest['model_type']} ({self.manifest['task']}) to {self.output_dir} "
            f"[shapes: {self.strategy}, lengths 1..{s['max_length']}] in {self.seconds:.1f}s; {self.validation.summary()}"
        )


@dataclass
class Prepared:
    """A model made traceable, plus everything needed to trace and check it."""

    source: Source
    arch: Architecture
    specs: list[InputSpec]
    pad_token_id: int
    max_length: int
    tied: str
    options: ExportOptions
    # Filled in by prepare() once the outputs are known (the example inputs above come first).
    wrapper: torch.nn.Module | None = None  # the module traced (a converted copy for bf16/int8)
    reference: ExportWrapper | None = None  # the fp32 eager function it must equal
    outputs: list[OutputSpec] = field(default_factory=list)

    @property
    def has_sequence(self) -> bool:
        return any(s.mask == "attention_mask" for s in self.specs)

    @property
    def vocab_size(self) -> int:
        return int(getattr(self.source.config, "vocab_size", 0) or 0) or 2

    @property
    def type_vocab_size(self) -> int:
        return int(getattr(self.source.config, "type_vocab_size", 2) or 1)

    def dims(self, batch: int, length: int) -> dict:
        d = {"batch_size": batch, "sequence_length": length}
        if get_task(self.source.task).choices:
            d["num_choices"] = DEFAULT_SHAPES["num_choices"]
        if any(s.name == "decoder_input_ids" for s in self.specs):
            d["decoder_sequence_length"] = min(DEFAULT_SHAPES["decoder_sequence_length"], length)
        return d

    def example(self, batch: int, length: int, seed: int) -> dict[str, torch.Tensor]:
        # Batch > 1: row 1 unpadded, row 2 padded. Batch 1: the single row padded. Tracing
        # without a padded row could record the no-padding branch of mask creation.
        pad = "left" if self.arch.decoder else "right"
        patterns = ("full", pad) if batch > 1 else (pad,)
        return make_inputs(
            self.specs,
            self.dims(batch, length),
            patterns,
            vocab_size=self.vocab_size,
            type_vocab_size=self.type_vocab_size,
            seed=seed,
            avoid_ids=(self.pad_token_id,),
        )


def export(model, output_dir, *, task: str | None = None, tokenizer=None, force: bool = False,
           options: ExportOptions | None = None, **option_fields) -> ExportResult:
    """Export a transformers model to a validated TorchScript artifact directory.

    Args:
        model: a directory saved with ``save_pretrained``, a model id in the local cache or
            bundled by an installed package, or an in-memory ``PreTrainedModel``.
        output_dir: the artifact directory to create (atomically: all or nothing).
        task: e.g. ``"fill-mask"``; None infers it from the checkpoint.
        tokenizer: a transformers tokenizer to ship with an in-memory model.
        force: replace a non-empty ``output_dir``.
        options / **option_fields: an :class:`ExportOptions`, or its fields as keywords
            (``shapes="buckets"``, ``batch_size=2``, ``atol=1e-4`` ...).

    Returns:
        ExportResult with the manifest and the validation report.

    Raises:
        SourceError, UnsupportedModelError, OptionError/ShapeError, TraceError,
        ValidationError (nothing written), ArtifactError.

    Example:
        >>> import hf_torchscript as hts
        >>> hts.export("sentence-transformers/all-MiniLM-L6-v2", "out/minilm")  # doctest: +SKIP
    """
    start = time.perf_counter()
    if options is None:
        try:
            options = ExportOptions(task=task, **option_fields)
        except TypeError as e:
            valid = ", ".join(f.name for f in dataclasses.fields(ExportOptions))
            raise OptionError(f"{e}; export() accepts these options: {valid}") from None
    elif option_fields or task is not None:
        options = dataclasses.replace(options, **({"task": task} if task else {}), **option_fields)
    output_dir = Path(output_dir)
    check_writable(output_dir, force)
    backend = get_backend(options.backend)
    if backend.import_sdk is not None:
        backend.import_sdk()  # a missing Neuron SDK fails here, before the model is loaded

    src = load_source(
        model,
        task=options.task,
        tokenizer=tokenizer,
        allow_pickle=options.allow_pickle,
        trust_remote_code=options.trust_remote_code,
    )
    prepared = prepare(src, options, backend)
    staging = staging_dir(output_dir)
    try:
        module, report, strategy, shapes_info, tracer_warnings, attempts = _trace_and_validate(prepared, backend, staging)
        manifest = _manifest(prepared, backend, report, shapes_info, tracer_warnings)
        _save_tokenizer(src.tokenizer, staging, manifest)
        save_module(module, staging / MODEL_FILE, manifest)
        manifest["sha256"] = sha256_file(staging / MODEL_FILE)
        write_manifest(staging, manifest)
        commit(staging, output_dir, force)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportResult(output_dir, manifest, report, strategy, time.perf_counter() - start, attempts)


def prepare(src: Source, options: ExportOptions, backend: Backend) -> Prepared:
    """Wrap the model with a tensor signature and discover its outputs."""
    if backend.name != "torchscript" and (options.optimize or options.quantize):
        flag = "--optimize" if options.optimize else "--quantize"
        raise OptionError(
            f"{flag} applies to the torchscript backend only; the {backend.name} compiler optimizes its own graph "
            f"(use --auto-cast / --compiler-args there): drop {flag} or use --backend torchscript"
        )
    config = src.config
    arch = get_architecture(config.model_type)
    task = get_task(src.task)
    model = src.model
    model.eval()
    model.requires_grad_(False)
    tied = tie_state(model)
    if (options.untie_weights or backend.unties_weights) and untie_weights(model):
        tied = "untied"

    pad_id = _pad_token_id(config, src.tokenizer)
    max_length = _max_length(arch, src, options)
    specs = input_specs(arch.inputs_for(task.name, config), config=config, pad_token_id=pad_id, choices=task.choices)
    pooling = Pooling(src.pooling["modes"], src.pooling["normalize"]) if task.name == "sentence-embedding" else None

    p = Prepared(src, arch, specs, pad_id, max_length, tied, options)
    L0 = min(options.sequence_length or DEFAULT_SHAPES["sequence_length"], max_length)
    B0 = options.batch_size
    example = p.example(B0, L0, options.seed)
    if pooling is not None:
        names = ["sentence_embedding"]
    else:
        try:
            names = discover_outputs(model, example, task.outputs)
        except KeyError as e:
            raise TraceError(f"{type(model).__name__} does not produce the outputs of task {task.name!r}: {e}") from None
        except Exception as e:
            raise TraceError(
                f"the eager {type(model).__name__} failed on dummy inputs "
                f"({', '.join(f'{k} {tuple(v.shape)}' for k, v in example.items())}): {type(e).__name__}: {e}; "
                "check the model's config (vocab size, positions) is consistent"
            ) from e
    wrapper = ExportWrapper(model, [s.name for s in specs], names, position_ids_from_mask=arch.decoder, pooling=pooling)

    # Axis names: run at two shapes where every symbolic dim differs and see which axes follow.
    L1 = L0 + 3 if L0 + 3 <= max_length else max(1, L0 - 1)
    alt = p.dims(B0 + 1, L1)
    if "num_choices" in alt:
        alt["num_choices"] += 1
    if "decoder_sequence_length" in alt:
        alt["decoder_sequence_length"] = max(1, alt["decoder_sequence_length"] - 1) if L1 < L0 else alt["decoder_sequence_length"] + 1
    with torch.no_grad():
        out_a = wrapper(*example.values())
        alt_inputs = make_inputs(specs, alt, ("full",), vocab_size=p.vocab_size, seed=1, avoid_ids=(pad_id,))
        out_b = wrapper(*alt_inputs.values())
    dims_a = p.dims(B0, L0)
    p.outputs = [
        OutputSpec(n, str(a.dtype).replace("torch.", ""), infer_axes(a.shape, dims_a, b.shape, alt))
        for n, a, b in zip(names, out_a, out_b)
    ]
    p.reference, p.wrapper = wrapper, _convert(wrapper, options)
    return p


def _convert(wrapper: ExportWrapper, opts: ExportOptions) -> torch.nn.Module:
    """The module to trace: ``wrapper`` itself (float32) or a converted copy; ``wrapper`` stays the fp32 reference."""
    if opts.quantize == "dynamic-int8":
        with warnings.catch_warnings():
            # torch.ao.quantization is deprecated in favour of torchao, which does not trace to TorchScript.
            warnings.simplefilter("ignore")
            return torch.ao.quantization.quantize_dynamic(copy.deepcopy(wrapper), {torch.nn.Linear}, dtype=torch.qint8)
    if opts.dtype != "float32":
        dtype = getattr(torch, opts.dtype)
        return PrecisionWrapper(copy.deepcopy(wrapper).to(dtype), dtype)
    return wrapper


def _tolerance(opts: ExportOptions) -> Tolerance:
    return tolerance_for(opts.dtype, opts.quantize, atol=opts.atol, rtol=opts.rtol)


def optimize_module(module: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
    """torch.jit.freeze the whole dispatcher: weights become constants, the traces are inlined.

    Not also torch.jit.optimize_for_inference: on torch 2.13 (BERT-base, 2 CPU threads) its result
    saves, reloads and stays exact, but measured against freeze alone it only wins at tiny shapes
    (1x16: 0.73x vs 0.80x of eager) and loses at 8x128 (1.00x vs 0.91x); bench/RESULTS.md has both.
    """
    return torch.jit.freeze(module.eval())


def _trace_and_validate(p: Prepared, backend: Backend, staging: Path):
    opts = p.options
    requested = opts.shapes
    if not p.has_sequence:
        if requested == "buckets":
            raise ShapeError(f"{p.arch.model_type} inputs have no sequence axis; buckets do not apply: use --shapes dynamic")
        candidates = ["static"] if requested == "static" or backend.static_shapes else ["dynamic"]
    elif requested == "auto":
        candidates = ["buckets"] if backend.static_shapes else ["dynamic", "buckets"]
    elif requested == "dynamic" and backend.static_shapes:
        raise ShapeError(f"backend {backend.name} compiles static shapes; use --shapes buckets or static")
    else:
        candidates = [requested]

    attempts: list[str] = []
    tracer_warnings: list[str] = []
    for i, strategy in enumerate(candidates):
        lengths, traced_at, pad = _plan(p, strategy)
        traces = []
        for B, L in traced_at:
            traces.append(_trace_one(p, backend, B, L, tracer_warnings))
        batch = opts.batch_size if (opts.static_batch or (backend.static_shapes and not opts.dynamic_batch)) else 0
        module = build_dispatcher(traces, lengths, p.specs, [o.sequence_dim for o in p.outputs], pad=pad, batch=batch)
        if opts.optimize:
            module = optimize_module(module)
        # Validate what was written to disk and read back, not the in-memory object.
        scratch = staging / "roundtrip.pt"
        save_module(module, scratch)
        loaded = torch.jit.load(str(scratch))
        scratch.unlink()
        info = {
            "strategy": strategy,
            "requested": requested,
            "min_length": 1,
            "max_length": lengths[-1],
            "buckets": list(lengths) if strategy == "buckets" else None,
            "batch_size": batch or None,
            "traced": [{"batch_size": B, "sequence_length": L} for B, L in traced_at],
        }
        if backend.can_run_here():
            report = run_grid(p, loaded, info)
        else:
            # Compiling needs no device, running does: say so instead of claiming a pass.
            report = ValidationReport(passed=False, ran=False, atol=opts.atol, rtol=opts.rtol, mode="not-run",
                                      note=f"the {backend.name} module needs a Neuron device to execute and this "
                                      "machine has none; run `hf-torchscript validate OUTPUT_DIR --model MODEL` "
                                      "on the instance")
        if report.passed or not report.ran:
            if not report.ran:
                why = "requested" if requested != "auto" else f"backend {backend.name} compiles static shapes"
                info["reason"] = f"{strategy}: {why} (not validated: no device here)"
            elif requested == "auto":
                info["reason"] = (
                    f"{strategy}: the validation grid passed ({len(report.cases)} cases)"
                    + (f" after {'; '.join(attempts)}" if attempts else "")
                )
            else:
                info["reason"] = f"{strategy}: requested"
            return module, report, strategy, info, tracer_warnings, attempts
        attempts.append(f"{strategy} failed ({report.failures[0]})")
        if i == len(candidates) - 1:
            hint = " try --shapes buckets (one trace per length bucket)" if strategy == "dynamic" else ""
            if backend.static_shapes:
                hint += (f" {backend.name} may compute in bf16/fp16 (Inf1 matmuls always; --auto-cast on Inf2/Trn1):"
                         " if that is expected, loosen --atol/--rtol, e.g. 1e-2")
            raise ValidationError(
                f"the exported {strategy} module does not match the eager model in {len(report.failures)} checks "
                f"({_tolerance(opts).describe()}); nothing was written.{hint}\n{report.failure_text()}",
                report,
            )
    raise AssertionError("unreachable")


def run_grid(p: Prepared, module, shapes_info: dict, *, atol: float | None = None, rtol: float | None = None) -> ValidationReport:
    """Check ``module`` against the eager reference on the grid that ``shapes_info`` implies."""
    traced = shapes_info["traced"][0]
    lengths = shapes_info["buckets"] or [shapes_info["max_length"]]
    grid = build_grid(
        shapes_info["strategy"],
        traced_batch=traced["batch_size"],
        traced_length=traced["sequence_length"],
        max_length=shapes_info["max_length"],
        lengths=lengths,
        static_batch=shapes_info["batch_size"] or 0,
        has_sequence=p.has_sequence,
        decoder=p.arch.decoder,
        choices=get_task(p.source.task).choices,
        decoder_inputs=any(s.name == "decoder_input_ids" for s in p.specs),
    )
    atol = p.options.atol if atol is None else atol
    rtol = p.options.rtol if rtol is None else rtol
    return check(
        module, p.reference, p.specs, p.outputs, grid,
        atol=atol, rtol=rtol, tolerance=tolerance_for(p.options.dtype, p.options.quantize, atol=atol, rtol=rtol),
        vocab_size=p.vocab_size, type_vocab_size=p.type_vocab_size,
        avoid_ids=(p.pad_token_id,), seed=p.options.seed + 100,
    )


def _plan(p: Prepared, strategy: str):
    """(lengths the dispatcher knows, the (batch, length) of each trace, whether to pad)."""
    opts, B0 = p.options, p.options.batch_size
    if not p.has_sequence:
        return [p.max_length], [(B0, 0)], False
    if strategy == "dynamic":
        L0 = min(opts.sequence_length or DEFAULT_SHAPES["sequence_length"], p.max_length)
        return [p.max_length], [(B0, L0)], False
    if strategy == "buckets":
        buckets = check_buckets(opts.buckets, p.max_length) if opts.buckets else default_buckets(p.max_length)
        return list(buckets), [(B0, b) for b in buckets], True
    L = opts.sequence_length or p.max_length
    if L > p.max_length:
        raise ShapeError(f"static length {L} is above the model's max length {p.max_length}; pass --sequence-length <= {p.max_length}")
    return [L], [(B0, L)], True


def _trace_one(p: Prepared, backend: Backend, batch: int, length: int, sink: list[str]):
    example = p.example(batch, length, p.options.seed)
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always", torch.jit.TracerWarning)
        try:
            traced = backend.trace(p.wrapper, tuple(example.values()), p.options)
        except Exception as e:
            raise TraceError(
                f"{backend.name} could not trace {p.arch.model_type} ({p.source.task}) at batch {batch}, length {length}: "
                f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
            ) from e
    for w in caught:
        if issubclass(w.category, torch.jit.TracerWarning):
            line = f"{w.filename}:{w.lineno}: {str(w.message).splitlines()[0]}"
            if line not in sink:
                sink.append(line)
    return traced


def _pad_token_id(config, tokenizer) -> int:
    for candidate in (
        getattr(config, "pad_token_id", None),
        getattr(tokenizer, "pad_token_id", None) if tokenizer is not None else None,
        getattr(config, "eos_token_id", None),
    ):
        if isinstance(candidate, list):
            candidate = candidate[0] if candidate else None
        if candidate is not None:
            return int(candidate)
    return 0


def _max_length(arch: Architecture, src: Source, opts: ExportOptions) -> int:
    positions = arch.max_positions(src.config)
    limits = [x for x in (positions,) if x]
    tok_max = getattr(src.tokenizer, "model_max_length", None) if src.tokenizer is not None else None
    if tok_max and tok_max < 1_000_000:
        limits.append(int(tok_max))
    if src.task == "sentence-embedding" and src.pooling and src.pooling.get("max_seq_length"):
        limits.append(int(src.pooling["max_seq_length"]))  # what sentence-transformers' encode truncates to
    natural = min(limits) if limits else FALLBACK_MAX_LENGTH
    if opts.max_length is None:
        return natural
    if positions and opts.max_length > positions:
        raise ShapeError(
            f"max length {opts.max_length} is above {arch.model_type}'s {positions} positions; pass --max-length <= {positions}"
        )
    return opts.max_length


def _versions() -> dict:
    out = {"hf_torchscript": __version__, "torch": torch.__version__, "python": platform.python_version()}
    for mod in ("transformers", "tokenizers"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            out[mod] = None
    return out


def _manifest(p: Prepared, backend: Backend, report: ValidationReport, shapes_info: dict, tracer_warnings) -> dict:
    config, task = p.source.config, get_task(p.source.task)
    id2label = None
    if task.labels:
        id2label = {str(k): v for k, v in (getattr(config, "id2label", None) or {}).items()}
    m = {
        "format_version": FORMAT_VERSION,
        "producer": "hf-torchscript",
        "task": task.name,
        "model_type": config.model_type,
        "model_class": type(p.source.model).__name__,
        "source": {"model": p.source.description, "weights": p.source.weights},
        "inputs": [s.to_json() for s in p.specs],
        "outputs": [o.to_json() for o in p.outputs],
        "shapes": shapes_info,
        "max_length": shapes_info["max_length"],
        "pad_token_id": p.pad_token_id,
        "padding_side": "right",
        "id2label": id2label,
        "tokenizer": None,
        "dtype": p.options.dtype,
        "quantize": p.options.quantize,
        "optimize": p.options.optimize,
        "precision": _precision(p.options),
        "backend": backend.name,
        "weights": {"tied_embeddings": p.tied},
        "validation": report.to_json(),
        "tracer_warnings": tracer_warnings,
        "versions": _versions(),
    }
    if backend.describe is not None:
        m["neuron"] = backend.describe(p.options)
    if task.name == "seq2seq-lm":
        # What a runtime needs to decode greedily without transformers' generate().
        start = getattr(config, "decoder_start_token_id", None)
        eos = getattr(config, "eos_token_id", None)
        m["generation"] = {
            "decoder_start_token_id": int(start) if start is not None else p.pad_token_id,
            "eos_token_id": int(eos[0] if isinstance(eos, list) else eos) if eos is not None else None,
        }
    if p.source.pooling and task.name == "sentence-embedding":
        m["sentence_embedding"] = {"pooling": p.source.pooling["modes"], "normalize": p.source.pooling["normalize"]}
    if p.source.newly_initialized:
        m["newly_initialized_weights"] = p.source.newly_initialized
    return m


def _precision(opts: ExportOptions) -> dict:
    """What model.pt computes in, for readers of the manifest (inputs/outputs stay as listed)."""
    if opts.quantize:
        compute = "int8 weights for nn.Linear (torch dynamic quantization: activations quantized per batch), float32 elsewhere"
    elif opts.dtype != "float32":
        compute = f"{opts.dtype}; float inputs are cast to {opts.dtype} inside model.pt and float outputs cast back to float32"
    else:
        compute = "float32"
    return {
        "compute": compute,
        "outputs_dtype": "float32",
        "optimizations": ["torch.jit.freeze"] if opts.optimize else [],
        "validation": _tolerance(opts).describe(),
    }


def _save_tokenizer(tokenizer, staging: Path, manifest: dict) -> None:
    if tokenizer is None:
        return
    tokenizer.save_pretrained(str(staging))
    if (staging / "tokenizer.json").is_file():
        manifest["tokenizer"] = {
            "file": "tokenizer.json",
            "pad_token": getattr(tokenizer, "pad_token", None),
            "mask_token": getattr(tokenizer, "mask_token", None),
        }
