"""The Python runtime: text in, task outputs out, with torch + tokenizers only."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import textwrap

import pytest
import torch
from reference import eager_model

import hf_torchscript as hts
from hf_torchscript.cli import main

TEXTS = ["jim henson was a puppeteer", "paris is the capital of france and the city is big"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from models import save_tiny

    cache = {}

    def get(model_type, task):
        if (model_type, task) not in cache:
            base = tmp_path_factory.mktemp(f"rt-{model_type}-{task}")
            src = save_tiny(model_type, task, base / "src")
            hts.export(src, base / "out", task=task)
            from transformers import AutoTokenizer

            cache[model_type, task] = (src, base / "out", eager_model(src, model_type, task),
                                       AutoTokenizer.from_pretrained(str(src)))
        return cache[model_type, task]

    return get


def _eager(model, tok, *args, **kw):
    # BERT-style pairs need segment ids; a generic fast tokenizer returns them only when asked.
    enc = tok(*args, padding=True, return_tensors="pt", return_token_type_ids="token_type_ids" in
              inspect.signature(model.forward).parameters)
    with torch.no_grad():
        return enc, model(**{k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}, **kw)


def test_fill_mask_top_k_agrees_with_eager(exported):
    src, out, model, tok = exported("bert", "fill-mask")
    texts = ["paris is the [MASK] of france", "jim [MASK] was a [MASK]"]
    got = hts.load(out)(texts, top_k=3)
    enc, eager = _eager(model, tok, texts)
    for i, per_text in enumerate(got):
        positions = (enc["input_ids"][i] == tok.mask_token_id).nonzero().flatten().tolist()
        assert len(per_text) == len(positions)
        for preds, j in zip(per_text, positions):
            probs = eager.logits[i, j].softmax(-1)
            top = probs.topk(3)
            assert [p["token_id"] for p in preds] == top.indices.tolist()
            assert [p["score"] for p in preds] == pytest.approx(top.values.tolist(), abs=1e-5)
            assert preds[0]["token"] == tok.convert_ids_to_tokens(int(top.indices[0]))


def test_text_classification_labels_from_id2label(exported):
    _, out, model, tok = exported("roberta", "text-classification")
    got = hts.load(out)(TEXTS)
    _, eager = _eager(model, tok, TEXTS)
    probs = eager.logits.softmax(-1)
    for r, p in zip(got, probs):
        assert r["label"] == model.config.id2label[int(p.argmax())]
        assert r["score"] == pytest.approx(float(p.max()), abs=1e-5)
        assert set(r["scores"]) == {"negative", "neutral", "positive"}


def test_token_classification_per_token(exported):
    _, out, model, tok = exported("distilbert", "token-classification")
    got = hts.load(out)(TEXTS)
    enc, eager = _eager(model, tok, TEXTS)
    for i, tokens in enumerate(got):
        words = TEXTS[i].split()
        assert [t["token"] for t in tokens] == words
        assert [TEXTS[i][t["start"]:t["end"]] for t in tokens] == words
        want = [model.config.id2label[int(k)] for k in eager.logits[i, 1:1 + len(words)].argmax(-1)]
        assert [t["label"] for t in tokens] == want


def test_question_answering_span_lies_in_the_context(exported):
    _, out, model, tok = exported("bert", "question-answering")
    q, c = "who was jim henson", "jim henson was a puppeteer in the city"
    [got] = hts.load(out)([(q, c)])
    enc, eager = _eager(model, tok, [q], [c])
    ctx = [j for j, s in enumerate(enc.sequence_ids(0)) if s == 1]
    start = eager.start_logits[0, ctx].softmax(-1)
    end = eager.end_logits[0, ctx].softmax(-1)
    scores = (start[:, None] * end[None, :]).triu()
    scores = scores - scores.triu(30)
    s, t = divmod(int(scores.argmax()), len(ctx))
    assert got["answer"] == c[got["start"]:got["end"]]
    assert got["score"] == pytest.approx(float(scores[s, t]), abs=1e-5)
    assert got["start"] == enc.token_to_chars(0, ctx[s]).start and got["end"] == enc.token_to_chars(0, ctx[t]).end


def test_multiple_choice(exported):
    _, out, model, tok = exported("bert", "multiple-choice")
    prompt, choices = "the man is", ["eating food", "a blue sky", "reads a book"]
    [got] = hts.load(out)([(prompt, choices)])
    enc = tok([prompt] * 3, choices, padding=True, return_tensors="pt", return_token_type_ids=True)
    with torch.no_grad():
        logits = model(**{k: v.unsqueeze(0) for k, v in enc.items()}).logits[0]
    assert got["scores"] == pytest.approx(logits.softmax(-1).tolist(), abs=1e-5)
    assert got["choice"] == choices[int(logits.argmax())]


def test_causal_lm_next_token(exported):
    _, out, model, tok = exported("gpt2", "causal-lm")
    got = hts.load(out)(TEXTS, top_k=2)
    for text, preds in zip(TEXTS, got):
        enc = tok([text], return_tensors="pt")
        with torch.no_grad():
            logits = model(input_ids=enc["input_ids"]).logits[0, -1]
        assert [p["token_id"] for p in preds] == logits.topk(2).indices.tolist()


def test_seq2seq_greedy_decoding_matches_generate(exported):
    _, out, model, tok = exported("t5", "seq2seq-lm")
    got = hts.load(out)(TEXTS)
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        # Only what T5 takes: the test tokenizer also returns token_type_ids, which generate() rejects.
        want = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], do_sample=False,
                              num_beams=1, max_new_tokens=20)
    eos = model.config.eos_token_id
    for row, ids in zip(got, want[:, 1:].tolist()):  # generate() keeps the decoder start token
        ids = ids[: ids.index(eos)] if eos in ids else ids  # and pads after eos
        assert ids, "the tiny model should decode at least one token before eos"
        assert row["token_ids"] == ids
        assert row["text"] == tok.decode(ids, skip_special_tokens=True)


def test_feature_extraction_strips_padding(exported):
    _, out, model, tok = exported("electra", "feature-extraction")
    got = hts.load(out)(TEXTS)
    enc, eager = _eager(model, tok, TEXTS)
    for i, row in enumerate(got):
        n = int(enc["attention_mask"][i].sum())
        assert row["tokens"][0] == "[CLS]" and len(row["tokens"]) == n
        torch.testing.assert_close(row["last_hidden_state"], eager.last_hidden_state[i, :n], atol=1e-4, rtol=1e-4)


def test_token_type_ids_may_be_left_out_like_in_transformers(exported):
    """The README's raw-tensor call: input_ids + attention_mask only, on a BERT artifact that takes
    token_type_ids too. transformers fills zeros then; so must the artifact (by name and positionally)."""
    src, out, model, tok = exported("bert", "text-classification")
    art = hts.load(out)
    manifest_inputs = {i["name"]: i.get("default") for i in art.manifest["inputs"]}
    assert manifest_inputs == {"input_ids": None, "attention_mask": None, "token_type_ids": "zeros"}
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    assert (enc["attention_mask"] == 0).any()  # a padded batch
    ids, mask = enc["input_ids"], enc["attention_mask"]
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=mask).logits  # transformers' own default
    by_name = art(input_ids=ids, attention_mask=mask)["logits"]
    positional = art.run(ids, mask)["logits"]
    torch.testing.assert_close(by_name, want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(positional, want, atol=1e-4, rtol=1e-4)
    # A non-zero segment must still be honoured when given (the default is not forced).
    types = torch.ones_like(ids) * mask
    with torch.no_grad():
        want_types = model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
    torch.testing.assert_close(art(input_ids=ids, attention_mask=mask, token_type_ids=types)["logits"], want_types,
                               atol=1e-4, rtol=1e-4)
    assert not torch.allclose(want_types, want, atol=1e-4)  # the check above can fail


def test_tensor_only_artifact_says_how_to_call_it(tmp_path):
    from models import tiny_config
    from transformers import AutoModel

    hts.export(AutoModel.from_config(tiny_config("bert", "feature-extraction")), tmp_path / "o")
    with pytest.raises(hts.InputError, match=r"no tokenizer .* call it with tensors: model\(input_ids=..., attention_mask=...\)"):
        hts.load(tmp_path / "o")(["hello"])


def test_runtime_works_with_transformers_unimportable(exported, tmp_path):
    _, out, model, tok = exported("bert", "text-classification")
    code = textwrap.dedent(
        """
        import json, sys
        sys.modules["transformers"] = None     # any import of transformers now raises ImportError
        import hf_torchscript as hts
        model = hts.load(sys.argv[1])
        print(json.dumps(model(sys.argv[2:])))
        assert not any(m.startswith("transformers") and sys.modules[m] is not None for m in sys.modules)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code, str(out), *TEXTS], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    _, eager = _eager(model, tok, TEXTS)
    assert [r["label"] for r in got] == [model.config.id2label[int(i)] for i in eager.logits.argmax(-1)]


