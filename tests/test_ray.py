"""Bulk inference: hf_torchscript.serving.ray_data.Predictor and `hf-torchscript map`, in-process and on a local Ray.

The reference is the local runtime, hts.load(...), called on the groups of texts the Predictor
documents (a batch sorted by token length, stable, cut into batch_size rows), and compared bitwise;
MiniLM is also checked against sentence-transformers.
"""

from __future__ import annotations

import json
import math
import os

import pytest
import torch

import hf_torchscript as hts
from hf_torchscript.cli import main

pa = pytest.importorskip("pyarrow", reason="pip install 'hf-torchscript[ray]'")
import pyarrow.csv  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from hf_torchscript.serving.ray_data import SORT_WINDOW, Predictor  # noqa: E402

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.",
    "The quick brown fox jumps over the lazy dog while the farmer watches from the porch of an old house.",
    "Hi",
    "Paris",
]
WORDS = "the man is eating food paris is the capital of france and the city is big jim henson was a puppeteer".split()


def _texts(n: int, seed: int = 0) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 30, (n,), generator=g).tolist()
    return [" ".join(WORDS[(i + k) % len(WORDS)] for k in range(L)) for i, L in enumerate(lengths)]


def grouped_reference(model, texts: dict, batch_size: int, top_k: int = 5) -> dict:
    """What the Predictor documents: valid rows sorted by token count (stable), run batch_size at a time."""
    def n_tokens(x):
        return len(model.tokenizer.encode(*x).ids) if isinstance(x, tuple) else len(model.tokenizer.encode(x).ids)

    order = sorted(texts, key=lambda i: n_tokens(texts[i]))
    out = {}
    for s in range(0, len(order), batch_size):
        group = order[s:s + batch_size]
        result = model([texts[i] for i in group], top_k=top_k)
        for i, r in zip(group, result):
            out[i] = r
    return out


def _column(table, name):
    return table.column(name).to_pylist()


# -- Predictor, in-process -------------------------------------------------------------------------

def test_minilm_embeddings_are_the_runtime_bitwise_in_input_order(minilm_artifact, minilm_dir):
    texts = list(SENTENCES)
    texts[3:3] = [None, "", 7]  # bad rows between good ones: the good ones keep their places
    ids = list(range(100, 100 + len(texts)))
    p = Predictor(minilm_artifact, batch_size=4)
    out = p(pa.table({"id": ids, "text": pa.array([t if isinstance(t, str) else None for t in texts], type=pa.string())}))

    assert out.column_names == ["id", "text", "sentence_embedding", "error"]
    assert out.schema.remove(0).remove(0) == p.output_schema()
    assert _column(out, "id") == ids
    assert out.schema.field("sentence_embedding").type == pa.list_(pa.float32(), 384)
    good = {i: t for i, t in enumerate(texts) if isinstance(t, str) and t}
    ref = grouped_reference(hts.load(minilm_artifact), good, 4)
    emb = _column(out, "sentence_embedding")
    for i in good:
        assert torch.equal(torch.tensor(emb[i], dtype=torch.float32), ref[i]), texts[i]
    assert _column(out, "error")[3:6] == ["column 'text' is null (no text)", "column 'text' is empty",
                                          "column 'text' is null (no text)"]  # 7 was not a string
    assert emb[3] is None and emb[4] is None and emb[5] is None

    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(minilm_dir), device="cpu").encode([good[i] for i in good], convert_to_tensor=True)
    got = torch.tensor([emb[i] for i in good])
    assert (got - st.cpu()).abs().max() < 1e-5


def test_sorting_by_length_cuts_padding(minilm_artifact, monkeypatch):
    p = Predictor(minilm_artifact, batch_size=4)
    calls = []
    run = p.model.run
    monkeypatch.setattr(p.model, "run", lambda **t: (calls.append(tuple(t["input_ids"].shape)), run(**t))[1])
    short, long = "Hi", SENTENCES[9]
    texts = [short, long] * 8  # every group of 4 in input order would hold a long text
    out = p(pa.table({"text": texts}))

    lengths = [len(p.model.tokenizer.encode(t).ids) for t in texts]
    unsorted = sum(len(texts[s:s + 4]) * max(lengths[s:s + 4]) for s in range(0, len(texts), 4))
    assert sorted(calls) == [(4, lengths[0])] * 2 + [(4, lengths[1])] * 2
    assert sum(b * L for b, L in calls) < unsorted / 1.5
    assert _column(out, "error") == [None] * len(texts)


