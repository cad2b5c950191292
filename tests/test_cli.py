"""The CLI as a new user meets it: --version, progress on a terminal only, errors in flag terms (and
the Python API in keyword terms), `validate OUT` finding the recorded model, `info` in each check's terms."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

import hf_torchscript as hts
from hf_torchscript.cli import main
from hf_torchscript.progress import LineProgress, Step, TerminalProgress, for_terminal


def test_version_names_ours_torch_and_transformers(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == (
        # Package metadata, not torch.__version__: the CUDA wheel's metadata says 2.9.1 where the
        # module says 2.9.1+cu128, and --version must not import torch to answer.
        f"hf-torchscript {hts.__version__} (torch {metadata.version('torch')}, transformers {metadata.version('transformers')})")


def test_version_without_transformers(capsys, monkeypatch):
    real = metadata.version

    def version(name):
        if name == "transformers":
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(metadata, "version", version)
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip().endswith(f"(torch {real('torch')}, transformers not installed)")


# -- progress -------------------------------------------------------------------------------------------


def test_export_reports_each_step_to_the_callback_and_never_prints(tiny_model_dir, tmp_path, capsys):
    src = tiny_model_dir("bert")
    capsys.readouterr()  # whatever building the tiny model printed
    steps: list[Step] = []
    result = hts.export(src, tmp_path / "o", shapes="buckets", buckets=(16, 32, 64), progress=steps.append)
    assert capsys.readouterr() == ("", "")  # the library prints nothing itself
    stages = [s.stage for s in steps]
    assert stages[:2] == ["load", "prepare"] and stages[-2:] == ["save", "text check"]
    order = {"load": 0, "prepare": 1, "trace": 2, "validate": 3, "save": 4, "text check": 5}
    assert [order[s] for s in stages] == sorted(order[s] for s in stages)  # one pass, in flow order
    traces = [s for s in steps if s.stage == "trace"]
    assert [(s.done, s.total) for s in traces] == [(0, 3), (1, 3), (2, 3), (3, 3)]
    assert [s.detail.split("length ")[-1] for s in traces[:3]] == ["16", "32", "64"]
    cases = [s for s in steps if s.stage == "validate"]
    n = len(result.validation.cases)
    assert [(s.done, s.total) for s in cases] == [(i, n) for i in range(n)]


def test_validate_reports_progress(tiny_model_dir, tmp_path):
    hts.export(tiny_model_dir("bert"), tmp_path / "o")
    steps: list[Step] = []
    report = hts.validate(tmp_path / "o", tiny_model_dir("bert"), progress=steps.append)
    assert [s.stage for s in steps][:3] == ["load", "load", "prepare"] and steps[-1].stage == "text check"
    assert sum(s.stage == "validate" for s in steps) == len(report.cases)


def test_progress_false_is_silence_and_anything_else_not_callable_is_refused(tiny_model_dir, tmp_path, capsys):
    capsys.readouterr()
    hts.export(tiny_model_dir("bert"), tmp_path / "o", progress=False)  # as benchmark(progress=False) spells it
    assert capsys.readouterr() == ("", "")
    with pytest.raises(hts.OptionError, match=r"progress takes a function called with each progress.Step, or "
                                              r"None/False for silence; got True"):
        hts.export(tiny_model_dir("bert"), tmp_path / "p", progress=True)
    assert not (tmp_path / "p").exists()


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_terminal_progress_rewrites_one_line_and_erases_it():
    term = FakeTerminal()
    with TerminalProgress(term) as show:
        show(Step("trace", "buckets with torchscript: batch 2, length 16", 0, 3))
        show(Step("validate", "(2x17) full/right vs eager (allclose)", 4, 20))
    text = term.getvalue()
    assert text.count("\r\x1b[K") == 3 and "\n" not in text
    assert "trace 0/3: buckets with torchscript: batch 2, length 16" in text and "validate 4/20: (2x17)" in text
    assert text.endswith("\r\x1b[K")  # nothing left on the line for the summary that follows
    assert isinstance(for_terminal(False, FakeTerminal()), TerminalProgress)
    assert for_terminal(True, FakeTerminal()) is None  # --quiet
    assert isinstance(for_terminal(False, io.StringIO()), LineProgress)  # not a terminal: a pipe, a log file
    assert for_terminal(True, io.StringIO()) is None


def test_line_progress_prints_one_line_per_step_with_the_elapsed_time():
    log = io.StringIO()
    show = LineProgress(log)
    show(Step("load", "model"))
    show(Step("load", "model"))  # the same step again: no new line
    for i in range(21):
        show(Step("validate", f"case {i}", i, 20))  # a counted step: its start and its end
    show(Step("save"))
    lines = log.getvalue().splitlines()
    assert len(lines) == 4, lines
    assert all(re.fullmatch(r"\[ *\d+\.\ds\] .+", line) for line in lines), lines
    assert lines[1].endswith("validate 0/20: case 0") and lines[2].endswith("validate 20/20: case 20")
    assert lines[3].endswith("save") and "\r" not in log.getvalue()


def test_cli_export_off_a_terminal_logs_steps_on_stderr_and_a_short_summary(tiny_model_dir, tmp_path, capsys):
    assert main(["export", str(tiny_model_dir("bert")), str(tmp_path / "o"), "--dtype", "fp32"]) == 0
    out, err = capsys.readouterr()
    steps = [line for line in err.splitlines() if re.match(r"\[ *\d+\.\ds\] ", line)]
    assert [s.split("] ")[1].split(" ")[0].rstrip(":") for s in steps][:1] == ["load"], err
    assert len(steps) >= 4 and any("validate" in s for s in steps) and any("save" in s for s in steps), err
    lines = out.splitlines()
    assert lines[0].startswith("exported bert (feature-extraction) to ") and re.search(r" in \d+\.\ds$", lines[0])
    assert lines[1].startswith("  shapes: ") and lines[2].startswith("  validation passed: ")
    assert 4 <= len(lines) <= 6 and max(map(len, lines[1:])) < 200, lines  # the headline holds the path
    assert main(["export", str(tiny_model_dir("bert")), str(tmp_path / "q"), "--quiet"]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("spelling,dtype", [("bf16", "bfloat16"), ("fp16", "float16"), ("fp32", "float32"),
                                            ("BF16", "bfloat16"), ("float16", "float16")])
def test_optimum_dtype_spellings_are_accepted(spelling, dtype):
    from hf_torchscript.cli.main import build_parser

    a = build_parser().parse_args(["export", "m", "o", "--dtype", spelling])
    assert a.dtype == dtype
    assert hts.ExportOptions(dtype=spelling).dtype == dtype


def test_misspelt_flags_and_commands_get_a_suggestion(capsys):
    for argv, hint in ((["export", "m", "o", "--shapse", "dynamic"], "(did you mean --shapes?)"),
                       (["valdiate", "o"], "(did you mean 'validate'?)"),
                       (["export", "m", "o", "--shapes", "dynamc"], "(did you mean 'dynamic'?)"),
                       (["run", "o", "x", "--top_k", "3"], "(did you mean --top-k?)")):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        assert capsys.readouterr().err.strip().splitlines()[-1].endswith(hint), argv


def _torch_at_least(major: int, minor: int) -> bool:
    import torch

    return tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]) >= (major, minor)


def test_int8_deprecation_notice_is_filtered_where_modules_load():
    """torch's once-per-process C++ notice about quantized dtypes; real in a fresh process, gone inside jit_api."""
    code = textwrap.dedent("""
        import sys, warnings, torch
        from hf_torchscript.deprecation import jit_api
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with (jit_api() if sys.argv[1] == "inside" else warnings.catch_warnings()):
                torch.quantize_per_tensor(torch.ones(2), 0.1, 0, torch.qint8)
        print(len([w for w in caught if "quantized tensor creation functions" in str(w.message)]))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(hts.__file__).resolve().parents[1]),
                                                         os.environ.get("PYTHONPATH", "")])}
    got = {where: subprocess.run([sys.executable, "-c", code, where], capture_output=True, text=True, env=env,
                                 timeout=120, check=False).stdout.strip() for where in ("outside", "inside")}
    assert got["inside"] == "0", got
    if _torch_at_least(2, 13):  # the notice is torch 2.13's; torch 2.9 (the legacy leg) prints none to filter
        assert got["outside"] == "1", got


# -- errors speak the interface they came from ----------------------------------------------------------


def test_errors_name_keywords_in_python_and_flags_on_the_cli(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    with pytest.raises(hts.ArtifactError) as e:
        hts.export(tiny_model_dir("bert"), out)
    assert "pass force=True to replace it" in str(e.value) and "--force" not in str(e.value)
    assert main(["export", str(tiny_model_dir("bert")), str(out)]) == 1
    err = capsys.readouterr().err
    assert "pass --force to replace it" in err and "force=True" not in err

    with pytest.raises(hts.ShapeError) as e:
        hts.ExportOptions(shapes="static", buckets=(16,))
    assert str(e.value) == "buckets only applies to shapes='buckets' (got shapes='static')"
    assert main(["export", str(tiny_model_dir("bert")), str(tmp_path / "x"), "--shapes", "static",
                 "--buckets", "16"]) == 1
    assert "error: --buckets only applies to --shapes buckets (got --shapes static)" in capsys.readouterr().err


def test_truncation_and_verify_errors_in_each_interface(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "o"
    hts.export(tiny_model_dir("bert", "fill-mask"), out, task="fill-mask", max_length=8)
    long = "the city " * 10 + "[MASK]"
    with pytest.raises(hts.InputError) as e:
        hts.load(out, truncation="error")([long])
    assert str(e.value).endswith("shorten them, or let them be cut (truncation='warn')")
    assert main(["run", str(out), long, "--no-truncate"]) == 1
    assert "shorten them, or let them be cut (no --no-truncate)" in capsys.readouterr().err

    with open(out / "tokenizer.json", "a") as f:
        f.write(" ")
    with pytest.raises(hts.ArtifactError, match=r"or pass verify=False if you changed it on purpose"):
        hts.load(out)
    assert main(["run", str(out), "a [MASK]"]) == 1
    assert "or pass --no-verify if you changed it on purpose" in capsys.readouterr().err


# -- validate OUT without --model ---------------------------------------------------------------------


def test_validate_without_model_uses_the_recorded_one(tiny_model_dir, tmp_path, capsys, monkeypatch):
    work = tmp_path / "work"
    shutil.copytree(tiny_model_dir("bert"), work / "models" / "tiny")
    monkeypatch.chdir(work)
    assert main(["export", "models/tiny", "out"]) == 0  # a relative MODEL path
    manifest = json.loads((work / "out" / "manifest.json").read_text())
    assert manifest["source"] == {"model": "models/tiny", "weights": "safetensors"}  # no absolute path (issue 24)
    capsys.readouterr()
    assert main(["validate", "out"]) == 0  # found again where it was exported
    assert capsys.readouterr().out.startswith("validation passed:")

    monkeypatch.chdir(tmp_path)  # elsewhere: "models/tiny" no longer resolves
    shutil.move(work / "models" / "tiny", tmp_path / "moved")
    assert main(["validate", str(work / "out")]) == 1
    err = capsys.readouterr().err
    assert (f"the model {work / 'out'} was exported from, 'models/tiny', cannot be "
            "found offline") in err and "pass --model MODEL, the model it was exported from" in err
    with pytest.raises(hts.SourceError, match="pass model=MODEL, the model it was exported from"):
        hts.validate(work / "out")
    assert main(["validate", str(work / "out"), "--model", str(tmp_path / "moved")]) == 0  # --model overrides
    # An absolute MODEL path is recorded by its folder name only: the build machine's layout stays home.
    assert main(["export", str(tmp_path / "moved"), str(tmp_path / "out2")]) == 0
    assert json.loads((tmp_path / "out2" / "manifest.json").read_text())["source"]["model"] == "moved"


def test_validate_an_in_memory_export_needs_model(tmp_path):
    from models import tiny_config
    from transformers import AutoModel

    hts.export(AutoModel.from_config(tiny_config("bert", "feature-extraction")), tmp_path / "o")
    with pytest.raises(hts.SourceError, match=r"was exported from an in-memory model, so its manifest names no model"):
        hts.validate(tmp_path / "o")


# -- info: each check in its own terms --------------------------------------------------------------------


def test_info_states_the_fp32_tolerance_check(tiny_model_dir, tmp_path, capsys):
    hts.export(tiny_model_dir("bert"), tmp_path / "o")
    assert main(["info", str(tmp_path / "o")]) == 0
    text = capsys.readouterr().out
    v = json.loads((tmp_path / "o" / "manifest.json").read_text())["validation"]
    assert f"validation    passed: {len(v['cases'])} cases vs float32 eager" in text
    assert (f"  tolerance   |exported - eager| <= atol 0.0001 + rtol 0.0001 x |eager|; max abs diff "
            f"last_hidden_state {v['max_abs_diff']['last_hidden_state']:.2e}") in text
    assert "token_type_ids int64 (batch_size, sequence_length) [optional: zeros]" in text
    # The grid was checked by tolerance (the text check's embeddings line is by cosine, as it says).
    assert "cosine" not in "\n".join(l for l in text.splitlines() if "text check" not in l)


def test_info_states_a_bf16_check_by_cosine_and_top1(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "o"
    hts.export(tiny_model_dir("bert", "text-classification"), out, task="text-classification", dtype="bfloat16")
    v = json.loads((out / "manifest.json").read_text())["validation"]
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"validation    passed: {len(v['cases'])} cases, bfloat16 vs float32 eager by cosine" in text
    assert f"  cosine      min per row logits {v['min_cosine']['logits']:.5f} (needs >= 0.995)" in text
    assert f"  top-1       agreement logits {v['top1_agreement']['logits']:.1%}" in text
    assert "not the criterion at reduced precision" in text
    assert "atol" not in text  # the fp32 tolerance was not the check

    assert main(["info", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert {k: v for k, v in doc.items() if k != "summary"} == manifest  # the manifest as written, plus a summary
    [grid] = [c for c in doc["summary"]["checks"] if c["check"] == "grid"]
    assert doc["summary"]["verified"] and doc["summary"]["passed"]
    assert (grid["check"], grid["mode"], grid["precision"], grid["cases"]) == ("grid", "cosine", "bfloat16",
                                                                               len(v["cases"]))
    assert grid["thresholds"] == {"min_cosine": 0.995, "max_norm_error": 0.05, "top1_tie": 0.02}
    assert grid["measured"]["min_cosine"] == v["min_cosine"]


def test_version_is_pyprojects_and_changelog_names_it():
    """One version: pyproject.toml's, read at run time, with a CHANGELOG section for its release."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    # a regex, not tomllib: the legacy leg runs Python 3.10
    version = re.search(r'^version = "([^"]+)"', (root / "pyproject.toml").read_text(), re.M)[1]
    assert hts.__version__ == version, "reinstall (pip install -e .): the installed metadata is stale"
    release = re.match(r"\d+\.\d+\.\d+", version)[0]
    assert re.search(rf"^## {re.escape(release)} ", (root / "CHANGELOG.md").read_text(), re.M), (
        f"CHANGELOG.md has no section for {release}")


def test_bench_silences_the_profilers_usdt_lines(monkeypatch, tmp_path, capsys):
    """kineto prints `USDT: ... profiler_start` at each torch.profiler run unless KINETO_LOG_LEVEL is above 5."""
    from hf_torchscript import bench

    seen = {}

    def fake_benchmark(model, **kw):
        seen["level"] = os.environ.get("KINETO_LOG_LEVEL")
        raise hts.OptionError("stop here")

    monkeypatch.delenv("KINETO_LOG_LEVEL", raising=False)
    monkeypatch.setattr(bench, "benchmark", fake_benchmark)
    assert main(["bench", str(tmp_path), "--out", str(tmp_path / "b")]) == 1
    assert seen == {"level": "6"}
    code = textwrap.dedent("""
        import os, sys, torch
        if sys.argv[1] == "quiet":
            os.environ["KINETO_LOG_LEVEL"] = "6"
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]):
            torch.ones(3) + 1
    """)
    env = {k: v for k, v in os.environ.items() if k != "KINETO_LOG_LEVEL"}
    err = {m: subprocess.run([sys.executable, "-c", code, m], capture_output=True, text=True, env=env, timeout=120,
                             check=False).stderr for m in ("loud", "quiet")}
    assert "USDT" not in err["quiet"], err["quiet"]
    if _torch_at_least(2, 13):  # torch 2.13's kineto: the lines are real without the setting (2.9's prints none)
        assert "USDT" in err["loud"], err["loud"]
