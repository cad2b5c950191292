"""Export's record of whether the C++ tokenizer can take text for an artifact (manifest "cpp_tokenizer"),
from hf_torchscript.runtime.cpp_tokenizer_support: no C++ build needed."""

from __future__ import annotations

import json
from pathlib import Path

from hf_torchscript import cli
from hf_torchscript.runtime.cpp_tokenizer_support import cpp_tokenizer_entry, unsupported_components


def test_real_and_test_tokenizers_are_supported(minilm_dir):
    from models import build_tokenizer

    assert unsupported_components(Path(minilm_dir) / "tokenizer.json") == []
    assert cpp_tokenizer_entry(build_tokenizer(0).backend_tokenizer.to_str()) == {"supported": True, "unsupported": []}


def test_unsupported_components_are_named_wherever_they_sit():
    tok = {
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Precompiled"}]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Metaspace"}, {"type": "UnicodeScripts"}]},
        "model": {"type": "BPE", "dropout": 0.1, "vocab": {}, "merges": []},
        "post_processor": {"type": "TemplateProcessing"},
        "decoder": {"type": "CTC"},
    }
    assert unsupported_components(json.dumps(tok)) == [
        "normalizer.Precompiled", "pre_tokenizer.UnicodeScripts", "decoder.CTC", "model.BPE.dropout"]
    assert unsupported_components({"model": {"vocab": {}, "merges": []}}) == []  # typeless BPE: inferred
    assert cpp_tokenizer_entry({"model": {"type": "SomethingNew"}})["unsupported"] == ["model.SomethingNew"]


def test_export_records_it_and_info_shows_it(tiny_artifact, capsys):
    art = tiny_artifact("bert", "text-classification")
    manifest = json.loads((art / "manifest.json").read_text())
    assert manifest["cpp_tokenizer"] == {"supported": True, "unsupported": []}
    capsys.readouterr()
    assert cli.main(["info", str(art)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("tokenizer"))
    assert line.endswith("tokenizer.json; C++ tokenizer: supported"), line


def test_missing_system_library_is_one_line_naming_the_package(monkeypatch, tmp_path):
    """cpp/CMakeLists.txt's marker line for a missing libutf8proc/PCRE2 becomes the whole BuildError."""
    import subprocess

    import pytest

    from hf_torchscript.errors import BuildError
    from hf_torchscript.runtime import cpp

    cmake_out = ("CMake Error at CMakeLists.txt:40 (message):\n  hts-missing-library: utf8proc.h / libutf8proc not "
                 "found; install it: apt-get install libutf8proc-dev\nCall Stack (most recent call first):\n")
    monkeypatch.setattr(cpp.shutil, "which", lambda tool: "/usr/bin/" + tool)
    monkeypatch.setattr(cpp.subprocess, "run",
                        lambda argv, **kw: subprocess.CompletedProcess(argv, 1, stdout=cmake_out, stderr=""))
    with pytest.raises(BuildError) as e:
        cpp.build_runner(tmp_path / "b", source=cpp.source_dir())
    assert str(e.value) == "utf8proc.h / libutf8proc not found; install it: apt-get install libutf8proc-dev"
    text = (cpp.source_dir() / "CMakeLists.txt").read_text()
    assert "hts_find_system_library(UTF8PROC utf8proc.h utf8proc libutf8proc-dev)" in text
    assert "hts_find_system_library(PCRE2 pcre2.h pcre2-8 libpcre2-dev)" in text
