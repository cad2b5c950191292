"""The artifact directory: write it atomically, read it back, verify it.

    OUTPUT_DIR/model.pt       TorchScript; its extra file "manifest.json" is the manifest minus sha256
    OUTPUT_DIR/manifest.json  the contract for Python, C++ and serving users (with sha256 of model.pt)
    OUTPUT_DIR/tokenizer.json (and friends) when the source had a tokenizer

The embedded copy cannot hold the hash of the file it lives in, so it omits ``sha256``; load
checks the file's hash against manifest.json and the embedded copy against the rest of it.
Needs only torch: the runtime and C++ users depend on this format, not on transformers.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from .errors import ArtifactError

FORMAT_VERSION = 1
MODEL_FILE = "model.pt"
MANIFEST_FILE = "manifest.json"


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_writable(output_dir: Path, force: bool) -> None:
    if output_dir.exists():
        if not output_dir.is_dir():
            raise ArtifactError(f"OUTPUT_DIR {str(output_dir)!r} is a file; pass a directory path")
        if any(output_dir.iterdir()) and not force:
            raise ArtifactError(
                f"OUTPUT_DIR {str(output_dir)!r} exists and is not empty; pass --force (force=True) to replace it, "
                "or choose another directory"
            )


def staging_dir(output_dir: Path) -> Path:
    """A fresh temp dir beside OUTPUT_DIR (same filesystem, so the final rename is atomic)."""
    parent = output_dir.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes it 0700; the artifact should look like any other dir
    return staging


def save_module(module, path: Path, manifest: dict | None = None) -> None:
    extra = {}
    if manifest is not None:
        embedded = {k: v for k, v in manifest.items() if k != "sha256"}
        extra[MANIFEST_FILE] = json.dumps(embedded, indent=2, sort_keys=False)
    torch.jit.save(module, str(path), _extra_files=extra)


def write_manifest(directory: Path, manifest: dict) -> None:
    tmp = directory / (MANIFEST_FILE + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, directory / MANIFEST_FILE)


def commit(staging: Path, output_dir: Path, force: bool) -> None:
    """Move a complete staging dir into place; an earlier artifact survives until the last step."""
    check_writable(output_dir, force)
    old = None
    if output_dir.exists():
        old = output_dir.resolve().parent / f".{output_dir.name}.old-{os.getpid()}"
        os.replace(output_dir, old)
    try:
        os.replace(staging, output_dir)
    except BaseException:
        if old is not None:
            os.replace(old, output_dir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_manifest(directory: str | os.PathLike) -> dict:
    d = Path(directory)
    if not d.is_dir():
        raise ArtifactError(f"artifact directory {str(d)!r} does not exist; export one with `hf-torchscript export`")
    mf = d / MANIFEST_FILE
    if not mf.is_file():
        raise ArtifactError(f"{str(d)!r} has no {MANIFEST_FILE}: not an hf-torchscript artifact (or an unfinished one)")
    try:
        manifest = json.loads(mf.read_text())
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{mf} is not valid JSON ({e}); re-export the model") from None
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ArtifactError(
            f"{mf} has format_version {version!r}; this hf-torchscript reads up to {FORMAT_VERSION}: upgrade hf-torchscript"
        )
    return manifest


def verify(directory: str | os.PathLike, manifest: dict | None = None) -> dict:
    """Check model.pt's sha256 against manifest.json; returns the manifest."""
    d = Path(directory)
    manifest = manifest or read_manifest(d)
    model_file = d / MODEL_FILE
    if not model_file.is_file():
        raise ArtifactError(f"{str(d)!r} has no {MODEL_FILE}; re-export the model")
    want = manifest.get("sha256")
    got = sha256_file(model_file)
    if got != want:
        raise ArtifactError(
            f"{model_file} sha256 {got[:16]}... does not match manifest.json ({str(want)[:16]}...): the file was "
            "modified or replaced; re-export it, or pass verify=False (--no-verify) if you changed it on purpose"
        )
    return manifest


def load_module(directory: str | os.PathLike, *, verify_sha: bool = True, map_location: str = "cpu"):
    """torch.jit.load model.pt after verifying it; returns (module, manifest)."""
    d = Path(directory)
    manifest = verify(d) if verify_sha else read_manifest(d)
    extra = {MANIFEST_FILE: ""}
    if manifest.get("backend", "torchscript") != "torchscript":
        # A Neuron module calls neuron::* ops that exist only once its SDK is imported.
        from .backends import get_backend

        sdk_import = get_backend(manifest["backend"]).import_sdk
        if sdk_import is not None:
            sdk_import()
    try:
        module = torch.jit.load(str(d / MODEL_FILE), map_location=map_location, _extra_files=extra)
    except RuntimeError as e:
        raise ArtifactError(f"torch.jit.load could not read {d / MODEL_FILE}: {str(e).splitlines()[0]}") from None
    if verify_sha and extra[MANIFEST_FILE]:
        embedded = json.loads(extra[MANIFEST_FILE])
        on_disk = {k: v for k, v in manifest.items() if k != "sha256"}
        if embedded != on_disk:
            raise ArtifactError(
                f"{d / MANIFEST_FILE} differs from the manifest embedded in {MODEL_FILE}: one of them was edited; "
                "re-export the model"
            )
    module.eval()
    return module, manifest
