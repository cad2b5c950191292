"""Task-level outputs for text inputs: the entry point that hands texts to the artifact's task.

Each task's pre/post-processing (labels, top-k tokens, answer spans, embeddings) lives in its module
under ``tasks/`` (``Task.run``); this checks what every task takes and dispatches.
"""

from __future__ import annotations

from ..errors import InputError, option
from ..tasks import TASKS


def run_task(model, texts, *, top_k: int = 5):
    if isinstance(texts, (str, tuple)):
        texts = [texts]
    texts = list(texts)
    if not texts:
        raise InputError("no inputs; pass at least one text")
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise InputError(f"top_k must be a positive integer, got {top_k!r}; pass e.g. {option('top_k', 5)}")
    task = TASKS.get(model.task)
    handler = task.run if task is not None else None
    if handler is None:
        call = ", ".join(n + "=..." for n in model.input_names)
        raise InputError(f"task {model.task!r} takes tensors, not text: call model({call})")
    return handler(model, texts, top_k)
