"""What the benchmark times: our exported artifacts, eager transformers, and the peers a user would pick.

Every variant is built from the same prepared model (the fp32 ``ExportWrapper`` that export
validates against), takes a dict of input tensors and returns the first output as float32, so
speed and accuracy are measured on exactly the function an artifact computes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

# name -> (export options, what it is)
EXPORTED: dict[str, tuple[dict, str]] = {
    "ts-dynamic": (dict(shapes="dynamic"), "exported fp32, one dynamic trace"),
    "ts-buckets": (dict(shapes="buckets"), "exported fp32, one trace per length bucket"),
    "ts-static": (dict(shapes="static"), "exported fp32, the seed's static trace: pad every input to max length"),
    "ts-frozen": (dict(shapes="dynamic", optimize=True), "exported fp32 dynamic + torch.jit.freeze"),
    "ts-packed": (dict(shapes="dynamic", pack_linears=True),
                  "exported fp32 dynamic --pack-linears (oneDNN-packed Linear weights, packed at load)"),
    "ts-bf16": (dict(shapes="dynamic", dtype="bfloat16", optimize=True), "exported bfloat16 dynamic, frozen"),
    "ts-int8": (dict(shapes="dynamic", quantize="dynamic-int8", optimize=True),
                "exported --quantize dynamic-int8 (torch.ao kernels, per-channel weights, sensitive layers float32), "
                "frozen"),
    "ts-int8-aten": (dict(shapes="dynamic", quantize="dynamic-int8-aten", optimize=True),
                     "exported --quantize dynamic-int8-aten (plain aten int8, per-token activations), frozen"),
    "aoti": (dict(backend="aoti", shapes="dynamic"), "exported --backend aoti: torch.export + AOTInductor model.pt2, fp32"),
    "aoti-bf16": (dict(backend="aoti", shapes="dynamic", dtype="bfloat16"),
                  "exported --backend aoti --dtype bfloat16 (model.pt2)"),
}
PEERS: dict[str, str] = {
    "eager": "transformers eager fp32 (the baseline; ratios are to this)",
    "eager-bf16": "transformers eager under torch.autocast(cpu, bfloat16)",
    "torch-compile": "torch.compile(dynamic=True) of the eager model",
    "onnxruntime": "ONNX Runtime CPU fp32 (torch.onnx.export, dynamic axes, ORT_ENABLE_ALL)",
    "onnxruntime-int8": "ONNX Runtime CPU, onnxruntime.quantization.quantize_dynamic (int8 weights, per channel)",
}
ALL_VARIANTS: tuple[str, ...] = ("eager", "eager-bf16", *EXPORTED, "torch-compile", "onnxruntime", "onnxruntime-int8")
# Optional packages a variant (or the report) needs: pip name -> what is lost without it.
EXTRAS = {
    "onnxruntime": "the onnxruntime and onnxruntime-int8 peers",
    "onnx": "the onnxruntime peers (torch.onnx.export writes ONNX with it)",
    "onnxscript": "the onnxruntime peers (torch.onnx.export needs it on torch >= 2.9)",
    "matplotlib": "plot.png",
    "rich": "progress bars",
}


@dataclass
class Variant:
    name: str
    description: str
    run: Callable[[dict], torch.Tensor] | None = None  # batch -> first output, float32
    dtype: str = "float32"  # what its matmuls compute in (picks the GEMM ceiling)
    skipped: str | None = None  # why it did not run
    info: dict = field(default_factory=dict)


def missing_extras(wanted) -> dict[str, str]:
    """{package: what is lost} for the optional packages this run would use and that are not installed."""
    need = {"matplotlib", "rich"}
    if any(w.startswith("onnxruntime") for w in wanted):
        need |= {"onnxruntime", "onnx", "onnxscript"}
    return {p: EXTRAS[p] for p in sorted(need) if importlib.util.find_spec(p) is None}


def weights_digest(path: Path | None) -> str | None:
    """sha256 over the model folder's weight and config files (None for an in-memory model)."""
    if path is None:
        return None
    h = hashlib.sha256()
    files = sorted(p for p in Path(path).iterdir()
                   if p.is_file() and (p.suffix in (".safetensors", ".bin", ".json") or p.name.endswith(".index.json")))
    for p in files:
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def exported(name: str, model, options: dict, workdir: Path, digest: str | None) -> Variant:
    """Export (or reuse an artifact exported from the same weights with the same options) and load it."""
    from ..exporter.flow import export
    from ..version import __version__

    desc = EXPORTED[name][1]
    key = {"weights_sha256": digest, "options": options, "hf_torchscript": __version__, "torch": torch.__version__}
    d = workdir / name
    manifest = _reusable(d, key)
    if manifest is None:
        start = time.perf_counter()
        try:
            manifest = export(model, d, force=True, **options).manifest
        except Exception as e:  # an export that fails is a result to report, not a crash of the whole run
            return Variant(name, desc, skipped=f"export failed: {type(e).__name__}: {str(e).splitlines()[0][:300]}")
        if digest is not None:
            _stamp(d).write_text(json.dumps(dict(key, export_seconds=time.perf_counter() - start),
                                                         sort_keys=True))
    from ..runtime.artifact import load_module

    module, _ = load_module(d)  # model.pt or model.pt2 (Pt2Module), sha256 verified once, outside the timing
    names = [i["name"] for i in manifest["inputs"]]

    def run(batch):
        with torch.no_grad():
            return module(*(batch[n] for n in names))[0]

    dtype = manifest.get("dtype", "float32")
    info = {"artifact": str(d), "shapes": manifest["shapes"]["strategy"], "buckets": manifest["shapes"]["buckets"],
            "export_seconds": _export_seconds(d),
            "validation": {k: manifest["validation"].get(k) for k in
                           ("passed", "mode", "thresholds", "min_cosine", "max_abs_diff", "top1_agreement")}}
    if manifest.get("quantize"):
        dtype = "int8"
        info["quantization"] = manifest.get("quantization")
    return Variant(name, desc, run, dtype=dtype, info=info)


