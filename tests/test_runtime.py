"""The Python runtime: text in, task outputs out, with torch + tokenizers only."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import textwrap

import pytest
import torch

import hf_torchscript as hts
from hf_torchscript.cli import main
from reference import eager_model

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
    assert main(["run", str(out), "paris is the [MASK] of france", "--top-k", "2"]) == 0
    [[preds]] = json.loads(capsys.readouterr().out)
    assert len(preds) == 2 and {"token", "token_id", "score"} <= set(preds[0])
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
