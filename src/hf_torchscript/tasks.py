"""The task registry: what each task loads, which outputs it exports, how its inputs are shaped.

Pure data, importable without transformers (the runtime reads it too). The Auto class is a
name; only source.py resolves it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UnsupportedModelError
from .options import TASK_NAMES


@dataclass(frozen=True)
class Task:
    name: str
    auto_class: str  # transformers Auto class name, resolved by source.py
    # ModelOutput keys exported, in this order; None exports every tensor the model returns
    # (minus caches, hidden states and attentions).
    outputs: tuple[str, ...] | None = None
    labels: bool = False  # id2label goes into the manifest
    choices: bool = False  # text inputs gain a num_choices axis: (batch_size, num_choices, sequence_length)
    summary: str = ""


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("feature-extraction", "AutoModel", None, summary="hidden states of the base model"),
        Task(
            "sentence-embedding",
            "AutoModel",
            ("sentence_embedding",),
            summary="pooled (and normalised) sentence vector, pooling inside the graph",
        ),
        Task("fill-mask", "AutoModelForMaskedLM", ("logits",), summary="top-k tokens for each mask"),
        Task("text-classification", "AutoModelForSequenceClassification", ("logits",), labels=True),
        Task("token-classification", "AutoModelForTokenClassification", ("logits",), labels=True),
        Task("question-answering", "AutoModelForQuestionAnswering", ("start_logits", "end_logits")),
        Task("multiple-choice", "AutoModelForMultipleChoice", ("logits",), choices=True),
        Task("causal-lm", "AutoModelForCausalLM", ("logits",), summary="next-token logits, no cache"),
        Task("seq2seq-lm", "AutoModelForSeq2SeqLM", ("logits",), summary="decoder logits for given decoder inputs"),
        Task("image-classification", "AutoModelForImageClassification", ("logits",), labels=True),
    )
}

# config.architectures[0] suffix -> task, for inferring the task when none is given (as optimum does).
_SUFFIX_TO_TASK = (
    ("ForMaskedLM", "fill-mask"),
    ("ForSequenceClassification", "text-classification"),
    ("ForTokenClassification", "token-classification"),
    ("ForQuestionAnswering", "question-answering"),
    ("ForMultipleChoice", "multiple-choice"),
    ("ForCausalLM", "causal-lm"),
    ("LMHeadModel", "causal-lm"),
    ("ForConditionalGeneration", "seq2seq-lm"),
    ("ForImageClassification", "image-classification"),
)


assert tuple(TASKS) == TASK_NAMES, "options.TASK_NAMES must list the registry's tasks in order"


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise UnsupportedModelError(
            f"unknown task {name!r}; supported tasks: {', '.join(TASKS)}"
        ) from None


def infer_task(architectures: list[str] | None) -> str:
    """The task a checkpoint was saved for, from config.architectures; feature-extraction otherwise."""
    for arch in architectures or ():
        for suffix, task in _SUFFIX_TO_TASK:
            if arch.endswith(suffix):
                return task
    return "feature-extraction"
