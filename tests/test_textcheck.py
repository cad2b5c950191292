"""The text check runs real texts through the SHIPPED tokenizer.json and the
written model.pt, and compares with the reference library (sentence-transformers' encode, the
source's transformers tokenizer + the eager model). A tokenizer.json that gives other ids than
transformers fails the export; without the text stage the same artifact is written with
"validation passed", which is what the stage exists to catch. (docs/cpp.md's path, naive ids into
model.pt: tests/test_trust.py in plain torch, tests/test_cpp.py through the embed example.)
"""

from __future__ import annotations

import json
import re
import sys

import pytest
import torch

import hf_torchscript as hts
from hf_torchscript.cli import main
from hf_torchscript.errors import ValidationError
from hf_torchscript.exporter import artifact, textcheck
from hf_torchscript.runtime.artifact import read_manifest

FP32_COSINE = 0.9999  # the bar sentence-transformers parity must meet in fp32 (the issue's)


def scramble(path, a: str, b: str) -> None:
    """Swap two vocabulary entries of a tokenizer.json: the ids a C++ user gets are then wrong."""
    data = json.loads(path.read_text())
    vocab = data["model"]["vocab"]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    path.write_text(json.dumps(data))


def fixed_padding(path, length: int) -> None:
    """The source's fixed-length padding kept in the shipped file (the issue's all-MiniLM-L6-v2 bug)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    tok.enable_padding(length=length, pad_id=0, pad_token="[PAD]")
    tok.save(str(path))


def shipping(monkeypatch, corrupt) -> None:
    """Make export ship a tokenizer.json that ``corrupt(path, manifest)`` damaged after writing it."""
    original = artifact.save_tokenizer

    def save_then_corrupt(tokenizer, staging, manifest):
        original(tokenizer, staging, manifest)
        corrupt(staging / "tokenizer.json", manifest)

    monkeypatch.setattr(artifact, "save_tokenizer", save_then_corrupt)


def text_record(out) -> dict:
    return json.loads((out / "manifest.json").read_text())["validation"]["text"]


def hf_ids(model_dir, text: str) -> list[int]:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir))(text)["input_ids"]


# -- a tiny model per task ------------------------------------------------------------------------

TASKS = [
    # (model_type, task, the task-level figure the check must report)
    ("bert", "text-classification", "top-1 label"),
    ("bert", "fill-mask", "top-1 token at mask"),
    ("bert", "token-classification", "per-token top-1 label"),
    ("distilbert", "question-answering", "answer start"),
    ("bert", "multiple-choice", "top-1 choice"),
    ("gpt2", "causal-lm", "top-1 next token"),
    ("t5", "seq2seq-lm", "greedy tokens"),
    ("bert", "feature-extraction", "last_hidden_state min cosine"),
]


@pytest.mark.slow
@pytest.mark.parametrize("model_type,task,figure", TASKS, ids=[f"{m}-{t}" for m, t, _ in TASKS])
def test_tiny_model_per_task_passes(tiny_model_dir, tmp_path, model_type, task, figure):
    src = tiny_model_dir(model_type, task)
    result = hts.export(src, tmp_path / "out", task=task)
    text = text_record(tmp_path / "out")
    assert text["ran"] and text["passed"], text["failures"]
    assert text["reference"] == f"the eager fp32 {result.manifest['model_class']} (transformers)"
    from transformers import AutoTokenizer

    tokenizer_class = type(AutoTokenizer.from_pretrained(str(src))).__name__  # differs between transformers 4 and 5
    assert text["tokenizer"].startswith(f"{tokenizer_class} (transformers, truncation at {result.manifest['max_length']})")
    assert text["texts"] >= 4 and not text["failures"]
    rows, ids_of = map(int, text["agreement"]["token ids"].split("/"))
    assert rows == ids_of >= text["texts"]  # every row's ids equal the transformers tokenizer's
    value = text["agreement"][figure]
    if isinstance(value, float):
        assert value >= FP32_COSINE
    else:
        k, n = map(int, value.split("/"))
        assert k == n > 0
    assert "text check passed" in str(result)


def test_long_text_exceeds_the_max_length(tiny_model_dir, tmp_path):
    """The built-in set always holds a text over the artifact's limit, whatever the limit."""
    from tokenizers import Tokenizer

    out = tmp_path / "out"
    hts.export(tiny_model_dir("bert", "fill-mask"), out, task="fill-mask", max_length=40)
    raw = Tokenizer.from_file(str(out / "tokenizer.json"))
    raw.no_truncation()
    run = textcheck._Run.__new__(textcheck._Run)
    run.L = 40
    assert len(raw.encode(run.long_text()).ids) > 40
    assert text_record(out)["passed"]


