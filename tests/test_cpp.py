"""The C++ runner (cpp/hts_run, libtorch) against the eager transformers model: same outputs on
dynamic and bucketed artifacts, padded rows, batch 1 and >1, two tiny architectures and the real
MiniLM sentence embedding; and a clear one-line error with a non-zero exit for each bad input.

The runner is built once per session (the `runner` fixture in conftest.py, shared with
test_aoti.py; about a minute on 2 cores); set HTS_CPP_BUILD_DIR to reuse a build folder between
runs. A missing cmake or compiler fails these tests (BuildError), it does not skip them.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import hf_torchscript as hts
from hf_torchscript.errors import BuildError
from hf_torchscript.exporter import artifact
from hf_torchscript.runtime.artifact import read_manifest, sha256_file
from hf_torchscript.runtime.cpp import EXAMPLE, build_runner, cmake_command, cmake_commands, torch_prefix_path

REPO = Path(__file__).resolve().parents[1]
ATOL = RTOL = 1e-4

cpp = [pytest.mark.cpp, pytest.mark.slow]


@pytest.fixture(scope="session")
def artifacts(tiny_model_dir, tmp_path_factory):
    """Factory: (model_type, shapes) -> exported artifact dir, once per session."""
    cache = {}

    def get(model_type: str, shapes: str) -> Path:
        if (model_type, shapes) not in cache:
            out = tmp_path_factory.mktemp(f"art-{model_type}-{shapes}") / "out"
            kw = dict(shapes="buckets", buckets=(16, 32, 64)) if shapes == "buckets" else dict(shapes="dynamic")
            hts.export(str(tiny_model_dir(model_type)), out, task="feature-extraction", **kw)
            cache[model_type, shapes] = out
        return cache[model_type, shapes]

    return get


@pytest.fixture(scope="session")
def minilm_artifact(minilm_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("minilm") / "out"
    hts.export(str(minilm_dir), out)  # task inferred: sentence-embedding (mean pooling, normalized)
    return out


def run_cpp(runner: Path, artifact: Path, payload, *args: str) -> subprocess.CompletedProcess:
    text = payload if isinstance(payload, str) else json.dumps({k: v.tolist() for k, v in payload.items()})
    return subprocess.run([str(runner), str(artifact), "-", *args], input=text, capture_output=True, text=True,
                          timeout=300)


def outputs_of(proc: subprocess.CompletedProcess) -> dict[str, torch.Tensor]:
    assert proc.returncode == 0, proc.stderr
    out = {}
    for name, o in json.loads(proc.stdout)["outputs"].items():
        t = torch.tensor(o["data"], dtype=torch.float32)
        assert list(t.shape) == o["shape"] and o["dtype"] == "float32", (name, o["shape"], o["dtype"])
        out[name] = t
    return out


def padded_batch(manifest: dict, lengths: list[int], seed: int = 0) -> dict[str, torch.Tensor]:
    """Right-padded rows of the given lengths, built here (not by hf_torchscript) from the manifest."""
    g = torch.Generator().manual_seed(seed)
    pad, L = manifest["pad_token_id"], max(lengths)
    mask = torch.tensor([[1] * n + [0] * (L - n) for n in lengths])
    ids = torch.randint(5, 128, (len(lengths), L), generator=g)  # 5..: no special token ids
    batch = {"input_ids": torch.where(mask.bool(), ids, torch.full_like(ids, pad)), "attention_mask": mask}
    if any(i["name"] == "token_type_ids" for i in manifest["inputs"]):
        batch["token_type_ids"] = torch.randint(0, 2, (len(lengths), L), generator=g) * mask
    assert [i["name"] for i in manifest["inputs"]] == list(batch)
    return batch


def assert_matches_eager(model_dir: Path, artifact: Path, got: dict[str, torch.Tensor], batch, lengths):
    from transformers import AutoModel

    manifest = json.loads((artifact / "manifest.json").read_text())
    assert list(got) == [o["name"] for o in manifest["outputs"]]
    eager = AutoModel.from_pretrained(str(model_dir)).eval()
    with torch.no_grad():
        want = eager(**batch)
    for name, value in got.items():
        ref = getattr(want, name)
        assert value.shape == ref.shape, name
        if value.dim() == 3:  # per-token: positions past a row's length are padding, not output
            for r, n in enumerate(lengths):
                torch.testing.assert_close(value[r, :n], ref[r, :n], atol=ATOL, rtol=RTOL, msg=f"{name} row {r}")
        else:
            torch.testing.assert_close(value, ref, atol=ATOL, rtol=RTOL, msg=name)


CASES = [
    # (model_type, shapes, lengths): batch 1 and >1, padded rows; buckets 16/32/64 hit exactly,
    # in between (20 -> 32, 40 -> 64) and a mixed batch whose rows need different buckets alone.
    ("bert", "dynamic", [7]),
    ("bert", "dynamic", [12, 5, 9]),
    ("bert", "buckets", [16]),
    ("bert", "buckets", [20]),
    ("bert", "buckets", [40, 3, 17]),
    ("bert", "buckets", [5, 2]),
    ("gpt2", "dynamic", [6]),
    ("gpt2", "dynamic", [10, 4]),
    ("roberta", "buckets", [33, 9]),
]


@pytest.mark.parametrize("model_type,shapes,lengths", CASES,
                         ids=[f"{m}-{s}-{'x'.join(map(str, l))}" for m, s, l in CASES])
@pytest.mark.cpp
@pytest.mark.slow
def test_runner_matches_eager(runner, artifacts, tiny_model_dir, model_type, shapes, lengths):
    artifact = artifacts(model_type, shapes)
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["shapes"]["strategy"] == shapes
    batch = padded_batch(manifest, lengths, seed=len(lengths) * 100 + max(lengths))
    got = outputs_of(run_cpp(runner, artifact, batch))
    assert_matches_eager(tiny_model_dir(model_type), artifact, got, batch, lengths)


@pytest.mark.cpp
@pytest.mark.slow
def test_runner_fills_left_out_token_type_ids_like_transformers(runner, artifacts, tiny_model_dir):
    """token_type_ids has "default": "zeros" in the manifest: left out, the runner (Model::run) fills zeros,
    which is what the eager model does when it is not passed."""
    artifact = artifacts("bert", "buckets")
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert {i["name"]: i.get("default") for i in manifest["inputs"]} == {
        "input_ids": None, "attention_mask": None, "token_type_ids": "zeros"}
    lengths = [11, 4]
    batch = padded_batch(manifest, lengths, seed=7)
    del batch["token_type_ids"]
    got = outputs_of(run_cpp(runner, artifact, batch))
    assert_matches_eager(tiny_model_dir("bert"), artifact, got, batch, lengths)


TEXTS = ["A man is eating food.", "The sky is blue over the city by the river tonight.", "Paris"]


@pytest.mark.cpp
@pytest.mark.slow
def test_minilm_sentence_embedding_matches_sentence_transformers(runner, minilm_artifact, minilm_dir):
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(minilm_artifact / "tokenizer.json"))
    tok.no_truncation()
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    encs = tok.encode_batch(TEXTS)
    batch = {"input_ids": torch.tensor([e.ids for e in encs]),
             "attention_mask": torch.tensor([e.attention_mask for e in encs]),
             "token_type_ids": torch.tensor([e.type_ids for e in encs])}
    assert (batch["attention_mask"] == 0).any()  # padded rows
    got = outputs_of(run_cpp(runner, minilm_artifact, batch))["sentence_embedding"]
    want = SentenceTransformer(str(minilm_dir), device="cpu").encode(TEXTS, convert_to_tensor=True)
    assert got.shape == (3, 384)
    torch.testing.assert_close(got, want.float(), atol=ATOL, rtol=RTOL)

    # The docs/cpp.md example, built next to the runner, on one unpadded text.
    ids = [str(i) for i in encs[1].ids if i != 0]
    proc = subprocess.run([str(runner.parent / EXAMPLE), str(minilm_artifact), "--ids", *ids], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    one = torch.tensor([float(x) for x in proc.stdout.split()])
    torch.testing.assert_close(one, want[1].float(), atol=ATOL, rtol=RTOL)


@pytest.mark.cpp
@pytest.mark.slow
@pytest.mark.cpp
@pytest.mark.slow
def test_packed_linears_are_packed_on_load_in_cpp_too(runner, minilm_dir, tmp_path):
    """--pack-linears relies on TorchScript running each PackedLinear's __setstate__ at load: libtorch must do it
    (an unpacked weight would make oneDNN's linear fail). Same answers as sentence-transformers, padded batch."""
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer

    out = tmp_path / "packed"
    hts.export(str(minilm_dir), out, pack_linears=True)
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    encs = tok.encode_batch(TEXTS)
    batch = {"input_ids": torch.tensor([e.ids for e in encs]),
             "attention_mask": torch.tensor([e.attention_mask for e in encs]),
             "token_type_ids": torch.tensor([e.type_ids for e in encs])}
    assert (batch["attention_mask"] == 0).any()
    got = outputs_of(run_cpp(runner, out, batch))["sentence_embedding"]
    want = SentenceTransformer(str(minilm_dir), device="cpu").encode(TEXTS, convert_to_tensor=True)
    torch.testing.assert_close(got, want.float(), atol=ATOL, rtol=RTOL)


def test_bench_prints_latency(runner, artifacts):
    artifact = artifacts("bert", "buckets")
    batch = padded_batch(json.loads((artifact / "manifest.json").read_text()), [9, 4])
    proc = run_cpp(runner, artifact, batch, "--bench", "5", "--warmup", "2", "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    b = json.loads(proc.stdout)["bench"]
    assert (b["calls"], b["warmup"], b["threads"], b["batch_size"], b["sequence_length"]) == (5, 2, 1, 2, 9)
    assert 0 < b["min_ms"] <= b["median_ms"] <= b["p90_ms"] <= b["max_ms"]


def _ids(n: int, types: bool = True) -> dict:
    d = {"input_ids": [[5] * n], "attention_mask": [[1] * n]}
    if types:
        d["token_type_ids"] = [[0] * n]
    return d


ERRORS = [
    # (name, artifact setup, stdin payload, expected text in the one stderr line)
    ("missing-dir", "nowhere", _ids(3),
     "artifact directory '{dir}' does not exist; export one with `hf-torchscript export`"),
    ("no-manifest", "no-manifest", _ids(3), "'{dir}' has no manifest.json: not an hf-torchscript artifact"),
    ("no-model", "no-model", _ids(3), "'{dir}' has no model.pt; re-export the model"),
    ("other-architecture", "gpt2-model", _ids(3),
     "takes inputs (input_ids, attention_mask) but {dir}/manifest.json lists (input_ids, attention_mask, "
     "token_type_ids): they come from different exports"),
    ("other-export", "dynamic-model", _ids(3),
     "{dir}/manifest.json differs from the manifest embedded in {dir}/model.pt"),
    ("wrong-dtype", "ok", {**_ids(3), "input_ids": [[5, 6.5, 7]]}, "input input_ids must be int64, got float32"),
    ("wrong-rank", "ok", {**_ids(3), "input_ids": [5, 6, 7]},
     "input input_ids must have rank 2 (batch_size, sequence_length), got shape [3]"),
    ("too-long", "ok", _ids(70), "input length 70 exceeds the maximum 64"),
    ("missing-input", "ok", {"input_ids": [[5, 6, 7]], "token_type_ids": [[0, 0, 0]]},
     "missing input(s) attention_mask; this artifact takes input_ids, attention_mask, token_type_ids "
     "(token_type_ids: zeros if left out)"),
    ("unknown-input", "ok", {**_ids(3), "position_ids": [[0, 1, 2]]},
     "unknown input(s) position_ids; this artifact takes input_ids, attention_mask, token_type_ids"),
    ("ragged", "ok", {**_ids(3), "attention_mask": [[1, 1, 1], [1, 1]]},
     "input attention_mask[1] has 2 values where other rows have 3; pad rows to one length"),
    ("empty", "ok", _ids(0), "input input_ids is empty (shape [1, 0])"),
    ("not-json", "ok", "{input_ids: [[1]]", "input on stdin is not valid JSON"),
    # Hostile or broken input never crashes the runner (200,000 levels used to overflow the stack).
    ("deep-nesting", "ok", "[" * 200_000,
     "input on stdin nests deeper than 64 levels of [ and {; pass one nested list per input"),
    ("deep-in-an-input", "ok", '{"input_ids": ' + "[" * 100 + "]" * 100 + "}", "input on stdin nests deeper than 64"),
    ("object-leaf", "ok", {**_ids(3), "input_ids": [[{"a": [1]}, 6, 7]]}, 'input input_ids[0][0] is {"a":[1]}, not a number'),
    ("string-leaf", "ok", {**_ids(3), "input_ids": [[5, "6", 7]]}, 'input input_ids[0][1] is "6", not a number'),
    ("number-overflow", "ok", '{"input_ids": [[1e400]]}', "input on stdin is not valid JSON ([json.exception.out_of_range.406]"),
    ("truncated", "ok", '{"input_ids": [[1,', "input on stdin is not valid JSON"),
    ("empty-stdin", "ok", "", "input on stdin is not valid JSON"),
    ("not-an-object", "ok", "[[1, 2]]", "input JSON must be an object of nested lists"),
    ("null", "ok", "null", "input JSON must be an object of nested lists"),
    ("token-id-out-of-range", "ok", {**_ids(3), "input_ids": [[5, 18446744073709551615, 7]]},
     "input input_ids holds values from -1 to 7 but must be token ids in [0, 128)"),  # 2**64-1 read as int64
    ("manifest-deep", "deep-manifest", _ids(3), "{dir}/manifest.json nests deeper than 64 levels of [ and {; re-export the model"),  # noqa: E501
    ("manifest-nan", "nan-manifest", _ids(3), "{dir}/manifest.json is not valid JSON"),
    ("manifest-not-object", "list-manifest", _ids(3), "{dir}/manifest.json lacks a field this runner needs"),
    ("no-tokenizer", "no-tokenizer", _ids(3),
     "{dir}/tokenizer.json is listed in manifest.json but missing; re-export the model"),
    ("no-hashes", "no-hashes", _ids(3),
     "{dir}/manifest.json has no valid 'files' list of hashes: it was edited; re-export the model"),
]


def rehash_model(art: Path) -> None:
    """Record a replaced model.pt's hash in manifest.json, so the checks after the hashes are reached."""
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["sha256"] = manifest["files"]["model.pt"] = sha256_file(art / "model.pt")
    (art / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("setup,payload,message", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
@pytest.mark.cpp
@pytest.mark.slow
def test_runner_errors(runner, artifacts, tmp_path, setup, payload, message):
    good = artifacts("bert", "buckets")
    art = tmp_path / "art"
    if setup == "ok":
        art = good
    elif setup != "nowhere":
        shutil.copytree(good, art)
        if setup == "no-manifest":
            (art / "manifest.json").unlink()
        elif setup == "no-model":
            (art / "model.pt").unlink()
        elif setup == "gpt2-model":
            shutil.copy(artifacts("gpt2", "dynamic") / "model.pt", art / "model.pt")
            rehash_model(art)
        elif setup == "dynamic-model":
            shutil.copy(artifacts("bert", "dynamic") / "model.pt", art / "model.pt")
            rehash_model(art)
        elif setup == "deep-manifest":
            (art / "manifest.json").write_text("[" * 200_000)
        elif setup == "nan-manifest":
            (art / "manifest.json").write_text((art / "manifest.json").read_text().replace('"max_length": 64', '"max_length": NaN'))  # noqa: E501
        elif setup == "list-manifest":
            (art / "manifest.json").write_text("[1, 2]")
        elif setup == "no-tokenizer":
            (art / "tokenizer.json").unlink()
        elif setup == "no-hashes":
            manifest = json.loads((art / "manifest.json").read_text())
            del manifest["files"]
            (art / "manifest.json").write_text(json.dumps(manifest))
    proc = run_cpp(runner, art, payload if isinstance(payload, str) else json.dumps(payload))
    assert proc.returncode == 1, (proc.returncode, proc.stdout[:200], proc.stderr)
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert message.replace("{dir}", str(art)) in lines[0]


@pytest.mark.parametrize("name", ["tokenizer.json", "model.pt", "tokenizer_config.json"])
@pytest.mark.cpp
@pytest.mark.slow
def test_runner_refuses_a_tampered_file_by_name(runner, artifacts, tmp_path, name):
    art = tmp_path / "art"
    shutil.copytree(artifacts("bert", "buckets"), art)
    data = bytearray((art / name).read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit: the file still parses, only its hash tells
    (art / name).write_bytes(bytes(data))
    proc = run_cpp(runner, art, json.dumps(_ids(3)))
    assert proc.returncode == 1 and proc.stdout == ""
    want = (rf"error: {re.escape(str(art / name))} sha256 {sha256_file(art / name)[:16]}\.\.\. does not match "
            rf"manifest\.json \({json.loads((art / 'manifest.json').read_text())['files'][name][:16]}\.\.\.\): the "
            r"file was modified or replaced; re-export it")
    assert re.fullmatch(want, proc.stderr.strip()), proc.stderr


@pytest.mark.cpp
@pytest.mark.slow
def test_cpp_sha256_equals_hashlib(runner, artifacts, tmp_path):
    """Files of every length around SHA-256's 64-byte blocks and its 56-byte padding edge, and 1 MiB
    buffers, listed in the manifest with hashlib's digests: the C++ loader must accept them all."""
    art = tmp_path / "art"
    shutil.copytree(artifacts("bert", "buckets"), art)
    g = torch.Generator().manual_seed(0)
    sizes = [0, 1, 3, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 1000, (1 << 20) - 1, 1 << 20, (1 << 20) + 57]
    for n in sizes:
        (art / f"edge-{n}.bin").write_bytes(bytes(torch.randint(0, 256, (n,), generator=g, dtype=torch.uint8).tolist()))
    artifact.seal(art, torch.jit.load(str(art / "model.pt")), read_manifest(art))
    assert {f"edge-{n}.bin" for n in sizes} <= set(json.loads((art / "manifest.json").read_text())["files"])
    ok = run_cpp(runner, art, json.dumps(_ids(3)))
    assert ok.returncode == 0, ok.stderr
    assert hts.load(art).run(**{k: torch.tensor(v) for k, v in _ids(3).items()})  # Python's verify agrees

    # A one-bit change in the file that needs the extra padding block is caught and named.
    edge = art / "edge-56.bin"
    edge.write_bytes(bytes([edge.read_bytes()[0] ^ 0x80]) + edge.read_bytes()[1:])
    bad = run_cpp(runner, art, json.dumps(_ids(3)))
    assert bad.returncode == 1 and f"error: {edge} sha256 " in bad.stderr, bad.stderr


@pytest.mark.cpp
@pytest.mark.slow
def test_embed_example_on_naive_tokenizer_ids_equals_sentence_transformers(runner, minilm_artifact, minilm_dir):
    """docs/cpp.md as written: ids from Tokenizer.from_file(OUT/tokenizer.json).encode(text), nothing
    configured, fed to the embed example; a short text and a 245-token one (past the source's 128)."""
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(minilm_artifact / "tokenizer.json"))
    words = "the quick brown fox jumps over the lazy dog while music plays in the city".split()
    long_text = ""
    while len(tok.encode(long_text).ids) < 245:
        long_text = (long_text + " " + words[len(long_text.split()) % len(words)]).strip()
    texts = ["A man is eating food.", long_text]
    lengths = [len(tok.encode(t).ids) for t in texts]
    assert lengths[1] == 245 and lengths[0] < 16
    want = SentenceTransformer(str(minilm_dir), device="cpu").encode(texts, convert_to_tensor=True).float()
    for text, w in zip(texts, want):
        ids = [str(i) for i in tok.encode(text).ids]
        proc = subprocess.run([str(runner.parent / EXAMPLE), str(minilm_artifact), "--ids", *ids], capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        got = torch.tensor([float(x) for x in proc.stdout.split()])
        cos = float(torch.nn.functional.cosine_similarity(got, w, dim=0))
        assert cos >= 0.9999, (len(ids), cos)
    # The same texts given as sentences: tokenized in C++ from the artifact's tokenizer.json, one padded batch.
    proc = subprocess.run([str(runner.parent / EXAMPLE), str(minilm_artifact), *texts], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = [torch.tensor([float(x) for x in line.split()]) for line in proc.stdout.splitlines()]
    assert len(rows) == 2
    for got, w in zip(rows, want):
        assert float(torch.nn.functional.cosine_similarity(got, w, dim=0)) >= 0.9999


@pytest.mark.cpp
@pytest.mark.slow
def test_runner_usage_errors(runner, artifacts):
    art = str(artifacts("bert", "buckets"))
    for argv, text in [([], "expected OUTPUT_DIR"),
                       ([art, "--bench", "x"], "--bench takes a non-negative integer, got 'x'"),
                       ([art, "--frobnicate"], "unknown option --frobnicate"),
                       ([art, "--threads", "99999"], "--threads takes at most 1024, got 99999")]:
        proc = subprocess.run([str(runner), *argv], capture_output=True, text=True, timeout=60, input="")
        assert proc.returncode == 2 and text in proc.stderr and "usage: hts_run" in proc.stderr, (argv, proc.stderr)
    missing = subprocess.run([str(runner), art, str(Path(art) / "nope.json")], capture_output=True, text=True,
                             timeout=60)
    assert missing.returncode == 1 and "input file" in missing.stderr and "does not exist" in missing.stderr


def test_cmake_command_uses_installed_torch(tmp_path):
    configure, build = cmake_commands(tmp_path / "b")
    assert configure[:5] == ["cmake", "-S", str(REPO / "cpp"), "-B", str(tmp_path / "b")]
    assert f"-DCMAKE_PREFIX_PATH={torch_prefix_path()}" in configure
    assert (Path(torch_prefix_path()) / "Torch" / "TorchConfig.cmake").is_file()
    assert build[:3] == ["cmake", "--build", str(tmp_path / "b")]
    assert cmake_command(tmp_path / "b").count(" && ") == 1

    with pytest.raises(BuildError, match="has no CMakeLists.txt; pass the cpp/ folder"):
        cmake_commands(tmp_path / "b", source=tmp_path)


def test_build_without_cmake_fails_loudly(monkeypatch, tmp_path):
    monkeypatch.setattr("hf_torchscript.runtime.cpp.shutil.which", lambda tool: None)
    with pytest.raises(BuildError, match=r"cmake is not on PATH; install it \(apt-get install cmake g\+\+\)"):
        build_runner(tmp_path / "b")


def test_cli_prints_cmake_command(capsys, tmp_path):
    from hf_torchscript.cli import main

    assert main(["cpp-build", "--print", "--build-dir", str(tmp_path / "b")]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"cmake -S {REPO / 'cpp'} -B {tmp_path / 'b'}") and torch_prefix_path() in line


def test_docs_show_the_built_example():
    """docs/cpp.md's C++ listing is cpp/examples/embed.cpp, which the runner tests build and run."""
    example = (REPO / "cpp" / "examples" / "embed.cpp").read_text().strip()
    assert example in (REPO / "docs" / "cpp.md").read_text()


@pytest.mark.cpp
@pytest.mark.slow
def test_runner_bounds_the_input_size(runner, artifacts):
    art = artifacts("bert", "buckets")
    proc = run_cpp(runner, art, json.dumps(_ids(30)), "--max-input-bytes", "100")
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip() == ("error: input on stdin is larger than 100 bytes; split it into smaller batches "
                                   "(hts_run: or raise --max-input-bytes)")
    assert run_cpp(runner, art, json.dumps(_ids(30)), "--max-input-bytes", "100000").returncode == 0
