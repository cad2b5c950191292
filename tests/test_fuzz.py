"""Property tests. Per architecture: for drawn (batch, length, padding pattern per row, token values),
the exported module equals transformers eager on every real position.

HTS_FUZZ_EXAMPLES sets the number of examples per architecture (CI default 200).

Per surface (`run`, `map`, `triton`, the Python API): drawn bad input (any code point including lone
surrogates, non-strings, nesting, garbage files, outputs that are the input or not files) gives a
correct result or one typed line, never a traceback or "internal error", and touches nothing that is
not ours. HTS_FUZZ_SURFACE_EXAMPLES sets their examples (default 30).
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import assert_close_valid, eager_model, eager_outputs

import hf_torchscript as hts
from hf_torchscript.architectures import REGISTRY
from hf_torchscript.tasks import TASKS

EXAMPLES = int(os.environ.get("HTS_FUZZ_EXAMPLES", "200"))
# Architectures with a task the shape grid exports (text-generation-only ones have their own proof: test_generation).
ARCHS = sorted(mt for mt, a in REGISTRY.items() if any(not TASKS[t].kv_cache for t in a.tasks))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One auto-strategy export per architecture (its first task), built on first use."""
    from models import save_tiny

    cache = {}

    def get(model_type):
        if model_type not in cache:
            task = next(t for t in REGISTRY[model_type].tasks if not TASKS[t].kv_cache)
            base = tmp_path_factory.mktemp(f"fuzz-{model_type}")
            src = save_tiny(model_type, task, base / "src")
            m = hts.export(src, base / "out", task=task).manifest
            module = torch.jit.load(str(base / "out" / "model.pt"))
            cache[model_type] = (m, module, eager_model(src, model_type, task))
        return cache[model_type]

    return get


@st.composite
def batches(draw, manifest, decoder: bool):
    names = [i["name"] for i in manifest["inputs"]]
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    batch = draw(st.integers(1, 6))
    if names == ["pixel_values"]:
        return {"pixel_values": torch.randn([batch] + manifest["inputs"][0]["shape"][1:], generator=g)}
    length = draw(st.integers(1, min(manifest["max_length"], 96)))
    patterns = ["full", "right", "first"] + (["left"] if decoder else [])
    mask = torch.zeros(batch, length, dtype=torch.long)
    for r in range(batch):
        p = draw(st.sampled_from(patterns))
        k = draw(st.integers(1, length))
        if p == "full":
            mask[r] = 1
        elif p == "first":
            mask[r, 0] = 1
        elif p == "right":
            mask[r, :k] = 1
        else:
            mask[r, length - k:] = 1
    pad = manifest["pad_token_id"]
    ids = torch.randint(0, 128, (batch, length), generator=g)
    ids = torch.where(ids == pad, (ids + 1) % 128, ids)
    out = {"input_ids": torch.where(mask.bool(), ids, torch.full_like(ids, pad)), "attention_mask": mask}
    if "token_type_ids" in names:
        split = draw(st.integers(0, length))
        out["token_type_ids"] = (torch.arange(length) >= split).long().expand(batch, length) * mask
    if "decoder_input_ids" in names:
        T = draw(st.integers(1, 24))
        dmask = torch.ones(batch, T, dtype=torch.long)
        for r in range(batch):
            dmask[r, draw(st.integers(1, T)):] = 0
        dids = torch.randint(5, 128, (batch, T), generator=g)
        out["decoder_input_ids"] = torch.where(dmask.bool(), dids, torch.full_like(dids, pad))
        out["decoder_attention_mask"] = dmask
    return {n: out[n] for n in names}


