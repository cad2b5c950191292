"""Build the C++ runner (cpp/) against the libtorch inside the installed torch wheel.

    hf-torchscript cpp-build --print      # the exact cmake commands for this Python's torch
    hf-torchscript cpp-build              # run them; prints the path of hts_run

The paths come from this interpreter: torch.utils.cmake_prefix_path for libtorch, and the
PyPI package ``nlohmann-json`` (or a system nlohmann/json.hpp) for the JSON header.
"""

from __future__ import annotations

import importlib.util
import shlex
import shutil
import subprocess
from pathlib import Path

from ..errors import BuildError

RUNNER = "hts_run"
EXAMPLE = "embed"


def source_dir() -> Path:
    """The cpp/ folder of this checkout (the C++ sources are not inside the Python package)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "cpp" / "CMakeLists.txt").is_file():
            return parent / "cpp"
    raise BuildError(
        "the C++ sources (cpp/CMakeLists.txt) are not next to this hf_torchscript install; clone the "
        "hf-torchscript repository and pass its cpp/ folder with --source"
    )


def torch_prefix_path() -> str:
    """Where the installed torch wheel keeps TorchConfig.cmake (CMAKE_PREFIX_PATH)."""
    import torch.utils

    return torch.utils.cmake_prefix_path


def json_include_dir() -> str | None:
    """The folder holding nlohmann/json.hpp from the PyPI package nlohmann-json, if installed.

    Found without importing the package (its __init__ needs importlib_resources).
    """
    spec = importlib.util.find_spec("nlohmann_json")
    for location in (spec.submodule_search_locations or []) if spec else []:
        include = Path(location) / "include"
        if (include / "nlohmann" / "json.hpp").is_file():
            return str(include)
    return None


def cmake_commands(build_dir, *, source=None, build_type: str = "Release", jobs: int | None = None) -> list[list[str]]:
    """The configure and build command lines (argv lists) for the runner.

    Args:
        build_dir: where cmake writes the build (created if missing).
        source: the cpp/ folder; default: this checkout's.
        build_type: CMAKE_BUILD_TYPE.
        jobs: parallel compile jobs (default: cmake's).

    Returns:
        ``[configure_argv, build_argv]``.

    Raises:
        BuildError: the C++ sources cannot be found.
    """
    src = Path(source) if source is not None else source_dir()
    if not (src / "CMakeLists.txt").is_file():
        raise BuildError(f"{str(src)!r} has no CMakeLists.txt; pass the cpp/ folder of the hf-torchscript repository")
    configure = [
        "cmake", "-S", str(src), "-B", str(build_dir), f"-DCMAKE_BUILD_TYPE={build_type}",
        f"-DCMAKE_PREFIX_PATH={torch_prefix_path()}",
    ]
    include = json_include_dir()
    if include:
        configure.append(f"-DNLOHMANN_JSON_INCLUDE_DIR={include}")
    build = ["cmake", "--build", str(build_dir), "--parallel"] + ([str(jobs)] if jobs else [])
    return [configure, build]


def cmake_command(build_dir, **kwargs) -> str:
    """The commands of :func:`cmake_commands` as one shell line (``configure && build``).

    Example:
        >>> print(cmake_command("build/cpp"))  # doctest: +SKIP
        cmake -S .../cpp -B build/cpp -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH=... && cmake --build ...
    """
    return " && ".join(shlex.join(argv) for argv in cmake_commands(build_dir, **kwargs))


def build_runner(build_dir, *, source=None, jobs: int | None = None, quiet: bool = True) -> Path:
    """Configure and build cpp/ into build_dir; returns the path of the ``hts_run`` binary.

    Re-running on the same build_dir only recompiles what changed.

    Raises:
        BuildError: cmake or a C++ compiler is missing, or the build failed (with its last lines).
    """
    if shutil.which("cmake") is None:
        raise BuildError("cmake is not on PATH; install it (apt-get install cmake g++) to build the C++ runner")
    if shutil.which("c++") is None and shutil.which("g++") is None and shutil.which("clang++") is None:
        raise BuildError("no C++ compiler (c++, g++ or clang++) on PATH; install one (apt-get install g++)")
    build_dir = Path(build_dir)
    for argv in cmake_commands(build_dir, source=source, jobs=jobs):
        proc = subprocess.run(argv, capture_output=quiet, text=True)
        if proc.returncode != 0:
            tail = "\n".join(((proc.stdout or "") + (proc.stderr or "")).strip().splitlines()[-15:])
            raise BuildError(
                f"`{shlex.join(argv)}` failed with exit code {proc.returncode}" + (f":\n{tail}" if tail else "")
            )
    runner = build_dir / RUNNER
    if not runner.is_file():
        raise BuildError(f"the build finished but {runner} is missing; look at the cmake output above")
    return runner
