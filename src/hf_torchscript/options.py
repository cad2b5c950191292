"""Export options as one frozen dataclass; the defaults are defined here once and reused by the CLI."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import OptionError, ShapeError

# Dummy shapes for tracing. Batch 2 and length 16, not 1 and 1: a batch-1 trace can bake the
# batch into the graph (GPT-2 without a mask fails at batch 2) and a length-1 trace bakes the
# length (Llama). Row 2 of the dummy batch is always padded so the padded-mask branch is traced.
DEFAULT_SHAPES = {"batch_size": 2, "sequence_length": 16, "num_choices": 2, "decoder_sequence_length": 8}

# fp32 tolerances. Tracing replays the same kernels, so anything above ~1e-5 is a real difference;
# 1e-4 leaves room for padding changing the summation order of attention softmax.
DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-4

SHAPE_STRATEGIES = ("auto", "dynamic", "buckets", "static")
TASK_NAMES = (
    "feature-extraction",
    "sentence-embedding",
    "fill-mask",
    "text-classification",
    "token-classification",
    "question-answering",
    "multiple-choice",
    "causal-lm",
    "seq2seq-lm",
    "image-classification",
)
DTYPES = ("float32", "bfloat16", "float16")
QUANTIZATIONS = ("dynamic-int8",)
BACKENDS = ("torchscript", "neuronx", "neuron")


@dataclass(frozen=True)
class ExportOptions:
    """Everything `export` can be told, checked once on construction."""

    task: str | None = None  # None: inferred from config.architectures / a sentence-transformers folder
    batch_size: int = DEFAULT_SHAPES["batch_size"]
    sequence_length: int | None = None  # None: DEFAULT_SHAPES for tracing, the max length for `static`
    shapes: str = "auto"
    buckets: tuple[int, ...] | None = None  # None: powers of two from 16 to the max length
    static_batch: bool = False
    max_length: int | None = None  # None: the model's max positions (and the tokenizer's limit)
    atol: float = DEFAULT_ATOL
    rtol: float = DEFAULT_RTOL
    untie_weights: bool = False
    dtype: str = "float32"
    quantize: str | None = None
    optimize: bool = False
    backend: str = "torchscript"
    compiler_args: tuple[str, ...] = ()  # passed to neuronx-cc / neuron-cc as given
    auto_cast: str | None = None  # Neuron: MODE[:TYPE], e.g. "matmult:bf16"; None: no casting (fp32)
    dynamic_batch: bool = False  # Neuron: the compiled module takes any batch (split/padded on dim 0)
    compiler_workdir: str | None = None  # Neuron: keep compiler work files here, one folder per shape
    allow_pickle: bool = False
    trust_remote_code: bool = False
    seed: int = 0

    def __post_init__(self):
        if self.batch_size < 1:
            raise ShapeError(f"batch size must be >= 1, got {self.batch_size}; pass e.g. --batch-size 2")
        if self.sequence_length is not None and self.sequence_length < 1:
            raise ShapeError(
                f"sequence length must be >= 1, got {self.sequence_length}; pass e.g. --sequence-length 16"
            )
        if self.shapes not in SHAPE_STRATEGIES:
            raise ShapeError(f"unknown shape strategy {self.shapes!r}; choose one of {', '.join(SHAPE_STRATEGIES)}")
        if self.buckets is not None:
            b = tuple(self.buckets)
            if not b:
                raise ShapeError("buckets are empty; pass increasing lengths such as --buckets 32,64,128")
            if any(x < 1 for x in b):
                raise ShapeError(f"buckets must be positive lengths, got {list(b)}; pass e.g. --buckets 32,64,128")
            if any(x >= y for x, y in zip(b, b[1:])):
                raise ShapeError(
                    f"buckets must be strictly increasing, got {list(b)}; sort them, e.g. --buckets "
                    + ",".join(str(x) for x in sorted(set(b)))
                )
            if self.shapes not in ("auto", "buckets"):
                raise ShapeError(f"--buckets only applies to --shapes buckets (got --shapes {self.shapes})")
        if self.static_batch and self.shapes != "static":
            raise ShapeError("--static-batch needs --shapes static: only a static trace fixes the batch size")
        if self.max_length is not None and self.max_length < 1:
            raise ShapeError(f"max length must be >= 1, got {self.max_length}")
        if not (self.atol >= 0 and self.rtol >= 0):
            raise OptionError(f"tolerances must be >= 0, got atol={self.atol} rtol={self.rtol}")
        if self.dtype not in DTYPES:
            raise OptionError(f"unknown dtype {self.dtype!r}; choose one of {', '.join(DTYPES)}")
        if self.quantize is not None and self.quantize not in QUANTIZATIONS:
            raise OptionError(f"unknown quantization {self.quantize!r}; choose one of {', '.join(QUANTIZATIONS)}")
        if self.quantize and self.dtype != "float32":
            raise OptionError("--quantize dynamic-int8 works on a float32 model; drop --dtype or --quantize")
        if self.backend not in BACKENDS:
            raise OptionError(f"unknown backend {self.backend!r}; choose one of {', '.join(BACKENDS)}")
        if self.backend == "torchscript":
            neuron_only = [flag for flag, on in (("--compiler-args", bool(self.compiler_args)),
                                                  ("--auto-cast", self.auto_cast is not None),
                                                  ("--dynamic-batch", self.dynamic_batch),
                                                  ("--compiler-workdir", bool(self.compiler_workdir))) if on]
            if neuron_only:
                raise OptionError(f"{', '.join(neuron_only)} only apply to --backend neuronx or neuron")
        else:
            if isinstance(self.compiler_args, str):
                raise OptionError("compiler_args must be a list of strings, e.g. ['--optlevel', '1'] "
                                  "(the CLI splits --compiler-args '...' for you)")
            if self.shapes == "dynamic":
                raise ShapeError(f"backend {self.backend} compiles static shapes; use --shapes buckets or static")
            from .backends._neuron import compiler_args_for

            compiler_args_for(self)  # bad --auto-cast values or conflicts fail now, not after loading