@pytest.mark.slow
@pytest.mark.parametrize("model_type", ARCHS)
def test_exported_equals_eager_on_drawn_inputs(model_type, exported):
    manifest, module, eager = exported(model_type)

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=st.data())
    def prop(data):
        x = data.draw(batches(manifest, REGISTRY[model_type].decoder))
        got = module(*x.values())
        want = eager_outputs(eager, manifest, x)
        for o, g in zip(manifest["outputs"], got):
            mask = x.get("decoder_attention_mask") if "decoder_sequence_length" in o["shape"] else x.get("attention_mask")
            assert_close_valid(g, want[o["name"]], o, mask, what=f"{model_type} {tuple(x['input_ids' if 'input_ids' in x else 'pixel_values'].shape)}")  # noqa: E501

    prop()


# ------------------------------------------------------------------------------ every surface, bad input

SURFACE_EXAMPLES = int(os.environ.get("HTS_FUZZ_SURFACE_EXAMPLES", "30"))
SURFACE_SETTINGS = settings(max_examples=SURFACE_EXAMPLES, deadline=None, derandomize=True, database=None,
                            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                                   HealthCheck.data_too_large])

# Any code point, lone surrogates included (what a JSON "\udc80" escape or a non-UTF-8 argument decoded
# with surrogateescape gives), plus the tokenizer's own specials.
ANY_CHAR = st.characters(codec=None, categories=None)
TEXTS = st.text(ANY_CHAR, max_size=40) | st.sampled_from(["", " ", "[MASK]", "[CLS] [SEP]", "the man " * 40])
NOT_TEXT = st.none() | st.integers() | st.floats(allow_nan=True) | st.binary(max_size=8) | st.booleans()
TEXT_INPUTS = st.recursive(
    TEXTS | NOT_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.tuples(inner, inner) | st.dictionaries(st.text(max_size=3), inner,
                                                                                         max_size=2),
    max_leaves=6,
)


@pytest.fixture(scope="module")
def surface_artifact(tmp_path_factory):
    """A tiny BERT feature-extraction artifact for the surface tests (one export, reused)."""
    from models import save_tiny

    base = tmp_path_factory.mktemp("surfaces")
    src = save_tiny("bert", "feature-extraction", base / "src")
    hts.export(src, base / "art", shapes="dynamic", max_length=32)
    return base / "art"


def _one_line(e: BaseException) -> str:
    text = str(e) if not isinstance(e, hts.HFTorchScriptError) else e.cli_message()
    assert text and "\n" not in text.strip(), text
    return text


def _cli(argv, capsys) -> tuple[int, list[str], str]:
    from hf_torchscript.cli import main

    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse usage errors
        code = e.code if isinstance(e.code, int) else 1
    cap = capsys.readouterr()
    err = cap.err.strip().splitlines()
    text = "\n".join(err)
    assert code in (0, 1, 2), (argv, code, text)
    assert "Traceback" not in text and "internal error" not in text, (argv, text)
    if code == 1:
        assert err[0].startswith("error: ") and len([l for l in err if l.startswith("error: ")]) == 1, err
    return code, err, cap.out


@SURFACE_SETTINGS
@given(texts=TEXT_INPUTS, top_k=st.integers(-2, 8) | st.none())
def test_python_api_gives_a_result_or_one_typed_line(texts, top_k, surface_artifact):
    model = hts.load(surface_artifact)
    kw = {} if top_k is None else {"top_k": top_k}
    try:
        out = model(texts, **kw)
    except hts.HFTorchScriptError as e:
        _one_line(e)
        return
    # A result: one row per input, each with the hidden state of every token the tokenizer produced.
    n = 1 if isinstance(texts, (str, tuple)) else len(list(texts))
    assert len(out) == n
    for row in out:
        assert row["last_hidden_state"].shape[0] == len(row["tokens"]) and torch.isfinite(row["last_hidden_state"]).all()


FLAGS = st.sampled_from(["--json", "--top-k", "--batch-size", "--pair", "--no-truncate", "--similarity", "--choice",
                         "-o", "--input-format"])


@SURFACE_SETTINGS
@given(words=st.lists(TEXTS | FLAGS | st.sampled_from(["0", "-1", "3", "text", "jsonl", "out.json"]), max_size=6),
       lines=st.lists(TEXTS | st.sampled_from(['{"text": "\\ud800"}', "[" * 5000, '{"text": 5}', '"x"', "{}"]),
                      max_size=4) | st.none())