def _reusable(d: Path, key: dict) -> dict | None:
    """The artifact's manifest if it was exported here from the same weights with the same options."""
    stamp = _stamp(d)
    if key["weights_sha256"] is None or not (d / "manifest.json").exists() or not stamp.exists():
        return None
    recorded = json.loads(stamp.read_text())
    recorded.pop("export_seconds", None)
    if recorded != json.loads(json.dumps(key, sort_keys=True)):
        return None
    return json.loads((d / "manifest.json").read_text())


def _stamp(d: Path) -> Path:
    """What an artifact was exported from, kept BESIDE it: a file inside would make the directory no longer
    exactly its manifest's files, and --force (rightly) refuses to replace such a directory."""
    return d.parent / f"{d.name}.bench_key.json"


def _export_seconds(d: Path) -> float | None:
    stamp = _stamp(d)
    return json.loads(stamp.read_text()).get("export_seconds") if stamp.exists() else None


def peer(name: str, wrapper: torch.nn.Module, input_names: list[str], example: dict, workdir: Path) -> Variant:
    """A reference implementation of the same function (``wrapper``: the fp32 module export validates against)."""
    desc = PEERS[name]

    def call(fn):
        def run(batch):
            with torch.no_grad():
                return fn(*(batch[n] for n in input_names))[0].float()
        return run

    if name == "eager":
        return Variant(name, desc, call(wrapper))
    if name == "eager-bf16":
        def run(batch):
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                return wrapper(*(batch[n] for n in input_names))[0].float()
        return Variant(name, desc, run, dtype="bfloat16")
    if name == "torch-compile":
        try:
            compiled = torch.compile(wrapper, dynamic=True)
            start = time.perf_counter()
            call(compiled)(example)
            return Variant(name, desc, call(compiled), info={"compile_seconds": time.perf_counter() - start})
        except Exception as e:  # a peer that cannot run here is a note, not a failure
            return Variant(name, desc, skipped=f"torch.compile failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
    if name in ("onnxruntime", "onnxruntime-int8"):
        return _onnxruntime(name, wrapper, input_names, example, workdir)
    raise KeyError(name)


def _onnxruntime(name: str, wrapper, input_names: list[str], example: dict, workdir: Path) -> Variant:
    desc = PEERS[name]
    missing = [p for p in ("onnxruntime", "onnx", "onnxscript") if importlib.util.find_spec(p) is None]
    if missing:
        return Variant(name, desc, skipped=f"{', '.join(missing)} not installed (pip install onnxruntime onnx onnxscript)")
    import onnxruntime as ort

    workdir.mkdir(parents=True, exist_ok=True)
    d = Path(tempfile.mkdtemp(prefix="onnx-", dir=workdir))
    path = d / "model.onnx"
    try:
        _onnx_export(wrapper, input_names, example, path)
        if name == "onnxruntime-int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            q = d / "model.int8.onnx"
            quantize_dynamic(str(path), str(q), weight_type=QuantType.QInt8, per_channel=True)
            path = q
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = torch.get_num_threads()
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        return Variant(name, desc, skipped=f"ONNX export/load failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
    feeds = [i.name for i in sess.get_inputs()]

    def run(batch):
        return torch.from_numpy(sess.run(None, {n: batch[n].numpy() for n in feeds})[0]).float()

    return Variant(name, desc, run, dtype="int8" if name.endswith("int8") else "float32",
                   info={"onnxruntime": ort.__version__, "onnx_file": str(path)})


def _onnx_export(wrapper, input_names: list[str], example: dict, path: Path) -> None:
    """torch.onnx.export with batch and sequence axes dynamic (the dynamo exporter: torch >= 2.9's default)."""
    import warnings

    batch = torch.export.Dim("batch_size", min=1, max=1024)
    seq = torch.export.Dim("sequence_length", min=2, max=100_000)
    # The wrapper's forward(*tensors) is one varargs parameter: its dynamic shapes are one tuple.
    shapes = (tuple({0: batch, 1: seq} if example[n].dim() >= 2 else {0: batch} for n in input_names),)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, tuple(example[n] for n in input_names), str(path), input_names=input_names,
                          dynamic_shapes=shapes, dynamo=True, optimize=True, verbose=False)