def test_cli_export_info_run_validate(tiny_model_dir, tmp_path, capsys):
    src = tiny_model_dir("bert", "fill-mask")
    out = tmp_path / "o"
    assert main(["export", str(src), str(out), "--task", "fill-mask", "--shapes", "buckets", "--buckets", "16,64,128"]) == 0
    assert "shapes: buckets" in capsys.readouterr().out
    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "buckets [16, 64, 128]" in info and "validation    passed" in info and "sha256" in info
    assert main(["run", str(out), "paris is the [MASK] of france", "--top-k", "2", "--json"]) == 0
    [result] = json.loads(capsys.readouterr().out)["results"]
    [preds] = result["output"]["masks"]
    assert len(preds) == 2 and {"token", "token_id", "token_str", "score"} == set(preds[0])
    assert main(["validate", str(out), "--model", str(src)]) == 0
    assert capsys.readouterr().out.startswith("validation passed:")


def test_cli_validate_detects_a_different_model(tiny_model_dir, tmp_path, capsys):
    from models import save_tiny

    out = tmp_path / "o"
    assert main(["export", str(tiny_model_dir("bert")), str(out)]) == 0
    other = save_tiny("bert", "feature-extraction", tmp_path / "other", seed=1)  # same shapes, other weights
    assert main(["validate", str(out), "--model", str(other)]) == 1
    err = capsys.readouterr().err
    assert "does not match" in err and "max diff" in err


