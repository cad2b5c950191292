"""The package's imports point down the stack (docs/architecture.md): a module imports only from its own layer or
the layers below, lazily or not. The imports that run back up are in ALLOWED_UP, each with a comment saying why."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "src" / "hf_torchscript"

# Lowest first. A module's layer is its first dotted part (a subpackage) or, for a top-level module, its name.
LAYERS = [
    {"errors", "deprecation", "compat", "progress", "atomic", "texts", "textinput", "version", "data"},
    {"tasks"},  # the task registry lists the task names once; options and architectures read them from it
    {"options", "architectures"},
    {"runtime"},
    {"exporter"},
    {"bench", "serving"},
    {"cli", "__init__"},
]
ALLOWED_UP = {
    # options checks Neuron compiler flags before any model loads; the flag grammar is the backend's.
    ("options", "exporter.backends._neuron"),
    # a Neuron artifact needs its SDK imported before torch.jit.load; how is the backend's knowledge.
    ("runtime.artifact", "exporter.backends"),
}
assert len(ALLOWED_UP) <= 2, "at most two imports may run back up the stack (docs/architecture.md)"


def _layer(module: str) -> int:
    head = module.split(".")[0]
    for i, names in enumerate(LAYERS):
        if head in names:
            return i
    raise AssertionError(f"module {module!r} is in no layer: add it to LAYERS (and to docs/architecture.md)")


def _imports(path: Path, module: str):
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - node.level + 1] if node.level > 1 else base
                target = ".".join([*base, node.module] if node.module else base)
            elif node.module and node.module.startswith("hf_torchscript"):
                target = node.module.removeprefix("hf_torchscript").lstrip(".")
            else:
                continue
            if not target:  # `from . import x` at the top: x is a module (or __version__)
                for alias in node.names:
                    yield alias.name if alias.name != "__version__" else "__init__", node.lineno
            else:
                yield target, node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("hf_torchscript."):
                    yield alias.name.removeprefix("hf_torchscript."), node.lineno


def test_imports_point_down_the_stack():
    upward = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts) or "__init__"
        if module == "__init__" or path.parent.name == "data":
            continue  # the public API imports every layer lazily; data/ is copied out, not imported
        for target, line in _imports(path, module):
            if _layer(target) > _layer(module) and (module, target) not in ALLOWED_UP:
                upward.append(f"{path.relative_to(PKG)}:{line} {module} -> {target}")
    assert not upward, "imports that run back up the stack:\n" + "\n".join(upward)


def test_no_module_shadows_a_library_it_uses():
    """`serving/ray.py` importing `ray` read as the module itself to anyone skimming; names say what they hold."""
    shadowing = ["ray", "triton", "torch", "transformers", "tokenizers", "onnxruntime", "starlette", "uvicorn"]
    named = [p.relative_to(PKG) for p in PKG.rglob("*.py") if p.stem in shadowing and "import " + p.stem in p.read_text()]
    assert not named, named
