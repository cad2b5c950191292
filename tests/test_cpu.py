"""The CPU facts (runtime/cpu.py): parsed from /proc/cpuinfo text, recorded in manifests, shown by info, and
used to warn about precisions this CPU has no instructions for and to refuse a model.pt2 it cannot run."""

import json
import warnings

import pytest

import hf_torchscript as hts
from hf_torchscript.cli.main import main
from hf_torchscript.errors import ArtifactError
from hf_torchscript.runtime import cpu

AVX2_EPYC = frozenset("fpu sse sse2 avx fma f16c avx2 bmi2".split())
AMX_XEON = frozenset("avx avx2 fma f16c avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_bf16 amx_tile "
                     "amx_bf16 amx_int8 avx_vnni".split())

X86_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse sse2 avx fma f16c avx2 bmi2

processor\t: 1
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse sse2 avx fma f16c avx2 bmi2
"""
ARM_CPUINFO = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid bf16 i8mm sve
CPU implementer\t: 0x41
"""


@pytest.fixture
def fake_cpu(monkeypatch):
    """Pretend to run on a CPU with the given flags (cpu._host is the one place that reads /proc/cpuinfo)."""
    def use(flags, model="Fake CPU"):
        monkeypatch.setattr(cpu, "_host", lambda: (model, frozenset(flags)))
    return use


def test_parse_cpuinfo_x86_and_arm():
    x86 = cpu.parse_cpuinfo(X86_CPUINFO)
    assert x86["model"] == "AMD EPYC 7B13"
    assert {"avx2", "fma", "f16c"} <= x86["flags"] and "avx512f" not in x86["flags"]
    arm = cpu.parse_cpuinfo(ARM_CPUINFO)
    assert {"asimd", "bf16", "i8mm", "sve"} <= arm["flags"]
    assert cpu.has_bf16(arm["flags"]) and cpu.has_int8_dot(arm["flags"])
    assert not cpu.has_bf16(x86["flags"]) and not cpu.has_int8_dot(x86["flags"])
    assert cpu.has_bf16(AMX_XEON) and cpu.has_int8_dot(AMX_XEON)


def test_describe_reads_this_machine_without_torch_and_keeps_only_isa_flags(fake_cpu):
    fake_cpu(AVX2_EPYC | {"sse4_2"}, "AMD EPYC 7B13")
    block = cpu.describe()
    assert block["model"] == "AMD EPYC 7B13"
    assert block["flags"] == ["avx", "avx2", "f16c", "fma"]  # sse4_2, bmi2, fpu: not decisive here
    assert block["capability"] in (None, "default", "avx2", "avx512", "zvector", "vsx", "sve256", "neon")


def test_aoti_isa_strings_map_to_cpuinfo_flags(fake_cpu):
    assert cpu.isa_flags("AVX2") == ["avx2", "fma", "f16c"]
    assert "avx512_vnni" in cpu.isa_flags("AVX512 AVX512_VNNI") and "avx512f" in cpu.isa_flags("AVX512 AVX512_VNNI")
    assert "amx_tile" in cpu.isa_flags("AVX512 AVX512_VNNI AMX_TILE")
    assert cpu.isa_flags(None) == [] and cpu.isa_flags("SOMETHING_NEW") == []
    fake_cpu(AVX2_EPYC)
    assert cpu.missing(cpu.isa_flags("AVX2")) == []
    assert "avx512f" in cpu.missing(cpu.isa_flags("AVX512"))
    fake_cpu(frozenset())  # flags unknown (no /proc/cpuinfo): nothing to refuse on
    assert cpu.missing(["avx512f"]) == []


def test_slow_options_name_the_instruction_set_and_the_measurement():
    (bf16,) = cpu.slow_options("bfloat16", None, cpu_flags=AVX2_EPYC)
    assert "avx512_bf16" in bf16 and "amx_bf16" in bf16 and "2.2-7.2x slower" in bf16
    (gen,) = cpu.slow_options("bfloat16", None, cpu_flags=AVX2_EPYC, decoding=True)
    assert "avx512_bf16" in gen and "decode ran 1.3-1.4x faster" in gen and "prefill 2.8-5.4x slower" in gen
    (int8,) = cpu.slow_options("float32", "dynamic-int8", cpu_flags=AVX2_EPYC)
    assert "avx512_vnni" in int8 and "not measured" in int8
    assert cpu.slow_options("bfloat16", None, cpu_flags=AMX_XEON) == []
    assert cpu.slow_options("float32", "dynamic-int8", cpu_flags=AMX_XEON) == []
    (aten,) = cpu.slow_options("float32", "dynamic-int8-aten", cpu_flags=AVX2_EPYC)
    assert "aten::_int_mm" in aten and "40x slower" in aten
    assert cpu.slow_options("float32", "dynamic-int8-aten", cpu_flags=AMX_XEON) == []
    assert cpu.slow_options("float32", None, cpu_flags=AVX2_EPYC) == []
    assert cpu.slow_options("bfloat16", None, backend="neuronx", cpu_flags=AVX2_EPYC) == []  # the chip computes
    assert cpu.slow_options("bfloat16", None, cpu_flags=frozenset()) == []  # unknown CPU: no guess


