"""The task registry: what each task loads, which outputs it exports, how its inputs are shaped.

Pure data, importable without transformers (the runtime reads it too). The Auto class is a
name; only source.py resolves it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from .errors import UnsupportedModelError
from .options import TASK_NAMES


# Output axes: symbolic names follow the inputs (batch_size, sequence_length, num_choices,
# decoder_sequence_length); "*" is a size the model fixes (hidden size, vocabulary, labels), read from
# one eager run. A declared symbolic axis whose input dim does not exist (a ViT has no sequence_length:
# its last_hidden_state holds patches) is fixed too. Declared here, as optimum's
# _TASK_TO_COMMON_OUTPUTS does, so an export never has to guess which axis is which; running the model
# only checks the declaration (prepare.declare_outputs).
PER_TOKEN = ("batch_size", "sequence_length", "*")
PER_ROW = ("batch_size", "*")


@dataclass(frozen=True)
class Task:
    name: str
    auto_class: str  # transformers Auto class name, resolved by source.py
    # ModelOutput key -> axes, in export order. With ``optional_outputs`` the model exports those of
    # them it returns (BERT's feature extraction has pooler_output, DistilBERT's has not).
    outputs: Mapping[str, tuple]
    optional_outputs: bool = False
    labels: bool = False  # id2label goes into the manifest
    choices: bool = False  # text inputs gain a num_choices axis: (batch_size, num_choices, sequence_length)


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("feature-extraction", "AutoModel", {"last_hidden_state": PER_TOKEN, "pooler_output": PER_ROW},
             optional_outputs=True),
        # Pooling (and normalisation) from the sentence-transformers folder run inside the graph.
        Task("sentence-embedding", "AutoModel", {"sentence_embedding": PER_ROW}),
        Task("fill-mask", "AutoModelForMaskedLM", {"logits": PER_TOKEN}),
        Task("text-classification", "AutoModelForSequenceClassification", {"logits": PER_ROW}, labels=True),
        Task("token-classification", "AutoModelForTokenClassification", {"logits": PER_TOKEN}, labels=True),
        Task("question-answering", "AutoModelForQuestionAnswering",
             {"start_logits": ("batch_size", "sequence_length"), "end_logits": ("batch_size", "sequence_length")}),
        Task("multiple-choice", "AutoModelForMultipleChoice", {"logits": ("batch_size", "num_choices")},
             choices=True),
        Task("causal-lm", "AutoModelForCausalLM", {"logits": PER_TOKEN}),  # next-token logits, no cache
        Task("seq2seq-lm", "AutoModelForSeq2SeqLM", {"logits": ("batch_size", "decoder_sequence_length", "*")}),
        Task("image-classification", "AutoModelForImageClassification", {"logits": PER_ROW}, labels=True),
        # A static KV cache inside the graph, one sequence: exporter/generation.py, not the shape grid.
        Task("text-generation", "AutoModelForCausalLM", {"logits": (1, "sequence_length", "*")}),
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


if tuple(TASKS) != TASK_NAMES:  # not assert: it must hold under python -O too
    raise RuntimeError("options.TASK_NAMES must list the registry's tasks in order")


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
