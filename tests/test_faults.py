"""Bad input and faults: one line, the right exit code, and nothing outside the staging area changed.

- CASES: a table of bad inputs for every command, run in-process through ``cli.main``; each asserts
  the one-line message, the exit code, and that a hash snapshot of the whole workspace (model
  copy, artifact copy, OUTPUT_DIR and its parent) is identical before and after.
- Commit faults: a small subprocess (no torch import, ~0.2 s) commits a staged artifact over an
  earlier one and is killed (-9), interrupted (SIGINT), terminated (SIGTERM) or raced by a second
  commit at every step of the commit; OUTPUT_DIR must then be one complete artifact, and the next
  export must remove what a dead process left.
- Real exports killed mid-way (subprocesses: the signal is the point), disk full on a small tmpfs
  and through an injected writer, broken pipes, strict JSON, missing extras, concurrency.
- Property tests: random CLI argument lists and randomly corrupted artifacts never give a
  traceback, a signal, or a changed source directory.

One tiny artifact set is exported once per module; the file runs in about two minutes.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hf_torchscript as hts
from hf_torchscript import atomic
from hf_torchscript.cli import main
from hf_torchscript.exporter import artifact
from hf_torchscript.runtime import artifact as artifact_reader

SRC_ROOT = Path(hts.__file__).resolve().parents[1]
HINT = "(set HF_TORCHSCRIPT_DEBUG=1 for the full traceback)"
OWNED = re.compile(r"^\..+\.(tmp|old)-\d+-[0-9a-f]+$")


# ------------------------------------------------------------------------------ fixtures and helpers

@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """The tiny source model and three distinct complete artifacts of it (old, new, third)."""
    from models import save_tiny

    root = tmp_path_factory.mktemp("faults")
    src = save_tiny("bert", "feature-extraction", root / "src")
    arts = {}
    for name, kw in {"old": dict(shapes="dynamic", max_length=32),
                     "new": dict(shapes="buckets", buckets=(16, 32), max_length=32),
                     "third": dict(shapes="dynamic", max_length=24)}.items():
        hts.export(src, root / name, **kw)
        arts[name] = root / name
    before = snapshot(src)
    yield {"src": src, **arts}
    assert snapshot(src) == before, "the shared source model changed"


def snapshot(*roots) -> dict[str, str]:
    """path -> sha256 / 'dir' / 'link:TARGET' for everything under roots (links not followed)."""
    out = {}
    for root in roots:
        root = Path(root)
        if not os.path.lexists(root):
            continue
        out[str(root)] = "dir" if root.is_dir() else "file"
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                p = Path(dirpath, name)
                if p.is_symlink():
                    out[str(p)] = "link:" + os.readlink(p)
                elif p.is_file():
                    out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
                else:
                    out[str(p)] = "dir"
    return out


SIGNATURES = {("dynamic", 32): "old", ("buckets", 32): "new", ("dynamic", 24): "third"}


def which(out: Path, base) -> str:
    """Which complete artifact OUTPUT_DIR holds ('old', 'new', 'third'), 'absent', or raises if broken."""
    if not os.path.lexists(out):
        return "absent"
    m = artifact_reader.verify(out)  # sha256 of model.pt against a schema-checked manifest: complete and consistent
    artifact_reader.load_module(out)  # and model.pt loads, with the embedded manifest equal to manifest.json
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in base["old"].iterdir())
    return SIGNATURES[m["shapes"]["strategy"], m["max_length"]]


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if OWNED.match(p.name))


class WS:
    """A case's workspace: a model copy, an artifact copy, OUTPUT_DIR's place; cwd during the case."""

    def __init__(self, root: Path, base):
        self.root = root
        self.model = root / "model"
        self.art = root / "art"
        self.out = root / "out"
        shutil.copytree(base["src"], self.model)
        shutil.copytree(base["old"], self.art)
        self.base = base
        self.mounts: list[Path] = []

    def mount_tmpfs(self, rel: str, options: str) -> Path:
        path = self.root / rel
        path.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode}); CI runs as root and can")
        self.mounts.append(path)
        return path

    def cleanup(self):
        for m in reversed(self.mounts):
            subprocess.run(["umount", "-l", str(m)], capture_output=True)


@pytest.fixture
def ws(tmp_path, base, monkeypatch):
    (tmp_path / "ws").mkdir()
    w = WS(tmp_path / "ws", base)
    monkeypatch.chdir(w.root)
    yield w
    w.cleanup()


def run_cli(argv: list[str], capsys) -> tuple[int, list[str], str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse: usage errors exit 2, --help exits 0
        code = e.code if isinstance(e.code, int) else 1
    cap = capsys.readouterr()
    # Export's step lines ("[  1.2s] load: ..."): stderr is not a terminal here, so the CLI logs each step.
    err = [line for line in cap.err.strip().splitlines() if not STEP_LINE.match(line)]
    return code, err, cap.out


STEP_LINE = re.compile(r"^\[ *\d+\.\ds\] ")


# ------------------------------------------------------------------------------ setups for the table

def _json(path: Path, value) -> None:
    path.write_text(json.dumps(value))


def cfg(**changes) -> Callable[[WS], None]:
    def setup(ws):
        c = json.loads((ws.model / "config.json").read_text())
        c.update(changes)
        _json(ws.model / "config.json", c)
    return setup


def put(rel: str, data) -> Callable[[WS], None]:
    def setup(ws):
        p = ws.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            p.write_bytes(data)
        elif isinstance(data, str):
            p.write_text(data)
        else:
            _json(p, data)
    return setup


def weights(fn: Callable[[bytes], bytes]) -> Callable[[WS], None]:
    def setup(ws):
        f = ws.model / "model.safetensors"
        f.write_bytes(fn(f.read_bytes()))
    return setup


def header(fn: Callable[[dict], dict]) -> Callable[[WS], None]:
    """Rewrite the safetensors header (keeping the data bytes)."""
    def edit(raw: bytes) -> bytes:
        n = int.from_bytes(raw[:8], "little")
        h = fn(json.loads(raw[8:8 + n]))
        text = json.dumps(h).encode()
        return len(text).to_bytes(8, "little") + text + raw[8 + n:]
    return weights(edit)


def manifest(fn: Callable[[dict], object]) -> Callable[[WS], None]:
    def setup(ws):
        m = json.loads((ws.art / "manifest.json").read_text())
        r = fn(m)
        (ws.art / "manifest.json").write_text(r if isinstance(r, str) else json.dumps(m if r is None else r))
    return setup


def both(*setups) -> Callable[[WS], None]:
    def setup(ws):
        for s in setups:
            s(ws)
    return setup


def pickle_weights(data: bytes | None) -> Callable[[WS], None]:
    def setup(ws):
        raw = (ws.model / "model.safetensors").read_bytes()
        (ws.model / "model.safetensors").unlink()
        if data is None:  # a real pickle, truncated
            from safetensors.torch import load

            buf = io.BytesIO()
            torch.save(load(raw), buf)
            (ws.model / "pytorch_model.bin").write_bytes(buf.getvalue()[:300])
        else:
            (ws.model / "pytorch_model.bin").write_bytes(data)
    return setup


def sentence_transformers(modules, pooling=None, sbert=None) -> Callable[[WS], None]:
    def setup(ws):
        (ws.model / "modules.json").write_text(modules if isinstance(modules, str) else json.dumps(modules))
        if pooling is not None:
            (ws.model / "1_Pooling").mkdir()
            (ws.model / "1_Pooling" / "config.json").write_text(pooling if isinstance(pooling, str) else json.dumps(pooling))
        if sbert is not None:
            (ws.model / "sentence_bert_config.json").write_text(sbert if isinstance(sbert, str) else json.dumps(sbert))
    return setup


ST_MODULES = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
              {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
MEAN = {"pooling_mode_mean_tokens": True}


def symlink(rel: str, target: str) -> Callable[[WS], None]:
    def setup(ws):
        (ws.root / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, ws.root / rel)
    return setup


def tmpfs(rel: str, options: str, fill_leaving: int | None = None) -> Callable[[WS], None]:
    def setup(ws):
        path = ws.mount_tmpfs(rel, options)
        if fill_leaving is not None:
            free = shutil.disk_usage(path).free
            with open(path / "filler", "wb") as f:
                f.write(b"\0" * max(0, free - fill_leaving))
    return setup


def readonly_dir(rel: str) -> Callable[[WS], None]:
    def setup(ws):
        if os.geteuid() != 0:
            (ws.root / rel).mkdir()
            os.chmod(ws.root / rel, 0o555)
        else:  # root ignores permission bits: a read-only mount is what refuses root
            ws.mount_tmpfs(rel, "ro,size=1m")
    return setup


def copy_art(rel: str) -> Callable[[WS], None]:
    return lambda ws: shutil.copytree(ws.art, ws.root / rel)


def tokenizer_in_art(data: bytes | str) -> Callable[[WS], None]:
    def setup(ws):
        p = ws.art / "tokenizer.json"
        p.write_bytes(data if isinstance(data, bytes) else data.encode())
    return setup


def block_import(module: str) -> Callable[[WS], None]:
    def setup(ws):
        ws.blocked = module
    return setup


def E(*extra, model=None, out=None):
    """export MODEL OUTPUT_DIR [flags]; model/out are paths relative to the workspace."""
    return lambda ws: ["export", ws.root / model if model else ws.model, out if out is not None else ws.out, *extra]


def R(*args):
    return lambda ws: ["run", ws.art, *args]


def I(*args, d=None):  # noqa: E743  (the `info` command's row builder, beside R, E, V ...)
    return lambda ws: ["info", *args, ws.root / d if d else ws.art]


@dataclass
class Case:
    id: str
    argv: Callable[[WS], list]
    message: str  # regex, searched in the error line
    setup: Callable[[WS], None] | None = None
    code: int = 1


def _garbage(n: int) -> bytes:
    return bytes((i * 197 + 13) % 256 for i in range(n))


CASES = [
    # --- --force and the destination: all refused before the model is loaded
    Case("out-equals-model-force", E("--force", out="model"), r"OUTPUT_DIR 'model' is the MODEL directory; writing there would delete the model"),
    Case("out-equals-model", E(out="model"), r"is the MODEL directory"),
    Case("out-equals-model-via-symlinked-parent", E("--force", out="alias/model"), r"is the MODEL directory",
         symlink("alias", ".")),
    Case("out-contains-model", E("--force", model="P/m", out="P"), r"OUTPUT_DIR 'P' contains MODEL '.*/P/m'; replacing it would delete the model",
         both(put("P/notes.txt", "mine"), lambda ws: shutil.copytree(ws.model, ws.root / "P" / "m"))),
    Case("out-contains-model-in-artifact", E("--force", model="art/m", out="art"), r"OUTPUT_DIR 'art' contains MODEL",
         lambda ws: shutil.copytree(ws.model, ws.art / "m")),
    Case("out-inside-model", E(out="model/ts"), r"OUTPUT_DIR 'model/ts' is inside MODEL '.*model'; write the artifact outside the model folder"),
    Case("out-inside-model-force", E("--force", out="model/ts"), r"is inside MODEL"),
    Case("out-is-cwd-force", E("--force", out="."), r"OUTPUT_DIR '.' is the current directory; export replaces OUTPUT_DIR as a whole: pass a new subdirectory"),
    Case("out-is-cwd", E(out="."), r"OUTPUT_DIR '.' is the current directory"),
    Case("out-is-cwd-absolute", lambda ws: ["export", ws.model, ws.root, "--force"], r"is the current directory"),
    Case("out-is-parent-force", E("--force", out=".."), r"OUTPUT_DIR '..' is a parent of the current directory"),
    Case("out-is-root-force", E("--force", out="/"), r"OUTPUT_DIR '/' is a parent of the current directory"),
    Case("force-non-artifact", E("--force"), r"OUTPUT_DIR '.*out' is not empty and is not an hf-torchscript artifact .*--force replaces only an empty directory or an unchanged earlier artifact",
         put("out/notes.txt", "mine")),
    Case("force-foreign-manifest", E("--force"), r"is not an hf-torchscript artifact", put("out/manifest.json", {"producer": "someone-else"})),
    Case("force-garbage-manifest", E("--force"), r"is not an hf-torchscript artifact", put("out/manifest.json", "{not json")),
    Case("force-manifest-list", E("--force"), r"is not an hf-torchscript artifact", put("out/manifest.json", [1, 2])),
    Case("not-empty-no-force", E(), r"OUTPUT_DIR '.*out' exists and is not empty; pass --force to replace it", put("out/notes.txt", "x")),
    Case("artifact-no-force", E(out="art"), r"OUTPUT_DIR 'art' exists and is not empty; pass --force"),
    Case("out-symlink-to-empty-dir", E("--force", out="link"), r"OUTPUT_DIR 'link' is a symlink to 'real'; export replaces OUTPUT_DIR itself",
         both(put("real/.keep", ""), symlink("link", "real"))),
    Case("out-symlink-to-artifact", E("--force", out="link"), r"OUTPUT_DIR 'link' is a symlink to 'art'", symlink("link", "art")),
    Case("out-dangling-symlink", E(out="link"), r"OUTPUT_DIR 'link' is a symlink to '/nonexistent/x'", symlink("link", "/nonexistent/x")),
    Case("out-is-file", E("--force", out="f.txt"), r"OUTPUT_DIR 'f.txt' is a file; pass a directory path", put("f.txt", "x")),
    Case("out-parent-is-file", E(out="f.txt/out"), r"cannot create OUTPUT_DIR 'f.txt/out': '.*f.txt' is a file, not a directory", put("f.txt", "x")),
    Case("out-in-readonly-dir", E(out="ro/out"), r"cannot write in '.*ro' \(read-only filesystem or no permission\); choose a writable OUTPUT_DIR",
         readonly_dir("ro")),
    Case("out-deep-in-readonly-dir", E(out="ro/a/b/out"), r"cannot write in '.*ro' \(read-only", readonly_dir("ro")),
    Case("not-enough-space", E(out="small/out"), r"not enough space in '.*small': need about 1\.\d MB, 1\.0 MB free; free some space",
         tmpfs("small", "size=1m")),
    Case("not-enough-space-replacing", E("--force", out="small/out"), r"not enough space in '.*small': need about 1\.\d MB, 0\.\d MB free",
         both(tmpfs("small", "size=1m"), lambda ws: shutil.copytree(ws.art, ws.root / "small" / "out"))),
    # --- the model folder
    Case("model-missing", E(model="nope"), r"MODEL '.*nope' not found: no such directory"),
    Case("model-is-file", E(model="f.txt"), r"MODEL '.*f.txt' is a file; pass the directory", put("f.txt", "x")),
    Case("no-config", E(), r"has no config.json; pass the folder", lambda ws: (ws.model / "config.json").unlink()),
    Case("config-is-list", E(), r"config.json holds list JSON where an object \{...\} was expected; re-save the model", put("model/config.json", [])),
    Case("config-is-string", E(), r"config.json holds str JSON where an object", put("model/config.json", '"bert"')),
    Case("config-is-null", E(), r"config.json holds NoneType JSON where an object", put("model/config.json", "null")),
    Case("config-invalid-json", E(), r"config.json is not valid JSON \(Expecting", put("model/config.json", '{"model_type": "bert",')),
    Case("config-empty", E(), r"config.json is not valid JSON", put("model/config.json", "")),
    Case("config-not-utf8", E(), r"config.json is not valid JSON", put("model/config.json", b"\xff\xfe{\x00")),
    Case("config-deeply-nested", E(), r"config.json is not valid JSON", put("model/config.json", "[" * 100000)),
    Case("config-no-model-type", E(), r"config.json has no model_type", cfg(model_type=None)),
    Case("config-model-type-number", E(), r"model_type must be a string such as \"bert\", got 5", cfg(model_type=5)),
    Case("config-model-type-unknown", E(), r"model_type 'mamba' is not supported; supported: albert", cfg(model_type="mamba")),
    Case("config-hidden-size-mismatch", E(), r"config.json in '.*model' does not match the weights: \S+ is \[\d+(, \d+)*\] in the checkpoint but \[\d+(, \d+)*\] for this config \(\d+ tensors differ\); fix config.json",
         cfg(hidden_size=64)),
    Case("config-vocab-size-mismatch", E(), r"does not match the weights: embeddings.word_embeddings.weight is \[128, 32\] in the checkpoint but \[64, 32\]",
         cfg(vocab_size=64)),
    Case("config-more-layers-than-weights", E(), r"config.json in '.*model' does not match the weights: the config builds encoder.layer 0-2 \(3 layers\), the checkpoint has 0-1 \(2\): num_hidden_layers is 3 in config.json, the weights say 2; fix config.json \(--allow-new-weights",
         cfg(num_hidden_layers=3)),
    Case("config-heads-not-divisor", E(), r"transformers could not load '.*model' as feature-extraction: The hidden size \(32\) is not a multiple",
         cfg(num_attention_heads=5)),
    Case("config-remote-code", E(), r"needs custom code from the model repository", cfg(auto_map={"AutoModel": "x.Y"})),
    Case("config-task-mismatch", E("--task", "image-classification"), r"image-classification", None),
    Case("weights-missing", E(), r"has no weights \(model.safetensors\)", lambda ws: (ws.model / "model.safetensors").unlink()),
    Case("weights-empty", E(), r"model.safetensors is empty; copy or download the file again", weights(lambda b: b"")),
    Case("weights-7-bytes", E(), r"model.safetensors is 7 bytes, truncated or not a safetensors file", weights(lambda b: b[:7])),
    Case("weights-truncated-half", E(), r"model.safetensors is truncated: its header describes \d+ bytes but the file has \d+", weights(lambda b: b[:len(b) // 2])),
    Case("weights-truncated-in-header", E(), r"model.safetensors is truncated or corrupted: its header claims \d+ bytes but the file has 100", weights(lambda b: b[:100])),
    Case("weights-garbage", E(), r"model.safetensors is truncated or corrupted: its header claims", weights(lambda b: _garbage(len(b)))),
    Case("weights-header-not-json", E(), r"model.safetensors has a corrupted header \(not a JSON object\)",
         weights(lambda b: b[:8] + b"\x01" * int.from_bytes(b[:8], "little") + b[8 + int.from_bytes(b[:8], "little"):])),
    Case("weights-header-bad-entry", E(), r"model.safetensors has a corrupted header \(entry 'embeddings.LayerNorm.bias'\)",
         header(lambda h: {**h, "embeddings.LayerNorm.bias": {"dtype": "F32"}})),
    Case("weights-header-shape-lies", E(), r"corrupted header \('embeddings.LayerNorm.bias': shape \[64\] does not fit 128 bytes of F32\)",
         header(lambda h: {**h, "embeddings.LayerNorm.bias": {**h["embeddings.LayerNorm.bias"], "shape": [64]}})),
    Case("weights-trailing-garbage", E(), r"model.safetensors is corrupted: its header describes \d+ bytes but the file has", weights(lambda b: b + b"junk")),
    Case("weights-is-directory", E(), r"model.safetensors is not a file", lambda ws: ((ws.model / "model.safetensors").unlink(), (ws.model / "model.safetensors").mkdir())),
    Case("weights-index-missing-shard", E(), r"model.safetensors.index.json names the weights file 'model-00002-of-00002.safetensors', which is missing",
         put("model/model.safetensors.index.json", {"weight_map": {"a": "model.safetensors", "b": "model-00002-of-00002.safetensors"}})),
    Case("weights-index-invalid", E(), r"model.safetensors.index.json is not valid JSON", put("model/model.safetensors.index.json", "{")),
    Case("weights-index-no-map", E(), r"model.safetensors.index.json has no weight_map", put("model/model.safetensors.index.json", {"metadata": {}})),
    Case("pickle-refused", E(), r"weights only as pickle \(pytorch_model.bin\).*pass --allow-pickle", pickle_weights(b"x")),
    Case("pickle-garbage-allowed", E("--allow-pickle"), r"transformers could not load '.*model' as feature-extraction: \w+: .*; check that config.json belongs",
         pickle_weights(_garbage(5000))),
    Case("pickle-truncated-allowed", E("--allow-pickle"), r"transformers could not load '.*model' as feature-extraction: \w+", pickle_weights(None)),
    Case("modules-json-invalid", E(), r"modules.json is not valid JSON .*; fix it, or remove modules.json", sentence_transformers("[{")),
    Case("modules-json-object", E(), r"modules.json holds dict JSON where a list \[...\] was expected", sentence_transformers({"a": 1})),
    Case("modules-json-entry-not-object", E(), r"modules.json entry 0 is not an object with string type and path", sentence_transformers([1])),
    Case("pooling-without-config", E(), r"modules.json lists a Pooling module in '.*1_Pooling', which has no config.json", sentence_transformers(ST_MODULES)),
    Case("pooling-path-escapes", E(), r"lists a Pooling module in '.*', which has no config.json",
         sentence_transformers([ST_MODULES[0], {**ST_MODULES[1], "path": "../../etc"}])),
    Case("pooling-config-invalid", E(), r"1_Pooling/config.json is not valid JSON", sentence_transformers(ST_MODULES, pooling="{{")),
    Case("pooling-config-list", E(), r"1_Pooling/config.json holds list JSON", sentence_transformers(ST_MODULES, pooling=[])),
    Case("pooling-no-mode", E(), r"1_Pooling/config.json: no supported pooling mode set", sentence_transformers(ST_MODULES, pooling={})),
    Case("st-unknown-module", E(), r"sentence-transformers module 'x.Dense' in .* is not supported",
         sentence_transformers([*ST_MODULES, {"idx": 2, "name": "2", "path": "2", "type": "x.Dense"}], pooling=MEAN)),
    Case("sbert-config-invalid", E(), r"sentence_bert_config.json is not valid JSON", sentence_transformers(ST_MODULES, pooling=MEAN, sbert="{")),
    Case("sbert-max-seq-bad", E(), r"max_seq_length must be a positive integer, got -3", sentence_transformers(ST_MODULES, pooling=MEAN, sbert={"max_seq_length": -3})),
    Case("tokenizer-garbage", E(), r"tokenizer.json is not valid JSON .*; fix or replace the tokenizer files, or remove them all", put("model/tokenizer.json", "garbage")),
    Case("tokenizer-empty", E(), r"tokenizer.json is not valid JSON", put("model/tokenizer.json", "")),
    Case("tokenizer-is-list", E(), r"tokenizer.json holds list JSON", put("model/tokenizer.json", [])),
    Case("tokenizer-not-a-tokenizer", E(), r"the tokenizer in '.*model' does not load \(\w+: .*\); fix or replace", put("model/tokenizer.json", {"version": "1.0"})),
    Case("tokenizer-config-garbage", E(), r"tokenizer_config.json is not valid JSON", put("model/tokenizer_config.json", "\x00\x01")),
    Case("export-unknown-task", E("--task", "summarize"), r"argument --task: invalid choice: 'summarize'", code=2),
    Case("export-without-transformers", E(), r"export needs the 'export' extra \(transformers is not installed\): pip install 'hf-torchscript\[export\]'",
         block_import("transformers")),
    # --- info and the manifest's schema
    Case("info-missing-dir", I(d="nope"), r"artifact directory '.*nope' does not exist; export one"),
    Case("info-no-manifest", I(), r"has no manifest.json: not an hf-torchscript artifact", lambda ws: (ws.art / "manifest.json").unlink()),
    Case("info-manifest-invalid", I(), r"manifest.json is not valid JSON \(.*\); re-export the model", manifest(lambda m: "{")),
    Case("info-manifest-not-utf8", I(), r"manifest.json is not valid JSON", lambda ws: (ws.art / "manifest.json").write_bytes(b"\xff\xff")),
    Case("info-manifest-deeply-nested", I(), r"manifest.json is not valid JSON", manifest(lambda m: "[" * 100000)),
    Case("info-manifest-list", I(), r"manifest.json is not a valid hf-torchscript manifest: the manifest must be an object, got \[1\]; re-export", manifest(lambda m: [1])),
    Case("info-manifest-missing-task", I(), r"not a valid hf-torchscript manifest: task is missing", manifest(lambda m: m.pop("task") and None)),
    Case("info-manifest-missing-shapes", I(), r"shapes is missing", manifest(lambda m: m.pop("shapes") and None)),
    Case("info-manifest-inputs-not-list", I(), r"inputs must be a list, got 'input_ids'", manifest(lambda m: m.update(inputs="input_ids"))),
    Case("info-manifest-inputs-empty", I(), r"inputs is empty", manifest(lambda m: m.update(inputs=[]))),
    Case("info-manifest-input-no-name", I(), r"inputs\[0\].name is missing", manifest(lambda m: m["inputs"][0].pop("name") and None)),
    Case("info-manifest-output-shape-bad", I(), r"outputs\[0\].shape\[0\] must be a string or an integer, got 1.5",
         manifest(lambda m: m["outputs"][0].update(shape=[1.5]))),
    Case("info-manifest-strategy-missing", I(), r"shapes.strategy is missing", manifest(lambda m: m["shapes"].pop("strategy") and None)),
    Case("info-manifest-max-length-string", I(), r"max_length must be an integer, got '32'", manifest(lambda m: m.update(max_length="32"))),
    Case("info-manifest-max-length-zero", I(), r"max_length must be >= 1, got 0", manifest(lambda m: m.update(max_length=0))),
    Case("info-manifest-pad-bool", I(), r"pad_token_id must be an integer, got True", manifest(lambda m: m.update(pad_token_id=True))),
    Case("info-manifest-format-future", I(), r"has format_version 99; this hf-torchscript reads up to \d: upgrade", manifest(lambda m: m.update(format_version=99))),
    Case("info-manifest-format-string", I(), r"format_version must be an integer, got '1'", manifest(lambda m: m.update(format_version="1"))),
    Case("info-manifest-nan", I(), r"manifest.json is not valid JSON \(NaN is not JSON\)",
         manifest(lambda m: json.dumps({**m, "validation": {"max_abs_diff": {"x": float("nan")}}}))),
    Case("info-manifest-diff-string", I(), r"validation.max_abs_diff.last_hidden_state must be null or a number, got 'big'",
         manifest(lambda m: m["validation"]["max_abs_diff"].update(last_hidden_state="big"))),
    Case("info-manifest-tokenizer-traversal", I(), r"tokenizer.file must be a plain file name, got '../../etc/passwd'",
         manifest(lambda m: m["tokenizer"].update(file="../../etc/passwd"))),
    Case("info-manifest-versions-not-object", I(), r"versions must be an object, got 'x'", manifest(lambda m: m.update(versions="x"))),
    Case("info-json-missing-key", I("--json"), r"not a valid hf-torchscript manifest: model_type is missing", manifest(lambda m: m.pop("model_type") and None)),
    Case("info-no-model", I(), r"has no model.pt; re-export the model", lambda ws: (ws.art / "model.pt").unlink()),
    Case("info-model-tampered", I(), r"model.pt sha256 \w+\.\.\. does not match manifest.json", lambda ws: open(ws.art / "model.pt", "ab").write(b"\0")),
    Case("info-no-sha", I(), r"records no sha256 for model.pt, so it cannot be verified", manifest(lambda m: m.pop("sha256") and None)),
    Case("info-old-artifact-in-backup", I(d="gone"), r"artifact directory '.*gone' does not exist, but '.*\.gone\.old-\d+-ab12' holds it: an export was killed",
         copy_art(".gone.old-99999999-ab12")),
    # --- run
    # manifest.json records every file's sha256, so a replaced tokenizer is refused on load; with
    # --no-verify (or an old format-1 artifact) the runtime still gives one line, never a raw exception.
    Case("run-tokenizer-replaced", R("hello"), r"tokenizer.json sha256 \w+\.\.\. does not match manifest.json", tokenizer_in_art("garbage")),
    Case("run-tokenizer-garbage", R("hello", "--no-verify"), r"tokenizer.json is not a tokenizer that loads \(.*\); re-export the model", tokenizer_in_art("garbage")),
    Case("run-tokenizer-empty", R("hello", "--no-verify"), r"tokenizer.json is not a tokenizer that loads", tokenizer_in_art(b"")),
    Case("run-tokenizer-symlink-garbage", R("hello", "--no-verify"), r"tokenizer.json \(a symlink to '.*notes.txt'\) is not a tokenizer that loads",
         both(put("notes.txt", "not a tokenizer"), lambda ws: ((ws.art / "tokenizer.json").unlink(), os.symlink(ws.root / "notes.txt", ws.art / "tokenizer.json")))),
    Case("run-tokenizer-dangling-symlink", R("hello", "--no-verify"), r"tokenizer.json \(a symlink to '/nonexistent'\) is listed in the manifest but missing",
         lambda ws: ((ws.art / "tokenizer.json").unlink(), os.symlink("/nonexistent", ws.art / "tokenizer.json"))),
    Case("run-tokenizer-missing", R("hello"), r"tokenizer.json is listed in manifest.json but missing", lambda ws: (ws.art / "tokenizer.json").unlink()),
    Case("run-tokenizer-missing-unverified", R("hello", "--no-verify"), r"tokenizer.json is listed in the manifest but missing",
         lambda ws: (ws.art / "tokenizer.json").unlink()),
    Case("info-manifest-files-not-object", I(), r"files must be an object, got \['model.pt'\]", manifest(lambda m: m.update(files=["model.pt"]))),
    Case("info-manifest-file-hash-number", I(), r"files.model.pt must be a string, got 5", manifest(lambda m: m["files"].update({"model.pt": 5}))),
    Case("run-top-k-negative", R("hello", "--top-k", "-1"), r"top_k must be a positive integer, got -1; pass e.g. --top-k 5"),
    Case("run-top-k-zero", R("hello", "--top-k", "0"), r"top_k must be a positive integer, got 0"),
    Case("run-model-not-an-archive", R("hello", "--no-verify"), r"torch.jit.load could not read .*model.pt: .*; re-export the model",
         lambda ws: (ws.art / "model.pt").write_bytes(b"not a zip")),
    Case("run-model-truncated", R("hello", "--no-verify"), r"torch.jit.load could not read .*model.pt",
         lambda ws: (ws.art / "model.pt").write_bytes((ws.art / "model.pt").read_bytes()[:5000])),
    Case("run-model-tampered", R("hello"), r"sha256 .* does not match manifest.json.*--no-verify", lambda ws: open(ws.art / "model.pt", "ab").write(b"\0")),
    Case("run-manifest-edited", R("hello"), r"differs from the manifest embedded in model.pt", manifest(lambda m: m.update(max_length=31))),
    Case("run-pair-count", R("a", "b", "--pair", "c"), r"--pair was given 1 times for 2 texts"),
    Case("run-no-texts", R(), r"no input texts; pass at least one TEXT"),
    Case("run-no-tokenizer", R("hello", "--no-verify"), r"this artifact has no tokenizer .*call it with tensors",
         both(lambda ws: (ws.art / "tokenizer.json").unlink(),
              lambda ws: _json(ws.art / "manifest.json", {**json.loads((ws.art / "manifest.json").read_text()), "tokenizer": None}))),
    # --- outputs that are not ours to replace (issue 23): refused before anything runs or is written
    Case("force-artifact-with-user-file", E("--force", out="art"), r"OUTPUT_DIR 'art' is not empty and is not an hf-torchscript artifact \(it holds 'notes.txt', which its manifest.json does not list\)",
         put("art/notes.txt", "mine")),
    Case("force-artifact-with-user-folder", E("--force", out="art"), r"\(it holds 'mine', which its manifest.json does not list\)", put("art/mine/x.txt", "mine")),
    Case("force-artifact-file-changed", E("--force", out="art"), r"\('tokenizer.json' does not match the sha256 its manifest.json records",
         tokenizer_in_art("{}")),
    Case("force-artifact-file-missing", E("--force", out="art"), r"\('tokenizer.json', listed in its manifest.json, is missing",
         lambda ws: (ws.art / "tokenizer.json").unlink()),
    Case("force-bare-producer-manifest", E("--force"), r"is not an hf-torchscript artifact \(it holds 'notes.txt', which its manifest.json does not list",
         both(put("out/manifest.json", {"producer": "hf-torchscript"}), put("out/notes.txt", "mine"))),
    Case("force-producer-manifest-lists-user-file", E("--force"), r"\('notes.txt' does not match the sha256",
         both(put("out/manifest.json", {"producer": "hf-torchscript", "format_version": 2, "files": {"notes.txt": "0" * 64}}),
              put("out/notes.txt", "mine"))),
    Case("run-output-device", R("hello", "-o", "/dev/full"), r"--output '/dev/full' is a device, not a regular file; write to stdout and redirect"),
    Case("run-output-fifo", R("hello", "-o", "fifo"), r"--output 'fifo' is a named pipe, not a regular file", lambda ws: os.mkfifo(ws.root / "fifo")),
    Case("run-output-symlink", R("hello", "-o", "link"), r"--output 'link' is a symlink to 'mine.txt'; .*pass the real file path",
         both(put("mine.txt", "mine"), symlink("link", "mine.txt"))),
    Case("run-output-dangling-symlink", R("hello", "-o", "link"), r"--output 'link' is a symlink to '/nonexistent/x'", symlink("link", "/nonexistent/x")),
    Case("run-output-directory", R("hello", "-o", "d"), r"--output 'd' is a directory; pass the path of a file", put("d/mine.txt", "mine")),
    Case("run-output-is-input", R("--input", "in.txt", "-o", "./in.txt"), r"--output './in.txt' is the input 'in.txt' \(the same file\); writing it would destroy the input",
         put("in.txt", "hello\n")),
    Case("run-output-hard-link-of-input", R("--input", "in.txt", "-o", "other.txt"), r"--output 'other.txt' is the input 'in.txt' \(the same file\)",
         both(put("in.txt", "hello\n"), lambda ws: os.link(ws.root / "in.txt", ws.root / "other.txt"))),
    Case("run-output-folder-missing", R("hello", "-o", "nope/out.json"), r"the folder of --output 'nope/out.json' does not exist"),
    # --- text that is not text, and JSON that is too deep
    Case("run-text-not-utf8", R("the \udcff man"), r"TEXT 1 is not valid UTF-8 \(byte 0xff at character 4\).*; pass UTF-8 text"),
    Case("run-text-lone-surrogate", R("ok", "the \ud800 man"), r"TEXT 2 holds a lone surrogate U\+D800 at character 4, which is not a character"),
    Case("run-pair-not-utf8", R("ok", "--pair", "\udcfe"), r"--pair 1 is not valid UTF-8 \(byte 0xfe"),
    Case("run-input-line-lone-surrogate", R("--input", "in.jsonl"), r"--input 'in.jsonl' line 2 'text' holds a lone surrogate U\+DC00 at character 2",
         put("in.jsonl", '"fine"\n{"text": "a \\udc00 b"}\n')),
    Case("run-input-text-not-utf8", R("--input", "in.txt"), r"--input 'in.txt' is not UTF-8 text", put("in.txt", b"ok\nthe \xff man\n")),
    Case("run-input-deeply-nested", R("--input", "in.jsonl"), r"--input 'in.jsonl' line 1 nests JSON arrays/objects too deeply to read",
         put("in.jsonl", "[" * 100000 + "\n")),
    Case("run-input-deep-object", R("--input", "in.jsonl"), r"line 1 nests JSON arrays/objects too deeply",
         put("in.jsonl", '{"text": ' + '{"a": ' * 50000 + "1" + "}" * 50000 + "}\n")),
    # --- map
    Case("map-output-is-input", lambda ws: ["map", ws.art, "in.jsonl", "in.jsonl", "--force"],
         r"OUTPUT 'in.jsonl' is the input 'in.jsonl' \(the same file\); writing it would destroy the input", put("in.jsonl", '{"text": "hello"}\n')),
    Case("map-output-is-input-other-spelling", lambda ws: ["map", ws.art, "in.jsonl", ws.root / "sub" / ".." / "in.jsonl", "--force"],
         r"is the input 'in.jsonl' \(the same file\)", both(put("in.jsonl", '{"text": "hello"}\n'), put("sub/.keep", ""))),
    Case("map-output-hard-link-of-input", lambda ws: ["map", ws.art, "in.jsonl", "out.parquet", "--force"], r"OUTPUT 'out.parquet' is the input",
         both(put("in.jsonl", '{"text": "hello"}\n'), lambda ws: os.link(ws.root / "in.jsonl", ws.root / "out.parquet"))),
    Case("map-output-directory", lambda ws: ["map", ws.art, "in.jsonl", "d", "--force"], r"OUTPUT 'd' is a directory",
         both(put("in.jsonl", '{"text": "hello"}\n'), put("d/mine.txt", "mine"))),
    Case("map-output-symlink", lambda ws: ["map", ws.art, "in.jsonl", "link", "--force"], r"OUTPUT 'link' is a symlink to 'mine.txt'",
         both(put("in.jsonl", '{"text": "hello"}\n'), put("mine.txt", "mine"), symlink("link", "mine.txt"))),
    Case("map-output-device", lambda ws: ["map", ws.art, "in.jsonl", "/dev/null", "--force"], r"OUTPUT '/dev/null' is a device",
         put("in.jsonl", '{"text": "hello"}\n')),
    Case("map-garbage-parquet", lambda ws: ["map", ws.art, "in.parquet", "out.parquet"], r"cannot read INPUT 'in.parquet' as parquet \(.*\); pass a Parquet file",
         put("in.parquet", _garbage(3000))),
    Case("map-empty-parquet", lambda ws: ["map", ws.art, "in.parquet", "out.parquet"], r"cannot read INPUT 'in.parquet' as parquet", put("in.parquet", b"")),
    Case("map-ray-too-many-workers", lambda ws: ["map", ws.art, "in.jsonl", "out.parquet", "--ray", "--workers", "100000"],
         r"--workers 100000 x --threads 1 needs 100001 CPUs .*this machine has \d+: pass fewer workers", put("in.jsonl", '{"text": "hello"}\n')),
    # --- bench and triton options: checked before torch is imported or anything is measured
    Case("bench-threads-zero", lambda ws: ["bench", ws.model, "--threads", "0"], r"argument --threads: expected a positive integer, got '0'", code=2),
    Case("bench-rounds-zero", lambda ws: ["bench", ws.model, "--rounds", "0"], r"argument --rounds: expected a positive integer, got '0'", code=2),
    Case("bench-warmup-negative", lambda ws: ["bench", ws.model, "--warmup", "-1"], r"argument --warmup: expected an integer >= 0", code=2),
    Case("bench-grid-zero", lambda ws: ["bench", ws.model, "--grid", "0x16"], r"expected positive BATCHxLENGTH pairs", code=2),
    Case("triton-max-batch-huge", lambda ws: ["triton", ws.art, "repo", "--max-batch-size", str(10**12)],
         r"argument --max-batch-size: expected an integer from 0 to 2147483647, got '1000000000000'", code=2),
    Case("triton-aoti-artifact", lambda ws: ["triton", ws.art, "repo"], r"holds an AOTInductor package \(.pt2\), not TorchScript; .*--backend torchscript",
         manifest(lambda m: m.update(backend="aoti"))),
    # --- misspellings get a suggestion (argparse, exit 2)
    Case("misspelt-flag", E("--forse"), r"unrecognized arguments: --forse \(did you mean --force\?\)", code=2),
    Case("misspelt-command", lambda ws: ["exprot", ws.model, ws.out], r"invalid choice: 'exprot' .*\(did you mean 'export'\?\)", code=2),
    Case("misspelt-run-flag", R("hello", "--jsno"), r"unrecognized arguments: --jsno \(did you mean --json\?\)", code=2),
    # --- other commands
    # A missing optional package is reported and the run goes on without what needs it
    # (test_bench.py::test_missing_extras_are_reported_before_anything_runs); a wrong name is an error.
    Case("bench-unknown-variant", lambda ws: ["bench", ws.model, "--out", ws.root / "b", "--variants", "eager,ts-fast"],
         r"unknown benchmark variants \['ts-fast'\]; choose from eager, eager-bf16, ts-dynamic"),
    Case("validate-without-transformers", lambda ws: ["validate", ws.art, "--model", ws.model],
         r"validate needs the 'export' extra \(transformers is not installed\): pip install 'hf-torchscript\[export\]'", block_import("transformers")),
    Case("validate-bad-manifest", lambda ws: ["validate", ws.art, "--model", ws.model], r"shapes.strategy is missing",
         manifest(lambda m: m["shapes"].pop("strategy") and None)),
]


# Rows that reach past the command's extra check: they need the extra installed (CI's legacy leg has neither).
NEEDS_EXTRA = {
    **dict.fromkeys(["map-output-is-input", "map-output-is-input-other-spelling", "map-output-hard-link-of-input",
                     "map-output-directory", "map-output-symlink", "map-output-device", "map-garbage-parquet",
                     "map-empty-parquet", "map-ray-too-many-workers"], "pyarrow"),
    "triton-aoti-artifact": "tritonclient",
}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_one_line_and_nothing_changed(case, ws, capsys, monkeypatch):
    if case.id in NEEDS_EXTRA:
        pytest.importorskip(NEEDS_EXTRA[case.id], reason="the row needs the command's extra installed")
    if case.setup is not None:
        case.setup(ws)
    if getattr(ws, "blocked", None):
        monkeypatch.setitem(sys.modules, ws.blocked, None)
    before = snapshot(ws.root)
    code, err, _ = run_cli(case.argv(ws), capsys)
    assert code == case.code, err
    assert err, "no message"
    if case.code == 2:  # argparse: usage line, then the error
        assert re.search(case.message, err[-1]), err
    else:
        assert err[0].startswith("error: "), err
        assert re.search(case.message, err[0]), err[0]
        if "no input texts" not in case.message:
            assert err[1:] == [HINT], err
    assert not any("Traceback" in line or "internal error" in line for line in err)
    assert snapshot(ws.root) == before, "a bad input changed files"


def test_table_has_the_cases_the_issue_asks_for():
    assert len(CASES) >= 80
    assert len({c.id for c in CASES}) == len(CASES)


# ------------------------------------------------------------------------------ --force does replace what we made

def test_force_replaces_an_artifact_and_an_empty_dir(ws, base, capsys):
    (ws.root / "empty").mkdir()
    code, err, out = run_cli(["export", ws.model, "empty", "--shapes", "dynamic", "--max-length", "24"], capsys)
    assert code == 0, err
    assert which(ws.root / "empty", base) == "third"
    code, err, out = run_cli(["export", ws.model, "art", "--force", "--shapes", "buckets", "--buckets", "16,32",
                              "--max-length", "32"], capsys)
    assert code == 0, err
    assert which(ws.art, base) == "new"
    assert leftovers(ws.root) == []


def test_hub_cache_layout_with_every_file_a_symlink_exports(ws, base, capsys):
    # The hub cache links each snapshot file to ../../blobs/<hash>: checks that keep sentence-transformers
    # folders and weight shards inside MODEL must not resolve those links and refuse a good model.
    sentence_transformers(ST_MODULES, pooling=MEAN)(ws)
    blobs, snap = ws.root / "cache" / "blobs", ws.root / "cache" / "snapshots" / "abc"
    blobs.mkdir(parents=True)
    for f in sorted(ws.model.rglob("*")):
        if f.is_file():
            rel = f.relative_to(ws.model)
            blob = blobs / hashlib.sha256(str(rel).encode()).hexdigest()
            shutil.copy(f, blob)
            (snap / rel).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.path.relpath(blob, (snap / rel).parent), snap / rel)
    code, err, out = run_cli(["export", snap, "st", "--shapes", "dynamic", "--max-length", "24"], capsys)
    assert code == 0, err
    assert artifact_reader.verify(ws.root / "st")["task"] == "sentence-embedding"


# ------------------------------------------------------------------------------ commit faults (subprocesses)

COMMIT_SCRIPT = textwrap.dedent(r'''
    import os, shutil, signal, sys, time
    from pathlib import Path
    from hf_torchscript import atomic
    mode, step, action, new, out, flag = sys.argv[1:7]
    assert "torch" not in sys.modules  # keeps each run ~0.2 s
    if mode == "fallback":
        atomic._renameat2_fn = False  # as on a filesystem without RENAME_EXCHANGE
    def hook(name):
        if name != step:
            return
        if action == "kill9":
            os.kill(os.getpid(), signal.SIGKILL)
        elif action in ("sigint", "sigterm"):
            os.kill(os.getpid(), signal.SIGINT if action == "sigint" else signal.SIGTERM)
        elif action == "wait":
            Path(flag + ".ready").touch()
            while not os.path.exists(flag + ".go"):
                time.sleep(0.01)
    atomic._HOOK = hook
    with atomic.interruptible():  # what export() does: SIGTERM -> Terminated, staging removed
        staging = atomic.staging_dir(Path(out))
        try:
            for f in Path(new).iterdir():
                shutil.copy2(f, staging / f.name)
            atomic.commit(staging, Path(out), force=True)
        except KeyboardInterrupt as e:
            shutil.rmtree(staging, ignore_errors=True)
            print("committed" if e.hts_committed else "not committed")
            sys.exit(getattr(e, "exit_code", 130))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
''')


def commit_proc(mode: str, step: str, action: str, new: Path, out: Path, flag: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{SRC_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.Popen([sys.executable, "-c", COMMIT_SCRIPT, mode, step, action, str(new), str(out), str(flag)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


STEPS = ["before-swap", "after-swap", "after-cleanup"]


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("action", ["kill9", "sigint", "sigterm"])
def test_commit_fault_at_every_step(action, step, base, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(base["old"], out)
    p = commit_proc("exchange", step, action, base["new"], out, tmp_path / "flag")
    stdout, stderr = p.communicate(timeout=60)
    if action == "kill9":
        assert p.returncode == -signal.SIGKILL, stderr
        # Killed before the swap: the earlier artifact; after it: the new one. Never absent, never partial.
        assert which(out, base) == ("old" if step == "before-swap" else "new")
        left = leftovers(tmp_path)
        assert len(left) == (0 if step == "after-cleanup" else 1), left
        # The next export removes what the dead process left, and nothing else.
        atomic.staging_dir(out).rmdir()
        assert leftovers(tmp_path) == []
        assert which(out, base) == ("old" if step == "before-swap" else "new")
    else:
        # A signal during the swap is held until the swap is done: the commit completes, then the
        # interruption is reported as having happened after it, and nothing is left behind.
        assert p.returncode == (130 if action == "sigint" else 143), stderr
        assert stdout.strip() == "committed" and "Traceback" not in stderr
        assert which(out, base) == "new"
        assert leftovers(tmp_path) == []


@pytest.mark.parametrize("step", STEPS)
def test_second_export_commits_while_the_first_is_at_every_step(step, base, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(base["old"], out)
    flag = tmp_path / "flag"
    p = commit_proc("exchange", step, "wait", base["new"], out, flag)
    try:
        deadline = time.time() + 60
        while not Path(str(flag) + ".ready").exists():
            assert p.poll() is None and time.time() < deadline, p.communicate()
            time.sleep(0.01)
        held = which(out, base)
        assert held == ("old" if step == "before-swap" else "new")
        # A second export commits "third" while the first is paused at this step.
        staging = atomic.staging_dir(out)
        for f in base["third"].iterdir():
            shutil.copy2(f, staging / f.name)
        atomic.commit(staging, out, force=True)
        assert which(out, base) == "third"
    finally:
        Path(str(flag) + ".go").touch()
        stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == 0, stderr
    # The first one, released before its swap, swaps in its artifact; released after, it only cleans up.
    assert which(out, base) == ("new" if step == "before-swap" else "third")
    assert leftovers(tmp_path) == []


def test_many_concurrent_commits_end_with_one_complete_artifact(base, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(base["old"], out)
    procs = [commit_proc("exchange", "-", "-", base["new" if i % 2 else "third"], out, tmp_path / "f") for i in range(6)]
    for p in procs:
        _, stderr = p.communicate(timeout=120)
        assert p.returncode == 0, stderr
    assert which(out, base) in ("new", "third")
    assert leftovers(tmp_path) == []


def test_commit_without_force_refuses_an_output_dir_created_meanwhile(base, tmp_path):
    out = tmp_path / "out"
    staging = atomic.staging_dir(out)
    shutil.copytree(base["new"], staging, dirs_exist_ok=True)
    shutil.copytree(base["third"], out)  # another export got there first
    with pytest.raises(hts.ArtifactError, match="exists and is not empty; pass force=True to replace it"):
        artifact.commit(staging, out, force=False)
    assert which(out, base) == "third"


def test_fallback_without_rename_exchange(base, tmp_path, monkeypatch):
    # Killed in the two-rename gap: OUTPUT_DIR is absent, the earlier artifact is in the backup...
    out = tmp_path / "out"
    shutil.copytree(base["old"], out)
    p = commit_proc("fallback", "old-moved", "kill9", base["new"], out, tmp_path / "f")
    p.communicate(timeout=60)
    assert p.returncode == -signal.SIGKILL
    assert which(out, base) == "absent"
    with pytest.raises(hts.ArtifactError, match=r"does not exist, but '.*\.out\.old-\d+-\w+' holds it: an export was killed"):
        artifact_reader.read_manifest(out)
    # ...and the next export to it puts it back before doing anything else.
    atomic.staging_dir(out).rmdir()
    assert which(out, base) == "old" and leftovers(tmp_path) == []
    # Killed after the second rename: the new artifact, and the backup is removed later.
    p = commit_proc("fallback", "after-swap", "kill9", base["new"], out, tmp_path / "f")
    p.communicate(timeout=60)
    assert which(out, base) == "new" and len(leftovers(tmp_path)) == 1
    atomic.staging_dir(out).rmdir()
    assert leftovers(tmp_path) == []
    # Uninterrupted, in-process.
    monkeypatch.setattr(atomic, "_renameat2_fn", False)
    staging = atomic.staging_dir(out)
    shutil.copytree(base["third"], staging, dirs_exist_ok=True)
    artifact.commit(staging, out, force=True)
    assert which(out, base) == "third" and leftovers(tmp_path) == []


def test_stale_dirs_of_live_processes_are_kept(base, tmp_path):
    out = tmp_path / "out"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    live_pid = os.getppid()  # pytest's parent: alive for the whole test
    for name in (f".out.tmp-{dead_pid}-aa", f".out.old-{dead_pid}-bb", f".out.tmp-{live_pid}-cc", f".other.tmp-{dead_pid}-dd"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x").write_text("x")
    (tmp_path / "notes.txt").write_text("mine")
    atomic.staging_dir(out).rmdir()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".other.tmp-{dead_pid}-dd", f".out.tmp-{live_pid}-cc", "notes.txt"]


# ------------------------------------------------------------------------------ real exports killed mid-way

EXPORT_SCRIPT = textwrap.dedent(r'''
    import sys, time
    from pathlib import Path
    from hf_torchscript import cli
    from hf_torchscript.exporter import artifact, flow as exporter
    flag = sys.argv[1]
    def stuck_save(*a, **k):  # the export is busy writing into its staging dir
        Path(flag).touch()
        time.sleep(300)
    artifact.save_module = exporter.save_module = stuck_save
    sys.exit(cli.main(sys.argv[2:]))
''')


def test_export_killed_while_writing_keeps_the_earlier_artifact(base, tmp_path):
    """SIGINT, SIGTERM and kill -9 while an export writes its staging dir (three exports at once, to save time)."""
    env = {**os.environ, "PYTHONPATH": f"{SRC_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    runs = {}
    for sig, code, word in [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated"),
                            (signal.SIGKILL, -9, None)]:
        d = tmp_path / sig.name
        d.mkdir()
        shutil.copytree(base["old"], d / "out")
        p = subprocess.Popen([sys.executable, "-c", EXPORT_SCRIPT, str(d / "writing"), "export", str(base["src"]),
                              str(d / "out"), "--force", "--shapes", "dynamic", "--max-length", "24"],
                             stderr=subprocess.PIPE, text=True, env=env)
        runs[sig] = (p, d, code, word)
    deadline = time.time() + 300
    for sig, (p, d, _code, _word) in runs.items():
        while not (d / "writing").exists():
            assert p.poll() is None and time.time() < deadline, p.communicate()
            time.sleep(0.05)
        assert len(leftovers(d)) == 1  # the staging dir being written
        p.send_signal(sig)
    for sig, (p, d, code, word) in runs.items():
        _, stderr = p.communicate(timeout=120)
        assert p.returncode == code, (sig, stderr)
        assert which(d / "out", base) == "old" and "Traceback" not in stderr
        if word:  # SIGINT and SIGTERM clean up and say so in one line (after any import-time noise of other libraries)
            assert stderr.strip().splitlines()[-1] == f"{word}; nothing was written", stderr
            assert leftovers(d) == []
        else:  # kill -9 cannot clean up; the next export does
            assert len(leftovers(d)) == 1
            hts.export(base["src"], d / "out", force=True, shapes="dynamic", max_length=24)
            assert which(d / "out", base) == "third" and leftovers(d) == []


def test_interruptible_restores_handlers_and_respects_the_applications(base, tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    hts.export(base["src"], tmp_path / "a", shapes="dynamic", max_length=24)
    assert signal.getsignal(signal.SIGTERM) is before  # no process-wide change left behind

    def app_handler(signum, frame):
        pass

    signal.signal(signal.SIGTERM, app_handler)
    try:
        with atomic.interruptible():
            assert signal.getsignal(signal.SIGTERM) is app_handler  # theirs wins
        assert signal.getsignal(signal.SIGTERM) is app_handler
    finally:
        signal.signal(signal.SIGTERM, before)


# ------------------------------------------------------------------------------ disk full and write errors

def test_disk_full_on_tmpfs_does_not_abort_and_keeps_the_earlier_artifact(ws, base):
    small = ws.mount_tmpfs("small", "size=1m")
    out = small / "out"
    shutil.copytree(base["old"], out)  # ~190 KB
    with open(small / "filler", "wb") as f:
        f.write(b"\0" * (shutil.disk_usage(small).free - 120 * 1024))  # the new model.pt (~180 KB) cannot fit
    before = snapshot(small)
    # A subprocess, because torch's own path writer aborts the whole process (SIGABRT) on ENOSPC;
    # the up-front estimate is switched off so that the write itself hits the full disk.
    script = ("import sys; from hf_torchscript import cli; from hf_torchscript.exporter import flow as exporter; exporter.check_space = lambda *a: None; "
              "sys.exit(cli.main(sys.argv[1:]))")
    env = {**os.environ, "PYTHONPATH": f"{SRC_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    p = subprocess.run([sys.executable, "-c", script, "export", str(base["src"]), str(out), "--force", "--shapes",
                        "dynamic", "--max-length", "24"], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 1, p.stderr
    lines = p.stderr.strip().splitlines()  # other libraries may print import-time noise first
    assert "Traceback" not in p.stderr and lines[-1] == HINT, p.stderr
    assert re.fullmatch(r"error: not enough space in '.*small' to write the artifact \(No space left on device\); "
                        r"nothing was changed: free some space or choose an OUTPUT_DIR on another filesystem", lines[-2])
    assert snapshot(small) == before and which(out, base) == "old"


class FailingFile(io.RawIOBase):
    """A writer that fails with ``err`` once ``limit`` bytes were written."""

    def __init__(self, path, limit: int, err: int):
        self.f = open(path, "wb")
        self.n, self.limit, self.err = 0, limit, err

    def writable(self):
        return True

    def write(self, b):
        if self.n + len(b) > self.limit:
            raise OSError(self.err, os.strerror(self.err))
        self.n += len(b)
        return self.f.write(b)

    def close(self):
        self.f.close()
        super().close()


@pytest.mark.parametrize("limit,err,message", [
    (0, errno.ENOSPC, r"not enough space in '.*' to write the artifact \(No space left on device\); nothing was changed"),
    (50_000, errno.ENOSPC, r"not enough space in '.*' to write the artifact"),
    (50_000, errno.EIO, r"writing the artifact for '.*out' failed: \[Errno 5\] Input/output error; nothing was changed"),
    (10**9, errno.EDQUOT, None),  # never reached: the export succeeds
])
def test_injected_writer_failures(limit, err, message, ws, base, capsys, monkeypatch):
    shutil.copytree(base["old"], ws.out)
    real_open = open
    monkeypatch.setattr(artifact, "open", lambda path, mode="r", *a, **k: FailingFile(path, limit, err) if "w" in mode
                        else real_open(path, mode, *a, **k), raising=False)
    before = snapshot(ws.root)
    code, lines, _ = run_cli(["export", ws.model, ws.out, "--force", "--shapes", "dynamic", "--max-length", "24"], capsys)
    if message is None:
        assert code == 0 and which(ws.out, base) == "third"
        return
    assert code == 1 and re.match("error: " + message, lines[0]) and lines[1:] == [HINT], lines
    assert snapshot(ws.root) == before


@pytest.mark.parametrize("where", ["write_manifest", "save_tokenizer"])
def test_write_error_in_later_steps(where, ws, base, capsys, monkeypatch):
    shutil.copytree(base["old"], ws.out)

    def fail(*a, **k):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(artifact, where, fail)
    before = snapshot(ws.root)
    code, lines, _ = run_cli(["export", ws.model, ws.out, "--force", "--shapes", "dynamic"], capsys)
    assert code == 1 and re.fullmatch(r"error: writing the artifact for '.*out' failed: \[Errno 5\] Input/output "
                                      r"error; nothing was changed", lines[0]), lines
    assert snapshot(ws.root) == before


# ------------------------------------------------------------------------------ output: pipes and strict JSON

def test_info_json_into_a_closed_pipe_exits_quietly(base):
    env = {**os.environ, "PYTHONPATH": f"{SRC_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    p = subprocess.Popen([sys.executable, "-m", "hf_torchscript.cli", "info", "--json", str(base["old"])],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    p.stdout.close()  # like `| head -0`: the reader is gone before anything is written
    stderr = p.stderr.read().decode()
    assert p.wait(timeout=120) == 141 and stderr == "", stderr


def test_broken_pipe_in_process(base, capsys, monkeypatch):
    class Closed(io.StringIO):
        def write(self, s):
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", Closed())
    assert main(["info", "--json", str(base["old"])]) == 141
    assert capsys.readouterr().err == ""


def test_run_prints_strict_json_with_nan_as_null(base, capsys, monkeypatch):
    from hf_torchscript.runtime import postprocess

    def nan_rows(model, texts, top_k=5):
        return [{"tokens": ["a"], "last_hidden_state": torch.tensor([[float("nan"), float("inf"), 1.0]])}]

    monkeypatch.setattr(postprocess, "run_task", nan_rows)
    code, err, out = run_cli(["run", base["old"], "a", "--json"], capsys)
    # Never a quiet nan (issue 24): written as null, said on stderr, counted in the JSON, exit status 3.
    assert code == 3 and err == ["warning: 2 NaN/infinite values were written as null"]

    def no_constants(name):
        raise AssertionError(f"{name} in output")

    data = json.loads(out, parse_constant=no_constants)
    assert data["results"][0]["output"]["outputs"]["last_hidden_state"]["data"] == [[None, None, 1.0]]
    assert data["warnings"] == ["2 NaN/infinite values were written as null"] and data["nonfinite_outputs"] == 2


def test_api_top_k_and_manifest_errors_are_typed(base, tmp_path):
    model = hts.load(base["old"])
    with pytest.raises(hts.InputError, match="top_k must be a positive integer, got -1"):
        model(["hello"], top_k=-1)
    bad = tmp_path / "bad"
    shutil.copytree(base["old"], bad)
    (bad / "manifest.json").write_text(json.dumps({"format_version": 1}))
    with pytest.raises(hts.ArtifactError, match="not a valid hf-torchscript manifest: task is missing"):
        hts.load(bad)


@pytest.mark.parametrize("call,error,message", [
    (lambda A: hts.load(A, device="cuda"), hts.OptionError, r"load\(\) takes no device: an artifact runs on the CPU"),
    (lambda A: hts.load(A, verfy=False), hts.OptionError, r"unknown keyword 'verfy' \(did you mean 'verify'\?\)"),
    (lambda A: hts.load(5), hts.OptionError, r"load\(\)'s directory must be a path \(str or os.PathLike\), got int: 5"),
    (lambda A: hts.load(None), hts.OptionError, r"must be a path .*got NoneType"),
    (lambda A: hts.load(A, verify="no"), hts.OptionError, r"verify must be True or False, got 'no'"),
    (lambda A: hts.load(A)(["\ud800"]), hts.InputError, r"input 0 holds a lone surrogate U\+D800 at character 0"),
    (lambda A: hts.load(A)(["ok", "the \udcff man"]), hts.InputError, r"input 1 is not valid UTF-8 \(byte 0xff at character 4\)"),
    (lambda A: hts.load(A)([("the man", 1)]), hts.InputError, r"input 0's text_pair must be a string, got int"),
    (lambda A: hts.load(A)([("the man", "a", "b")]), hts.InputError, r"input 0 is a tuple of 3 items"),
    (lambda A: hts.load(A)([b"bytes"]), hts.InputError, r"input 0 must be a string, got bytes"),
    (lambda A: hts.load(A)(5), hts.InputError, r"texts must be a string or a list of strings .*got int"),
    (lambda A: hts.load(A)({"text": "x"}), hts.InputError, r"texts must be a string or a list .*got dict"),
    (lambda A: hts.load(A).encode(["ok"], ["\ud800"]), hts.InputError, r"input 0's text_pair holds a lone surrogate"),
])
def test_api_bad_arguments_and_texts_are_one_line_errors(call, error, message, base):
    with pytest.raises(error, match=message) as info:
        call(base["old"])
    assert "\n" not in str(info.value)


def test_api_texts_still_work_as_sequences(base):
    model = hts.load(base["old"])
    want = model(["the man", "a dog"])
    got = model(("the man", "a dog")[i] for i in range(2))  # any iterable of texts, as before
    torch.testing.assert_close(got[1]["last_hidden_state"], want[1]["last_hidden_state"])


def test_run_takes_texts_before_between_and_after_flags(base, capsys):
    code, err, out = run_cli(["run", base["old"], "--json", "the man", "a dog"], capsys)
    assert code == 0, err
    first = json.loads(out)
    code, err, out = run_cli(["run", "--json", base["old"], "the man", "--top-k", "3", "a dog"], capsys)
    assert code == 0, err
    second = json.loads(out)
    assert [r["input"]["text"] for r in first["results"]] == [r["input"]["text"] for r in second["results"]] == ["the man", "a dog"]


def test_run_output_replaces_a_regular_file_atomically(ws, base, capsys):
    (ws.root / "res.json").write_text("old")
    os.link(ws.root / "res.json", ws.root / "other-name")  # a hard link of the OUTPUT (not of the input) is fine
    code, err, _ = run_cli(["run", base["old"], "the man", "--json", "-o", "res.json"], capsys)
    assert code == 0, err
    assert json.loads((ws.root / "res.json").read_text())["results"][0]["input"]["text"] == "the man"
    assert (ws.root / "other-name").read_text() == "old"  # renamed over, not written through
    assert leftovers(ws.root) == []


def test_plain_mistakes_answer_before_torch_is_imported(base, tmp_path):
    """`run out/nope hello` and friends: one line without importing torch (measured: ~0.2 s of CPU)."""
    script = textwrap.dedent("""
        import sys
        from hf_torchscript.cli import main
        for argv in (["run", "nope", "hello"], ["run", sys.argv[1], "x", "-o", "/dev/full"],
                     ["run", sys.argv[1], "the \\udcff man"], ["run", sys.argv[1], "--input", "missing.txt"]):
            assert main(argv) == 1, argv
        assert "torch" not in sys.modules, "torch was imported"
    """)
    env = {**os.environ, "PYTHONPATH": f"{SRC_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    p = subprocess.run([sys.executable, "-c", script, str(base["old"])], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=120, check=False)
    assert p.returncode == 0, p.stderr
    lines = p.stderr.strip().splitlines()
    assert next(l for l in lines if l.startswith("error: ")) == ("error: artifact directory 'nope' does not exist; "
                                                                "export one with `hf-torchscript export`")
    assert len(lines) == 8 and "Traceback" not in p.stderr, p.stderr


def test_bench_and_triton_library_checks(base, tmp_path):
    with pytest.raises(hts.OptionError, match=r"threads must be an integer >= 1, got 0"):
        hts.benchmark(base["src"], threads=0)
    with pytest.raises(hts.OptionError, match=r"rounds must be an integer >= 1, got 0"):
        hts.benchmark(base["src"], rounds=0)
    pytest.importorskip("tritonclient", reason="the triton checks need the triton extra")
    from hf_torchscript.serving.triton import write_repository

    with pytest.raises(hts.OptionError, match=r"max_batch_size must be an integer from 0 to 2147483647 .*got 1000000000000"):
        write_repository(base["old"], tmp_path / "repo", max_batch_size=10**12)
    with pytest.raises(hts.OptionError, match=r"artifact must be a path .*got int"):
        write_repository(5, tmp_path / "repo")
    assert not (tmp_path / "repo").exists()


def test_map_output_directory_leaves_no_temp_file(ws, base, capsys):
    """The sink's temp file is removed whatever fails after it was created."""
    pytest.importorskip("pyarrow", reason="map's sink needs the ray extra (pyarrow)")
    from hf_torchscript.serving import ray_data

    (ws.root / "in.jsonl").write_text('{"text": "the man"}\n')
    sink = ray_data._ParquetSink(ws.root / "out.parquet")
    import pyarrow as pa

    with pytest.raises(RuntimeError), sink:
        sink.write(pa.table({"text": ["a"], "error": pa.array([None], type=pa.string())}))
        assert leftovers(ws.root) != []
        raise RuntimeError("a failure mid-write")
    assert leftovers(ws.root) == [] and not (ws.root / "out.parquet").exists()