def _expected_row(task: str, r):
    """The runtime's answer for one text, as the Predictor's columns (written independently of ray.py)."""
    if task == "text-classification":
        return {"label": r["label"], "score": r["score"], "scores": list(r["scores"].items())}
    if task == "token-classification":
        return {"token_labels": r}
    if task in ("fill-mask", "causal-lm"):
        return {"predictions": r}
    if task == "question-answering":
        return dict(r)
    if task == "seq2seq-lm":
        return {"generated_text": r["text"], "generated_token_ids": r["token_ids"]}
    if task == "feature-extraction":
        return {"tokens": r["tokens"], "last_hidden_state": r["last_hidden_state"].tolist(),
                "pooler_output": r["pooler_output"].tolist()}
    raise AssertionError(task)


@pytest.mark.parametrize("model_type,task", [
    ("bert", "text-classification"), ("bert", "token-classification"), ("bert", "fill-mask"),
    ("bert", "question-answering"), ("bert", "feature-extraction"), ("gpt2", "causal-lm"), ("t5", "seq2seq-lm"),
])
def test_every_text_task_matches_the_runtime(tiny_artifact, model_type, task):
    art = tiny_artifact(model_type, task)
    texts = _texts(11, seed=len(task))
    if task == "fill-mask":
        texts = [t + " [MASK] ." if i % 3 else "[MASK] " + t for i, t in enumerate(texts)]
    cols = {"id": list(range(11)), "text": texts}
    pair_column = None
    if task == "question-answering":
        pair_column, cols["context"] = "context", _texts(11, seed=99)
    out = Predictor(art, batch_size=3, pair_column=pair_column, top_k=3)(pa.table(cols))

    added = pa.schema([f for f in out.schema if f.name not in cols])
    assert added == Predictor(art, pair_column=pair_column).output_schema()
    inputs = {i: (t, cols["context"][i]) if pair_column else t for i, t in enumerate(texts)}
    model = hts.load(art)
    ref = grouped_reference(model, inputs, 3, top_k=3)
    rows = out.to_pylist()
    for i in range(11):
        assert rows[i]["error"] is None
        want = _expected_row(task, ref[i])
        assert {k: rows[i][k] for k in want} == want, (task, i)
    if task == "fill-mask":
        assert len(rows[0]["predictions"][0]) == 3  # top_k reached the runtime


def test_bad_rows_get_one_line_each_and_the_rest_still_run(tiny_artifact):
    import pandas as pd

    art = tiny_artifact("bert", "fill-mask")
    long = " ".join(["the"] * 200) + " [MASK]"  # 203 tokens with [CLS] and [SEP] > max length 128
    texts = ["paris is the [MASK] of france", None, math.nan, 5, ["a"], "", "   ", "no mask here", long,
             "the [MASK] is big"]
    out = Predictor(art, truncation="error")(pd.DataFrame({"text": texts}))
    errors = _column(out, "error")
    assert errors == [
        None,
        "column 'text' is null (no text)",
        "column 'text' is null (no text)",
        "column 'text' must be a string, got int: 5",
        "column 'text' must be a string, got list: ['a']",
        "column 'text' is empty",
        "column 'text' is empty",
        "no [MASK] token in the text; put [MASK] where a word should be predicted",
        "203 tokens, more than this artifact's max length 128; shorten it, or use truncation='warn' to cut it",
        None,
    ]
    preds = _column(out, "predictions")
    ref = grouped_reference(hts.load(art), {0: texts[0], 9: texts[9]}, 32)
    assert preds[0] == ref[0] and preds[9] == ref[9]
    assert [p is None for p in preds] == [e is not None for e in errors]
    assert _column(out, "text")[3] is None  # a non-string cannot stay in an Arrow string column


