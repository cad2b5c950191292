"""What CPU this process runs on: its model and the instruction sets that decide which artifact is fast.

Read from ``/proc/cpuinfo`` (Linux) without importing torch; torch's own view
(``torch.backends.cpu.get_cpu_capability()``: the kernels ATen dispatches to) is added when torch is
already imported. The flags that matter here, measured (bench/RESULTS.md, ../shared/notes/performance.md):

- bf16 is fast only with ``avx512_bf16`` or ``amx_bf16``: on a Xeon with AMX the bf16 export ran
  0.25-0.33x of eager fp32; on an AVX2-only AMD EPYC, where bf16 is emulated, 2.2-7.2x *slower*.
- int8 dot products: ``avx512_vnni`` / ``avx_vnni`` / ``amx_int8``.
- AOTInductor compiles a ``model.pt2`` for one vector ISA (``AVX2``, ``AVX512``, ``AVX512 AVX512_VNNI``,
  ``... AMX_TILE``); run on a CPU without it, its kernels die with SIGILL, so loading checks first.

Used by the manifest writer (the ``cpu`` block), the export warnings, ``--optimize auto`` and the loaders.
"""

from __future__ import annotations

import os
import platform
import sys
import warnings
from functools import lru_cache

CPUINFO = "/proc/cpuinfo"

# The ISA flags worth recording (Linux /proc/cpuinfo names; aarch64 "Features" names at the end).
RELEVANT_FLAGS = (
    "avx", "avx2", "fma", "f16c",
    "avx512f", "avx512dq", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16",
    "avx_vnni", "amx_tile", "amx_bf16", "amx_int8", "amx_fp16",
    "asimd", "sve", "bf16", "i8mm",
)
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")  # bf16 "bf16" is aarch64's FEAT_BF16
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "i8mm")

# AOTInductor's vector ISA names (torch._inductor.cpu_vec_isa, upper-cased into the package metadata
# AOTI_CPU_ISA) -> the /proc/cpuinfo flags its compiler flags (-mavx2 -mfma ..., -mavx512f ...) need.
ISA_FLAGS = {
    "AVX2": ("avx2", "fma", "f16c"),
    "AVX512": ("avx512f", "avx512dq", "avx512bw", "avx512vl", "fma"),
    "AVX512_VNNI": ("avx512_vnni",),
    "AMX_TILE": ("amx_tile", "amx_bf16", "amx_int8"),
}

# What was measured, for the warnings (one run each, quiet, BERT-base, ratio to eager fp32 in the same rounds).
BF16_MEASURED = ("measured on an AVX2-only AMD EPYC (no bf16 instructions): the bfloat16 export ran 2.2-7.2x "
                 "slower than eager float32 (BERT-base, 1x16..1x512); with AMX it ran 0.25-0.33x (bench/RESULTS.md)")
BF16_GENERATION_MEASURED = ("measured on an AVX2-only AMD EPYC (bench/generation.py, a 4-layer llama): bfloat16 decode "
                            "ran 1.3-1.4x faster than the float32 artifact (one-row GEMMs are memory-bound), prefill "
                            "2.8-5.4x slower (bf16 GEMMs are emulated)")
INT8_MEASURED = ("the int8 speed-up measured here (0.44x of eager float32 at 8x128, bench/RESULTS.md) was on a "
                 "CPU with VNNI/AMX; without them it was not measured")
INT8_ATEN_MEASURED = ("its int8 GEMM (aten::_int_mm) ran 40x slower than a float32 matmul of the same shape on an "
                      "AVX2-only AMD EPYC (512x384 @ 384x1536)")


class CpuWarning(UserWarning):
    """An export option is slow on this CPU (it lacks the instructions that make it fast)."""


def parse_cpuinfo(text: str) -> dict:
    """``{"model": str | None, "flags": set}`` from the text of /proc/cpuinfo (x86 ``flags``, aarch64 ``Features``)."""
    model, flags = None, set()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        if key in ("model name", "cpu model", "hardware") and model is None and value.strip():
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return {"model": model, "flags": flags}


@lru_cache(maxsize=1)
def _host() -> tuple[str | None, frozenset]:
    try:
        with open(CPUINFO, encoding="utf-8", errors="replace") as f:
            info = parse_cpuinfo(f.read())
    except OSError:  # not Linux, or /proc not mounted: the model from platform, flags unknown
        return (platform.processor() or None), frozenset()
    return info["model"] or platform.processor() or None, frozenset(info["flags"])


def flags() -> frozenset:
    """Every ISA flag this CPU reports (empty where /proc/cpuinfo cannot be read)."""
    return _host()[1]


def known() -> bool:
    """Whether the CPU's flags could be read at all (a check is skipped, not failed, where they could not)."""
    return bool(_host()[1])


