"""The artifact contract, the seed's walk-through, the real MiniLM model, tied weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
from reference import assert_close_valid, eager_model, eager_outputs, random_batch

import hf_torchscript as hts
from hf_torchscript.runtime.artifact import sha256_file

REQUIRED_KEYS = {
    "format_version", "format", "files", "task", "model_type", "inputs", "outputs", "shapes", "pad_token_id", "id2label",
    "validation", "versions", "sha256", "max_length", "tracer_warnings",
}


def test_manifest_contract(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    hts.export(tiny_model_dir("bert", "text-classification"), out)  # task inferred from config.architectures
    m = json.loads((out / "manifest.json").read_text())
    assert REQUIRED_KEYS <= set(m) and m["format"] == "torchscript"
    assert m["task"] == "text-classification"
    assert m["id2label"] == {"0": "negative", "1": "neutral", "2": "positive"}
    assert [i["name"] for i in m["inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]
    assert m["inputs"][0] == {"name": "input_ids", "dtype": "int64", "shape": ["batch_size", "sequence_length"],
                              "pad_value": 0, "range": [0, 128]}  # the tiny vocabulary (tests/models.py VOCAB)
    assert m["inputs"][2]["range"] == [0, 2]  # token types of a BERT
    assert m["outputs"] == [{"name": "logits", "dtype": "float32", "shape": ["batch_size", 3]}]
    assert m["sha256"] == sha256_file(out / "model.pt")
    assert set(m["versions"]) >= {"torch", "transformers", "hf_torchscript"}
    v = m["validation"]
    assert v["passed"] and v["atol"] == 1e-4 and v["rtol"] == 1e-4
    shapes = {tuple(c["shape"].values()) for c in v["cases"]}
    traced = (m["shapes"]["traced"][0]["batch_size"], m["shapes"]["traced"][0]["sequence_length"])
    assert len(shapes - {traced}) >= 2, "validation must cover shapes other than the traced one"
    assert any("right" in c["padding"] for c in v["cases"]) and any(c["padding"] == ["full"] for c in v["cases"])
    # Every file is hashed; the embedded copy is the manifest minus its own file's hash.
    assert set(m["files"]) == {p.name for p in out.iterdir()} - {"manifest.json"}
    assert all(m["files"][name] == sha256_file(out / name) for name in m["files"])
    extra = {"manifest.json": ""}
    torch.jit.load(str(out / "model.pt"), _extra_files=extra)
    embedded = json.loads(extra["manifest.json"])
    files = {k: x for k, x in m["files"].items() if k != "model.pt"}
    assert embedded == {**{k: x for k, x in m.items() if k != "sha256"}, "files": files}
    assert (out / "tokenizer.json").is_file()


def test_tracer_warnings_are_recorded_with_file_and_line(tiny_model_dir, tmp_path):
    m = hts.export(tiny_model_dir("bert"), tmp_path / "o").manifest
    # transformers 5 mask creation converts a tensor to a Python bool while tracing; the grid
    # proves it harmless, and the manifest says where it happened.
    assert m["tracer_warnings"], "expected transformers' TracerWarnings to be recorded"
    for w in m["tracer_warnings"]:
        path, line, _ = w.split(":", 2)
        assert path.endswith(".py") and line.isdigit()


CLEAN_RUN = textwrap.dedent(
    """
    import json, sys
    sys.modules["transformers"] = None      # importing either would raise ImportError
    sys.modules["hf_torchscript"] = None
    import torch
    out_dir, inputs_file, result_file = sys.argv[1:4]
    manifest = json.load(open(out_dir + "/manifest.json"))
    module = torch.jit.load(out_dir + "/model.pt")
    inputs = torch.load(inputs_file)
    args = [inputs[i["name"]] for i in manifest["inputs"]]   # positional, in manifest order
    outputs = module(*args)
    assert isinstance(outputs, tuple) and len(outputs) == len(manifest["outputs"])
    torch.save({o["name"]: t for o, t in zip(manifest["outputs"], outputs)}, result_file)
    """
)


def run_clean(out_dir, inputs: dict, tmp_path) -> dict:
    """Load and call model.pt in a fresh process where transformers and hf_torchscript cannot import."""
    inputs_file, result_file = tmp_path / "inputs.pt", tmp_path / "result.pt"
    torch.save(inputs, inputs_file)
    proc = subprocess.run([sys.executable, "-c", CLEAN_RUN, str(out_dir), str(inputs_file), str(result_file)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return torch.load(result_file)


@pytest.mark.parametrize("model_type,task", [("bert", "fill-mask"), ("distilbert", "question-answering"),
                                             ("roberta", "token-classification")])
def test_plain_torch_jit_load_in_a_clean_process(model_type, task, tiny_model_dir, tmp_path):
    src = tiny_model_dir(model_type, task)
    out = tmp_path / "out"
    m = hts.export(src, out, task=task).manifest
    inputs = random_batch(m, 3, 29, seed=3)
    got = run_clean(out, inputs, tmp_path)
    want = eager_outputs(eager_model(src, model_type, task), m, inputs)
    for o in m["outputs"]:
        assert_close_valid(got[o["name"]], want[o["name"]], o, inputs["attention_mask"])


@pytest.mark.slow
def test_seed_walkthrough(minilm_dir, tmp_path):
    """The docs page's example on our API: BertTokenizer, a masked token, two segments, BertModel."""
    from transformers import BertConfig, BertModel, BertTokenizer

    # The seed's from_pretrained("google-bert/bert-base-uncased"), offline: MiniLM ships that vocabulary.
    # (transformers 5's BertTokenizer(vocab_file=...) maps every word to [UNK]; from_pretrained does not.)
    enc = BertTokenizer.from_pretrained(str(minilm_dir))
    text = "[CLS] Who was Jim Henson ? [SEP] Jim Henson was a puppeteer [SEP]"
    tokenized_text = enc.tokenize(text)
    masked_index = 8
    tokenized_text[masked_index] = "[MASK]"
    indexed_tokens = enc.convert_tokens_to_ids(tokenized_text)
    segments_ids = [0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1]
    tokens_tensor = torch.tensor([indexed_tokens])
    segments_tensors = torch.tensor([segments_ids])

    config = BertConfig(vocab_size=32000, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                        intermediate_size=3072)
    torch.manual_seed(0)
    model = BertModel(config).eval()
    hts.export(model, tmp_path / "traced_bert", tokenizer=enc)

    loaded_model = torch.jit.load(str(tmp_path / "traced_bert" / "model.pt"))
    loaded_model.eval()
    mask = torch.ones_like(tokens_tensor)
    assert tokenized_text[masked_index] == "[MASK]" and len(indexed_tokens) == 14
    all_encoder_layers, pooled_output = loaded_model(tokens_tensor, mask, segments_tensors)
    with torch.no_grad():
        eager = model(tokens_tensor, token_type_ids=segments_tensors)
    torch.testing.assert_close(all_encoder_layers, eager.last_hidden_state, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(pooled_output, eager.pooler_output, atol=1e-4, rtol=1e-4)
    assert all_encoder_layers.shape == (1, 14, 768)
    # The same artifact also takes other lengths and batches, unlike the seed's trace.
    two = torch.cat([tokens_tensor, tokens_tensor.flip(1)])
    seg2 = torch.cat([segments_tensors, segments_tensors])
    with torch.no_grad():
        eager2 = model(two[:, :9], token_type_ids=seg2[:, :9])
    got2 = loaded_model(two[:, :9], torch.ones(2, 9, dtype=torch.long), seg2[:, :9])
    torch.testing.assert_close(got2[0], eager2.last_hidden_state, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_real_minilm_feature_extraction_matches_eager(minilm_dir, tmp_path):
    out = tmp_path / "minilm"
    m = hts.export(minilm_dir, out, task="feature-extraction").manifest
    assert m["max_length"] == 512 and m["validation"]["passed"]
    model = eager_model(minilm_dir, "bert", "feature-extraction")
    inputs = random_batch(m, 4, 61, seed=1, vocab=30522)
    got = hts.load(out).run(**inputs)
    want = eager_outputs(model, m, inputs)
    for o in m["outputs"]:
        assert_close_valid(got[o["name"]], want[o["name"]], o, inputs["attention_mask"])


@pytest.mark.slow
def test_real_minilm_sentence_embedding_matches_sentence_transformers(minilm_dir, tmp_path):
    from sentence_transformers import SentenceTransformer

    out = tmp_path / "st"
    m = hts.export("sentence-transformers/all-MiniLM-L6-v2", out).manifest  # bundled id, task inferred
    assert m["task"] == "sentence-embedding" and m["sentence_embedding"] == {"pooling": ["mean"], "normalize": True}
    assert m["max_length"] == 256  # sentence-transformers' max_seq_length, so truncation agrees too
    texts = ["A man is eating food.", "A man is eating a piece of bread.", "The sky is blue today, isn't it?",
             "Jim Henson was a puppeteer", "word " * 300]
    ours = hts.load(out, truncation="warn")
    with pytest.warns(UserWarning, match="truncated"):
        got = ours(texts)
    st = SentenceTransformer(str(minilm_dir), device="cpu")
    want = torch.from_numpy(st.encode(texts))
    cos = torch.nn.functional.cosine_similarity(got, want, dim=1)
    assert float(cos.min()) >= 0.9999, cos


@pytest.mark.parametrize("untie", [False, True])
def test_tied_weights_shared_or_untied(untie, tiny_model_dir, tmp_path):
    src = tiny_model_dir("bert", "fill-mask")
    out = tmp_path / "o"
    m = hts.export(src, out, task="fill-mask", untie_weights=untie).manifest
    assert m["weights"]["tied_embeddings"] == ("untied" if untie else "shared")
    module = torch.jit.load(str(out / "model.pt"))
    state = module.state_dict()
    emb = next(v for k, v in state.items() if k.endswith("word_embeddings.weight"))
    head = next(v for k, v in state.items() if k.endswith("predictions.decoder.weight"))
    torch.testing.assert_close(emb, head)  # same values either way
    assert (emb.data_ptr() == head.data_ptr()) is (not untie), "tied weights must be stored once, untied twice"
    inputs = random_batch(m, 2, 20, seed=2)
    want = eager_outputs(eager_model(src, "bert", "fill-mask"), m, inputs)
    assert_close_valid(module(*inputs.values())[0], want["logits"], m["outputs"][0], inputs["attention_mask"])


def test_tied_weights_are_stored_once_on_disk(tiny_model_dir, tmp_path):
    src = tiny_model_dir("bert", "fill-mask")
    hts.export(src, tmp_path / "tied", task="fill-mask")
    hts.export(src, tmp_path / "untied", task="fill-mask", untie_weights=True)
    extra = os.path.getsize(tmp_path / "untied" / "model.pt") - os.path.getsize(tmp_path / "tied" / "model.pt")
    matrix = 128 * 32 * 4  # vocab x hidden x fp32 bytes
    assert extra >= matrix * 0.9, f"untied file should be one embedding matrix ({matrix} B) larger, was {extra} B"


def test_torchscript_deprecation_is_handled_where_we_call_the_api(tiny_model_dir, tmp_path):
    """No torch.jit 'is deprecated' warning escapes export or load; the export summary says it once."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = hts.export(tiny_model_dir("bert"), tmp_path / "o", shapes="buckets", buckets=(16, 128))
        hts.load(tmp_path / "o").run(input_ids=torch.ones(1, 3, dtype=torch.long), attention_mask=torch.ones(1, 3, dtype=torch.long),  # noqa: E501
                                     token_type_ids=torch.zeros(1, 3, dtype=torch.long))
    leaked = [str(w.message) for w in caught if "torch.jit" in str(w.message)]
    assert leaked == []
    assert str(result).endswith("; note: TorchScript is deprecated upstream, --backend aoti writes torch.export's "
                                "format (docs/formats.md)") and "\n" not in str(result)
    # Only inside our calls: the same API called directly still warns on a torch that deprecates it.
    with warnings.catch_warnings(record=True) as direct:
        warnings.simplefilter("always")
        torch.jit.load(str(tmp_path / "o" / "model.pt"))
    if tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 13):
        assert any("`torch.jit.load` is deprecated" in str(w.message) for w in direct)


def test_python_314_torchscript_warning_is_not_hidden():
    from hf_torchscript.deprecation import jit_api

    unsupported = ("`torch.jit.trace` is not supported in Python 3.14+ and may break. Please switch to `torch.compile` or "
                   "`torch.export`.")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with jit_api():
            warnings.warn("`torch.jit.trace` is deprecated. Please switch to `torch.compile` or `torch.export`.",  # noqa: B028
                          DeprecationWarning)
            warnings.warn(unsupported, DeprecationWarning)  # noqa: B028  (as torch warns: no stacklevel)
    assert [str(w.message) for w in caught] == [unsupported]
