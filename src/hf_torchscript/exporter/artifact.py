"""Step 6 of the flow: the artifact directory. Assemble the manifest, write it atomically, read it
back, verify it.

    OUTPUT_DIR/model.pt       TorchScript; its extra file "manifest.json" is the manifest minus the
                              hash of model.pt itself
    OUTPUT_DIR/model.pt2      instead of model.pt for format "aoti-pt2" (--backend aoti; pt2.py): an
                              AOTInductor package; extra/manifest.json is the manifest minus its hash,
                              and its metadata holds the signature it was compiled for
    OUTPUT_DIR/manifest.json  the contract for Python, C++ and serving users, with ``files``: the
                              sha256 of every other file in the directory (``sha256``: model.pt's)
    OUTPUT_DIR/tokenizer.json (and friends) when the source had a tokenizer, usable as it is by any
                              tokenizers binding (no fixed padding, truncation at the max length)

The embedded copy cannot hold the hash of the file it lives in, so it omits that one hash; every
reader (load, info, validate, the C++ header) checks each file's hash against manifest.json and
the embedded copy against the rest of it, so an edited manifest, tokenizer or model is refused.
Reading needs only torch: the runtime and C++ users depend on this format, not on transformers.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import torch

from .. import atomic
from ..deprecation import jit_api
from ..errors import SourceError
from ..runtime.artifact import FORMAT_VERSION, MANIFEST_FILE, MODEL_FILE, embeddable, sha256_file, strict_json
from ..version import __version__


def check_writable(output_dir: Path, force: bool, *, model=None) -> None:
    """Refuse an OUTPUT_DIR export must not write or replace (see atomic.check_destination); call before loading."""
    atomic.check_destination(output_dir, force, model=model)


def staging_dir(output_dir: Path) -> Path:
    """A fresh ``.NAME.tmp-PID-X`` dir beside OUTPUT_DIR (same filesystem, so the commit is one rename)."""
    return atomic.staging_dir(output_dir)


def save_module(module, path: Path, manifest: dict | None = None) -> None:
    extra = {}
    if manifest is not None:
        extra[MANIFEST_FILE] = json.dumps(strict_json(embeddable(manifest)), indent=2, sort_keys=False, allow_nan=False)
    # Through a Python file object, not a path: torch's own file writer throws from a destructor on
    # ENOSPC and aborts the process (SIGABRT); a Python writer raises OSError like any other write.
    with open(path, "wb") as f, jit_api():
        torch.jit.save(module, f, _extra_files=extra)


def roundtrip(module, staging: Path):
    """Save ``module`` and load it back: validation must run on what a user will load, not the object in memory."""
    if not isinstance(module, torch.jit.ScriptModule):
        # Another format (backends/aoti.Pt2Build): it compiles into the staging dir, kept for seal().
        return module.roundtrip(staging)
    scratch = staging / "roundtrip.pt"
    save_module(module, scratch)
    try:
        with jit_api():
            return torch.jit.load(str(scratch))
    finally:
        scratch.unlink()


def write_artifact(staging: Path, module, manifest: dict, tokenizer=None) -> dict:
    """Write tokenizer files, model.pt (manifest embedded) and manifest.json into ``staging``; returns the manifest."""
    save_tokenizer(tokenizer, staging, manifest)
    return seal(staging, module, manifest)


def seal(staging: Path, module, manifest: dict) -> dict:
    """Hash the other files, then write model.pt (manifest embedded) and manifest.json; returns the manifest.

    Called again when the manifest changes after a check that reads the written artifact (the text
    check), so model.pt's embedded copy always equals manifest.json. A model.pt2 (compiled and
    validated by roundtrip) records itself in the manifest and packages the manifest in likewise.
    """
    if not isinstance(module, torch.jit.ScriptModule):
        name = module.finish(staging, manifest)
        files = {f.name: sha256_file(f) for f in sorted(staging.iterdir())
                 if f.is_file() and f.name not in (name, MANIFEST_FILE)}
        manifest["files"] = files
        module.embed_manifest(staging, json.dumps(strict_json(embeddable(manifest, name)), indent=2, allow_nan=False))
        manifest["sha256"] = sha256_file(staging / name)
        manifest["files"] = {name: manifest["sha256"], **files}
        write_manifest(staging, manifest)
        return manifest
    files = {f.name: sha256_file(f) for f in sorted(staging.iterdir())
             if f.is_file() and f.name not in (MODEL_FILE, MANIFEST_FILE)}
    manifest["files"] = files
    save_module(module, staging / MODEL_FILE, manifest)
    manifest["sha256"] = sha256_file(staging / MODEL_FILE)
    manifest["files"] = {MODEL_FILE: manifest["sha256"], **files}
    write_manifest(staging, manifest)
    return manifest


def save_tokenizer(tokenizer, staging: Path, manifest: dict) -> None:
    """Ship the tokenizer so that using tokenizer.json naively gives exactly the ids the model was validated with.

    A source tokenizer.json may carry fixed-length padding and a truncation length of its own
    (all-MiniLM-L6-v2's pads every text to 128 and cuts at 128, while sentence-transformers cuts at
    256): a C++/Rust/JS user calling ``Tokenizer.from_file(...).encode(text)`` would feed padding
    with an all-ones mask. The shipped file pads nothing and truncates at the artifact's max length.
    """
    if tokenizer is None:
        return
    tokenizer.save_pretrained(str(staging))
    tok_file = staging / "tokenizer.json"
    if not tok_file.is_file():
        return
    from tokenizers import Tokenizer

    try:  # the runtime reads it with `tokenizers` alone: it must load that way, or nothing is written
        tok = Tokenizer.from_file(str(tok_file))
    except Exception as e:  # noqa: BLE001 - tokenizers raises a bare Exception
        raise SourceError(
            f"the tokenizer saved for the artifact does not load with `tokenizers` ({str(e).splitlines()[0][:200]}); "
            "fix the model's tokenizer files, or remove them to export an artifact that takes token ids"
        ) from None
    tok.no_padding()
    tok.enable_truncation(int(manifest["max_length"]))
    tok.save(str(tok_file))
    from ..runtime.cpp_tokenizer_support import cpp_tokenizer_entry

    # whether the C++ tokenizer (cpp/hts_tokenizer.hpp) can take text for this artifact
    manifest["cpp_tokenizer"] = cpp_tokenizer_entry(tok.to_str())
    manifest["tokenizer"] = {
        "file": "tokenizer.json",
        "pad_token": getattr(tokenizer, "pad_token", None),
        "mask_token": getattr(tokenizer, "mask_token", None),
        "padding": None,
        "truncation": int(manifest["max_length"]),
    }


def write_manifest(directory: Path, manifest: dict) -> None:
    tmp = directory / (MANIFEST_FILE + ".tmp")
    tmp.write_text(json.dumps(strict_json(manifest), indent=2, allow_nan=False) + "\n")
    os.replace(tmp, directory / MANIFEST_FILE)


def commit(staging: Path, output_dir: Path, force: bool) -> None:
    """Swap a complete staging dir into OUTPUT_DIR in one step (atomic.commit): never a moment without it."""
    atomic.commit(staging, output_dir, force)


# -- the manifest -----------------------------------------------------------------------------------


def build_manifest(p, backend, report, shapes_info: dict, tracer_warnings, tolerance) -> dict:
    """The contract a C++ or serving user reads: signature, axes, shapes, task, labels, validation, versions."""
    config, task, opts = p.source.config, p.task, p.options
    id2label = None
    if task.labels:
        id2label = {str(k): v for k, v in (getattr(config, "id2label", None) or {}).items()}
    m = {
        "format_version": FORMAT_VERSION,
        "format": backend.format,
        "producer": "hf-torchscript",
        "task": task.name,
        "model_type": config.model_type,
        "model_class": type(p.source.model).__name__,
        "source": _source(p.source),
        "inputs": [s.to_json() for s in p.specs],
        "outputs": [o.to_json() for o in p.outputs],
        "shapes": shapes_info,
        "max_length": shapes_info["max_length"],
        "pad_token_id": p.pad_token_id,
        "padding_side": "right",
        "id2label": id2label,
        "tokenizer": None,
        "dtype": opts.dtype,
        "quantize": opts.quantize,
        "quantization": p.quantization,  # which Linear layers are int8, their measured error, and why
        "optimize": opts.optimize,
        "precision": _precision(opts, tolerance),
        "backend": backend.name,
        "weights": {"tied_embeddings": p.tied},
        "validation": report.to_json(),
        "tracer_warnings": tracer_warnings,
        "versions": versions(),
        # Where it was made and what that CPU could do: speed (and a model.pt2's kernels) depend on it.
        "cpu": cpu_block(opts),
    }
    if backend.describe is not None:
        m["neuron"] = backend.describe(opts)
    if task.generation:
        # What a runtime needs to decode greedily without transformers' generate().
        start = getattr(config, "decoder_start_token_id", None)
        eos = getattr(config, "eos_token_id", None)
        m["generation"] = {
            "decoder_start_token_id": int(start) if start is not None else p.pad_token_id,
            "eos_token_id": int(eos[0] if isinstance(eos, list) else eos) if eos is not None else None,
        }
    if p.source.pooling and task.pooled:
        m["sentence_embedding"] = {"pooling": p.source.pooling["modes"], "normalize": p.source.pooling["normalize"]}
    if p.source.newly_initialized:
        m["newly_initialized_weights"] = p.source.newly_initialized
    m["consistency"] = consistency_record(p.source)
    return m


def consistency_record(src) -> dict:
    """What exporter/consistency.py checked of the source folder, and what an override let through."""
    from .consistency import CHECKS

    return {
        "checked": list(CHECKS),
        "unused_weights": list(src.unused_weights),  # non-empty only with allow_unused_weights
        "tokenizer_mismatches": list(src.tokenizer_mismatches),  # non-empty only with allow_tokenizer_mismatch
    }


def cpu_block(opts) -> dict:
    """The manifest's ``cpu``: the exporting CPU (model, ISA flags, torch's capability), the flags that decide
    this artifact's speed, and what the artifact requires (a model.pt2 adds its compiled ISA in backends/aoti)."""
    from ..runtime import cpu

    block = cpu.describe()
    relevant = []
    if opts.dtype == "bfloat16":
        relevant += [f for f in cpu.BF16_FLAGS if f != "bf16" or block["machine"] != "x86_64"]
    if opts.quantize:
        relevant += list(cpu.INT8_DOT_FLAGS)
    block["relevant"] = {f: f in block["flags"] for f in relevant} if block["flags"] else {}
    block["requires"] = []  # TorchScript picks its kernels when it runs: any CPU torch runs on
    block["notes"] = cpu_notes(opts)
    return block


