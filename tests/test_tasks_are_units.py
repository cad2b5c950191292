"""A task is one unit: no module outside ``tasks/`` names a task.

Everything about a task (outputs, text pre/post-processing, JSON and summary, text check, map columns,
serving flags) lives in its module under ``src/hf_torchscript/tasks/``; the other modules ask the
registry. This scans the package source for task names in string literals (docstrings aside): a new
``if task == "..."`` or name-keyed dict anywhere else fails here. The only exception: the per-architecture
task lists of ``register(...)`` calls in architectures.py, which are the architecture registry's own data.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from hf_torchscript.architectures import DECODER_TASKS, ENCODER_TASKS
from hf_torchscript.options import TASK_NAMES
from hf_torchscript.tasks import TASKS, infer_task

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "hf_torchscript"
# Every name a task has or had; listed here on purpose (not from the registry), so a task the registry
# loses is still looked for.
NAMES = tuple(TASKS) + ("text-generation",)
PATTERN = re.compile(r"(?<![\w-])(" + "|".join(re.escape(n) for n in NAMES) + r")(?![\w-])")


def _docstrings(tree) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def _register_calls(tree) -> set[int]:
    """Constants inside ``register(...)`` calls: the architecture registry's per-model task lists."""
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "register":
            ids |= {id(n) for n in ast.walk(node) if isinstance(n, ast.Constant)}
    return ids


def task_names_outside_tasks(package: Path = PACKAGE) -> list[str]:
    found = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package)
        if rel.parts[0] == "tasks":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _docstrings(tree) | (_register_calls(tree) if rel.as_posix() == "architectures.py" else set())
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
                for m in PATTERN.finditer(node.value):
                    found.append(f"{rel}:{node.lineno}: {m.group(1)!r} in {node.value[:60]!r}")
    return found


def test_no_module_outside_tasks_names_a_task():
    found = task_names_outside_tasks()
    assert not found, ("task names outside tasks/ (give the task a field or hook in tasks/base.Task and ask the "
                       "registry instead):\n" + "\n".join(found))


def test_the_scan_finds_a_task_name(tmp_path):
    """The scan is not vacuous: a task name compared or written in a message outside tasks/ is found;
    docstrings, tasks/ itself and architectures.py's register() lists are not."""
    pkg = tmp_path / "hf_torchscript"
    (pkg / "tasks").mkdir(parents=True)
    (pkg / "tasks" / "fill_mask.py").write_text('NAME = "fill-mask"\n')
    (pkg / "architectures.py").write_text('register("t5", tasks=("seq2seq-lm",))\nX = ("causal-lm",)\n')
    (pkg / "display.py").write_text('"""Shows fill-mask results."""\nif task == "fill-mask":\n'
                                    '    raise ValueError(f"{x} is not a question-answering artifact")\n')
    assert task_names_outside_tasks(pkg) == [
        "architectures.py:2: 'causal-lm' in 'causal-lm'",
        "display.py:2: 'fill-mask' in 'fill-mask'",
        "display.py:3: 'question-answering' in ' is not a question-answering artifact'",
    ]


def test_task_names_are_listed_once():
    """options and architectures derive their lists from the registry, in the registry's order."""
    assert TASK_NAMES == tuple(TASKS)
    assert ENCODER_TASKS == tuple(n for n, t in TASKS.items() if t.encoder)
    assert set(DECODER_TASKS) == {n for n, t in TASKS.items() if t.decoder_order is not None}
    for name, task in TASKS.items():
        assert task.name == name
        for suffix in task.suffixes:
            assert infer_task([f"SomeModel{suffix}"]) == name