def test_pt2_compiled_for_avx512_is_refused_on_avx2_in_one_line_before_torch_loads_it(fake_cpu, tmp_path):
    from hf_torchscript.runtime.pt2 import Pt2Module

    fake_cpu(AVX2_EPYC, "AMD EPYC 7B13")
    manifest = {"shapes": {"strategy": "dynamic", "max_length": 16}, "max_length": 16, "inputs": [], "outputs": [],
                "aoti": {"models": ["model"], "cpu_isa": "AVX512 AVX512_VNNI"},
                "cpu": {"model": "Intel Xeon", "requires": cpu.isa_flags("AVX512 AVX512_VNNI")}}
    # No model.pt2 exists: the check must come first (torch would otherwise map kernels that SIGILL).
    with pytest.raises(ArtifactError) as e:
        Pt2Module(tmp_path / "model.pt2", manifest)
    msg = str(e.value)
    assert "\n" not in msg and "AVX512 AVX512_VNNI" in msg and "avx512f" in msg and "AMD EPYC 7B13" in msg
    assert "re-export" in msg
    # An older manifest without the cpu block: the aoti block's ISA alone is enough.
    del manifest["cpu"]
    with pytest.raises(ArtifactError, match="lacks avx512f"):
        Pt2Module(tmp_path / "model.pt2", manifest)


def test_manifest_records_the_cpu_and_info_shows_it(tiny_artifact, capsys):
    out = tiny_artifact("bert", "feature-extraction")
    m = json.loads((out / "manifest.json").read_text())
    real = cpu.describe()
    assert m["cpu"]["model"] == real["model"] and m["cpu"]["flags"] == real["flags"]
    assert m["cpu"]["requires"] == [] and m["cpu"]["notes"] == []
    assert m["cpu"]["capability"]  # torch was imported while exporting
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"cpu           exported on {real['model']}" in text
    assert "requires    nothing beyond" in text


def test_bf16_export_on_a_cpu_without_bf16_warns_once_through_warnings_progress_and_cli(
        fake_cpu, tiny_model_dir, tmp_path, capsys):
    fake_cpu(AVX2_EPYC, "AMD EPYC 7B13")
    src = tiny_model_dir("bert", "feature-extraction")
    steps = []
    with pytest.warns(cpu.CpuWarning, match="avx512_bf16") as caught:
        hts.export(src, tmp_path / "api", dtype="bfloat16", shapes="dynamic", progress=steps.append)
    assert sum(issubclass(w.category, cpu.CpuWarning) for w in caught) == 1
    assert next(w for w in caught if issubclass(w.category, cpu.CpuWarning)).filename == __file__  # the user's line
    assert [s for s in steps if s.stage == "warning" and "2.2-7.2x" in s.detail]
    m = json.loads((tmp_path / "api" / "manifest.json").read_text())
    assert m["cpu"]["relevant"] == {"avx512_bf16": False, "amx_bf16": False}
    assert len(m["cpu"]["notes"]) == 1 and "avx512_bf16" in m["cpu"]["notes"][0]
    assert main(["info", str(tmp_path / "api")]) == 0
    assert "  warning     bfloat16 on a CPU without bf16 instructions" in capsys.readouterr().out
    # The CLI: one plain "warning:" line on stderr, no Python warning noise.
    assert main(["export", str(src), str(tmp_path / "cli"), "--dtype", "bfloat16", "--shapes", "dynamic", "-q"]) == 0
    err = capsys.readouterr().err
    assert err.count("warning: bfloat16 on a CPU without bf16 instructions") == 1
    assert "CpuWarning" not in err


def test_float32_export_does_not_warn(fake_cpu, tiny_model_dir, tmp_path):
    fake_cpu(AVX2_EPYC)
    with warnings.catch_warnings():
        warnings.simplefilter("error", cpu.CpuWarning)
        hts.export(tiny_model_dir("bert", "feature-extraction"), tmp_path / "o", shapes="dynamic")


def test_info_cpu_lines_for_old_manifests_and_tuning_tables():
    from hf_torchscript.cli.display import cpu_lines

    assert cpu_lines({}) == ["cpu           - (exported before the manifest recorded the CPU)"]
    m = {"cpu": {"model": "AMD EPYC 7B13", "machine": "x86_64", "capability": "avx2", "flags": ["avx2", "fma"],
                 "requires": ["avx512f"], "notes": ["slow here"]},
         "tuning": {"winner": "b", "why": "lowest", "quiet": False, "baseline": "a",
                    "load_average": {"start": [3.5, 2.0, 1.0], "end": [4.0, 2.5, 1.2]},
                    "workload": {"description": "2 texts"},
                    "candidates": [{"name": "a", "median_ms": 10.0, "ratio": 1.0},
                                   {"name": "b", "median_ms": 5.0, "ratio": 0.5},
                                   {"name": "c", "status": "skipped", "reason": "no avx512_bf16"}]}}
    text = "\n".join(cpu_lines(m))
    assert "exported on AMD EPYC 7B13 (x86_64; torch kernels avx2; flags avx2 fma)" in text
    assert "requires    avx512f" in text and "warning     slow here" in text
    assert "3.50/2.00/1.00 at start" in text and "NOT quiet: timings are not evidence" in text
    assert "  * b " in text and "5.00 ms median (0.50x of a)" in text and "skipped: no avx512_bf16" in text