def test_run_gives_a_result_or_one_line(words, lines, surface_artifact, tmp_path_factory, capsys):
    cwd = tmp_path_factory.mktemp("run")
    argv = ["run", surface_artifact, *words]
    if lines is not None:
        # Lone surrogates written with surrogatepass: bytes that are not UTF-8, as a broken file would hold.
        (cwd / "in.jsonl").write_bytes("\n".join(lines).encode("utf-8", "surrogatepass"))
        argv += ["--input", "in.jsonl"]
    old = os.getcwd()
    os.chdir(cwd)
    try:
        code, _, out = _cli(argv, capsys)
    finally:
        os.chdir(old)
    if code == 0 and "--json" in words and "-o" not in words:
        json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert not [p for p in cwd.iterdir() if ".tmp-" in p.name]  # no temp file left behind


def _jsonl_value(draw_value) -> str:
    try:
        return json.dumps(draw_value)
    except (TypeError, ValueError):
        return repr(draw_value)


@SURFACE_SETTINGS
@given(rows=st.lists(st.dictionaries(st.sampled_from(["text", "id", "other"]), TEXTS | NOT_TEXT, max_size=3)
                     | st.sampled_from(["[" * 3000, "not json", '{"text": "\\udc80 x"}', ""]), min_size=1, max_size=6),
       suffix=st.sampled_from([".jsonl", ".parquet", ".csv"]),
       out_name=st.sampled_from(["out.parquet", "IN", "sub", "link"]))
def test_map_gives_a_file_or_one_line(rows, suffix, out_name, surface_artifact, tmp_path_factory, capsys):
    d = tmp_path_factory.mktemp("map")
    src = d / f"in{suffix}"
    lines = [r if isinstance(r, str) else _jsonl_value(r) for r in rows]
    src.write_bytes("\n".join(lines).encode("utf-8", "surrogatepass"))  # .parquet/.csv: garbage for that format
    (d / "sub").mkdir()
    os.symlink("out.parquet", d / "link")
    dst = src if out_name == "IN" else d / out_name
    before = src.read_bytes()
    code, _, _ = _cli(["map", surface_artifact, src, dst, "--no-progress", "--force"], capsys)
    assert src.read_bytes() == before and src.is_file()  # the input is never touched
    assert (d / "sub").is_dir() and os.path.islink(d / "link")  # nor what is not ours to replace
    assert not [p for p in d.iterdir() if ".tmp-" in p.name]
    if code == 0:
        import pyarrow.parquet as pq

        table = pq.read_table(dst)
        assert table.num_rows >= 1 and "error" in table.column_names
        # Every row either has an output or says why not.
        for e, h in zip(table.column("error").to_pylist(), table.column("last_hidden_state").to_pylist()):
            assert (e is None) != (h is None), (e, h)


@SURFACE_SETTINGS
@given(max_batch_size=st.integers(-3, 2**40), instances=st.integers(-1, 3) | st.just(2**40),
       name=st.none() | st.text(ANY_CHAR, max_size=8), with_tokenizer=st.booleans())
def test_triton_writes_a_repository_or_one_line(max_batch_size, instances, name, with_tokenizer, surface_artifact,
                                                tmp_path_factory, capsys):
    repo = tmp_path_factory.mktemp("triton") / "repo"
    argv = ["triton", surface_artifact, repo, "--max-batch-size", max_batch_size, "--instances", instances]
    if name is not None:
        argv += ["--name", name]
    if with_tokenizer:
        argv.append("--with-tokenizer")
    code, _, _ = _cli(argv, capsys)
    if code == 0:
        assert any(repo.glob("*/config.pbtxt")) and any(repo.glob("*/1/model.pt"))
    else:
        assert not repo.exists() or not any(p for p in repo.iterdir() if not p.name.startswith("."))
