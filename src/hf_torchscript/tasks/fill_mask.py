"""Fill-mask: the top-k tokens at each mask token of a text."""

from __future__ import annotations

from ..errors import InputError
from .base import PER_TOKEN, Task, num, plain, show, tie_agree
from .columns import token_struct

# Texts the text check runs, {mask} replaced by the tokenizer's mask token (plus one over the max length).
MASKED_TEXTS = (
    "Paris is the {mask} of France.",
    "The man worked as a {mask}.",
    "Hello, my dog is {mask}!",
    "Crème brûlée is a French {mask}.",
    "東京は日本の{mask}です。",
    "I love pizza 🍕 and {mask} 🚀!",
    "Wait... what?! {mask} -- that's (really) \"surprising\".",
    "{mask} {mask} two masks in one text.",
    "{mask}",
)


def _run(model, texts, top_k):
    tok = model.tokenizer
    mask_token = (model.manifest.get("tokenizer") or {}).get("mask_token")
    mask_id = tok.token_to_id(mask_token) if mask_token else None
    if mask_id is None:
        raise InputError("this artifact's tokenizer has no mask token; fill-mask needs one")
    tensors, encs = model.encode(texts)
    logits = model.run(**tensors)["logits"]
    results = []
    for i, e in enumerate(encs):
        positions = [j for j, t in enumerate(e.ids) if t == mask_id]
        if not positions:
            raise InputError(f"text {i} has no {mask_token} token: {texts[i]!r}; put {mask_token} where a word "
                             "should be predicted")
        per_mask = []
        for j in positions:
            probs = logits[i, j].float().softmax(-1)
            scores, ids = probs.topk(min(top_k, probs.numel()))
            per_mask.append(
                [
                    {"token": tok.id_to_token(int(t)), "token_id": int(t), "token_str": tok.decode([int(t)]).strip(),
                     "score": float(s)}
                    for s, t in zip(scores, ids)
                ]
            )
        results.append(per_mask)
    return results


def _to_json(result) -> list[dict]:
    return [{"masks": plain(per_text)} for per_text in result]


def _summary(results, top_k) -> list[str]:
    lines = []
    for i, r in enumerate(results):
        lines.append(f"[{i}] {show(r['input'])}")
        for j, preds in enumerate(r["output"]["masks"]):
            lines.append(f"    mask {j + 1}: " + ", ".join(f"{p['token_str'] or p['token']} {num(p['score'], 3)}"
                                                    for p in preds[:top_k]))
    return lines


def _check_items(run) -> list:
    mask = run.mask_token()
    return [t.format(mask=mask) for t in MASKED_TEXTS] + [run.long_text(f"Paris is the {mask} of France.")]


def _check_compare(run, got, ref, inputs, labels) -> None:
    import torch

    mask_id = run.naive.token_to_id(run.mask_token())
    where = (inputs["input_ids"] == mask_id).nonzero().tolist() if mask_id is not None else []
    if not where:
        run.failures.append(f"no text holds the mask token {run.mask_token()!r} after tokenization: "
                            "the fill-mask check compared nothing")
        return
    g = torch.stack([got["logits"][b, j] for b, j in where])
    r = torch.stack([ref["logits"][b, j] for b, j in where])
    run.top1(g, r, [f"{labels[b]} mask at token {j}" for b, j in where], "top-1 token at mask", run.token_name)


def _columns(model):
    import pyarrow as pa

    return [("predictions", pa.list_(pa.list_(token_struct())), lambda r: r)]


def _mask_token(model) -> str | None:
    return (model.manifest.get("tokenizer") or {}).get("mask_token")


def _answer_inputs(texts, model):
    """Each sentence with its middle word masked."""
    mask = _mask_token(model) or "[MASK]"
    out = []
    for t in texts:
        words = t.split()
        words[len(words) // 2] = mask
        out.append(" ".join(words))
    return out, None


def _answer_agree(got, ref, mask, ids, model, tie):
    where = ids == (model.tokenizer.token_to_id(_mask_token(model)) if _mask_token(model) else -1)
    return tie_agree(got["logits"][where], ref["logits"][where], tie)


FILL_MASK = Task(
    "fill-mask", "AutoModelForMaskedLM", {"logits": PER_TOKEN}, suffixes=("ForMaskedLM",), encoder=True,
    run=_run, to_json=_to_json, summary=_summary, check_items=_check_items, check_compare=_check_compare,
    columns=_columns, needs_mask=True,
    answer_figure="top-1 token at mask", answer_inputs=_answer_inputs, answer_agree=_answer_agree
)
