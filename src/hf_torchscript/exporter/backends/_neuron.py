"""What the two AWS Neuron backends share: lazy SDK import, compiler arguments, device detection.

Neither SDK is on PyPI (both come from the Neuron pip repository) and each pins its own torch,
so nothing here is imported until a Neuron backend is asked for.
"""

from __future__ import annotations

import glob
import importlib
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from ...errors import BackendUnavailableError, OptionError, option

# --auto-cast MODE[:TYPE]. Modes are neuronx-cc's `--auto-cast` values (Neuron Compiler CLI
# Reference Guide (neuronx-cc)); types its `--auto-cast-type` values. neuron-cc (Inf1) spells the
# same choices as `--fast-math` values (Neuron compiler CLI Reference Guide (neuron-cc)) and its
# hardware has no tf32/fp8 (Mixed precision and performance-accuracy tuning (neuron-cc)).
AUTO_CAST_MODES = ("none", "matmult", "all")
AUTO_CAST_TYPES = {"neuronx": ("bf16", "fp16", "tf32", "fp8_e4m3"), "neuron": ("bf16", "fp16")}


@dataclass(frozen=True)
class SDK:
    backend: str
    module: str  # what we import
    package: str  # what pip installs
    compiler: str
    instances: str
    torch_pin: str
    setup_guide: str


NEURONX = SDK(
    backend="neuronx",
    module="torch_neuronx",
    package="torch-neuronx",
    compiler="neuronx-cc",
    instances="Inf2, Trn1 and Trn2",
    torch_pin="torch-neuronx pins its own torch (2.9 for the PyTorch/XLA-based releases that provide "
    "torch_neuronx.trace), so install it in its own virtual environment",
    setup_guide="AWS Neuron SDK documentation, Setup Guide for torch-neuronx",
)
NEURON = SDK(
    backend="neuron",
    module="torch_neuron",
    package="torch-neuron",
    compiler="neuron-cc",
    instances="Inf1",
    torch_pin="torch-neuron pins its own torch (1.13 at most; it does not run on torch 2.x), so install it in "
    "its own virtual environment",
    setup_guide="AWS Neuron SDK documentation, Setup Guide for torch-neuron (Inf1)",
)


def unavailable(sdk: SDK, cause: BaseException | None = None) -> BackendUnavailableError:
    why = f" ({type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''})" if cause else ""
    return BackendUnavailableError(
        f"backend {sdk.backend!r} needs the AWS Neuron SDK package {sdk.package} (module {sdk.module}), which is not "
        f"importable here{why}; it compiles for {sdk.instances} instances and is not on PyPI: {sdk.torch_pin}. "
        f"Follow the {sdk.setup_guide}, or use {option('backend', 'torchscript')}"
    )


def import_neuronx():
    """Import torch_neuronx or raise BackendUnavailableError."""
    try:
        return importlib.import_module(NEURONX.module)
    except ImportError as e:
        raise unavailable(NEURONX, e) from None


def import_torch_neuron():
    """Return the ``torch.neuron`` namespace (Inf1) or raise BackendUnavailableError."""
    import torch

    try:
        # The documented entry point: `import torch_neuron` registers `torch.neuron`.
        importlib.import_module(NEURON.module)
    except ImportError as e:
        cause = e
    else:
        cause = None
    ns = getattr(torch, "neuron", None) or sys.modules.get("torch.neuron")
    if ns is not None and hasattr(ns, "trace"):
        return ns
    raise unavailable(NEURON, cause)


def sdk_version(sdk: SDK, module) -> str | None:
    version = getattr(module, "__version__", None)
    if version:
        return str(version)
    try:
        from importlib.metadata import version as dist_version

        return dist_version(sdk.package)
    except Exception:
        return None


def device_paths() -> list[str]:
    """Neuron devices the driver exposes (/dev/neuron0, /dev/neuron1, ...); empty off an Inf/Trn instance."""
    return sorted(glob.glob("/dev/neuron[0-9]*"))


def device_present() -> bool:
    # Compiling needs no device; running the compiled module does. The Neuron driver exposes each
    # device as /dev/neuronN (the containers guide passes them with `docker run --device=/dev/neuron0`).
    return bool(device_paths())