# -- the shipped tokenizer disagreeing ------------------------------------------------------------


def test_scrambled_vocab_entry_fails_the_export(tiny_model_dir, tmp_path, monkeypatch):
    src = tiny_model_dir("bert", "text-classification")
    man, food = hf_ids(src, "man")[1], hf_ids(src, "food")[1]
    shipping(monkeypatch, lambda path, manifest: scramble(path, "man", "food"))
    out = tmp_path / "out"
    with pytest.raises(ValidationError) as e:
        hts.export(src, out)
    msg = str(e.value)
    assert msg.startswith("text check failed: the exported dynamic artifact disagrees with the eager fp32 "
                          "BertForSequenceClassification (transformers) on real texts through the shipped "
                          "tokenizer.json")
    assert "nothing was written" in msg
    # "A man is eating food." is text 1: [CLS] a man ... -> the swap shows at position 2.
    assert (f"text 1 'A man is eating food.': the shipped tokenizer.json gives different ids "
            f"(7 vs 7 values, first difference at 2: {food} vs {man})") in msg
    assert not out.exists() and list(tmp_path.iterdir()) == []  # no artifact, no staging dir left


def test_fixed_padding_in_tokenizer_json_fails_the_export(tiny_model_dir, tmp_path, monkeypatch):
    src = tiny_model_dir("bert", "fill-mask")
    n = len(hf_ids(src, "Paris is the [MASK] of France."))
    shipping(monkeypatch, lambda path, manifest: fixed_padding(path, manifest["max_length"]))
    with pytest.raises(ValidationError) as e:
        hts.export(src, tmp_path / "out", task="fill-mask")
    # 128 ids where transformers gives n: padding ids, and a mask of zeros, a C++ user would feed.
    assert (f"text 0 'Paris is the [MASK] of France.': the shipped tokenizer.json gives different ids "
            f"(128 vs {n} values, first difference at {n}: 0 vs end); attention mask (128 vs {n} values, "
            f"first difference at {n}: 0 vs end)") in str(e.value)
    assert not (tmp_path / "out").exists()


def test_without_the_text_stage_a_broken_tokenizer_slips_through(tiny_model_dir, tmp_path, monkeypatch):
    """The same corruption with the stage removed: the grid passes and the wrong ids ship."""
    from tokenizers import Tokenizer

    src = tiny_model_dir("bert", "text-classification")
    shipping(monkeypatch, lambda path, manifest: scramble(path, "man", "food"))
    monkeypatch.setattr(textcheck, "check_texts", lambda p, d, tol: textcheck.not_run("removed by this test"))
    out = tmp_path / "out"
    result = hts.export(src, out)
    assert result.validation.passed  # the tensor grid cannot see the tokenizer
    naive = Tokenizer.from_file(str(out / "tokenizer.json")).encode("A man is eating food.").ids
    assert naive != hf_ids(src, "A man is eating food.")


