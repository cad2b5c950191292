"""Task-level outputs for text inputs: labels, top-k tokens, answer spans, embeddings.

Plain torch + tokenizers; every function takes an ExportedModel and a list of inputs.
"""

from __future__ import annotations

import torch

from ..errors import InputError, option


def run_task(model, texts, *, top_k: int = 5):
    if isinstance(texts, (str, tuple)):
        texts = [texts]
    texts = list(texts)
    if not texts:
        raise InputError("no inputs; pass at least one text")
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise InputError(f"top_k must be a positive integer, got {top_k!r}; pass e.g. {option('top_k', 5)}")
    handler = _HANDLERS.get(model.task)
    if handler is None:
        raise InputError(
            f"task {model.task!r} takes tensors, not text: call model({', '.join(n + '=...' for n in model.input_names)})"
        )
    return handler(model, texts, top_k)


def _split_pairs(texts):
    if all(isinstance(t, str) for t in texts):
        return texts, None
    if all(isinstance(t, (tuple, list)) and len(t) == 2 for t in texts):
        return [t[0] for t in texts], [t[1] for t in texts]
    raise InputError("pass either strings or (text, text_pair) tuples, not a mix")


def _feature_extraction(model, texts, top_k):
    a, b = _split_pairs(texts)
    tensors, encs = model.encode(a, b)
    out = model.run(**tensors)
    results = []
    for i, e in enumerate(encs):
        n = len(e.ids)
        row = {"tokens": e.tokens[:n]}
        for name, spec in zip(model.output_names, model.manifest["outputs"]):
            v = out[name][i]
            if "sequence_length" in spec["shape"]:
                v = v.narrow(spec["shape"].index("sequence_length") - 1, 0, n)
            row[name] = v
        results.append(row)
    return results


def _sentence_embedding(model, texts, top_k):
    a, b = _split_pairs(texts)
    tensors, _ = model.encode(a, b)
    return model.run(**tensors)["sentence_embedding"]


def _fill_mask(model, texts, top_k):
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
            raise InputError(f"text {i} has no {mask_token} token: {texts[i]!r}; put {mask_token} where a word should be predicted")
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


def _labels(model, n: int) -> list[str]:
    id2label = model.manifest.get("id2label") or {}
    return [id2label.get(str(i), f"LABEL_{i}") for i in range(n)]


def _text_classification(model, texts, top_k):
    a, b = _split_pairs(texts)
    tensors, _ = model.encode(a, b)
    logits = model.run(**tensors)["logits"].float()
    labels = _labels(model, logits.shape[-1])
    probs = logits.softmax(-1)
    results = []
    for row in probs:
        best = int(row.argmax())
        results.append({"label": labels[best], "score": float(row[best]),
                        "scores": {labels[k]: float(row[k]) for k in range(len(labels))}})
    return results


def _token_classification(model, texts, top_k):
    tensors, encs = model.encode(texts)
    probs = model.run(**tensors)["logits"].float().softmax(-1)
    labels = _labels(model, probs.shape[-1])
    results = []
    for i, e in enumerate(encs):
        tokens = []
        for j, (tid, special) in enumerate(zip(e.ids, e.special_tokens_mask)):
            if special:
                continue
            k = int(probs[i, j].argmax())
            start, end = e.offsets[j]
            tokens.append({"token": e.tokens[j], "label": labels[k], "score": float(probs[i, j, k]),
                           "start": start, "end": end})
        results.append(tokens)
    return results


def _question_answering(model, texts, top_k, max_answer_tokens: int = 30):
    questions, contexts = _split_pairs(texts)
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


def _multiple_choice(model, items, top_k):
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


def _causal_lm(model, texts, top_k):
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


def _seq2seq_lm(model, texts, top_k, max_new_tokens: int = 20):
    """Greedy decoding without a cache: the whole decoder input is re-run each step (O(n^2), simple)."""
    gen = model.manifest.get("generation") or {}
    start, eos = gen.get("decoder_start_token_id", model.manifest["pad_token_id"]), gen.get("eos_token_id")
    tensors, encs = model.encode(texts)
    n = len(encs)
    decoded = torch.full((n, 1), int(start), dtype=torch.long)
    done = torch.zeros(n, dtype=torch.bool)
    for _ in range(max_new_tokens):
        out = model.run(**tensors, decoder_input_ids=decoded, decoder_attention_mask=torch.ones_like(decoded))
        nxt = out["logits"][:, -1].argmax(-1)
        if eos is not None:
            nxt = torch.where(done, torch.full_like(nxt, int(eos)), nxt)
            done |= nxt == eos
        decoded = torch.cat([decoded, nxt[:, None]], 1)
        if bool(done.all()):
            break
    results = []
    for row in decoded[:, 1:].tolist():
        if eos is not None and eos in row:
            row = row[: row.index(eos)]
        results.append({"token_ids": row, "text": model.tokenizer.decode(row)})
    return results


_HANDLERS = {
    "feature-extraction": _feature_extraction,
    "sentence-embedding": _sentence_embedding,
    "fill-mask": _fill_mask,
    "text-classification": _text_classification,
    "token-classification": _token_classification,
    "question-answering": _question_answering,
    "multiple-choice": _multiple_choice,
    "causal-lm": _causal_lm,
    "seq2seq-lm": _seq2seq_lm,
}
