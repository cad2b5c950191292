"""Feature extraction (the base model's hidden states) and sentence embedding (pooled inside the graph).

Both take strings or (text, text_pair) tuples; the text check compares every output by cosine.
"""

from __future__ import annotations

from .base import PER_ROW, PER_TOKEN, Task, floats, num, show, single_texts, split_pairs, to_float
from .columns import tensor_type, vector_column

# -- feature-extraction ------------------------------------------------------------------------------


def _run_features(model, texts, top_k):
    a, b = split_pairs(texts)
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


def _features_json(result) -> list[dict]:
    return [{"tokens": list(r["tokens"]),
             "outputs": {k: {"shape": list(v.shape), "data": floats(v)} for k, v in r.items() if k != "tokens"}}
            for r in result]


def _features_summary(results, top_k) -> list[str]:
    lines = []
    for i, r in enumerate(results):
        shapes = ", ".join(f"{k} {tuple(v['shape'])}" for k, v in r["output"]["outputs"].items())
        lines.append(f"[{i}] {len(r['output']['tokens'])} tokens -> {shapes}  {show(r['input'])}")
    return lines


def _check_cosine(run, got, ref, inputs, labels) -> None:
    """Every output by cosine: per real token for per-token outputs, per text for the others."""
    import torch

    mask = inputs["attention_mask"].bool()
    for o in run.p.outputs:
        g, r = got[o.name].float(), ref[o.name].float()
        if "sequence_length" in o.shape:
            where = mask.nonzero().tolist()
            g = torch.stack([g[b, j] for b, j in where])
            r = torch.stack([r[b, j] for b, j in where])
            row_labels = [f"{labels[b]} token {j}" for b, j in where]
        else:
            row_labels = labels
        run.cosine(g, r, row_labels, o.name)


def _features_columns(model):
    import pyarrow as pa

    cols = [("tokens", pa.list_(pa.string()), lambda r: r["tokens"])]
    for spec in model.manifest["outputs"]:
        name = spec["name"]
        if len(spec["shape"]) == 2 and isinstance(spec["shape"][1], int):
            cols.append((name, vector_column(name, spec["shape"][1], spec["dtype"]), None))
        else:
            cols.append((name, tensor_type(spec), lambda r, name=name: r[name].tolist()))
    return cols


FEATURE_EXTRACTION = Task(
    "feature-extraction", "AutoModel", {"last_hidden_state": PER_TOKEN, "pooler_output": PER_ROW},
    optional_outputs=True, encoder=True, decoder_order=0,
    run=_run_features, to_json=_features_json, summary=_features_summary,
    check_items=single_texts, check_compare=_check_cosine, columns=_features_columns, pairs=True,
    answer_figure="nearest neighbour", answer_embedding="last_hidden_state", tei="embed_all"
)

# -- sentence-embedding ------------------------------------------------------------------------------


def _run_embedding(model, texts, top_k):
    a, b = split_pairs(texts)
    tensors, _ = model.encode(a, b)
    return model.run(**tensors)["sentence_embedding"]


def _embedding_json(result) -> list[dict]:
    return [{"embedding": floats(row), "dimension": int(row.shape[-1]), "norm": to_float(row.norm())}
            for row in result.float()]


def _embedding_summary(results, top_k) -> list[str]:
    n = len(results)
    dim = results[0]["output"]["dimension"] if results else 0
    lines = [f"{n} text{'s' * (n != 1)} -> {dim}-dimensional embeddings (norm, text):"]
    lines += [f"  [{i}] {num(r['output']['norm'], 4)}  {show(r['input'])}" for i, r in enumerate(results)]
    return lines


def _embedding_columns(model):
    spec = model.manifest["outputs"][0]
    return [("sentence_embedding", vector_column(None, spec["shape"][-1], spec["dtype"]), None)]


# Pooling (and normalisation) from the sentence-transformers folder run inside the graph.
SENTENCE_EMBEDDING = Task(
    "sentence-embedding", "AutoModel", {"sentence_embedding": PER_ROW}, encoder=True, pooled=True, similarity=True,
    run=_run_embedding, to_json=_embedding_json, summary=_embedding_summary,
    check_items=single_texts, check_compare=_check_cosine, columns=_embedding_columns, pairs=True,
    answer_figure="nearest neighbour", answer_embedding="sentence_embedding", tei="embed"
)
