"""The task registry: one module per task family, each holding everything about its task.

A task module builds a ``base.Task``: what it loads and exports (Auto class, declared outputs and
axes), how it is inferred from ``config.architectures``, its text pre/post-processing, its ``run
--json`` output and human summary, what the export's text check compares, its ``map`` columns and
what the servers need to know. ``TASKS`` below lists the tasks ONCE, in the order the CLI shows them;
``options.TASK_NAMES`` and ``architectures.ENCODER_TASKS/DECODER_TASKS`` are derived from it, and no
module outside this package names a task (tests/test_tasks_are_units.py).

Pure data and small functions, importable without torch or transformers (the runtime reads it too).
The Auto class is a name; only exporter/source.py resolves it.
"""

from __future__ import annotations

from ..errors import UnsupportedModelError
from .base import PER_ROW, PER_TOKEN, Task
from .causal_lm import CAUSAL_LM
from .feature_extraction import FEATURE_EXTRACTION, SENTENCE_EMBEDDING
from .fill_mask import FILL_MASK
from .image_classification import IMAGE_CLASSIFICATION
from .multiple_choice import MULTIPLE_CHOICE
from .question_answering import QUESTION_ANSWERING
from .seq2seq_lm import SEQ2SEQ_LM
from .text_classification import TEXT_CLASSIFICATION
from .text_generation import TEXT_GENERATION
from .token_classification import TOKEN_CLASSIFICATION

__all__ = ["PER_ROW", "PER_TOKEN", "TASKS", "Task", "BASE_TASK", "POOLED_TASK", "get_task", "infer_task",
           "task_names"]

TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        FEATURE_EXTRACTION,
        SENTENCE_EMBEDDING,
        FILL_MASK,
        TEXT_CLASSIFICATION,
        TOKEN_CLASSIFICATION,
        QUESTION_ANSWERING,
        MULTIPLE_CHOICE,
        CAUSAL_LM,
        SEQ2SEQ_LM,
        IMAGE_CLASSIFICATION,
        TEXT_GENERATION,
    )
}

# The base model's task: every checkpoint holds its weights, and it is inferred when no suffix matches.
BASE_TASK = FEATURE_EXTRACTION.name
# A sentence-transformers folder's task (its pooling runs inside the graph).
POOLED_TASK = SENTENCE_EMBEDDING.name

# config.architectures[0] suffix -> task, in registry order (as optimum infers a task).
_SUFFIX_TO_TASK = tuple((suffix, t.name) for t in TASKS.values() for suffix in t.suffixes)


def task_names(flag: str) -> tuple[str, ...]:
    """The tasks whose ``flag`` (a Task field or property, e.g. "pairs", "similarity") is set, in registry order."""
    return tuple(name for name, t in TASKS.items() if getattr(t, flag))


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
    return BASE_TASK