def parse_auto_cast(value: str, backend: str) -> tuple[str, str | None]:
    """'matmult' or 'all:fp16' -> (mode, type or None); raises OptionError naming the valid values."""
    mode, _, kind = value.partition(":")
    types = AUTO_CAST_TYPES[backend]
    if mode not in AUTO_CAST_MODES or (kind and kind not in types) or (mode == "none" and kind):
        raise OptionError(
            f"{option('auto_cast', value)} is not valid for backend {backend}: use MODE or MODE:TYPE with MODE one of "
            f"{', '.join(AUTO_CAST_MODES)} and TYPE one of {', '.join(types)} (e.g. {option('auto_cast', 'matmult:bf16')})"
        )
    return mode, kind or None


def _given(args: list[str], *flags: str) -> bool:
    return any(a == f or a.startswith(f + "=") for a in args for f in flags)


def neuronx_compiler_args(options) -> list[str]:
    """neuronx-cc arguments: the user's, then --auto-cast; explicit `--auto-cast none` by default.

    The compiler's default cast has changed between releases (older ones cast FP32 matmuls to
    BF16); stating `none` keeps the fp32 numbers the validation grid compares against.
    """
    args = list(options.compiler_args)
    if options.auto_cast is not None:
        if _given(args, "--auto-cast", "--auto-cast-type"):
            raise OptionError(f"--auto-cast is also given inside {option('compiler_args')}; give it once")
        mode, kind = parse_auto_cast(options.auto_cast, "neuronx")
        args += ["--auto-cast", mode] + (["--auto-cast-type", kind] if kind else [])
    elif not _given(args, "--auto-cast"):
        args += ["--auto-cast", "none"]
    return args


_FAST_MATH = {
    ("none", None): "none",
    ("matmult", None): "fp32-cast-matmult",
    ("matmult", "bf16"): "fp32-cast-matmult-bf16",
    ("matmult", "fp16"): "fp32-cast-matmult-fp16",
    ("all", None): "fp32-cast-all",
    ("all", "bf16"): "fp32-cast-all",
    ("all", "fp16"): "fp32-cast-all-fp16",
}


def neuron_compiler_args(options) -> list[str]:
    """neuron-cc arguments: the user's, then --fast-math; `--fast-math none` by default.

    neuron-cc's default (`all`) casts every FP32 operator to BF16; `none` is its most accurate
    setting (matmuls still run in BF16 on Inf1 hardware).
    """
    args = list(options.compiler_args)
    if options.auto_cast is not None:
        if _given(args, "--fast-math", "--fp32-cast"):
            raise OptionError(f"{option('auto_cast')} is also given inside {option('compiler_args')} (--fast-math/--fp32-cast); "
                              "give it once")
        args += ["--fast-math", _FAST_MATH[parse_auto_cast(options.auto_cast, "neuron")]]
    elif not _given(args, "--fast-math", "--fp32-cast"):
        args += ["--fast-math", "none"]
    return args


def compiler_args_for(options) -> list[str]:
    """The compiler arguments the options' Neuron backend will pass."""
    return (neuronx_compiler_args if options.backend == "neuronx" else neuron_compiler_args)(options)


def workdir_for(options, example_inputs) -> str | None:
    """One compiler work directory per compiled shape, under --compiler-workdir (None: the SDK's default)."""
    base = getattr(options, "compiler_workdir", None)
    if not base:
        return None
    shape = tuple(example_inputs[0].shape)
    name = "shape_" + "x".join(str(d) for d in shape)
    path = Path(base) / name
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def describe(sdk: SDK, module, options, compiler_args: list[str], **extra) -> dict:
    return {
        "sdk": sdk.package,
        "sdk_version": sdk_version(sdk, module),
        "compiler": sdk.compiler,
        "instances": sdk.instances,
        "compiler_args": compiler_args,
        "compiler_args_text": shlex.join(compiler_args),
        "auto_cast": options.auto_cast,
        "dynamic_batch": bool(options.dynamic_batch),
        **extra,
    }
