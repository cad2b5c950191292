"""Issue 24: answers, not only vectors. At reduced precision the export measures, on real sentences
(texts.py), whether users get the same answers as from the float32 model (exporter/answers.py): the
nearest neighbour for embeddings, the top-1 label for classifiers, ... each with a bar that fails the
export. The classifier here is a tiny BERT trained in the test on the real sentences (which book of
the Bible each is from), with a word-level tokenizer built from their words."""

from __future__ import annotations

import json

import pytest
import torch

import hf_torchscript as hts
from hf_torchscript.cli import main
from hf_torchscript.exporter import answers
from hf_torchscript.tasks.base import tie_agree
from hf_torchscript.texts import real_sentences


@pytest.fixture(scope="module")
def trained_classifier(tmp_path_factory):
    """A 2-layer BERT (hidden 64) trained here to tell the book of a real sentence, well above chance."""
    from collections import Counter

    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    rows = real_sentences()
    labels = sorted({r["label"] for r in rows})
    norm = normalizers.Sequence([normalizers.Lowercase()])
    pre = pre_tokenizers.Whitespace()
    words = Counter(w for r in rows for w, _ in pre.pre_tokenize_str(norm.normalize_str(r["text"])))
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {t: i for i, t in enumerate(specials + [w for w, c in words.most_common(1000) if c >= 2])}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.normalizer, tk.pre_tokenizer = norm, pre
    tk.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                  sep_token="[SEP]", mask_token="[MASK]", model_max_length=128)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=128, max_position_embeddings=128, num_labels=len(labels),
                     id2label=dict(enumerate(labels)), label2id={name: i for i, name in enumerate(labels)},
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = BertForSequenceClassification(cfg)
    y = torch.tensor([labels.index(r["label"]) for r in rows])
    enc = tok([r["text"] for r in rows], padding=True, truncation=True, max_length=48, return_tensors="pt")
    train = torch.arange(len(rows)) % 4 != 0
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    idx = train.nonzero().flatten()
    for _ in range(100):
        b = idx[torch.randperm(len(idx))[:48]]
        opt.zero_grad()
        loss = model(**{k: v[b] for k, v in enc.items()}, labels=y[b]).loss
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        pred = model(**{k: v[~train] for k, v in enc.items()}).logits.argmax(-1)
    held_out = float((pred == y[~train]).double().mean())
    assert held_out > 2 / len(labels), held_out  # it learned something real: well above chance (1/8; measured 0.37)
    d = tmp_path_factory.mktemp("kjv-tiny-classifier")
    model.save_pretrained(str(d))
    tok.save_pretrained(str(d))
    return d


@pytest.mark.slow  # trains the classifier (~80 s on 2 busy cores, shared with the next test), one bf16 export
def test_bf16_classifier_keeps_its_labels_on_real_text_and_info_shows_it(trained_classifier, tmp_path, capsys):
    out = tmp_path / "bf16"
    result = hts.export(trained_classifier, out, dtype="bfloat16")
    a = result.manifest["validation"]["answers"]
    assert a["ran"] and a["passed"] and a["precision"] == "bfloat16" and a["texts"] == answers.REAL_TEXTS
    (fig,) = a["figures"]
    assert fig["name"] == "top-1 label" and fig["of"] == answers.REAL_TEXTS and fig["bar"] == 0.98
    assert fig["share"] >= fig["bar"] and fig["agree"] <= fig["of"]
    # Recomputed here, from the artifact's own tokenizer and model file vs float32 eager transformers.
    from transformers import BertForSequenceClassification

    model = hts.load(out)
    eager = BertForSequenceClassification.from_pretrained(str(trained_classifier)).eval()
    texts = answers.sentences()
    got, ref = [], []
    for i in range(0, len(texts), answers.BATCH):  # the batches the export ran (padding changes bf16 rounding)
        inputs, _ = model.encode(texts[i:i + answers.BATCH])
        got.append(model.run(**inputs)["logits"])
        with torch.no_grad():
            ref.append(eager(**inputs).logits)
    got, ref = torch.cat(got), torch.cat(ref)
    same, tie = tie_agree(got, ref, 0.02)
    assert int(same.sum()) + int(tie.sum()) == fig["agree"] and int(tie.sum()) == fig["ties"]
    assert not torch.equal(got, ref)  # bf16 really ran
    assert "answers" in result.validation.summary()
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"answers       passed: {answers.REAL_TEXTS} real sentences" in text
    assert "top-1 label" in text and "(needs >= 98%" in text
    assert "random token ids" in text  # the grid's cosine is labelled for what it is
    # validate measures the answers again, against the same bars
    report = hts.validate(out, trained_classifier)
    assert report.answers["passed"] and report.answers["figures"][0]["agree"] == fig["agree"]


@pytest.mark.slow  # the trained classifier (module fixture) and a bf16 export up to the answers step
def test_a_missed_answer_bar_fails_the_export_and_writes_nothing(trained_classifier, tmp_path, monkeypatch):
    monkeypatch.setitem(answers.ANSWER_BARS, "top-1 label", 1.01)  # a bar no artifact meets: the wiring
    with pytest.raises(hts.ValidationError, match=r"at bfloat16 changes the answers on real text: top-1 label: "
                       r"\d+/256 = .* of real sentences keep the float32 answer \(needs >= 101%\); "
                       r"nothing was written"):
        hts.export(trained_classifier, tmp_path / "o", dtype="bfloat16")
    assert not (tmp_path / "o").exists()


def test_float32_artifacts_record_why_answers_are_not_remeasured(tiny_artifact):
    m = json.loads((tiny_artifact("bert", "text-classification") / "manifest.json").read_text())
    assert m["validation"]["answers"]["ran"] is False and "float32" in m["validation"]["answers"]["note"]


# -- the figures themselves, on constructed outputs ------------------------------------------------


def test_top1_agreement_counts_flips_and_near_ties():
    ref = torch.tensor([[3.0, 0.0, -3.0], [1.0, 0.99, -3.0], [1.0, 0.0, -3.0], [0.0, 2.0, 1.0]])
    got = torch.tensor([[3.0, 0.0, -3.0], [0.9, 1.0, -3.0], [0.0, 1.0, -3.0], [0.0, 2.0, 1.0]])
    same, tie = tie_agree(got, ref, 0.02)
    # row 1 flips inside a near-tie (0.01 of a range of 4), row 2 flips for real
    assert same.tolist() == [True, False, False, True] and tie.tolist() == [False, True, False, False]
    f = answers.figure_from("top-1 label", same, tie)
    assert (f.agree, f.of, f.ties, f.passed) == (3, 4, 1, False)


def test_nearest_neighbour_agreement():
    ref = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    same, tie = answers.nearest_neighbour(ref.clone(), ref, 0.0)
    assert same.all() and not tie.any()
    swapped = ref[[0, 2, 1, 3]]  # rows 1 and 2 change places: their neighbours change
    same, _ = answers.nearest_neighbour(swapped, ref, 0.0)
    assert not same.all()
