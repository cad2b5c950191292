"""Step 2 of the flow: make a loaded model traceable and say what it takes and returns.

eval, no grad, no cache, an explicit positional tensor signature and tuple outputs (``ExportWrapper``),
tied embeddings kept shared (or untied for a backend that needs it), reduced precision or
quantisation (``convert``), the input specs, the max length and pad id, and the output axes the task
declares, checked against two real eager runs. The result, ``Prepared``, is all later steps need.

transformers 5 removed the ``torchscript=True`` config flag the old recipe relied on; models
return ``ModelOutput`` dicts, which ``torch.jit.trace`` refuses at the top level. The wrapper
below is the replacement: positional tensors in, a tuple of named outputs out.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..architectures import Architecture, get_architecture
from ..errors import OptionError, ShapeError, TraceError, option
from ..options import DEFAULT_SHAPES, ExportOptions
from ..tasks import Task, get_task
from .inputs import InputSpec, OutputSpec, input_specs, make_inputs
from .source import Source

# Sequence length used when nothing (model config, tokenizer) states a limit.
FALLBACK_MAX_LENGTH = 512

# ModelOutput fields that are never exported: caches and per-layer diagnostics.
_NOT_EXPORTED = {
    "loss",
    "past_key_values",
    "hidden_states",
    "attentions",
    "cross_attentions",
    "encoder_hidden_states",
    "encoder_attentions",
    "decoder_hidden_states",
    "decoder_attentions",
    "mems",
}


class Pooling(nn.Module):
    """sentence-transformers pooling (cls / mean / max, concatenated in that order) + optional L2 norm."""

    def __init__(self, modes: Sequence[str], normalize: bool):
        super().__init__()
        self.modes = tuple(modes)
        self.normalize = normalize

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # tokens (B, L, H), mask (B, L)
        m = mask.unsqueeze(-1).to(tokens.dtype)  # (B, L, 1)
        parts = []
        for mode in self.modes:
            if mode == "cls":
                parts.append(tokens[:, 0])
            elif mode == "mean":
                parts.append((tokens * m).sum(1) / m.sum(1).clamp(min=1e-9))
            elif mode == "max":
                parts.append(tokens.masked_fill(m == 0, -1e9).max(1).values)
            elif mode == "mean_sqrt_len":
                parts.append((tokens * m).sum(1) / m.sum(1).clamp(min=1e-9).sqrt())
        emb = torch.cat(parts, -1) if len(parts) > 1 else parts[0]
        if self.normalize:
            emb = nn.functional.normalize(emb, p=2.0, dim=1)
        return emb


class ExportWrapper(nn.Module):
    """``forward(*tensors)`` in ``input_names`` order -> tuple in ``output_names`` order."""

    def __init__(
        self,
        model: nn.Module,
        input_names: Sequence[str],
        output_names: Sequence[str],
        *,
        position_ids_from_mask: bool = False,
        pooling: Pooling | None = None,
    ):
        super().__init__()
        self.model = model
        self.input_names = tuple(input_names)
        self.output_names = tuple(output_names)
        self.position_ids_from_mask = position_ids_from_mask
        self.pooling = pooling
        self.call_kwargs = call_kwargs(model)

    def forward(self, *tensors: torch.Tensor):
        kwargs = dict(zip(self.input_names, tensors))
        if self.position_ids_from_mask:
            # Left-padded rows must number their real tokens 0..k-1, as generate() does; the
            # default arange would shift them by the padding and change the function.
            kwargs["position_ids"] = (kwargs["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        out = self.model(**kwargs, **self.call_kwargs)
        if self.pooling is not None:
            return (self.pooling(out["last_hidden_state"], kwargs["attention_mask"]),)
        return tuple(out[name] for name in self.output_names)


def call_kwargs(model: nn.Module) -> dict:
    """Keyword arguments that make a forward trace-friendly: dict outputs we pick from, no cache."""
    params = inspect.signature(model.forward).parameters
    kw = {"return_dict": True}
    for name in ("use_cache", "output_attentions", "output_hidden_states"):
        if name in params:
            kw[name] = False
    return kw


def tie_state(model: nn.Module) -> str:
    """'shared' when the LM head reuses the input embedding matrix, else 'none'."""
    get_in = getattr(model, "get_input_embeddings", None)
    get_out = getattr(model, "get_output_embeddings", None)
    if get_in is None or get_out is None:
        return "none"
    try:
        emb, head = get_in(), get_out()
    except (NotImplementedError, AttributeError):
        return "none"
    if emb is None or head is None:
        return "none"
    return "shared" if head.weight is emb.weight else "none"


def untie_weights(model: nn.Module) -> bool:
    """Give the LM head its own copy of the embedding matrix (for backends that cannot share).

    The model must not be trained afterwards: the two copies would drift apart.
    """
    if tie_state(model) != "shared":
        return False
    head = model.get_output_embeddings()
    head.weight = nn.Parameter(head.weight.detach().clone(), requires_grad=False)
    return True


class PrecisionWrapper(nn.Module):
    """Run ``inner`` (converted to ``dtype``) behind a float32 contract.

    Float inputs (pixel_values) are cast to ``dtype`` inside the module and float outputs cast
    back to float32, so callers and the manifest see the same dtypes as a float32 export.
    """

    def __init__(self, inner: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.inner = inner
        self.dtype = dtype

    def forward(self, *tensors: torch.Tensor):
        args = tuple(t.to(self.dtype) if t.is_floating_point() else t for t in tensors)
        out = self.inner(*args)
        return tuple(o.float() if o.is_floating_point() else o for o in out)


@dataclass
class Prepared:
    """A model made traceable, plus everything needed to trace and check it."""

    source: Source
    arch: Architecture
    task: Task
    specs: list[InputSpec]
    pad_token_id: int
    max_length: int
    tied: str  # "shared", "untied" or "none"
    options: ExportOptions
    wrapper: torch.nn.Module | None = None  # the module traced (a converted copy for bf16/int8)
    reference: ExportWrapper | None = None  # the fp32 eager function it must equal
    outputs: list[OutputSpec] = field(default_factory=list)
    quantization: dict | None = None  # --quantize: which Linear layers are int8 and why (quantize.quantize's plan)

    @property
    def has_sequence(self) -> bool:
        return any(s.mask == "attention_mask" for s in self.specs)

    @property
    def has_decoder_inputs(self) -> bool:
        return any(s.name == "decoder_input_ids" for s in self.specs)

    @property
    def vocab_size(self) -> int:
        return int(getattr(self.source.config, "vocab_size", 0) or 0) or 2

    @property
    def type_vocab_size(self) -> int:
        return int(getattr(self.source.config, "type_vocab_size", 2) or 1)

    def dims(self, batch: int, length: int) -> dict:
        """Sizes of every symbolic axis for a trace at (batch, length), pairwise distinct where free."""
        d = {"batch_size": batch}
        if self.has_sequence:  # a ViT's inputs have no sequence axis; its outputs' patches are fixed
            d["sequence_length"] = length
        taken = set(d.values())
        if self.task.choices:
            d["num_choices"] = _distinct(DEFAULT_SHAPES["num_choices"], taken)
            taken.add(d["num_choices"])
        if self.has_decoder_inputs:
            d["decoder_sequence_length"] = _distinct(DEFAULT_SHAPES["decoder_sequence_length"], taken)
        return d

    def inputs(self, dims: dict, patterns: Sequence[str], seed: int) -> dict[str, torch.Tensor]:
        return make_inputs(self.specs, dims, patterns, vocab_size=self.vocab_size,
                           type_vocab_size=self.type_vocab_size, seed=seed, avoid_ids=(self.pad_token_id,))

    def example(self, batch: int, length: int, seed: int) -> dict[str, torch.Tensor]:
        # Batch > 1: row 1 unpadded, row 2 padded. Batch 1: the single row padded. Tracing
        # without a padded row could record the no-padding branch of mask creation.
        pad = "left" if self.arch.decoder else "right"
        patterns = ("full", pad) if batch > 1 else (pad,)
        return self.inputs(self.dims(batch, length), patterns, seed)


def _distinct(start: int, taken: set) -> int:
    n = start
    while n in taken:
        n += 1
    return n


def prepare(src: Source, options: ExportOptions, backend) -> Prepared:
    """Wrap ``src.model`` with a tensor signature and check its outputs against the task's declaration."""
    config = src.config
    arch = get_architecture(config.model_type)
    task = get_task(src.task)
    model = src.model
    model.eval()
    model.requires_grad_(False)
    tied = tie_state(model)
    if (options.untie_weights or backend.unties_weights) and untie_weights(model):
        tied = "untied"

    pad_id = pad_token_id(config, src.tokenizer)
    max_length = resolve_max_length(arch, src, options)
    specs = input_specs(arch.inputs_for(task.name, config), config=config, pad_token_id=pad_id, choices=task.choices)
    p = Prepared(src, arch, task, specs, pad_id, max_length, tied, options)

    B0 = options.batch_size
    if options.sequence_length and options.sequence_length > max_length and p.has_sequence:
        # Not clamped silently: the user asked for a trace length this model cannot take.
        raise ShapeError(
            f"{option('sequence_length', options.sequence_length)} is above this artifact's max length {max_length}; "
            f"pass {option('sequence_length')} <= {max_length} (or raise {option('max_length')}, up to the model's "
            "positions)"
        )
    L0 = min(options.sequence_length or DEFAULT_SHAPES["sequence_length"], max_length)
    dims_a = p.dims(B0, L0)
    # A second shape where every symbolic dim differs, to see which output axes follow which.
    L1 = L0 + 3 if L0 + 3 <= max_length else max(1, L0 - 1)
    dims_b = {k: (L1 if k == "sequence_length" else v + 1) for k, v in dims_a.items()}
    example_a = p.example(B0, L0, options.seed)
    example_b = p.inputs(dims_b, ("full",), seed=1)

    pooling = Pooling(src.pooling["modes"], src.pooling["normalize"]) if task.pooled else None
    names = list(task.outputs) if pooling is not None else _output_names(model, task, example_a)
    wrapper = ExportWrapper(model, [s.name for s in specs], names, position_ids_from_mask=arch.decoder, pooling=pooling)
    with torch.no_grad():
        out_a = wrapper(*example_a.values())
        out_b = wrapper(*example_b.values())
    p.outputs = [
        OutputSpec(n, str(a.dtype).replace("torch.", ""), check_axes(n, task.outputs[n], a.shape, dims_a, b.shape, dims_b,
                                                                     type(model).__name__, task.name))
        for n, a, b in zip(names, out_a, out_b)
    ]
    p.reference, p.wrapper = wrapper, convert(wrapper, options, p)
    return p