# -- `run`: one JSON schema for every task, a short text for people, many inputs --------------------

# The keys of "output" per task, as docs/cli.md documents them.
OUTPUT_KEYS = {
    "fill-mask": {"masks"},
    "text-classification": {"label", "score", "scores"},
    "token-classification": {"tokens"},
    "question-answering": {"answer", "score", "start", "end"},
    "multiple-choice": {"choice", "index", "score", "scores"},
    "causal-lm": {"next_tokens"},
    "sentence-embedding": {"embedding", "dimension", "norm"},
}
RUN_CASES = [  # (model_type, task, extra CLI args, texts)
    ("bert", "fill-mask", [], ["paris is the [MASK] of france", "jim [MASK] was a [MASK]"]),
    ("roberta", "text-classification", [], TEXTS),
    ("distilbert", "token-classification", [], TEXTS),
    ("bert", "question-answering", ["--pair", "jim henson was a puppeteer"], ["who was jim henson"]),
    ("bert", "multiple-choice", ["--choice", "eating food", "--choice", "a blue sky"], ["the man is", "the sky is"]),
    ("gpt2", "causal-lm", ["--top-k", "3"], TEXTS),
]


def _strict_json(text: str):
    def refuse(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("model_type,task,args,texts", RUN_CASES, ids=[c[1] for c in RUN_CASES])
def test_cli_run_json_has_one_schema_for_every_task(exported, capsys, model_type, task, args, texts):
    _, out, _, _ = exported(model_type, task)
    assert main(["run", str(out), *texts, *args, "--json"]) == 0
    doc = _strict_json(capsys.readouterr().out)
    assert set(doc) == {"schema", "artifact", "task", "model_type", "results", "similarity", "warnings",
                        "nonfinite_outputs"} and doc["nonfinite_outputs"] == 0
    assert (doc["schema"], doc["task"], doc["model_type"], doc["similarity"]) == (
        "hf-torchscript/run/1", task, model_type, None)
    assert [r["input"]["text"] for r in doc["results"]] == texts
    for r in doc["results"]:
        assert set(r) == {"input", "output"} and set(r["output"]) == OUTPUT_KEYS[task]
    # Same answers as the Python API, which the tests above check against the eager model.
    model = hts.load(out)
    if task == "question-answering":
        want = model([(texts[0], args[1])])
        assert doc["results"][0]["input"]["pair"] == args[1]
        assert doc["results"][0]["output"]["answer"] == want[0]["answer"]
    elif task == "multiple-choice":
        want = model([(t, ["eating food", "a blue sky"]) for t in texts])
        assert [r["input"]["choices"] for r in doc["results"]] == [["eating food", "a blue sky"]] * 2
        assert [r["output"]["index"] for r in doc["results"]] == [w["index"] for w in want]
        torch.testing.assert_close(torch.tensor([r["output"]["scores"] for r in doc["results"]]),
                                   torch.tensor([w["scores"] for w in want]), atol=1e-6, rtol=0)
    elif task == "fill-mask":
        want = model(texts)
        assert [[[p["token_id"] for p in m] for m in r["output"]["masks"]] for r in doc["results"]] == [
            [[p["token_id"] for p in m] for m in w] for w in want]
    elif task == "causal-lm":
        want = model(texts, top_k=3)
        assert [[p["token_id"] for p in r["output"]["next_tokens"]] for r in doc["results"]] == [
            [p["token_id"] for p in w] for w in want]
    elif task == "text-classification":
        want = model(texts)
        assert [r["output"]["label"] for r in doc["results"]] == [w["label"] for w in want]
        assert [r["output"]["score"] for r in doc["results"]] == pytest.approx([w["score"] for w in want], abs=1e-6)
    else:
        want = model(texts)
        assert [[t["label"] for t in r["output"]["tokens"]] for r in doc["results"]] == [
            [t["label"] for t in w] for w in want]


def test_cli_run_prints_a_short_summary_by_default(exported, capsys):
    _, out, model, tok = exported("roberta", "text-classification")
    assert main(["run", str(out), *TEXTS]) == 0
    lines = capsys.readouterr().out.splitlines()
    _, eager = _eager(model, tok, TEXTS)
    probs = eager.logits.softmax(-1)
    assert len(lines) == len(TEXTS)
    for i, (line, p) in enumerate(zip(lines, probs)):
        label = model.config.id2label[int(p.argmax())]
        assert line.startswith(f"[{i}] {label} {float(p.max()):.3f} (") and line.endswith(f"  {TEXTS[i]}"), line


def test_cli_run_reads_many_inputs_from_a_file_or_stdin_and_writes_a_file(exported, tmp_path, capsys, monkeypatch):
    import io

    _, out, _, _ = exported("roberta", "text-classification")
    texts = [f"{TEXTS[i % 2]} {i}" for i in range(7)]
    (tmp_path / "in.txt").write_text("\n".join(texts[:3]) + "\n\n" + "\n".join(texts[3:]) + "\n")  # a blank line
    assert main(["run", str(out), *texts, "--json", "--batch-size", "7"]) == 0
    want = _strict_json(capsys.readouterr().out)["results"]
    assert main(["run", str(out), "--input", str(tmp_path / "in.txt"), "--json", "--batch-size", "2",
                 "--output", str(tmp_path / "r.json")]) == 0
    assert capsys.readouterr().out == ""
    got = _strict_json((tmp_path / "r.json").read_text())["results"]
    assert [r["input"] for r in got] == [r["input"] for r in want]
    for g, w in zip(got, want):  # batches of 2 vs one batch of 7: other padding, same answers
        assert g["output"]["label"] == w["output"]["label"]
        assert g["output"]["score"] == pytest.approx(w["output"]["score"], abs=1e-5)
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(json.dumps({"text": t}) for t in texts[:2])))
    assert main(["run", str(out), "--input", "-", "--input-format", "jsonl", "--json"]) == 0
    assert [r["input"]["text"] for r in _strict_json(capsys.readouterr().out)["results"]] == texts[:2]
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"txt": 1}\n')
    assert main(["run", str(out), "--input", str(tmp_path / "bad.jsonl")]) == 1
    assert "bad.jsonl' line 2: expected a JSON string or an object with a \"text\" string" in capsys.readouterr().err
    assert main(["run", str(out), "x", "--input", str(tmp_path / "in.txt")]) == 1
    assert "give TEXTs or --input FILE, not both" in capsys.readouterr().err