@pytest.mark.parametrize("kwargs,message", [
    ({"pair_column": None}, "question-answering needs a pair column holding each question's context"),
    ({"pair_column": "context", "batch_size": 0}, "batch_size must be a positive integer, got 0"),
])
def test_predictor_refuses_bad_options(tiny_artifact, kwargs, message):
    with pytest.raises(hts.OptionError, match=message):
        Predictor(tiny_artifact("bert", "question-answering"), **kwargs)


def test_predictor_names_a_missing_or_clashing_column(tiny_artifact):
    art = tiny_artifact("bert", "text-classification")
    with pytest.raises(hts.OptionError, match="the input has no column 'body'; its columns are text"):
        Predictor(art, column="body")(pa.table({"text": ["a"]}))
    with pytest.raises(hts.OptionError, match="the input already has a column 'label', which text-classification writes"):
        Predictor(art)(pa.table({"text": ["a"], "label": ["x"]}))
    with pytest.raises(hts.OptionError, match="task 'fill-mask' takes single texts; drop the pair column"):
        Predictor(tiny_artifact("bert", "fill-mask"), pair_column="other")


# -- hf-torchscript map, in-process ------------------------------------------------------------------

def _records(n: int):
    texts = _texts(n, seed=3)
    return [{"id": i, "text": t} for i, t in enumerate(texts)]


def test_map_reads_jsonl_csv_and_parquet_and_writes_what_predictor_returns(tiny_artifact, tmp_path, capsys):
    art = tiny_artifact("bert", "text-classification")
    records = _records(37)
    records[4]["text"] = ""
    jsonl = tmp_path / "in.jsonl"
    lines = [json.dumps(r) for r in records]
    lines[5] = json.dumps({"id": 5, "text": 42})  # a number: one row error, not a failed file
    lines[6] = "{not json"
    jsonl.write_text("\n".join(lines) + "\n\n")
    table = pa.Table.from_pylist(records)
    pq.write_table(table, tmp_path / "in.parquet")
    pyarrow.csv.write_csv(table, tmp_path / "in.csv")

    window = SORT_WINDOW * 2
    p = Predictor(art, batch_size=2)
    for src in ("in.jsonl", "in.parquet", "in.csv"):
        out = tmp_path / f"{src}.out.parquet"
        assert main(["map", str(art), str(tmp_path / src), str(out), "--batch-size", "2"]) == 0
        got = pq.read_table(out)
        want_in = table
        if src == "in.jsonl":  # what the two bad lines become: a null text (and a null id for the broken line)
            want_in = pa.Table.from_pylist(records[:5] + [{"id": 5, "text": None}, {"id": None, "text": None}]
                                           + records[7:])
        assert _column(got, "id") == _column(want_in, "id")
        want = pa.concat_tables([p(want_in.slice(s, window)) for s in range(0, 37, window)])
        errors = _column(got, "error")
        assert errors[4] == "column 'text' is empty"
        if src == "in.jsonl":
            assert errors[5] == "column 'text' must be a string, got JSON number: 42"
            assert errors[6].startswith("the line is not valid JSON (Expecting property name")
            del errors[5:7]
        assert errors == [e for k, e in enumerate(_column(want, "error")) if src != "in.jsonl" or k not in (5, 6)]
        for c in ("label", "score", "scores"):
            assert _column(got, c) == _column(want, c), (src, c)
        captured = capsys.readouterr()
        assert ("map: 37 rows" if src == "in.csv" else "map: 37/37 (100%) rows") in captured.err
        assert f"mapped 37 rows ({3 if src == 'in.jsonl' else 1} with errors)" in captured.out
    assert sorted(f.name for f in tmp_path.iterdir() if f.name.startswith(".")) == []  # no temp file left


