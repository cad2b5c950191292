"""Multiple choice: a prompt and its candidate endings in, the most likely ending out."""

from __future__ import annotations

from ..errors import InputError
from .base import Task, num, quoted, show

# (prompt, choices) items the text check runs (plus one with a prompt over the max length).
CHOICES = (
    ("The man went to the bakery to buy", ("bread.", "a car.", "the sky.", "happiness!")),
    ("Crème brûlée is a", ("dessert.", "city.", "river.", "book 📚.")),
    ("東京は", ("日本の首都です。", "川です。", "本です。", "犬です。")),
)


def _run(model, items, top_k):
    results = []
    for item in items:
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[1], (list, tuple)) and item[1]):
            raise InputError("multiple-choice takes (prompt, [choice, choice, ...]) items")
        prompt, choices = item
        tensors, _ = model.encode([prompt] * len(choices), list(choices))
        tensors = {k: v.unsqueeze(0) for k, v in tensors.items()}  # (1, C, L)
        probs = model.run(**tensors)["logits"][0].float().softmax(-1)
        best = int(probs.argmax())
        results.append({"choice": choices[best], "index": best, "score": float(probs[best]),
                        "scores": [float(p) for p in probs]})
    return results


def _summary(results, top_k) -> list[str]:
    lines = []
    for i, r in enumerate(results):
        o = r["output"]
        lines.append(f"[{i}] {show(r['input'])}")
        lines.append(f"    choice {o['index']}: {quoted(o['choice'])} ({num(o['score'], 3)})")
    return lines


def _check_items(run) -> list:
    return [(q, list(c)) for q, c in CHOICES] + [(run.long_text(), ["bread.", "a car.", "the sky.", "yes"])]


def _check_compare(run, got, ref, inputs, labels) -> None:
    run.top1(got["logits"], ref["logits"], labels, "top-1 choice", str)


MULTIPLE_CHOICE = Task(
    "multiple-choice", "AutoModelForMultipleChoice", {"logits": ("batch_size", "num_choices")}, choices=True,
    suffixes=("ForMultipleChoice",), encoder=True,
    run=_run, summary=_summary, check_items=_check_items, check_compare=_check_compare,
)