def _output_names(model: nn.Module, task: Task, example: dict[str, torch.Tensor]) -> list[str]:
    """The task's declared outputs this model returns (one eager call), in declaration order."""
    try:
        with torch.no_grad():
            out = model(**example, **call_kwargs(model))
    except Exception as e:
        raise TraceError(
            f"the eager {type(model).__name__} failed on dummy inputs "
            f"({', '.join(f'{k} {tuple(v.shape)}' for k, v in example.items())}): {type(e).__name__}: {e}; "
            "check the model's config (vocab size, positions) is consistent"
        ) from e
    available = [k for k, v in out.items() if isinstance(v, torch.Tensor)]
    names = [n for n in task.outputs if n in available]
    missing = [n for n in task.outputs if n not in available]
    if missing and not (task.optional_outputs and names):
        raise TraceError(
            f"{type(model).__name__} does not produce the outputs of task {task.name!r}: it returned {available}, "
            f"not {missing}"
        )
    return names


def check_axes(name: str, declared: tuple, shape_a, dims_a: dict, shape_b, dims_b: dict, model: str, task: str) -> tuple:
    """The declared axes of one output, with fixed sizes filled in; TraceError if the model disagrees."""
    axes: list = []
    ok = len(shape_a) == len(declared) == len(shape_b)
    for i, ax in enumerate(declared if ok else ()):
        if ax in dims_a:
            ok &= shape_a[i] == dims_a[ax] and shape_b[i] == dims_b[ax]
            axes.append(ax)
        else:  # "*", or a symbolic axis the inputs lack (a ViT's patches): a size the model fixes
            ok &= shape_a[i] == shape_b[i]
            axes.append(int(shape_a[i]))
    if not ok:
        raise TraceError(
            f"{model} output {name} has shape {tuple(shape_a)} for inputs {dims_a} and {tuple(shape_b)} for {dims_b}, "
            f"but task {task} declares axes ({', '.join(map(str, declared))}); this model does not fit the task: "
            "export another task, or register its outputs in its module under hf_torchscript/tasks/"
        )
    return tuple(axes)


