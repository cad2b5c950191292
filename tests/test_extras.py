"""The serving extras ([serve], [ray], [triton]) install together in any order.

pip resolves each `pip install` on its own: installing [triton] after [ray] may change what [ray] put
there. It did: [ray] alone took protobuf 7 with grpcio-reflection 1.85 (gencode for protobuf >= 7.35),
[triton] then downgraded protobuf to 6.x (tritonclient needs < 7), and `import ray.serve` failed with
protobuf's VersionError. Here pip resolves each extra alone (--dry-run, from nothing); the versions one
extra picked must satisfy every requirement of the other's packages, so a second install changes nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="Python >= 3.11 reads pyproject.toml with tomllib")
packaging = pytest.importorskip("packaging.requirements")
from packaging.requirements import Requirement  # noqa: E402
from packaging.utils import canonicalize_name  # noqa: E402
from packaging.version import Version  # noqa: E402

ROOT = Path(__file__).parents[1]
EXTRAS = ("serve", "ray", "triton")


def _resolve(extra: str, tmp_path: Path) -> dict:
    """{name: {"version", "requires", "extras"}} of what `pip install '.[extra]'` installs from nothing."""
    reqs = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"][extra]
    report = tmp_path / f"{extra}.json"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                        "--report", str(report), *reqs], capture_output=True, text=True, timeout=600, check=False)
    if r.returncode != 0:
        if "NewConnectionError" in r.stderr or "No matching distribution" in r.stderr:
            pytest.skip(f"pip cannot reach a package index here: {r.stderr.strip().splitlines()[-1][:200]}")
        raise AssertionError(f"pip could not resolve [{extra}] ({reqs}):\n{r.stderr[-2000:]}")
    out = {}
    for item in json.loads(report.read_text())["install"]:
        meta = item["metadata"]
        out[canonicalize_name(meta["name"])] = {"version": Version(meta["version"]),
                                                "requires": meta.get("requires_dist") or [],
                                                "extras": set(item.get("requested_extras") or [])}
    return out


@pytest.fixture(scope="module")
def resolved(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("extras")
    return {extra: _resolve(extra, tmp) for extra in EXTRAS}


def _broken(first: dict, second: dict) -> list[str]:
    """Requirements of `second`'s packages (and of what `first` left) that `first`'s versions fail."""
    state = {**second, **first}  # installed first: pip keeps those versions if they satisfy
    bad = []
    for name, pkg in state.items():
        for spec in pkg["requires"]:
            req = Requirement(spec)
            envs = [{"extra": e} for e in pkg["extras"]] or [{"extra": ""}]
            if req.marker is not None and not any(req.marker.evaluate(env) for env in envs):
                continue
            dep = state.get(canonicalize_name(req.name))
            if dep is not None and not req.specifier.contains(dep["version"], prereleases=True):
                bad.append(f"{name} needs {spec}, but {req.name} {dep['version']} is installed")
    return bad


@pytest.mark.slow
@pytest.mark.parametrize("first, second", [(a, b) for a in EXTRAS for b in EXTRAS if a != b])
def test_extras_install_one_after_another(resolved, first, second):
    assert _broken(resolved[first], resolved[second]) == [], (
        f"`pip install '.[{second}]'` after '.[{first}]' would change what [{first}] installed")


@pytest.mark.slow
def test_the_protobuf_clash_is_caught(resolved):
    # The check itself: the old [ray] extra (no protobuf bound) against today's [triton] fails it.
    import copy

    ray = copy.deepcopy(resolved["ray"])
    ray["protobuf"]["version"] = Version("7.36.2")
    assert any("protobuf" in line for line in _broken(ray, resolved["triton"]))
