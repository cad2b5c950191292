"""On transformers 4 (CI's legacy leg) --task text-generation is refused in one line before any work."""

from __future__ import annotations

import pytest

import hf_torchscript as hts
from hf_torchscript.compat import kv_cache_export_supported


@pytest.mark.skipif(kv_cache_export_supported(), reason="transformers 5 exports text-generation (test_generation.py)")
def test_generation_is_refused_in_one_line_on_transformers_4(tmp_path):
    from models import save_tiny

    src = save_tiny("llama", "text-generation", tmp_path / "src")
    with pytest.raises(hts.OptionError, match=r"task=.text-generation. needs transformers 5 \(installed: 4\."):
        hts.export(src, tmp_path / "out", task="text-generation", max_cache_len=32)
    assert not (tmp_path / "out").exists()
