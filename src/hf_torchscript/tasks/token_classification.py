"""Token classification (NER, POS): one label per token, with character offsets."""

from __future__ import annotations

from .base import PER_TOKEN, Task, label_names, plain, show, single_texts, tie_agree


def _run(model, texts, top_k):
    tensors, encs = model.encode(texts)
    probs = model.run(**tensors)["logits"].float().softmax(-1)
    labels = label_names(model, probs.shape[-1])
    results = []
    for i, e in enumerate(encs):
        tokens = []
        for j, special in enumerate(e.special_tokens_mask):
            if special:
                continue
            k = int(probs[i, j].argmax())
            start, end = e.offsets[j]
            tokens.append({"token": e.tokens[j], "label": labels[k], "score": float(probs[i, j, k]),
                           "start": start, "end": end})
        results.append(tokens)
    return results


def _to_json(result) -> list[dict]:
    return [{"tokens": plain(tokens)} for tokens in result]


def _summary(results, top_k) -> list[str]:
    lines = []
    for i, r in enumerate(results):
        tagged = [t for t in r["output"]["tokens"] if t["label"] not in ("O", "LABEL_0")] or r["output"]["tokens"]
        lines.append(f"[{i}] {show(r['input'])}")
        lines.append("    " + (" ".join(f"{t['token']}/{t['label']}" for t in tagged[:20])
                               + (f" ... (+{len(tagged) - 20})" if len(tagged) > 20 else "") or "(no tokens)"))
    return lines


def _check_compare(run, got, ref, inputs, labels) -> None:
    import torch

    where = inputs["attention_mask"].bool().nonzero().tolist()
    g = torch.stack([got["logits"][b, j] for b, j in where])
    r = torch.stack([ref["logits"][b, j] for b, j in where])
    run.top1(g, r, [f"{labels[b]} token {j}" for b, j in where], "per-token top-1 label", run.label_name)


def _columns(model):
    import pyarrow as pa

    item = pa.struct([("token", pa.string()), ("label", pa.string()), ("score", pa.float64()),
                      ("start", pa.int64()), ("end", pa.int64())])
    return [("token_labels", pa.list_(item), lambda r: r)]


def _answer_agree(got, ref, mask, ids, model, tie):
    return tie_agree(got["logits"][mask], ref["logits"][mask], tie)


TOKEN_CLASSIFICATION = Task(
    "token-classification", "AutoModelForTokenClassification", {"logits": PER_TOKEN}, labels=True,
    suffixes=("ForTokenClassification",), encoder=True,
    run=_run, to_json=_to_json, summary=_summary, check_items=single_texts, check_compare=_check_compare,
    columns=_columns,
    answer_figure="per-token label", answer_agree=_answer_agree
)