def convert(wrapper: ExportWrapper, opts: ExportOptions, p: Prepared | None = None) -> torch.nn.Module:
    """The module to trace: ``wrapper`` itself (float32) or a converted copy; ``wrapper`` stays the fp32 reference.

    --quantize calibrates on ``p``'s tokenizer and example inputs and records its plan in ``p.quantization``
    (TorchScript, and aoti's dynamic-int8-aten: plain aten ops that torch.export takes); aoti's
    dynamic-int8 is torchao's int8 on every Linear (validation still decides).
    """
    if opts.quantize == "dynamic-int8" and opts.backend == "aoti":
        return quantize_int8_torchao(wrapper)
    if opts.quantize:
        from .quantize import calibration_inputs, quantize

        if p is None:
            raise ValueError("--quantize needs the Prepared model to calibrate on")
        calibration = calibration_inputs([s.name for s in p.specs], p.outputs, tokenizer=p.source.tokenizer,
                                         example=p.example, max_length=p.max_length)
        module, p.quantization = quantize(wrapper, opts.quantize, calibration, keep_float=opts.keep_float)
        return module
    if opts.dtype != "float32":
        dtype = getattr(torch, opts.dtype)
        return PrecisionWrapper(copy.deepcopy(wrapper).to(dtype), dtype)
    return wrapper


