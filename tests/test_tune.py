"""--optimize auto (exporter/tune.py): which candidates a CPU gets, the choice (with an injected timer, so the
test does not depend on this machine's speed), the manifest's tuning block, info, and the CLI flag."""

import json

import pytest
import torch

import hf_torchscript as hts
from hf_torchscript.cli.main import build_parser, main, optional_values
from hf_torchscript.errors import OptionError
from hf_torchscript.exporter import tune
from hf_torchscript.options import ExportOptions

AVX2 = frozenset("avx avx2 fma f16c".split())
AMX = AVX2 | frozenset("avx512f avx512bw avx512dq avx512vl avx512_vnni avx512_bf16 amx_tile amx_bf16 amx_int8".split())


def _names(cands, built=True):
    return [c.name for c in cands if (c.skip is None) == built]


def test_candidates_follow_the_cpu_and_the_shapes():
    opts = ExportOptions(optimize="auto")
    avx2 = tune.candidates(opts, AVX2)
    assert _names(avx2) == ["fp32", "fp32-frozen", "fp32-packed", "fp32-onednn", "int8"]
    skipped = {c.name: c.skip for c in avx2 if c.skip}
    assert set(skipped) == {"bf16-frozen", "bf16-onednn"}
    assert "avx512_bf16" in skipped["bf16-frozen"] and "2.2-7.2x slower" in skipped["bf16-frozen"]
    assert _names(tune.candidates(opts, AMX)) == ["fp32", "fp32-frozen", "fp32-packed", "fp32-onednn", "bf16-frozen",
                                                  "bf16-onednn", "int8"]
    dyn = tune.candidates(ExportOptions(optimize="auto", shapes="dynamic"), AMX)
    assert "fp32-onednn" not in _names(dyn) and "static" in next(c.skip for c in dyn if c.name == "fp32-onednn")
    buckets = tune.candidates(ExportOptions(optimize="auto", shapes="buckets"), AMX)
    assert "one trace" in next(c.skip for c in buckets if c.name == "fp32-packed")
    # Every candidate is a valid set of options (the build paths are the normal export's).
    for c in tune.candidates(opts, AMX):
        ExportOptions(**c.overrides)


def test_choose_takes_the_lowest_median_and_ties_go_to_the_simpler():
    order = ["fp32", "fp32-frozen", "fp32-onednn", "int8"]
    assert tune.choose({"fp32": 10.0, "fp32-frozen": 9.0, "int8": 4.0}, order) == "int8"
    assert tune.choose({"fp32": 5.0, "fp32-frozen": 5.0}, order) == "fp32"
    assert tune.choose({"int8": 5.0, "fp32-frozen": 5.0}, order) == "fp32-frozen"


def test_option_checks():
    with pytest.raises(OptionError, match="optimize='auto' chooses the precision"):
        ExportOptions(optimize="auto", dtype="bfloat16")
    with pytest.raises(OptionError, match="tune_texts is the workload"):
        ExportOptions(tune_texts="x.txt")
    with pytest.raises(OptionError, match="takes a bool or 'auto'"):
        ExportOptions(optimize="fast")
    with pytest.raises(OptionError, match="backend"):
        ExportOptions(optimize="auto", backend="aoti")


def test_cli_flag_alone_with_a_value_and_before_the_positionals():
    def parse(*argv):
        return build_parser().parse_args(optional_values(list(argv)))

    assert parse("export", "m", "o", "--optimize").optimize is True
    assert parse("export", "m", "o", "--optimize", "auto").optimize == "auto"
    assert parse("export", "m", "o", "--optimize=auto").optimize == "auto"
    assert parse("export", "m", "o").optimize is False
    a = parse("export", "--optimize", "m", "o", "--shapes", "dynamic")
    assert (a.optimize, a.model, a.output_dir) is not None and (a.optimize, a.model, a.output_dir) == (True, "m", "o")
    b = parse("export", "--optimize", "--shapes", "dynamic", "m", "o")
    assert b.optimize is True and b.shapes == "dynamic"


def fake_timer(ms: dict):
    """A timer that runs nothing and reports the given milliseconds per round (deterministic choice)."""
    seen = {}

    def timer(runs, *, rounds, warmup):
        seen["names"] = list(runs)
        return {n: [ms[n] / 1000 * (1 + 0.01 * (r % 2)) for r in range(rounds)] for n in runs}
    timer.seen = seen
    return timer