def capability() -> str | None:
    """torch's dispatch level (``default``, ``avx2``, ``avx512``...), only if torch is already imported."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        return str(torch.backends.cpu.get_cpu_capability()).lower()
    except Exception:  # noqa: BLE001 - old torch, or a build without the call
        return None


def describe(extra_flags=()) -> dict:
    """The manifest's ``cpu`` block: where the artifact was made (model, ISA flags, torch's capability)."""
    model, all_flags = _host()
    return {
        "model": model,
        "machine": platform.machine(),
        "capability": capability(),
        "flags": sorted(f for f in all_flags if f in RELEVANT_FLAGS or f in extra_flags),
        "cores": os.cpu_count(),
    }


def has_bf16(cpu_flags=None) -> bool:
    """bf16 instructions (AVX512-BF16, AMX-BF16, aarch64 BF16): without them bf16 is emulated and slow."""
    f = flags() if cpu_flags is None else set(cpu_flags)
    return any(x in f for x in BF16_FLAGS)


def has_int8_dot(cpu_flags=None) -> bool:
    """int8 dot-product instructions (VNNI, AMX-INT8, aarch64 I8MM)."""
    f = flags() if cpu_flags is None else set(cpu_flags)
    return any(x in f for x in INT8_DOT_FLAGS)


def isa_flags(isa: str | None) -> list[str]:
    """The /proc/cpuinfo flags an AOTInductor ISA string (``"AVX512 AVX512_VNNI"``) needs; [] if unknown."""
    out: list[str] = []
    for word in (isa or "").upper().split():
        for f in ISA_FLAGS.get(word, ()):
            if f not in out:
                out.append(f)
    return out


def missing(required, cpu_flags=None) -> list[str]:
    """The flags of ``required`` this CPU lacks; [] when the CPU's flags are unknown (nothing to check against)."""
    f = flags() if cpu_flags is None else set(cpu_flags)
    if not f:
        return []
    return [x for x in required if x not in f]


def slow_options(dtype: str, quantize: str | None, backend: str = "torchscript", cpu_flags=None,
                 decoding: bool = False) -> list[str]:
    """Why the requested precision is slow on this CPU, one sentence each ([] when nothing is known to be slow).

    ``decoding``: the task generates token by token (a KV cache), where bf16 behaves differently."""
    f = flags() if cpu_flags is None else set(cpu_flags)
    if not f or backend not in ("torchscript", "aoti"):
        return []  # unknown CPU, or a Neuron backend (the accelerator computes, not the host CPU)
    notes = []
    if dtype == "bfloat16" and not has_bf16(f) and decoding:
        notes.append("bfloat16 text generation on a CPU without bf16 instructions (no avx512_bf16 or amx_bf16): "
                     f"{BF16_GENERATION_MEASURED}; for long prompts export float32")
    elif dtype == "bfloat16" and not has_bf16(f):
        notes.append("bfloat16 on a CPU without bf16 instructions (no avx512_bf16 or amx_bf16: bf16 is emulated): "
                     f"{BF16_MEASURED}; export float32, or use --optimize auto to measure it here")
    if quantize == "dynamic-int8" and not has_int8_dot(f):
        notes.append("int8 on a CPU without int8 dot-product instructions (no avx512_vnni, avx_vnni or amx_int8): "
                     f"{INT8_MEASURED}; use --optimize auto to measure it here")
    if quantize == "dynamic-int8-aten" and not has_int8_dot(f):
        notes.append("dynamic-int8-aten on a CPU without int8 dot-product instructions (no avx512_vnni, avx_vnni or "
                     f"amx_int8): {INT8_ATEN_MEASURED}; export float32 (it is smaller, not faster, here)")
    return notes


def warn_slow(notes, progress=None) -> None:
    """Each note as a CpuWarning (callers and the CLI see it) and a progress step (the library never prints)."""
    from ..progress import report

    for note in notes:
        report(progress, "warning", note)
        warnings.warn(note, CpuWarning, stacklevel=_caller_level())


def _caller_level() -> int:
    """The stacklevel of the first frame outside this package (and the decorators' contextlib): the user's call."""
    import contextlib

    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    frame, level = sys._getframe(1), 1  # warn_slow's frame is level 1
    while frame is not None and (frame.f_code.co_filename.startswith(package)
                                 or frame.f_code.co_filename == contextlib.__file__):
        frame, level = frame.f_back, level + 1
    return level


def check_runs_here(manifest: dict, path) -> None:
    """Raise ArtifactError (one line) if the artifact needs instructions this CPU lacks: a compiled
    model.pt2 would otherwise die with SIGILL (an illegal instruction kills the process, no exception)."""
    isa = (manifest.get("aoti") or {}).get("cpu_isa")
    need = list((manifest.get("cpu") or {}).get("requires") or []) or isa_flags(isa)
    lacking = missing(need)
    if lacking:
        from ..errors import ArtifactError

        made = (manifest.get("cpu") or {}).get("model") or "another CPU"
        raise ArtifactError(
            f"{path} was compiled for CPU ISA {isa or ', '.join(need)} (on {made}) but this CPU "
            f"({_host()[0] or 'unknown'}) lacks {', '.join(lacking)}; running it would crash with an illegal "
            "instruction: re-export it on this machine (or on one with this CPU's ISA)"
        )