def quantize_int8_torchao(wrapper: nn.Module) -> nn.Module:
    """A copy of ``wrapper`` with torchao int8 weights and per-token dynamic int8 activations on nn.Linear.

    The torch.export-era counterpart of torch.ao's quantize_dynamic, which torch deprecates in favour
    of torchao and which the torchscript backend keeps (torchao's tensor subclasses do not trace to
    TorchScript). It exports and compiles with AOTInductor on CPU (torchao 0.18, torch 2.13).
    """
    try:
        # torchao logs a warning for each CUDA-only extension it cannot load on a CPU build of torch.
        with _quiet_loggers("torchao", "torch.utils._pytree"):
            from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
    except ImportError as e:
        raise OptionError(
            f"{option('quantize', 'dynamic-int8')} with {option('backend', 'aoti')} needs torchao "
            f"({type(e).__name__}: {e}); `pip install torchao` (it does not change torch), or drop {option('quantize')}"
        ) from None
    q = copy.deepcopy(wrapper)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_(q, Int8DynamicActivationInt8WeightConfig())
    return q


@contextlib.contextmanager
def _quiet_loggers(*names: str):
    """These loggers at ERROR for the block, then as they were (no lasting process-wide change)."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def pad_token_id(config, tokenizer) -> int:
    """The id padding positions hold: the config's, else the tokenizer's, else EOS (GPT-2), else 0."""
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


def resolve_max_length(arch: Architecture, src: Source, opts: ExportOptions) -> int:
    """The longest input the artifact accepts: --max-length, else the least of the model's own limits."""
    positions = arch.max_positions(src.config)
    limits = [x for x in (positions,) if x]
    tok_max = getattr(src.tokenizer, "model_max_length", None) if src.tokenizer is not None else None
    if tok_max and tok_max < 1_000_000:
        limits.append(int(tok_max))
    if get_task(src.task).pooled and src.pooling and src.pooling.get("max_seq_length"):
        limits.append(int(src.pooling["max_seq_length"]))  # what sentence-transformers' encode truncates to
    natural = min(limits) if limits else FALLBACK_MAX_LENGTH
    if opts.max_length is None:
        return natural
    if positions and opts.max_length > positions:
        raise ShapeError(
            f"max length {opts.max_length} is above {arch.model_type}'s {positions} positions; "
            f"pass {option('max_length', positions)} or less"
        )
    return opts.max_length
