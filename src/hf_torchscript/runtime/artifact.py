"""The artifact directory, read side: manifest.json (schema-checked), every file's sha256, the model file.

Reading needs only torch: the runtime, `info`, `validate` and C++ users depend on this format, not on
transformers (export/artifact.py writes it; its docstring shows the layout). The embedded copy of the
manifest cannot hold the hash of the file it lives in, so it omits that one hash; every reader checks
each file's hash against manifest.json and the embedded copy against the rest of it, so an edited
manifest, tokenizer or model is refused.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import zipfile
from pathlib import Path

from .. import atomic
from ..deprecation import jit_api
from ..errors import ArtifactError, option
from .schema import check_manifest

# 2: ``files`` holds the sha256 of every file; 1 (round 1) hashed model.pt only and is still read.
FORMAT_VERSION = 2
MODEL_FILE = "model.pt"
MANIFEST_FILE = "manifest.json"
# The manifest's "format" -> the model file that holds it (no "format": a TorchScript artifact).
MODEL_FILES = {"torchscript": MODEL_FILE, "aoti-pt2": "model.pt2"}
# precision.optimizations entry of a --pack-linears artifact (exporter/packed.py): loading it needs oneDNN
PACKED = "onednn-packed-linear"


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def strict_json(obj):
    """``obj`` with NaN/Infinity replaced by None: JSON readers other than Python's reject them."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


def embeddable(manifest: dict, model_name: str = MODEL_FILE) -> dict:
    """The manifest as the model file embeds it: everything but the hash of the model file itself."""
    out = {k: v for k, v in manifest.items() if k != "sha256"}
    if isinstance(out.get("files"), dict):
        out["files"] = {k: v for k, v in out["files"].items() if k != model_name}
    return out


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def read_manifest(directory: str | os.PathLike) -> dict:
    """manifest.json, checked against the schema before anyone reads a key of it."""
    d = Path(directory)
    if not d.is_dir():
        backup = atomic.leftover_backup(d)
        if backup is not None:
            raise ArtifactError(
                f"artifact directory {str(d)!r} does not exist, but {str(backup)!r} holds it: an export was killed "
                f"while replacing it; rename that back to {str(d)!r} (the next export to it does so by itself)"
            )
        raise ArtifactError(f"artifact directory {str(d)!r} does not exist; export one with `hf-torchscript export`")
    mf = d / MANIFEST_FILE
    if not mf.is_file():
        raise ArtifactError(f"{str(d)!r} has no {MANIFEST_FILE}: not an hf-torchscript artifact (or an unfinished one)")
    try:
        manifest = json.loads(mf.read_bytes(), parse_constant=_reject_constant)
    except OSError as e:
        raise ArtifactError(f"cannot read {mf}: {e.strerror}") from None
    except (ValueError, RecursionError) as e:  # JSONDecodeError, bad UTF-8, NaN, nesting too deep
        raise ArtifactError(f"{mf} is not valid JSON ({str(e).splitlines()[0][:200]}); re-export the model") from None
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise ArtifactError(
            f"{mf} has format_version {version!r}; this hf-torchscript reads up to {FORMAT_VERSION}: upgrade hf-torchscript"
        )
    return check_manifest(manifest, str(mf))


def model_file_name(manifest: dict) -> str:
    """The artifact's model file: model.pt (TorchScript) or model.pt2 (AOTInductor package)."""
    fmt = manifest.get("format", "torchscript")
    if fmt not in MODEL_FILES:
        raise ArtifactError(f"manifest format {fmt!r} is not one this hf-torchscript reads "
                            f"({', '.join(MODEL_FILES)}): upgrade hf-torchscript")
    return MODEL_FILES[fmt]


