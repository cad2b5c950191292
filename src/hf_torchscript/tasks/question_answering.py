"""Extractive question answering: (question, context) pairs in, the best answer span of the context out."""

from __future__ import annotations

from ..errors import InputError
from .base import Task, num, quoted, show, split_pairs, tie_agree

# (question, context) pairs the text check runs (plus one over the max length).
QUESTIONS = (
    ("Who was Jim Henson?", "Jim Henson was a puppeteer who created the Muppets."),
    ("What is the capital of France?", "Paris is the capital and largest city of France."),
    ("Où est la gare ?", "La gare est à côté du café, près de la rivière."),
    ("首都はどこですか？", "東京は日本の首都です。"),
    ("What did he eat?", "He ate pizza 🍕 and drank coffee ☕ at noon!"),
    ("?", "!"),
)


def _run(model, texts, top_k, max_answer_tokens: int = 30):
    import torch

    questions, contexts = split_pairs(texts)
    if contexts is None:
        raise InputError("question-answering takes (question, context) pairs, e.g. [('Who?', 'Jim Henson was ...')]")
    tensors, encs = model.encode(questions, contexts)
    out = model.run(**tensors)
    results = []
    for i, e in enumerate(encs):
        ctx = [j for j, s in enumerate(e.sequence_ids) if s == 1]
        if not ctx:
            results.append({"answer": "", "score": 0.0, "start": 0, "end": 0})
            continue
        idx = torch.tensor(ctx)
        start = out["start_logits"][i, idx].float().softmax(-1)
        end = out["end_logits"][i, idx].float().softmax(-1)
        scores = start[:, None] * end[None, :]  # (C, C): span start x end
        n = len(ctx)
        valid = torch.ones(n, n, dtype=torch.bool).triu() & ~torch.ones(n, n, dtype=torch.bool).triu(max_answer_tokens)
        scores = scores.masked_fill(~valid, 0)
        flat = int(scores.argmax())
        s, t = divmod(flat, n)
        a, b = e.offsets[ctx[s]][0], e.offsets[ctx[t]][1]
        results.append({"answer": contexts[i][a:b], "score": float(scores[s, t]), "start": a, "end": b})
    return results


def _summary(results, top_k) -> list[str]:
    lines = []
    for i, r in enumerate(results):
        o = r["output"]
        lines.append(f"[{i}] {show(r['input'])}")
        lines.append(f"    answer {quoted(o['answer'])} ({num(o['score'], 3)}, "
                     f"characters {o['start']}-{o['end']} of the context)")
    return lines


def _check_items(run) -> list:
    return list(QUESTIONS) + [("Who reads a book?", run.long_text())]


def _check_compare(run, got, ref, inputs, labels) -> None:
    import torch

    mask = inputs["attention_mask"].bool()
    for side in ("start", "end"):
        name = f"{side}_logits"
        neg = torch.finfo(torch.float32).min
        g, r = got[name].float().masked_fill(~mask, neg), ref[name].float().masked_fill(~mask, neg)
        run.top1(g, r, labels, f"answer {side}", str, valid=mask)


def _columns(model):
    import pyarrow as pa

    return [("answer", pa.string(), lambda r: r["answer"]), ("score", pa.float64(), lambda r: r["score"]),
            ("start", pa.int64(), lambda r: r["start"]), ("end", pa.int64(), lambda r: r["end"])]


QUESTION = "Who is spoken of?"  # asked of every real sentence (the context) by the answers check


def _answer_inputs(texts, model):
    return [QUESTION] * len(texts), texts


def _answer_agree(got, ref, mask, ids, model, tie):
    s1, t1 = tie_agree(got["start_logits"], ref["start_logits"], tie, mask)
    s2, t2 = tie_agree(got["end_logits"], ref["end_logits"], tie, mask)
    return s1 & s2, (s1 | t1) & (s2 | t2) & ~(s1 & s2)


QUESTION_ANSWERING = Task(
    "question-answering", "AutoModelForQuestionAnswering",
    {"start_logits": ("batch_size", "sequence_length"), "end_logits": ("batch_size", "sequence_length")},
    suffixes=("ForQuestionAnswering",), encoder=True,
    run=_run, summary=_summary, check_items=_check_items, check_compare=_check_compare, columns=_columns,
    pairs=True, pair_required="a pair column holding each question's context",
    triton_tokenizer_refusal="question-answering needs (question, context) pairs",
    answer_figure="answer span", answer_inputs=_answer_inputs, answer_agree=_answer_agree
)
