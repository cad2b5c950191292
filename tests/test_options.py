"""One source of truth for options: ExportOptions' fields are the API keywords and the CLI flags."""

from __future__ import annotations

import argparse
import dataclasses
import inspect

import pytest

import hf_torchscript as hts
from hf_torchscript.cli import build_parser
from hf_torchscript.options import ExportOptions, flag


def _flags(command: str) -> set[str]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser = sub.choices[command]
    return {s for a in parser._actions for s in a.option_strings if s.startswith("--")} - {"--help"}


# Flags of the command that are not export options (where the artifact goes, whether to replace it, the
# progress switch every command spells -q/--quiet, with --no-progress as its hidden alias).
NOT_OPTIONS = {"export": {"--force", "--quiet", "--no-progress"}, "validate": {"--model", "--quiet", "--no-progress"}}


@pytest.mark.parametrize("command", ["export", "validate"])
def test_every_option_field_has_a_flag_and_every_flag_a_field(command):
    fields = {flag(f.name) for f in ExportOptions.fields(command)}
    flags = _flags(command) - NOT_OPTIONS[command]
    assert fields - flags == set(), f"ExportOptions fields without a {command} flag"
    assert flags - fields == set(), f"{command} flags without an ExportOptions field"


def test_cli_defaults_and_choices_come_from_the_fields():
    a = build_parser().parse_args(["export", "m", "o"])
    for f in ExportOptions.fields("export"):
        assert getattr(a, f.name) == f.default, f.name
    a = build_parser().parse_args(["export", "m", "o", "--buckets", "16,32", "--compiler-args", "--optlevel 1"])
    assert a.buckets == (16, 32) and a.compiler_args == ("--optlevel", "1")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["export", "m", "o", "--shapes", "elastic"])


def test_validate_flags_default_to_the_recorded_values():
    a = build_parser().parse_args(["validate", "out", "--model", "m"])
    assert a.atol is None and a.rtol is None and a.allow_pickle is None


def test_public_export_signature_lists_every_option_keyword_only():
    params = inspect.signature(hts.export).parameters
    for f in dataclasses.fields(ExportOptions):
        assert params[f.name].kind is inspect.Parameter.KEYWORD_ONLY and params[f.name].default == f.default
    assert "batch_size:" in hts.export.__doc__ and "Raises:" in hts.export.__doc__
    # **unknown only turns a misspelt keyword into a one-line "did you mean" OptionError (tests/test_faults.py)
    assert list(inspect.signature(hts.load).parameters) == ["directory", "verify", "truncation", "unknown"]
    assert "atol" in inspect.signature(hts.validate).parameters


@pytest.mark.parametrize("kwargs,message", [
    ({"batch_size": "2"}, "option batch_size takes an int, got str '2'"),
    ({"buckets": [16, "a"]}, "option buckets takes a list of int, got 'a' in [16, 'a']"),
    ({"buckets": "16,32"}, "option buckets takes a list of int, got str '16,32' (the CLI splits"),
    ({"atol": "1e-3"}, "option atol takes a float, got str"),
    ({"optimize": 1}, "option optimize takes a bool or 'auto', got int 1"),
    ({"atol": float("inf")}, "atol must be a finite number >= 0, got inf"),
    ({"rtol": float("nan")}, "rtol must be a finite number >= 0, got nan"),
    ({"atol": -1.0}, "atol must be a finite number >= 0, got -1.0"),
    ({"shapes": None}, "option shapes must not be None"),
])
def test_wrong_types_name_the_option_and_the_type(kwargs, message):
    with pytest.raises(hts.OptionError) as e:
        ExportOptions(**kwargs)
    assert message in str(e.value)


def test_lists_become_tuples_and_ints_floats():
    o = ExportOptions(buckets=[16, 32], atol=0)
    assert o.buckets == (16, 32) and isinstance(o.atol, float)


def test_no_process_wide_side_effects(tiny_model_dir, tmp_path):
    """Importing and exporting leaves HF_HUB_OFFLINE and transformers' logging as they were."""
    import subprocess
    import sys

    code = (
        "import os, sys\n"
        "os.environ.pop('HF_HUB_OFFLINE', None); os.environ.pop('TRANSFORMERS_OFFLINE', None)\n"
        "import transformers\n"
        "log = transformers.logging\n"
        "level, bars = log.get_verbosity(), log.is_progress_bar_enabled()\n"
        "import hf_torchscript as hts\n"
        "hts.export(sys.argv[1], sys.argv[2])\n"
        "assert 'HF_HUB_OFFLINE' not in os.environ and 'TRANSFORMERS_NO_ADVISORY_WARNINGS' not in os.environ\n"
        "assert (log.get_verbosity(), log.is_progress_bar_enabled()) == (level, bars), (log.get_verbosity(), level)\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    proc = subprocess.run([sys.executable, "-c", code, str(tiny_model_dir("bert")), str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
