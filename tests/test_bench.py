"""The benchmark runs end to end on a tiny model and its report is well-formed. No timing assertions."""

from __future__ import annotations

import json
import math

import pytest

import hf_torchscript as hts
from hf_torchscript.bench import ALL_VARIANTS, EXPORTED, sample_lengths
from hf_torchscript.cli import main as cli_main
from hf_torchscript.errors import OptionError

# torch.compile takes minutes on 2 cores even for a tiny model; it is an optional outside reference.
VARIANTS = [v for v in ALL_VARIANTS if v != "torch-compile"]


@pytest.fixture(scope="module")
def report(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    return hts.benchmark(
        tiny_model_dir("bert", "feature-extraction"), output_dir=out, variants=VARIANTS,
        grid=((1, 8), (3, 20)), max_length=64, rounds=3, warmup=1, mixed_requests=12, mixed_batch=4, mixed_rounds=2,
        profile_shape=(2, 16), progress=False,
    ), out


@pytest.mark.slow  # six exports of a tiny model + timed rounds: ~40 s on 2 cores
def test_every_variant_ran_or_says_why_not(report):
    r, _ = report
    assert list(r.variants) == VARIANTS
    for name, v in r.variants.items():
        assert v["status"] in ("ok", "skipped")
        if v["status"] == "skipped":
            assert v["reason"] and name in ("onnxruntime", "torch-compile")  # only optional references may skip
    for name in ("eager", "eager-bf16", *EXPORTED):
        assert r.variants[name]["status"] == "ok", r.variants[name]
    assert r.variants["ts-bf16"]["validation"]["mode"] == "cosine"
    assert r.variants["ts-frozen"]["validation"]["mode"] == "allclose"
    assert r.variants["ts-static"]["shapes"] == "static"


@pytest.mark.slow  # six exports of a tiny model + timed rounds: ~40 s on 2 cores
def test_ratios_are_to_eager_in_the_same_run(report):
    r, _ = report
    ok = [n for n, v in r.variants.items() if v["status"] == "ok"]
    assert [(g["batch"], g["length"]) for g in r.grid] == [(1, 8), (3, 20)]
    for g in r.grid:
        assert set(g["results"]) == set(ok)
        eager = g["results"]["eager"]
        assert eager["ratio"] == 1.0
        for name, res in g["results"].items():
            assert len(res["times_ms"]) == 3
            paired = sorted(t / e for t, e in zip(res["times_ms"], eager["times_ms"]))[1]
            assert math.isclose(res["ratio"], paired, rel_tol=1e-9)
            assert math.isclose(res["tokens_per_s"], g["tokens"] / (res["median_ms"] / 1e3), rel_tol=1e-9)
            assert res["p90_ms"] >= res["median_ms"] > 0
            assert 0 < res["ceiling_fraction"]
        # Every variant computes the same function: cosine to eager fp32 on the benchmark's own inputs.
        assert g["results"]["ts-dynamic"]["min_cosine"] > 0.99999
        assert g["results"]["ts-bf16"]["min_cosine"] > 0.99
    assert set(r.gemm_ceiling_gflops) == {"float32", "bfloat16"}


@pytest.mark.slow  # six exports of a tiny model + timed rounds: ~40 s on 2 cores
def test_mixed_workload_uses_real_lengths(report):
    r, _ = report
    m = r.mixed
    assert m["requests"] == 12 and m["batch"] == 4
    assert "King James" in m["length_source"]["source"]
    assert m["padded_tokens_static"] == 12 * 64  # max_length=64
    assert m["real_tokens"] <= m["padded_tokens_dynamic"] <= m["padded_tokens_static"]
    res = m["results"]
    assert res["ts-static"]["throughput_vs_static"] == 1.0
    assert math.isclose(res["ts-dynamic"]["throughput_vs_static"],
                        res["ts-dynamic"]["tokens_per_s"] / res["ts-static"]["tokens_per_s"])


@pytest.mark.slow  # six exports of a tiny model + timed rounds: ~40 s on 2 cores
def test_report_files_and_targets(report):
    r, out = report
    data = json.loads((out / "report.json").read_text())
    assert set(data) >= {"model", "environment", "method", "gemm_ceiling_gflops", "variants", "grid", "mixed",
                         "profile", "targets"}
    assert len(data["environment"]["loadavg_start"]) == 3 and data["environment"]["threads"] == 2
    png = (out / "plot.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert data["profile"]["eager"] and {"op", "self_ms", "share"} <= set(data["profile"]["eager"][0])
    names = {t["name"] for t in data["targets"]}
    assert "mixed: buckets time vs dynamic" in names and "fp32 exported never slower than eager" in names
    assert "eager" in r.table() and "ts-int8" in r.table()


def test_sample_lengths_follow_the_text():
    xs = sample_lengths(2000, 512, seed=1)
    assert min(xs) >= 4 and max(xs) <= 512
    assert 20 <= sorted(xs)[1000] <= 40  # median sentence of the KJV: ~30 tokens
    assert sample_lengths(5, 16, seed=1) == [min(x, 16) for x in sample_lengths(5, 512, seed=1)]


def test_unknown_variant_is_refused(tiny_model_dir):
    with pytest.raises(OptionError, match="unknown benchmark variants \\['ts-fast'\\]; choose from eager,"):
        hts.benchmark(tiny_model_dir("bert", "feature-extraction"), variants=["ts-fast"], progress=False)


def test_cli_bench(tiny_model_dir, tmp_path, capsys):
    rc = cli_main(["bench", str(tiny_model_dir("bert", "feature-extraction")), "--out", str(tmp_path),
                   "--variants", "eager,ts-dynamic", "--grid", "1x8", "--rounds", "2", "--warmup", "1",
                   "--mixed-requests", "0", "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "ts-dynamic" in text and "wrote" in text
    assert (tmp_path / "report.json").exists() and (tmp_path / "plot.png").exists()


@pytest.mark.slow
def test_results_markdown_renders_from_the_json(report, tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "bench" / "render_results.py"
    spec = importlib.util.spec_from_file_location("render_results", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    _, out = report
    mod.main([str(out / "report.json"), str(tmp_path / "RESULTS.md")])
    text = (tmp_path / "RESULTS.md").read_text()
    assert "## Targets (issue 6)" in text and "| ts-int8 |" in text and "King James" in text
    assert "skipped: onnxruntime is not installed" in text or "| onnxruntime |" in text