def test_validate_runs_the_text_check(tiny_model_dir, tmp_path, capsys):
    src = tiny_model_dir("bert", "fill-mask")
    out = tmp_path / "out"
    hts.export(src, out, task="fill-mask")
    report = hts.validate(out, src)
    assert report.text["passed"] and report.text["agreement"]["top-1 token at mask"] == "11/11"
    assert "; text check passed: 10 texts vs the eager fp32 BertForMaskedLM" in report.summary()
    assert main(["validate", str(out), "--model", str(src)]) == 0
    assert "text check passed" in capsys.readouterr().out

    # A producer bug that ships a wrong tokenizer.json with matching hashes: only the text check sees it.
    scramble(out / "tokenizer.json", "paris", "france")
    artifact.seal(out, torch.jit.load(str(out / "model.pt")), read_manifest(out))
    with pytest.raises(ValidationError, match=rf"text check failed: {re.escape(str(out))} disagrees with .*\n"
                                              r"- text 0 'Paris is the \[MASK\] of France\.': the shipped "
                                              r"tokenizer\.json gives different ids"):
        hts.validate(out, src)


# -- references, in-memory models, info -----------------------------------------------------------


def test_in_memory_model_with_tokenizer(tiny_model_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    src = tiny_model_dir("bert", "text-classification")
    model = AutoModelForSequenceClassification.from_pretrained(str(src))
    result = hts.export(model, tmp_path / "out", tokenizer=AutoTokenizer.from_pretrained(str(src)))
    text = text_record(tmp_path / "out")
    assert text["passed"] and text["agreement"]["top-1 label"] == "14/14" and text["texts"] == 14
    assert result.validation.text == text


def test_in_memory_model_without_tokenizer_is_not_a_pass(tiny_model_dir, tmp_path, capsys):
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(tiny_model_dir("bert")))
    out = tmp_path / "out"
    result = hts.export(model, out)
    text = text_record(out)
    assert text["ran"] is False and text["passed"] is False
    assert text["summary"] == ("text check not run: no tokenizer shipped (an in-memory model exported without "
                               "tokenizer=): the artifact takes token ids only")
    # The summary's last part, before the one-line TorchScript deprecation note that follows it.
    assert str(result).split("; note: ")[0].endswith(text["summary"])
    assert main(["info", str(out)]) == 0
    assert "\ntext check    not run: no tokenizer shipped" in capsys.readouterr().out


