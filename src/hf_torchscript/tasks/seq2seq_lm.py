"""Seq2seq LM: greedy decoding without a cache (the artifact is the whole encoder-decoder, one step per call)."""

from __future__ import annotations

from .base import Task, quoted, show, single_texts


def _run(model, texts, top_k, max_new_tokens: int = 20):
    """Greedy decoding without a cache: the whole decoder input is re-run each step (O(n^2), simple)."""
    import torch

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


def _summary(results, top_k) -> list[str]:
    lines = []
    for i, r in enumerate(results):
        lines.append(f"[{i}] {show(r['input'])}")
        lines.append(f"    -> {quoted(r['output']['text'])}")
    return lines


def _check_compare(run, got, ref, inputs, labels) -> None:
    """Greedy tokens: the check ran both on the reference's greedy decoding (teacher forcing)."""
    logits_g, logits_r = got["logits"], ref["logits"]
    n, T = logits_g.shape[:2]
    run.top1(logits_g.reshape(n * T, -1), logits_r.reshape(n * T, -1),
             [f"{labels[b]} step {t}" for b in range(n) for t in range(T)], "greedy tokens", run.token_name)


def _columns(model):
    import pyarrow as pa

    return [("generated_text", pa.string(), lambda r: r["text"]),
            ("generated_token_ids", pa.list_(pa.int64()), lambda r: r["token_ids"])]


SEQ2SEQ_LM = Task(
    "seq2seq-lm", "AutoModelForSeq2SeqLM", {"logits": ("batch_size", "decoder_sequence_length", "*")},
    suffixes=("ForConditionalGeneration",), generation=True,
    run=_run, summary=_summary, check_items=single_texts, check_compare=_check_compare, columns=_columns,
)