def test_auto_keeps_the_candidate_the_timer_says_is_fastest(tiny_model_dir, tmp_path, capsys):
    src = tiny_model_dir("bert", "feature-extraction")
    texts = tmp_path / "texts.txt"
    texts.write_text("a short one\n\nand a somewhat longer text with more words in it than the first\n")
    timer = fake_timer({"fp32": 10.0, "fp32-frozen": 8.0, "fp32-packed": 8.5, "fp32-onednn": 9.0, "int8": 30.0})
    steps = []
    opts = ExportOptions(optimize="auto", shapes="dynamic", tune_texts=str(texts), task="feature-extraction")
    # shapes=dynamic: no fused candidate (static only); unknown CPU flags: no bf16. Four exports.
    res = tune.export_auto(src, tmp_path / "out", options=opts, timer=timer, progress=steps.append,
                           cpu_flags=frozenset(), rounds=3, warmup=1)
    out = tmp_path / "out"
    m = json.loads((out / "manifest.json").read_text())
    t = m["tuning"]
    built = set(timer.seen["names"])
    assert built <= {"fp32", "fp32-frozen", "fp32-packed", "int8"} and {"fp32", "fp32-frozen", "fp32-packed"} <= built
    assert t["winner"] == "fp32-frozen" == res.tuning["winner"]
    assert m["optimize"] is True and m["dtype"] == "float32" and m["quantize"] is None  # the winner's own options
    rows = {r["name"]: r for r in t["candidates"]}
    assert rows["fp32-frozen"]["median_ms"] == pytest.approx(8.0, rel=0.02)
    assert rows["fp32"]["ratio"] == 1.0 and rows["fp32-frozen"]["ratio"] == pytest.approx(0.8, rel=0.02)
    assert rows["fp32-onednn"]["status"] == "skipped" and rows["bf16-frozen"]["status"] == "skipped"
    assert rows["int8"]["status"] in ("timed", "failed")  # on random tiny weights int8 may fail validation
    assert t["workload"]["source"] == "file" and t["workload"]["texts"] == 2 and t["workload"]["rounds"] == 3
    assert len(t["load_average"]["start"]) == 3 and isinstance(t["quiet"], bool)
    assert t["cpu"]["model"] == m["cpu"]["model"]
    assert t["why"].startswith("lowest median over the workload: 8.00 ms") and "fp32 10.00 ms (1.25x)" in t["why"]
    assert [s for s in steps if s.stage == "optimize"]
    # What was written is the validated winner, sealed with the tuning block: it verifies, loads and runs.
    from transformers import AutoModel

    ids = torch.tensor([[2, 10, 11, 12, 3, 0], [2, 13, 14, 15, 16, 3]])
    mask = (ids != 0).long()
    got = hts.load(out).run(input_ids=ids, attention_mask=mask)["last_hidden_state"]
    with torch.no_grad():
        want = AutoModel.from_pretrained(str(src)).eval()(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.allclose(got[mask.bool()], want[mask.bool()], atol=1e-4, rtol=1e-4)
    assert not list(tmp_path.glob(".out-tune*")) and not list(tmp_path.glob(".out.tmp*"))  # scratch removed
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "optimize      auto: fp32-frozen won" in text and "  * fp32-frozen" in text and "0.80x of fp32" in text
    assert "skipped: fused graphs need static shapes" in text or "fp32-onednn" in text


@pytest.mark.slow
def test_cli_optimize_auto_end_to_end_with_the_real_timer(tiny_model_dir, tmp_path, capsys):
    src = tiny_model_dir("bert", "feature-extraction")
    assert main(["export", str(src), str(tmp_path / "o"), "--optimize", "auto", "-q"]) == 0
    said = capsys.readouterr().out
    assert "--optimize auto chose" in said
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())
    t = m["tuning"]
    timed = {r["name"]: r["median_ms"] for r in t["candidates"] if r["status"] == "timed"}
    assert "fp32" in timed and t["winner"] in timed
    assert timed[t["winner"]] == min(timed.values())  # the winner is the measured minimum
    assert all(len(r["rounds_ms"]) == t["workload"]["rounds"] for r in t["candidates"] if r["status"] == "timed")
    assert t["workload"]["source"] == "bundled" and t["workload"]["texts"] == tune.WORKLOAD_TEXTS
    hts.load(tmp_path / "o")(["In the beginning God created the heaven and the earth."])


def test_runner_without_a_tokenizer_feeds_padded_random_ids_inside_the_vocabulary():
    calls = []

    class Fake:
        tokenizer = None
        max_length = 6
        input_names = ["input_ids", "attention_mask"]
        manifest = {"pad_token_id": 0, "inputs": [{"name": "input_ids", "range": [0, 50]},
                                                  {"name": "attention_mask", "range": [0, 2]}]}

        def run(self, **tensors):
            calls.append(tensors)

    run = tune.runner(Fake(), ["one two", "one two three four five six seven eight", "x"], batch_size=2)
    run()
    assert len(calls) == 2 and set(calls[0]) == {"input_ids", "attention_mask"}
    first = calls[0]
    assert first["input_ids"].shape == (2, 6)  # 2+2 tokens and 8+2 capped at the max length 6
    assert first["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0], [1] * 6]
    ids = first["input_ids"]
    assert ((ids[first["attention_mask"].bool()] > 0) & (ids[first["attention_mask"].bool()] < 50)).all()
    assert (ids[~first["attention_mask"].bool()] == 0).all()
    assert calls[1]["input_ids"].shape == (1, 3)
