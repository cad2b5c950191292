"""Issue 24: a proof the source folder cannot fool. The folder is checked against itself before any
trace (exporter/consistency.py): config.json vs the checkpoint both ways, every weight finite, the
tokenizer vs the model. Refusals happen at load time, so these tests are fast; the real MiniLM folder
is linked file by file into a temp folder and only the edited file is rewritten."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from models import SPECIALS, WORDS, build_tokenizer, save_tiny
from safetensors.torch import load_file, save_file

import hf_torchscript as hts
from hf_torchscript.cli import main
from hf_torchscript.exporter import consistency
from hf_torchscript.exporter.source import load_source


def linked_copy(src: Path, dst: Path, *edited: str) -> Path:
    """``dst`` holding ``src``'s files as symlinks, except ``edited`` ones, which are real copies to change."""
    for f in Path(src).rglob("*"):
        rel = f.relative_to(src)
        target = dst / rel
        if f.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if str(rel) in edited:
            target.write_bytes(f.read_bytes())
        else:
            os.symlink(f.resolve(), target)
    return dst


def edit_json(file: Path, change) -> None:
    data = json.loads(file.read_text())
    change(data)
    file.write_text(json.dumps(data))


# -- 1. config.json and the checkpoint agree, both ways ---------------------------------------------


def test_config_with_fewer_layers_than_the_checkpoint_is_refused_naming_the_field(minilm_dir, tmp_path):
    src = linked_copy(minilm_dir, tmp_path / "m", "config.json")
    edit_json(src / "config.json", lambda c: c.update(num_hidden_layers=4))
    with pytest.raises(hts.ConsistencyError) as e:
        hts.export(src, tmp_path / "o")
    msg = e.value.cli_message()
    assert "the checkpoint holds 32 tensors the model built from config.json does not use" in msg
    assert "encoder.layer.4.attention.output.LayerNorm.bias" in msg
    assert ("the checkpoint has encoder.layer 0-5 (6 layers), the config builds 4 (0-3): num_hidden_layers is 4 in "
            "config.json, the weights say 6") in msg
    assert "--allow-unused-weights" in msg and "allow_unused_weights=True" in str(e.value)
    assert not (tmp_path / "o").exists()


def test_config_with_more_layers_than_the_checkpoint_is_refused_naming_the_field(minilm_dir, tmp_path):
    src = linked_copy(minilm_dir, tmp_path / "m", "config.json")
    edit_json(src / "config.json", lambda c: c.update(num_hidden_layers=8))
    with pytest.raises(hts.ConsistencyError, match=r"the config builds encoder.layer 0-7 \(8 layers\), the checkpoint "
                       r"has 0-5 \(6\): num_hidden_layers is 8 in config.json, the weights say 6"):
        load_source(str(src))


@pytest.mark.parametrize("field,value,name,want", [
    ("vocab_size", 30000, "embeddings.word_embeddings.weight",
     "vocab_size is 30000 in config.json, the weights say 30522"),
    ("max_position_embeddings", 256, "embeddings.position_embeddings.weight",
     "max_position_embeddings is 256 in config.json, the weights say 512"),
    ("hidden_size", 192, "", "hidden_size is 192 in config.json, the weights say 384"),
])
def test_config_sizes_that_differ_from_the_weights_name_the_field(minilm_dir, tmp_path, field, value, name, want):
    src = linked_copy(minilm_dir, tmp_path / "m", "config.json")
    edit_json(src / "config.json", lambda c: c.update({field: value}))
    with pytest.raises(hts.SourceError) as e:
        load_source(str(src))
    assert want in str(e.value) and name in str(e.value) and "does not match the weights" in str(e.value)


def test_task_heads_the_auto_class_drops_are_not_unused_weights(tmp_path):
    # A masked-LM checkpoint for feature extraction (cls.predictions dropped), a classifier for token
    # classification (its pooler dropped): heads, not a config that builds too little.
    mlm = save_tiny("bert", "fill-mask", tmp_path / "mlm")
    # (BertModel's pooler is not in a masked-LM checkpoint: allowed as new, a separate matter)
    assert load_source(str(mlm), task="feature-extraction", allow_new_weights=True).unused_weights == []
    cls = save_tiny("bert", "text-classification", tmp_path / "cls")
    src = load_source(str(cls), task="token-classification", allow_new_weights=True)
    assert src.unused_weights == []  # bert.pooler.* is unexpected for BertForTokenClassification, and a head
    # ... while the same masked-LM checkpoint under a one-layer config is refused.
    edit_json(mlm / "config.json", lambda c: c.update(num_hidden_layers=1))
    with pytest.raises(hts.ConsistencyError, match=r"encoder.layer 0-1 \(2 layers\), the config builds 1"):
        load_source(str(mlm), task="feature-extraction", allow_new_weights=True)