def test_map_errors_are_one_line(tiny_artifact, tmp_path, capsys, monkeypatch):
    art = str(tiny_artifact("bert", "text-classification"))
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "a"}\n')
    (tmp_path / "out.parquet").write_text("x")
    cases = [
        (["map", art, str(src), str(tmp_path / "out.parquet")], "exists; pass --force"),
        (["map", art, str(tmp_path / "in.txt"), str(tmp_path / "o.parquet")], "cannot tell the format of"),
        (["map", art, str(tmp_path / "nope.jsonl"), str(tmp_path / "o.parquet")], "does not exist or is not a file"),
        (["map", art, str(src), str(tmp_path / "o.parquet"), "--workers", "2"], "--workers needs --ray"),
        (["map", art, str(src), str(tmp_path / "o.parquet"), "--column", "body"],
         "has no column 'body' (its first records have text); pass --column"),
    ]
    for argv, message in cases:
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert message in err.splitlines()[0], err
    assert not (tmp_path / "o.parquet").exists()
    monkeypatch.setitem(__import__("sys").modules, "pyarrow", None)
    assert main(["map", art, str(src), str(tmp_path / "o.parquet")]) == 1
    assert "error: hf-torchscript map needs the 'ray' extra" in capsys.readouterr().err


# -- on a local Ray cluster (one per module) -----------------------------------------------------------

@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="pip install 'hf-torchscript[ray]'")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()


def test_map_on_ray_writes_the_same_file_as_in_process(ray_cluster, minilm_artifact, tmp_path, capsys):
    texts = (SENTENCES * 12)[:130]
    records = [{"id": i, "text": t} for i, t in enumerate(texts)]
    records[17]["text"] = None
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    args = [str(minilm_artifact), str(src)]
    assert main(["map", *args, str(tmp_path / "ray.parquet"), "--ray", "--workers", "1", "--batch-size", "8"]) == 0
    assert "ray, 1 worker" in capsys.readouterr().out
    assert main(["map", *args, str(tmp_path / "local.parquet"), "--batch-size", "8", "--threads", "1"]) == 0

    on_ray, local = pq.read_table(tmp_path / "ray.parquet"), pq.read_table(tmp_path / "local.parquet")
    assert on_ray.equals(local)  # bitwise, every column, same order (3 windows of 64 rows)
    assert _column(on_ray, "id") == list(range(130))
    assert _column(on_ray, "error")[17] == "column 'text' is null (no text)"
    model = hts.load(minilm_artifact)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the Ray actor (one CPU): GEMM sums may split differently with more
    try:
        ref = grouped_reference(model, {i: t for i, t in enumerate(texts[:64]) if i != 17}, 8)
    finally:
        torch.set_num_threads(threads)
    emb = _column(on_ray, "sentence_embedding")
    assert all(torch.equal(torch.tensor(emb[i], dtype=torch.float32), ref[i]) for i in ref)


@pytest.mark.slow
def test_a_worker_that_dies_is_restarted_and_no_row_is_lost_or_repeated(ray_cluster, tiny_artifact, tmp_path):
    import ray.data

    art = str(tiny_artifact("bert", "text-classification"))

    class DiesOnce(Predictor):
        """Kills its worker process on the batch holding row 40, the first time only (marker file)."""

        def __init__(self, marker, **kw):
            super().__init__(**kw)
            self.marker = marker

        def __call__(self, batch):
            if 40 in batch.column("id").to_pylist() and not os.path.exists(self.marker):
                open(self.marker, "w").close()
                os._exit(1)  # as an OOM kill or a lost node would: no exception, the process is gone
            return super().__call__(batch)

    rows = [{"id": i, "text": t} for i, t in enumerate(_texts(64, seed=5))]
    marker = tmp_path / "died"
    ds = ray.data.from_items(rows).repartition(target_num_rows_per_block=16, strict=True)
    ds = ds.map_batches(DiesOnce, fn_constructor_kwargs={"marker": str(marker), "artifact": art, "threads": 1},
                        batch_size=16, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=1))
    ds.context.execution_options.preserve_order = True
    got = pa.concat_tables(list(ds.iter_batches(batch_format="pyarrow", batch_size=None)))

    assert marker.exists()  # the worker did die
    assert _column(got, "id") == list(range(64))  # none lost, none twice
    p = Predictor(art, threads=1)
    want = pa.concat_tables([p(pa.Table.from_pylist(rows[s:s + 16])) for s in range(0, 64, 16)])
    for c in ("label", "score", "scores", "error"):
        assert _column(got, c) == _column(want, c)
