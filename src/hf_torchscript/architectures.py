"""The architecture registry, keyed exactly by ``config.model_type``: inputs, tasks, limits.

Data, not classes. A family that shares an input spec is one line:
``register("camembert", like="roberta")``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from .errors import UnsupportedModelError, option
from .tasks import TASKS

# Derived from the task registry (each task says whether encoders offer it and where a decoder lists it).
ENCODER_TASKS = tuple(name for name, t in TASKS.items() if t.encoder)
DECODER_TASKS = tuple(t.name for t in sorted((t for t in TASKS.values() if t.decoder_order is not None),
                                             key=lambda t: t.decoder_order))


def positions(attr: str = "max_position_embeddings", *, padding_offset: bool = False) -> Callable:
    """Max sequence length from a config attribute.

    RoBERTa-style models number positions from ``pad_token_id + 1``, so 514 embeddings hold 512 tokens.
    """

    def max_positions(config) -> int | None:
        n = getattr(config, attr, None)
        if n is None:
            return None
        if padding_offset:
            n -= (getattr(config, "pad_token_id", None) or 0) + 1
        return int(n)

    return max_positions


def no_positions(config) -> None:
    return None


@dataclass(frozen=True)
class Architecture:
    model_type: str
    # forward() argument names in artifact order; token_type_ids is dropped when the config
    # has fewer than 2 token types (RoBERTa, DeBERTa-v2 default), where it would be dead weight.
    inputs: tuple[str, ...]
    tasks: tuple[str, ...]
    max_positions: Callable = field(default=positions(), compare=False)
    # Causal decoders: padding may be on the left, so position ids are computed from the mask.
    decoder: bool = False
    # Per-task input override (an encoder-decoder's feature-extraction exports the encoder alone).
    task_inputs: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # Per-task transformers class instead of the task's Auto class (T5's encoder alone).
    task_classes: Mapping[str, str] = field(default_factory=dict)

    def inputs_for(self, task: str, config=None) -> tuple[str, ...]:
        names = self.task_inputs.get(task, self.inputs)
        if config is not None and "token_type_ids" in names and getattr(config, "type_vocab_size", 2) < 2:
            names = tuple(n for n in names if n != "token_type_ids")
        return names


REGISTRY: dict[str, Architecture] = {}


def register(model_type: str, *, like: str | None = None, **fields) -> Architecture:
    """Add (or replace) an architecture; ``like`` copies another entry's fields first."""
    if like is not None:
        arch = replace(REGISTRY[like], model_type=model_type, **fields)
    else:
        arch = Architecture(model_type=model_type, **fields)
    unknown = [t for t in arch.tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"{model_type}: unknown tasks {unknown}")
    REGISTRY[model_type] = arch
    return arch


TEXT = ("input_ids", "attention_mask")
TEXT_TYPES = ("input_ids", "attention_mask", "token_type_ids")

register("bert", inputs=TEXT_TYPES, tasks=ENCODER_TASKS)
register("distilbert", like="bert", inputs=TEXT)
register("roberta", like="bert", inputs=TEXT, max_positions=positions(padding_offset=True))
register("xlm-roberta", like="roberta")
register("camembert", like="roberta")
register("albert", like="bert")
register("electra", like="bert")
register("mpnet", like="roberta")
register("deberta-v2", like="bert")
register("gpt2", inputs=TEXT, tasks=DECODER_TASKS, decoder=True, max_positions=positions("n_positions"))
register("llama", inputs=TEXT, tasks=DECODER_TASKS, decoder=True)
# Decoder families with a transformers StaticCache, exported for text-generation only (exporter/generation.py).
register("qwen2", like="llama", tasks=("text-generation",))
register("mistral", like="llama", tasks=("text-generation",))
register("phi3", like="llama", tasks=("text-generation",))
register("gemma", like="llama", tasks=("text-generation",))
register(
    "t5",
    inputs=("input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask"),
    tasks=("feature-extraction", "seq2seq-lm"),
    max_positions=no_positions,  # relative position buckets: no hard limit; the tokenizer's applies
    task_inputs={"feature-extraction": TEXT},
    task_classes={"feature-extraction": "T5EncoderModel"},
)
register(
    "vit",
    inputs=("pixel_values",),
    tasks=("feature-extraction", "image-classification"),
    max_positions=no_positions,
)


def get_architecture(model_type: str) -> Architecture:
    try:
        return REGISTRY[model_type]
    except KeyError:
        raise UnsupportedModelError(
            f"model_type {model_type!r} is not supported; supported: {', '.join(sorted(REGISTRY))}. "
            "Open an issue with the config.json, or register it in hf_torchscript/architectures.py"
        ) from None


def check_task(arch: Architecture, task: str) -> None:
    if task not in arch.tasks:
        raise UnsupportedModelError(
            f"task {task!r} is not supported for {arch.model_type}; "
            f"supported for {arch.model_type}: {', '.join(arch.tasks)} (pass one with {option('task')})"
        )