def test_allowed_unused_weights_are_recorded_shown_and_honoured_by_validate(tmp_path, capsys):
    src = save_tiny("bert", "feature-extraction", tmp_path / "src")
    edit_json(src / "config.json", lambda c: c.update(num_hidden_layers=1))
    out = tmp_path / "o"
    hts.export(src, out, allow_unused_weights=True)
    m = json.loads((out / "manifest.json").read_text())
    assert len(m["consistency"]["unused_weights"]) == 16 and m["consistency"]["unused_weights"][0].startswith(
        "encoder.layer.1.")
    assert "finite weights" in m["consistency"]["checked"]
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "UNUSED WEIGHTS: 16 checkpoint tensors the config does not build were dropped" in text
    assert "--allow-unused-weights" in text
    assert hts.validate(out, src).passed  # the recorded override, honoured again


# -- 2. every weight finite --------------------------------------------------------------------------


def test_an_inf_in_one_rare_embedding_row_is_refused_with_its_name_and_count(minilm_dir, tmp_path):
    src = linked_copy(minilm_dir, tmp_path / "m", "model.safetensors")
    weights = load_file(src / "model.safetensors")
    weights["embeddings.word_embeddings.weight"][26000, 7] = float("inf")  # a token no validation text uses
    weights["embeddings.word_embeddings.weight"][26001, 0] = float("-inf")
    save_file(weights, src / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(hts.ConsistencyError, match=r"non-finite weights: embeddings.word_embeddings.weight has 2 "
                       r"infinite of 11720448 values \(the first at \[26000, 7\]\)"):
        hts.export(src, tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_nonfinite_scan_covers_buffers_and_every_tensor():
    m = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    assert consistency.nonfinite_tensors(m) == []
    with torch.no_grad():
        m[0].bias[1] = float("nan")
    m[1].running_var[2] = float("inf")
    got = consistency.nonfinite_tensors(m)
    assert [(n, nan, inf) for n, nan, inf, _, _ in got] == [("0.bias", 1, 0), ("1.running_var", 0, 1)]


# -- 3. the tokenizer fits the model ----------------------------------------------------------------


def test_lowercasing_off_over_an_uncased_vocabulary_is_refused(minilm_dir, tmp_path):
    src = linked_copy(minilm_dir, tmp_path / "m", "tokenizer.json")
    edit_json(src / "tokenizer.json", lambda t: t["normalizer"].update(lowercase=False))
    with pytest.raises(hts.ConsistencyError) as e:
        hts.export(src, tmp_path / "o")
    msg = e.value.cli_message()
    assert "the vocabulary is uncased (0 of 27924 tokens with letters hold an uppercase letter)" in msg
    assert "the folder's tokenizer.json does not lowercase" in msg and "--allow-tokenizer-mismatch" in msg
    src2 = load_source(str(src), allow_tokenizer_mismatch=True)
    assert len(src2.tokenizer_mismatches) == 1


def test_pad_id_of_config_and_tokenizer_must_agree(minilm_dir, tmp_path):
    src = linked_copy(minilm_dir, tmp_path / "m", "config.json")
    edit_json(src / "config.json", lambda c: c.update(pad_token_id=5))
    with pytest.raises(hts.ConsistencyError, match=r"pad_token_id is 5 in config.json but the tokenizer's pad token "
                       r"'\[PAD\]' has id 0"):
        load_source(str(src))


def test_sentence_bert_config_is_checked(minilm_dir, tmp_path):
    src = linked_copy(minilm_dir, tmp_path / "m", "sentence_bert_config.json")
    edit_json(src / "sentence_bert_config.json", lambda c: c.update(max_seq_length=1000))
    with pytest.raises(hts.ConsistencyError, match="sentence_bert_config.json's max_seq_length is 1000 but "
                       "config.json's max_position_embeddings is 512"):
        load_source(str(src))


def test_tokenizer_ids_past_the_embedding_table_are_refused(tmp_path):
    src = save_tiny("bert", "feature-extraction", tmp_path / "src")
    tok = build_tokenizer(0)
    tok.add_tokens([f"word{i}" for i in range(100)])  # 43 + 100 ids for 128 embedding rows
    n = len(SPECIALS) + len(WORDS) + 100
    tok.save_pretrained(src)
    with pytest.raises(hts.ConsistencyError, match=rf"the tokenizer produces ids up to {n - 1} \({n} tokens with added "
                       r"and special ones\) but the input embedding table has 128 rows \(vocab_size 128\)"):
        load_source(str(src))


def test_tokenizer_max_length_past_the_positions_is_refused(tmp_path):
    src = save_tiny("bert", "feature-extraction", tmp_path / "src")
    edit_json(src / "tokenizer_config.json", lambda t: t.update(model_max_length=512))
    with pytest.raises(hts.ConsistencyError, match="the tokenizer's model_max_length is 512 but config.json's "
                       "max_position_embeddings is 128"):
        load_source(str(src))


def test_casing_of_vocabularies_is_judged_only_with_enough_tokens():
    class Tok:
        all_special_tokens = ["[CLS]"]

        def __init__(self, words):
            self.words = words

        def get_vocab(self):
            return {w: i for i, w in enumerate(self.words)}

    lower = [f"w{chr(97 + i % 26)}{i}" for i in range(300)]
    assert consistency.vocabulary_casing(Tok(["[CLS]"] + lower))[0] == "uncased"
    assert consistency.vocabulary_casing(Tok(lower[:-30] + [w.upper() for w in lower[-30:]]))[0] == "cased"
    assert consistency.vocabulary_casing(Tok(lower[:50]))[0] is None


# -- 2b. at run time: never a quiet NaN --------------------------------------------------------------


def _nan_module(manifest):
    """A stand-in for model.pt that returns two non-finite values in its first output, finite ones elsewhere."""
    def module(ids, *rest):
        outs = []
        for o in manifest["outputs"]:
            shape = [ids.shape[0] if d == "batch_size" else ids.shape[1] if d == "sequence_length" else d
                     for d in o["shape"]]
            outs.append(torch.randn(*shape))
        outs[0].view(-1)[0] = float("nan")
        outs[0].view(-1)[-1] = float("inf")
        return tuple(outs)

    return module


def test_nonfinite_outputs_warn_in_python_and_fail_the_cli(tiny_artifact, monkeypatch, capsys):
    from hf_torchscript.runtime import model as runtime_model
    from hf_torchscript.runtime.artifact import load_module

    art = tiny_artifact("bert", "feature-extraction")

    def nan_load(directory, **kw):
        module, manifest = load_module(directory, **kw)
        return _nan_module(manifest), manifest

    monkeypatch.setattr(runtime_model, "load_module", nan_load)
    model = hts.load(art)
    with pytest.warns(runtime_model.NonFiniteOutputWarning, match=r"returned 2 NaN/infinite values "
                      r"\(last_hidden_state: 2\)") as w:
        model(input_ids=torch.tensor([[2, 7, 3]]), attention_mask=torch.ones(1, 3, dtype=torch.long))
    assert w[0].message.count == 2 and w[0].message.outputs == ("last_hidden_state",)

    assert main(["run", str(art), "the man", "--json"]) == 3
    cap = capsys.readouterr()
    assert json.loads(cap.out)["nonfinite_outputs"] == 2 and "returned 2 NaN/infinite values" in cap.err
    assert main(["run", str(art), "the man"]) == 3  # the text output too: a warning and a failing status
    assert "warning: " in capsys.readouterr().err


# -- 5. smaller: the manifest says what is wrong, and holds no build-machine paths --------------------


def test_a_files_list_whose_model_hash_differs_is_named_as_such(tiny_artifact, tmp_path):
    import shutil

    art = shutil.copytree(tiny_artifact("bert", "feature-extraction"), tmp_path / "a")
    m = json.loads((art / "manifest.json").read_text())
    assert "path" not in m["source"] and not os.path.isabs(m["source"]["model"])
    m["files"]["model.pt"] = "0" * 64
    (art / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(hts.ArtifactError, match=r"lists model.pt with sha256 0000000000000000\.\.\. in 'files' but "
                       rf"{m['sha256'][:16]}\.\.\. in 'sha256': the manifest was edited"):
        hts.load(art)
    del m["files"]
    (art / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(hts.ArtifactError, match="has no valid 'files' list of hashes"):
        hts.load(art)


def test_int8_pass_mark_and_calibration_target_come_from_one_constant():
    from hf_torchscript.exporter.parity import REDUCED_PRECISION
    from hf_torchscript.exporter.quantize import CALIBRATION_MARGIN, CALIBRATION_TARGET, PASS_MARK

    assert PASS_MARK is REDUCED_PRECISION["dynamic-int8"] and PASS_MARK["min_cosine"] == 0.99
    assert CALIBRATION_TARGET["min_cosine"] == round(1 - 0.01 * CALIBRATION_MARGIN["min_cosine"], 6) == 0.995
    doc = (Path(__file__).parent.parent / "docs" / "performance.md").read_text()
    assert f"per-row cosine >= {PASS_MARK['min_cosine']:g}, top-1" in doc