def cpu_notes(opts) -> list[str]:
    """Why the requested precision is slow on this CPU: what export warns before it starts and the manifest keeps."""
    from ..runtime import cpu
    from ..tasks import get_task

    decoding = bool(opts.task) and get_task(opts.task).kv_cache  # bf16 decode behaves unlike bf16 encode
    return cpu.slow_options(opts.dtype, opts.quantize, opts.backend, decoding=decoding)


def _source(src) -> dict:
    """MODEL as a reader may see it: a hub or bundled id, a relative folder as given, an absolute one by name only.

    No absolute path of the build machine goes into the manifest (it ships with the artifact); `validate OUT`
    finds a hub id or a relative folder again, and takes --model otherwise.
    """
    model = src.description
    if src.path is not None and Path(model).expanduser().exists():
        given = Path(model)
        if given.is_absolute() or str(model).startswith("~"):
            model = given.expanduser().resolve().name
    return {"model": model, "weights": src.weights}


def versions() -> dict:
    out = {"hf_torchscript": __version__, "torch": torch.__version__, "python": platform.python_version()}
    for mod in ("transformers", "tokenizers"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            out[mod] = None
    return out


def _precision(opts, tolerance) -> dict:
    """What model.pt computes in, for readers of the manifest (inputs/outputs stay as listed)."""
    if opts.quantize == "dynamic-int8" and opts.backend == "aoti":
        compute = ("int8 weights and per-token dynamic int8 activations for nn.Linear (torchao "
                   "Int8DynamicActivationInt8WeightConfig), float32 elsewhere")
    elif opts.quantize:
        from .quantize import SCHEMES

        compute = f"{SCHEMES[opts.quantize]}, for the layers quantization.layers marks quantized; float32 elsewhere"
    elif opts.dtype != "float32":
        compute = (f"{opts.dtype}; float inputs are cast to {opts.dtype} inside the model file and float outputs "
                   "cast back to float32")
    else:
        compute = "float32"
    out = {
        "compute": compute,
        "outputs_dtype": "float32",
        "optimizations": ["torch.jit.freeze"] if opts.optimize or opts.onednn_fusion else [],
        "validation": tolerance.describe(),
    }
    if opts.pack_linears:
        from ..runtime.artifact import PACKED

        out["optimizations"].append(PACKED)
        out["packed_linears"] = ("float32 Linear weights reordered by oneDNN when the file loads (__setstate__, in "
                                 "Python and C++ alike); the file holds the plain weights")
    if opts.onednn_fusion:
        from ..runtime.fusion import HOW, OPTIMIZATION

        out["optimizations"].append(OPTIMIZATION)
        out["onednn_fusion"] = HOW  # a process-wide switch the consumer must turn on; validated with it on
    return out
