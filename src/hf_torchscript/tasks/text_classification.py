"""Text classification: one label per text or per (text, text_pair) (NLI, cross-encoders)."""

from __future__ import annotations

from .base import PER_ROW, Task, label_names, num, show, single_texts, sort_key, split_pairs, tie_agree

# Pairs the text check adds to the single texts.
PAIRS = (
    ("A man is eating food.", "A man is eating a piece of bread."),
    ("Is the sky blue?", "The sky is blue today, isn't it? ☀️"),
    ("Où est la gare ?", "La gare est à côté du café."),
)


def _run(model, texts, top_k):
    a, b = split_pairs(texts)
    tensors, _ = model.encode(a, b)
    logits = model.run(**tensors)["logits"].float()
    labels = label_names(model, logits.shape[-1])
    probs = logits.softmax(-1)
    results = []
    for row in probs:
        best = int(row.argmax())
        results.append({"label": labels[best], "score": float(row[best]),
                        "scores": {labels[k]: float(row[k]) for k in range(len(labels))}})
    return results


def _summary(results, top_k) -> list[str]:
    lines = []
    for i, r in enumerate(results):
        o = r["output"]
        others = sorted(o["scores"].items(), key=lambda kv: -sort_key(kv[1]))
        rest = ", ".join(f"{k} {num(v, 3)}" for k, v in others[1:3])
        lines.append(f"[{i}] {o['label']} {num(o['score'], 3)}" + (f" ({rest})" if rest else "")
                     + f"  {show(r['input'])}")
    return lines


def _check_items(run) -> list:
    return single_texts(run) + list(PAIRS)


def _check_compare(run, got, ref, inputs, labels) -> None:
    run.top1(got["logits"], ref["logits"], labels, "top-1 label", run.label_name)


def _columns(model):
    import pyarrow as pa

    return [("label", pa.string(), lambda r: r["label"]), ("score", pa.float64(), lambda r: r["score"]),
            ("scores", pa.map_(pa.string(), pa.float64()), lambda r: list(r["scores"].items()))]


def _answer_agree(got, ref, mask, ids, model, tie):
    return tie_agree(got["logits"], ref["logits"], tie)


TEXT_CLASSIFICATION = Task(
    "text-classification", "AutoModelForSequenceClassification", {"logits": PER_ROW}, labels=True,
    suffixes=("ForSequenceClassification",), encoder=True, decoder_order=2,
    run=_run, summary=_summary, check_items=_check_items, check_compare=_check_compare, columns=_columns, pairs=True,
    answer_figure="top-1 label", answer_agree=_answer_agree, tei="classify"
)