def test_info_shows_the_text_check(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    hts.export(tiny_model_dir("bert", "token-classification"), out, task="token-classification")
    assert main(["info", str(out)]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("text check"))
    assert line.startswith("text check    passed: 11 texts vs the eager fp32 BertForTokenClassification "
                           "(transformers); token ids 11/11, per-token top-1 label ")


@pytest.mark.parametrize("installed", [True, False, "cannot-encode"])
def test_sentence_embedding_reference_says_what_it_compared_with(tiny_model_dir, tmp_path, monkeypatch, installed):
    if not installed:
        monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import fails as if not installed
    if installed == "cannot-encode":  # as sentence-transformers 5.7 on transformers 4.57 does for DistilBERT
        import sentence_transformers

        def encode(self, *a, **k):
            raise TypeError("DistilBertModel.forward() got an unexpected keyword argument 'token_type_ids'")

        monkeypatch.setattr(sentence_transformers.SentenceTransformer, "encode", encode)
    out = tmp_path / "out"
    hts.export(tiny_model_dir("bert"), out, task="sentence-embedding")
    text = text_record(out)
    assert text["passed"] and text["agreement"]["sentence_embedding min cosine"] >= FP32_COSINE
    if installed == "cannot-encode":
        assert text["reference"] == ("the eager transformers model with the same pooling (sentence-transformers "
                                     "could not encode the texts: TypeError: DistilBertModel.forward() got an "
                                     "unexpected keyword argument 'token_type_ids')")
    elif installed:
        import sentence_transformers

        assert text["reference"] == f"sentence-transformers {sentence_transformers.__version__} SentenceTransformer.encode"
    else:
        assert text["reference"] == ("the eager transformers model with the same pooling (sentence-transformers is "
                                     "not installed; pip install sentence-transformers to compare with its encode)")


# -- the comparison rules -------------------------------------------------------------------------


def bare_run(tie: float = textcheck.FP32_TIE, min_cosine: float = FP32_COSINE):
    run = textcheck._Run.__new__(textcheck._Run)
    run.tie, run.min_cosine, run.failures, run.agreement = tie, min_cosine, [], {}
    return run


def test_top1_flip_fails_unless_the_reference_ties():
    ref = torch.tensor([[0.0, 1.0, 5.0], [2.0, 2.0 - 1e-7, 0.0], [0.0, 3.0, 1.0]], dtype=torch.float64)
    got = torch.tensor([[0.0, 5.1, 5.0], [2.0 - 2e-7, 2.0, 0.0], [0.0, 3.0, 1.0]], dtype=torch.float64)
    run = bare_run()
    run.top1(got, ref, ["0 'a'", "1 'b'", "2 'c'"], "top-1 label", lambda k: f"L{k}")
    # Row 0 flips against a margin of 4 (a real disagreement); row 1 flips between values 1e-7 apart.
    assert run.failures == ["top-1 label of text 0 'a': artifact 'L1' vs reference 'L2' (reference margin 4, "
                            "more than a tie)"]
    assert run.agreement == {"top-1 label": "2/3"}


def test_top1_nan_is_a_disagreement():
    run = bare_run()
    run.top1(torch.tensor([[float("nan"), 0.0]]), torch.tensor([[0.0, 1.0]]), ["0 'a'"], "top-1 label", str)
    assert run.agreement == {"top-1 label": "0/1"} and len(run.failures) == 1


def test_cosine_below_the_bar_names_the_text():
    ref = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    got = torch.tensor([[1.0, 0.001], [1.0, 1.0]])
    run = bare_run()
    run.cosine(got, ref, ["0 'a'", "1 'b'"], "sentence_embedding")
    assert run.failures == ["sentence_embedding of text 1 'b': cosine 0.707107 to the reference < 0.9999"]
    assert run.agreement["sentence_embedding min cosine"] == pytest.approx(0.70710678)


# -- the real model ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_minilm_passes_against_sentence_transformers(minilm_dir, tmp_path):
    import sentence_transformers

    out = tmp_path / "out"
    result = hts.export(str(minilm_dir), out)
    text = text_record(out)
    assert text["passed"] and text["texts"] == 11 and text["agreement"]["token ids"] == "11/11"
    assert text["reference"] == f"sentence-transformers {sentence_transformers.__version__} SentenceTransformer.encode"
    from transformers import AutoTokenizer

    name = type(AutoTokenizer.from_pretrained(str(minilm_dir))).__name__  # BertTokenizer(Fast) in transformers 5 (4)
    assert text["tokenizer"] == f"{name} (transformers, truncation at 256): ids and masks equal for 11 of 11"
    assert text["agreement"]["sentence_embedding min cosine"] >= FP32_COSINE
    assert "text check passed: 11 texts vs sentence-transformers" in str(result)


@pytest.mark.slow
def test_wrong_pooling_passes_the_grid_but_not_sentence_transformers(minilm_dir, tmp_path, monkeypatch):
    """A misread modules.json (CLS instead of mean pooling): eager and export agree, the library does not."""
    from hf_torchscript.exporter import source

    real = source.read_pooling
    monkeypatch.setattr(source, "read_pooling", lambda path: {**real(path), "modes": ["cls"]})
    with pytest.raises(ValidationError) as e:
        hts.export(str(minilm_dir), tmp_path / "out")
    assert e.value.report.passed  # the grid compared export and eager, both CLS-pooled
    assert "sentence_embedding of text 0 'Hi': cosine " in str(e.value)
    assert not (tmp_path / "out").exists()
