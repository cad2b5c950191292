"""Causal LM: the top-k next tokens after each text (one forward pass, no KV cache)."""

from __future__ import annotations

from .base import PER_TOKEN, Task, num, plain, quoted, show, single_texts, tie_agree
from .columns import token_struct


def _run(model, texts, top_k):
    tensors, encs = model.encode(texts)
    logits = model.run(**tensors)["logits"]
    tok = model.tokenizer
    results = []
    for i, e in enumerate(encs):
        probs = logits[i, len(e.ids) - 1].float().softmax(-1)
        scores, ids = probs.topk(min(top_k, probs.numel()))
        results.append([{"token": tok.id_to_token(int(t)), "token_id": int(t), "token_str": tok.decode([int(t)]),
                         "score": float(s)} for s, t in zip(scores, ids)])
    return results


def _to_json(result) -> list[dict]:
    return [{"next_tokens": plain(preds)} for preds in result]


def _summary(results, top_k) -> list[str]:
    lines = []
    for i, r in enumerate(results):
        lines.append(f"[{i}] {show(r['input'])}")
        lines.append("    next: " + ", ".join(f"{quoted(p['token_str'])} {num(p['score'], 3)}"
                                         for p in r["output"]["next_tokens"][:top_k]))
    return lines


def _check_compare(run, got, ref, inputs, labels) -> None:
    import torch

    last = inputs["attention_mask"].bool().sum(-1) - 1  # right padded: the last real token predicts the next one
    rows = torch.arange(len(labels))
    run.top1(got["logits"][rows, last], ref["logits"][rows, last], labels, "top-1 next token", run.token_name)


def _columns(model):
    import pyarrow as pa

    return [("predictions", pa.list_(token_struct()), lambda r: r)]


def _answer_agree(got, ref, mask, ids, model, tie):
    import torch

    last = mask.sum(-1) - 1  # the token after the last real one
    rows = torch.arange(len(last))
    return tie_agree(got["logits"][rows, last], ref["logits"][rows, last], tie)


CAUSAL_LM = Task(
    "causal-lm", "AutoModelForCausalLM", {"logits": PER_TOKEN},  # next-token logits, no cache
    suffixes=("ForCausalLM", "LMHeadModel"), decoder_order=1,
    run=_run, to_json=_to_json, summary=_summary, check_items=single_texts, check_compare=_check_compare,
    columns=_columns,
    answer_figure="top-1 next token", answer_agree=_answer_agree
)