def verify(directory: str | os.PathLike, manifest: dict | None = None) -> dict:
    """Check every file's sha256 against manifest.json and the manifest embedded in the model file; returns it."""
    d = Path(directory)
    manifest = manifest or read_manifest(d)
    model_name = model_file_name(manifest)
    model_file = d / model_name
    if not model_file.is_file():
        raise ArtifactError(f"{str(d)!r} has no {model_name}; re-export the model")
    if not manifest.get("sha256"):
        raise ArtifactError(
            f"{d / MANIFEST_FILE} records no sha256 for {model_name}, so it cannot be verified; re-export the model, "
            f"or pass {option('verify', False)} to load it unchecked"
        )
    files = manifest.get("files") if manifest.get("format_version", 1) >= 2 else {MODEL_FILE: manifest.get("sha256")}
    if not isinstance(files, dict) or not isinstance(files.get(model_name), str):
        raise ArtifactError(f"{d / MANIFEST_FILE} has no valid 'files' list of hashes: it was edited; re-export the model")
    if files[model_name] != manifest.get("sha256"):
        raise ArtifactError(
            f"{d / MANIFEST_FILE} lists {model_name} with sha256 {files[model_name][:16]}... in 'files' but "
            f"{str(manifest.get('sha256'))[:16]}... in 'sha256': the manifest was edited; re-export the model")
    for name, want in files.items():
        path = d / name
        if Path(name).name != name or not path.is_file():
            raise ArtifactError(f"{path} is listed in {MANIFEST_FILE} but missing; re-export the model")
        got = sha256_file(path)
        if got != want:
            raise ArtifactError(
                f"{path} sha256 {got[:16]}... does not match manifest.json ({str(want)[:16]}...): the file was "
                f"modified or replaced; re-export it, or pass {option('verify', False)} if you changed it on purpose"
            )
    embedded = embedded_manifest(model_file)  # model.pt's extra file, or model.pt2's extra/manifest.json
    if embedded is not None and embedded != embeddable(manifest, model_name):
        raise ArtifactError(
            f"{d / MANIFEST_FILE} differs from the manifest embedded in {model_name}: one of them was edited; "
            "re-export the model"
        )
    return manifest


def embedded_manifest(model_file: Path) -> dict | None:
    """The manifest the model file carries (model.pt: its extra file; model.pt2: the package's
    extra/manifest.json), read from the zip without loading the module."""
    try:
        with zipfile.ZipFile(model_file) as z:
            name = next((n for n in z.namelist() if n.endswith("/extra/" + MANIFEST_FILE)), None)
            if name is None:
                return None
            return json.loads(z.read(name))
    except Exception as e:  # noqa: BLE001 - a damaged zip raises BadZipFile, but also zlib.error, EOFError, ValueError ...
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ArtifactError(f"{model_file} is not a readable model archive ({first}); re-export the model") from None


def load_module(directory: str | os.PathLike, *, verify_sha: bool = True, map_location: str = "cpu"):
    """Load the model file after verifying it; returns (module, manifest).

    Whatever the format, the module takes the manifest's inputs positionally and returns a tuple in
    the order of its outputs: a ScriptModule for model.pt, a ``pt2.Pt2Module`` (input checks from
    the manifest, buckets) for model.pt2.
    """
    d = Path(directory)
    manifest = verify(d) if verify_sha else read_manifest(d)
    if model_file_name(manifest) != MODEL_FILE:
        from .pt2 import load_pt2

        return load_pt2(d, manifest), manifest
    if manifest.get("backend", "torchscript") != "torchscript":
        # A Neuron module calls neuron::* ops that exist only once its SDK is imported; the backend registry
        # (export/backends) knows how. One of the imports that run back up the stack: the SDK import is the
        # backend's knowledge, and a copy here would drift from it.
        from ..exporter.backends import get_backend

        sdk_import = get_backend(manifest["backend"]).import_sdk
        if sdk_import is not None:
            sdk_import()
    import torch  # here, not at the top: `info`, `run`'s first checks and C++ users read manifests without torch

    if PACKED in ((manifest.get("precision") or {}).get("optimizations") or ()) and not torch.backends.mkldnn.is_available():
        # its Linear modules pack their weights with oneDNN as the file loads (exporter/packed.py)
        raise ArtifactError(f"{d / MODEL_FILE} was exported with --pack-linears, which needs oneDNN, and this torch build "
                            "has none (torch.backends.mkldnn.is_available() is False): re-export it without "
                            "--pack-linears, or use a torch build with oneDNN (every x86-64 and aarch64 wheel has it)")
    try:
        with jit_api():
            module = torch.jit.load(str(d / MODEL_FILE), map_location=map_location)
    except Exception as e:  # a damaged archive raises RuntimeError, but also UnicodeDecodeError, IndexError ...
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ArtifactError(f"torch.jit.load could not read {d / MODEL_FILE}: {first}; re-export the model") from None
    module.eval()
    return module, manifest