def test_cli_run_sentence_embeddings_and_similarity_only_when_asked(tiny_model_dir, tmp_path, capsys):
    from transformers import AutoModel, AutoTokenizer

    src = tiny_model_dir("bert")
    out = tmp_path / "emb"
    hts.export(src, out, task="sentence-embedding")  # mean pooling, not normalised
    texts = ["jim henson was a puppeteer", "paris is the capital", "the city is big and the river is long"]
    assert main(["run", str(out), *texts]) == 0
    plain = capsys.readouterr().out
    assert "similarity" not in plain and plain.startswith("3 texts -> 32-dimensional embeddings")
    assert main(["run", str(out), *texts, "--similarity", "--json"]) == 0
    doc = _strict_json(capsys.readouterr().out)
    # Reference: mean of the eager model's token vectors over the mask, then cosine, computed here.
    tok, eager = AutoTokenizer.from_pretrained(str(src)), AutoModel.from_pretrained(str(src)).eval()
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        h = eager(**enc).last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).float()
    emb = (h * m).sum(1) / m.sum(1)
    got = torch.tensor([r["output"]["embedding"] for r in doc["results"]])
    torch.testing.assert_close(got, emb, atol=1e-4, rtol=1e-4)
    assert [r["output"]["norm"] for r in doc["results"]] == pytest.approx(emb.norm(dim=1).tolist(), rel=1e-4)
    cos = torch.nn.functional.cosine_similarity(emb[:, None], emb[None, :], dim=-1)
    torch.testing.assert_close(torch.tensor(doc["similarity"]), cos, atol=1e-4, rtol=0)
    assert main(["run", str(out), *texts, "--similarity"]) == 0
    text = capsys.readouterr().out
    assert "cosine similarity:" in text and f"{float(cos[0, 1]):.3f}" in text


def test_cli_run_refuses_similarity_for_other_tasks(exported, capsys):
    _, out, _, _ = exported("roberta", "text-classification")
    assert main(["run", str(out), "a", "--similarity"]) == 1
    assert "--similarity compares sentence embeddings;" in capsys.readouterr().err


def test_run_json_is_strict():
    from hf_torchscript.cli import display

    text, nulls = display.dumps({"x": [1.0, float("nan"), float("inf")], "y": {"z": -float("inf")}})
    assert nulls == 3 and _strict_json(text) == {"x": [1.0, None, None], "y": {"z": None}}