def test_map_prints_its_last_progress_line_once_and_no_zero_rate(ws, base, capsys):
    from hf_torchscript.serving.ray_data import _Progress, rate_text

    meter = _Progress(3, enabled=True)
    meter.last -= 10  # the 5-second interval has passed: update prints a line
    meter.update(3, 3)
    meter.done()
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("map: 3/3 (100%) rows, 0 errors"), lines
    assert rate_text(3, 70.0) == "0.043" and rate_text(250, 2.0) == "125" and rate_text(5, 2.0) == "2.5"


# ------------------------------------------------------------------------------ the concurrency that works

def test_eight_threads_on_one_model_equal_sequential_calls(base):
    model = hts.load(base["new"])  # buckets: the dispatcher picks a trace per length
    g = torch.Generator().manual_seed(0)
    batches = []
    for i in range(16):
        b, L = 1 + i % 3, 3 + 2 * (i % 14)  # lengths 3..29 of the (16, 32) buckets
        ids = torch.randint(5, 120, (b, L), generator=g)
        mask = torch.ones_like(ids)
        mask[0, L // 2:] = 0  # padded rows too
        batches.append({"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)})
    sequential = [model.run(**x)["last_hidden_state"] for x in batches]
    with ThreadPoolExecutor(8) as pool:
        threaded = list(pool.map(lambda x: model.run(**x)["last_hidden_state"], batches * 2))
    for want, got in zip(sequential * 2, threaded):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


@pytest.mark.slow
def test_two_racing_exports_end_consistent(base, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(base["old"], out)
    env = {**os.environ, "PYTHONPATH": f"{SRC_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    args = {"new": ["--shapes", "buckets", "--buckets", "16,32", "--max-length", "32"],
            "third": ["--shapes", "dynamic", "--max-length", "24"]}
    procs = [subprocess.Popen([sys.executable, "-m", "hf_torchscript.cli", "export", str(base["src"]), str(out), "--force",
                               *a], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for a in args.values()]
    for p in procs:
        _, stderr = p.communicate(timeout=600)
        assert p.returncode == 0, stderr
    assert which(out, base) in ("new", "third")
    assert leftovers(tmp_path) == []


# ------------------------------------------------------------------------------ property tests

def _check_quiet_failure(code, err: list[str]):
    assert code in (0, 1, 2), (code, err)
    text = "\n".join(err)
    assert "Traceback" not in text and "internal error" not in text, text
    if code == 1:
        assert err[0].startswith("error: ") or err[0].startswith("warning: "), err


ARGV_WORDS = ["export", "run", "info", "validate", "--force", "--json", "--no-verify", "--top-k", "--task", "--shapes",
              "--buckets", "--batch-size", "--sequence-length", "--max-length", "--atol", "--dtype", "--quantize",
              "--backend", "--pair", "--model", "--allow-pickle", "--static-batch", "--optimize", "--untie-weights",
              "-1", "0", "1", "2", "16", "16,32", "32,16", "abc", "nan", "1e-3", "dynamic", "buckets", "static",
              "auto", "fill-mask", "sentence-embedding", "bfloat16", "dynamic-int8", "neuronx", "", "-", "--", "hello",
              "SRC", "ART", "FOREIGN", "NEW", "MISSING", "SCRATCH", ".", "..", "/", "SRC/config.json"]


_STRUCTURED = st.tuples(  # a command with plausible paths first, then random flags and values: gets past argparse
        st.sampled_from(["export", "run", "info", "validate"]),
        st.lists(st.sampled_from(["SRC", "ART", "FOREIGN", "NEW", "MISSING", "SCRATCH", ".", "SRC/config.json"]),
                 min_size=1, max_size=2),
        st.lists(st.tuples(st.sampled_from([w for w in ARGV_WORDS if w.startswith("--")]),
                           st.sampled_from([w for w in ARGV_WORDS if not w.startswith("--")]) | st.text(max_size=4)),
                 max_size=3),
    ).map(lambda t: [t[0], *t[1], *(w for pair in t[2] for w in pair)])
_ANYTHING = st.lists(st.sampled_from(ARGV_WORDS) | st.text(max_size=6), max_size=9)
# Three in four command lines have a command and paths first, so most get past argparse.
COMMAND_LINES = st.sampled_from([0, 1, 2, 3]).flatmap(lambda k: _ANYTHING if k == 3 else _STRUCTURED)


@settings(max_examples=int(os.environ.get("HTS_FAULT_EXAMPLES", "40")), deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(words=COMMAND_LINES)
def test_random_command_lines_never_trace_back(words, base, tmp_path_factory, capsys):
    scratch = tmp_path_factory.mktemp("argv")
    foreign = scratch / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    art = scratch / "art"
    shutil.copytree(base["old"], art)
    names = {"SRC": str(base["src"]), "ART": str(art), "FOREIGN": str(foreign), "NEW": str(scratch / "new"),
             "MISSING": str(scratch / "missing" / "x"), "SCRATCH": str(scratch), "SRC/config.json": str(base["src"] / "config.json")}
    argv = [names.get(w, w) for w in words]
    protected = snapshot(base["src"], foreign)
    cwd = os.getcwd()
    os.chdir(scratch)
    try:
        code, err, _ = run_cli(argv, capsys)
    finally:
        os.chdir(cwd)
    _check_quiet_failure(code, err)
    assert snapshot(base["src"], foreign) == protected, argv
    if os.path.lexists(art):
        assert not leftovers(scratch)


CORRUPTIBLE = ["model.pt", "manifest.json", "tokenizer.json", "tokenizer_config.json"]


@settings(max_examples=int(os.environ.get("HTS_FAULT_EXAMPLES", "40")), deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_corrupted_artifacts_never_trace_back(data, base, tmp_path_factory, capsys):
    d = tmp_path_factory.mktemp("corrupt") / "art"
    shutil.copytree(base["old"], d)
    name = data.draw(st.sampled_from(CORRUPTIBLE))
    raw = bytearray((d / name).read_bytes())
    how = data.draw(st.sampled_from(["flip", "truncate", "insert", "empty"]))
    if how == "flip":
        for _ in range(data.draw(st.integers(1, 16))):
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    elif how == "truncate":
        raw = raw[:data.draw(st.integers(0, len(raw) - 1))]
    elif how == "insert":
        at = data.draw(st.integers(0, len(raw)))
        raw[at:at] = data.draw(st.binary(min_size=1, max_size=64))
    else:
        raw = bytearray()
    (d / name).write_bytes(bytes(raw))
    before = snapshot(base["src"], base["old"])
    for argv in (["info", d], ["info", "--json", d], ["run", d, "the man eats bread", "--json"],
                 ["run", d, "paris", "--no-verify", "--json"]):
        code, err, out = run_cli(argv, capsys)
        _check_quiet_failure(code, err)
        if code == 0 and argv[0] == "run":
            json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} in output"))
    assert snapshot(base["src"], base["old"]) == before
