"""Every command in README.md and docs/*.md runs as written.

The fenced ```bash / ```sh / ```python blocks of each document run in order, in one fresh folder
per document that looks like a checkout (cpp/, src/, tests/, scripts/, bench/ and pyproject.toml
are symlinks to this repository, read only in practice: what the commands write, such as out/ or
build/, lands in the folder). Shell blocks run under `bash -e -o pipefail`; Python blocks are fed to
`python -`; both with this virtual environment's bin/ first on PATH, HF_HUB_OFFLINE=1,
PIP_NO_INDEX=1 (nothing is downloaded) and HOME inside the folder (a documented `~/...` or
`pip config set` never touches the real home).

A block that cannot run here says so in the document, on the line right before its fence:

    <!-- docs-test: skip (needs an Inf2 instance) -->     not run; the reason is listed (pytest -rs)
    <!-- docs-test: slow (exports a real model) -->       runs, marked slow (CI runs slow tests)

A block without a marker runs in the quick suite, so a new document's examples must either run or
say why not. Other fences (```cpp, ```json, plain ``` for output) are not run.

Install lines. The README's two commands start by creating a venv and installing into it, which
this test must not repeat (it runs inside that venv, minutes and gigabytes later). Each install
step of a `&&` chain is replaced by the check that what it installs is here, and the rest of the
chain runs as written:

    python3.11 -m venv .venv           -> this interpreter runs in a virtual environment
    . .venv/bin/activate               -> (nothing: the venv's bin/ is already first on PATH)
    pip install REQ...                 -> every REQ is installed at a version the specifier allows
    pip install -e ".[EXTRAS]" REQ...  -> the same for pyproject's dependencies, those extras and REQs,
                                          and hf_torchscript imports from this checkout's src/
    python -m pytest -q                -> python -m pytest -q --collect-only (the suite collects; this
                                          test is part of it, so running it would recurse)

Only these exact steps are mapped (anything else at the start of a chain fails the test), and the
README's test command must be the line .ci/run runs, byte for byte.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
RUN_LANGUAGES = {"bash": "bash", "sh": "bash", "shell": "bash", "python": "python", "py": "python"}
MARKER = re.compile(r"^<!--\s*docs-test:\s*(skip|slow)\s*(?:\((.*)\))?\s*-->\s*$")
# What the symlinked "checkout" holds; everything else a command writes stays in the temp folder.
CHECKOUT = ("cpp", "src", "tests", "scripts", "bench", "pyproject.toml")
TIMEOUT = 1800


@dataclass
class Block:
    doc: Path
    line: int  # of the opening fence, 1-based
    language: str  # "bash" or "python"
    code: str
    mark: str | None  # None, "skip" or "slow"
    reason: str

    @property
    def id(self) -> str:
        return f"{self.doc.relative_to(REPO)}:{self.line}"


def blocks(doc: Path) -> list[Block]:
    """The runnable fenced blocks of ``doc`` with their markers; a marker before another fence is an error."""
    lines = doc.read_text().splitlines()
    out, i = [], 0
    while i < len(lines):
        m = re.match(r"^(\s*)```(\S*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        lang, start = m.group(2).lower(), i
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
        assert end is not None, f"{doc}:{i + 1}: fence never closed"
        prev = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marker = MARKER.match(prev.strip())
        if lang in RUN_LANGUAGES:
            out.append(Block(doc, start + 1, RUN_LANGUAGES[lang], "\n".join(lines[start + 1 : end]) + "\n",
                             marker.group(1) if marker else None, (marker.group(2) or "").strip() if marker else ""))
        else:
            assert marker is None, f"{doc}:{start + 1}: a docs-test marker before a ```{lang} block, which never runs"
        if marker and marker.group(1) == "skip":
            assert marker.group(2), f"{doc}:{start + 1}: a skipped block must say why: <!-- docs-test: skip (why) -->"
        i = end + 1
    return out


ALL = [b for doc in DOCS for b in blocks(doc)]


def _param(b: Block):
    marks = [pytest.mark.slow] if b.mark == "slow" else []
    return pytest.param(b, id=b.id, marks=marks)


# -- install lines: the cheaper equivalent, explained in the module docstring ----------------------------


def _requirements_hold(requirements: list[str]) -> None:
    from packaging.requirements import Requirement

    for text in requirements:
        req = Requirement(text)
        try:
            have = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            raise AssertionError(f"{text!r} is not installed in {sys.prefix}") from None
        # A local version label (2.13.0+cpu) satisfies ==2.13.0, as pip decides it.
        assert req.specifier.contains(have, prereleases=True), f"{req.name} {have} does not satisfy {text!r}"


def _pyproject_requirements(extras: list[str]) -> list[str]:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in extras:
        assert extra in project["optional-dependencies"], f"pyproject has no extra {extra!r}"
        reqs += project["optional-dependencies"][extra]
    return reqs


def _install_step(step: str) -> bool:
    """Check what one install step of a chain would install; False if ``step`` is not an install step."""
    if not re.match(r"\s*(python3\.11 -m venv |\. |pip install )", step):
        return False
    words = shlex.split(step, comments=True)
    if words[:3] == ["python3.11", "-m", "venv"]:
        assert sys.prefix != sys.base_prefix, "these tests run outside a virtual environment"
        return True
    if words[:1] == ["."] and words[1:2] and words[1].endswith("bin/activate"):
        return True
    if words[:2] == ["pip", "install"]:
        args = words[2:]
        if args[:1] == ["-e"]:
            m = re.fullmatch(r"\.(?:\[([\w,-]+)\])?", args[1])
            assert m, f"unexpected editable install {args[1]!r}"
            _requirements_hold(_pyproject_requirements((m.group(1) or "").split(",") if m.group(1) else []))
            import hf_torchscript

            assert Path(hf_torchscript.__file__).resolve().is_relative_to(REPO / "src"), (
                f"hf_torchscript comes from {hf_torchscript.__file__}, not this checkout")
            args = args[2:]
        assert all(not a.startswith("-") for a in args), f"unexpected pip flags in {step!r}"
        _requirements_hold(args)
        return True
    return False


def cheaper_equivalent(code: str) -> str:
    """The block with its install steps checked here and dropped, and the test suite collected, not run."""
    out = []
    for line in code.splitlines():
        steps = line.split(" && ")
        while steps and _install_step(steps[0]):
            steps.pop(0)
        assert not any(s.split()[:2] in (["pip", "install"], ["python3.11", "-m"]) for s in steps), (
            f"an install step this test does not map: {line!r}")
        steps = [s + " --collect-only" if s.strip() == "python -m pytest -q" else s for s in steps]
        out.append(" && ".join(steps))
    return "\n".join(out) + "\n"


# -- running ---------------------------------------------------------------------------------------------

_FOLDERS: dict[Path, Path] = {}
_FAILED: set[Path] = set()


def _folder(doc: Path, tmp_path_factory) -> Path:
    if doc not in _FOLDERS:
        d = tmp_path_factory.mktemp("docs-" + doc.stem)
        for name in CHECKOUT:
            if (REPO / name).exists():
                (d / name).symlink_to(REPO / name)
        _FOLDERS[doc] = d
    return _FOLDERS[doc]


def _env(folder: Path) -> dict:
    # HOME and XDG_CONFIG_HOME point into the folder: a documented `~/venv` or `pip config set` lands
    # there, not in the home of whoever runs the tests. PIP_NO_INDEX: a documented `pip install`
    # may find its package already installed, never download it.
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
               PIP_NO_INDEX="1", HOME=str(folder / "home"), XDG_CONFIG_HOME=str(folder / "home" / ".config"))
    (folder / "home").mkdir(exist_ok=True)
    env.pop("HF_TORCHSCRIPT_DEBUG", None)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


@pytest.mark.parametrize("block", [_param(b) for b in ALL])
def test_doc_block_runs_as_written(block: Block, tmp_path_factory):
    if block.mark == "skip":
        pytest.skip(f"{block.id}: {block.reason}")
    if block.doc in _FAILED:
        pytest.fail(f"an earlier block of {block.doc.name} failed; this one depends on what it writes")
    cwd = _folder(block.doc, tmp_path_factory)
    code = cheaper_equivalent(block.code) if block.language == "bash" else block.code
    argv = ["bash", "-e", "-o", "pipefail", "-c", code] if block.language == "bash" else [sys.executable, "-"]
    try:
        proc = subprocess.run(argv, input=code if block.language == "python" else None, cwd=cwd, env=_env(cwd),
                              capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        _FAILED.add(block.doc)
        raise
    if proc.returncode != 0:
        _FAILED.add(block.doc)
    assert proc.returncode == 0, (
        f"{block.id} failed (exit {proc.returncode}) in {cwd}:\n{code}\n--- stdout\n{proc.stdout[-3000:]}"
        f"\n--- stderr\n{proc.stderr[-3000:]}")


# -- the documents themselves ----------------------------------------------------------------------------


def test_every_document_has_its_blocks_found():
    """The extraction itself: a known block of the README, with its marker and reason."""
    readme = [b for b in ALL if b.doc.name == "README.md"]
    assert [b.language for b in readme] == ["bash", "bash", "python"]
    assert readme[0].mark == "slow" and "exports all-MiniLM-L6-v2" in readme[0].reason
    assert readme[0].code.startswith("python3.11 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0")


def test_readme_test_command_is_what_ci_runs():
    command = ('python3.11 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && '
               'pip install -e ".[export,test,bench,serve,ray,triton,aoti-int8]" && ruff check . && python -m pytest -q')
    assert command in [b.code.strip() for b in ALL if b.doc.name == "README.md"]
    assert command in [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]


def test_install_lines_map_to_checks():
    code = ('python3.11 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && '
            'pip install -e ".[export,test,bench]" && python -m pytest -q\n')
    if metadata.version("torch").split("+")[0] != "2.13.0":
        pytest.skip("this venv runs another torch than the README pins (the legacy CI leg)")
    assert cheaper_equivalent(code) == "python -m pytest -q --collect-only\n"
    with pytest.raises(AssertionError, match="'surely-not-installed-pkg' is not installed"):
        cheaper_equivalent("pip install surely-not-installed-pkg && echo hi\n")
    with pytest.raises(AssertionError, match="does not satisfy 'torch==0.1'"):
        cheaper_equivalent("pip install torch==0.1\n")
    assert cheaper_equivalent("echo a && pip list\n") == "echo a && pip list\n"  # not at the start: runs
    with pytest.raises(AssertionError, match="an install step this test does not map"):
        cheaper_equivalent("echo a && pip install x\n")


def test_cpp_doc_spells_out_what_cpp_build_runs():
    """docs/cpp.md's raw cmake block is skipped (run after `cpp-build` in the docs folder, whose cpp/ is a
    symlink, cmake sees another source path and rebuilds everything: a minute for nothing), so check it
    here: with its $(python -c ...) parts evaluated, it is the line `cpp-build --print` prints."""
    from hf_torchscript.runtime.cpp import cmake_command

    block = next(b for b in ALL if b.doc.name == "cpp.md" and b.code.lstrip().startswith("cmake -S cpp"))
    assert block.mark == "skip" and "cpp-build --print" in block.reason
    code = block.code
    for expr in re.findall(r"\"\$\(python -c '([^']*)'\)\"", code):
        value = subprocess.run([sys.executable, "-c", expr], capture_output=True, text=True, check=True).stdout.strip()
        assert value, expr
        code = code.replace(f"\"$(python -c '{expr}')\"", value)
    assert "$(" not in code
    assert shlex.split(code.replace("\\\n", " ")) == shlex.split(cmake_command("build/cpp", source="cpp"))


def test_markers_are_checked(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("<!-- docs-test: skip -->\n```bash\nfalse\n```\n")
    with pytest.raises(AssertionError, match="a skipped block must say why"):
        blocks(doc)
    doc.write_text("<!-- docs-test: slow (x) -->\n```json\n{}\n```\n")
    with pytest.raises(AssertionError, match="a docs-test marker before a ```json block"):
        blocks(doc)
    doc.write_text("text\n\n<!-- docs-test: skip (needs an Inf2 instance) -->\n```sh\nneuron-ls\n```\n\n```python\nx = 1\n```\n")
    got = blocks(doc)
    assert [(b.line, b.language, b.mark, b.reason, b.code) for b in got] == [
        (4, "bash", "skip", "needs an Inf2 instance", "neuron-ls\n"), (8, "python", None, "", "x = 1\n")]


# A placeholder left for a number or a table: an ALL_CAPS name alone on a line (outside code fences),
# or the words below. docs/formats.md once shipped the literal line MEASURED_TABLE.
_PLACEHOLDER_LINE = re.compile(r"^\s*[A-Z][A-Z0-9]*(_[A-Z0-9]+)+\s*$")
_PLACEHOLDER_WORDS = re.compile(r"\b(TODO|TBD|FIXME|XXX)\b|not measured yet|<placeholder>", re.I)


def placeholders(text: str) -> list[str]:
    """The lines of a Markdown text that look like placeholders, outside fenced blocks."""
    found, fenced = [], False
    for n, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced and (_PLACEHOLDER_LINE.match(line) or _PLACEHOLDER_WORDS.search(line)):
            found.append(f"{n}: {line.strip()}")
    return found


def test_no_placeholders_in_the_docs():
    assert placeholders("a\nMEASURED_TABLE\nb") == ["2: MEASURED_TABLE"]  # the check itself can fail
    assert placeholders("```\nRAY_ADDRESS\n```\nset `RAY_ADDRESS` first") == []
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        assert placeholders(doc.read_text()) == [], doc.name
