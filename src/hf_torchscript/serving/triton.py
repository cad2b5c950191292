"""A Triton Inference Server model repository for an artifact: ``hf-torchscript triton ARTIFACT REPO``.

    REPO/NAME/config.pbtxt            platform "pytorch_libtorch", generated from the manifest
    REPO/NAME/1/model.pt              the artifact's TorchScript module (sha256 checked after the copy)
    REPO/NAME/1/manifest.json         for people; Triton ignores it
  with --with-tokenizer:
    REPO/NAME_tokenizer/config.pbtxt  backend "python": TEXT (strings) -> the model's token id inputs
    REPO/NAME_tokenizer/1/model.py    tokenizers + numpy only; pads and truncates like hts.load
    REPO/NAME_tokenizer/1/tokenizer.json
    REPO/NAME_ensemble/config.pbtxt   TEXT -> NAME_tokenizer -> NAME -> the outputs under their own names

Triton's rules followed (docs: user_guide/model_configuration.md): inputs are named as forward's
arguments, outputs OUTPUT__<index> in forward's return order; with max_batch_size > 0 the batch
axis is left out of ``dims``; -1 marks a variable axis; every ``dims`` has rank >= 1 (a per-row
scalar is ``dims: [1]`` reshaped to ``[]``). Triton's PyTorch backend has no bfloat16 tensors and
loads only TorchScript. The config is checked by parsing it with tritonclient's ModelConfig
(the ``triton`` extra) before anything is written.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .. import atomic
from ..errors import ArtifactError, OptionError, option, require_extra
from ..tasks import TASKS

BATCH_AXIS = "batch_size"
_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "float64": "TYPE_FP64", "int64": "TYPE_INT64",
          "int32": "TYPE_INT32", "int8": "TYPE_INT8", "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL"}
_TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_TEMPLATE = Path(__file__).parent.parent / "data" / "triton_tokenizer_model.py"  # the package's data/


@dataclass
class TritonRepository:
    """What `write_repository` wrote."""

    repo: Path
    models: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"wrote Triton model{'s' if len(self.models) > 1 else ''} {', '.join(self.models)} into {self.repo} "
                f"(start: tritonserver --model-repository {self.repo})")


_INT32_MAX = 2**31 - 1


def write_repository(artifact, repo, *, name: str | None = None, max_batch_size: int = 8, instances: int = 1,
                     with_tokenizer: bool = False, force: bool = False) -> TritonRepository:
    """Write Triton model folders for ``artifact`` into ``repo`` (created if missing).

    Args:
        artifact: directory written by ``hf-torchscript export`` (``--backend torchscript``).
        repo: the model repository; other models in it are left alone.
        name: model name (default: the artifact folder's name, made Triton-safe).
        max_batch_size: Triton's max_batch_size (0 turns Triton's batching off; an artifact with a
            fixed batch always gets 0).
        instances: CPU instances (``instance_group { kind: KIND_CPU count: N }``).
        with_tokenizer: also write the Python-backend tokenizer and the ensemble.
        force: replace model folders of the same names.

    Raises:
        ExtraNotInstalledError: tritonclient[grpc] missing (it checks the generated configs).
        ArtifactError: not a TorchScript artifact, bfloat16 tensors, sha256 mismatch.
        OptionError: bad name or sizes; model folders exist without ``force``.
    """
    require_extra("triton", "hf-torchscript triton", "tritonclient.grpc.model_config_pb2", "google.protobuf")
    from ..runtime.artifact import MODEL_FILE, read_manifest, sha256_file, verify

    src = atomic.as_path(artifact, "artifact")
    atomic.as_path(repo, "repo")
    if name is not None and not isinstance(name, str):
        raise OptionError(f"name must be a string, got {type(name).__name__}")
    manifest = read_manifest(src)
    _check_supported(src, manifest)
    verify(src, manifest)
    name = name or re.sub(r"[^A-Za-z0-9_.-]", "_", src.resolve().name)
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name):
        raise OptionError(f"model name {name!r} is not a plain folder name; use letters, digits, _ . -")
    # Triton keeps both as int32; a larger value fails deep inside protobuf.
    if not isinstance(max_batch_size, int) or isinstance(max_batch_size, bool) or not 0 <= max_batch_size <= _INT32_MAX:
        raise OptionError(f"{option('max_batch_size')} must be an integer from 0 to {_INT32_MAX} (Triton's int32), "
                          f"got {max_batch_size!r}")
    if not isinstance(instances, int) or isinstance(instances, bool) or not 1 <= instances <= _INT32_MAX:
        raise OptionError(f"{option('instances')} must be an integer from 1 to {_INT32_MAX}, got {instances!r}")
    batching = _batch_axis_leads(manifest) and max_batch_size > 0
    if with_tokenizer:
        _check_tokenizer_inputs(manifest)
    configs = {name: model_config(manifest, name, max_batch_size if batching else 0, instances, source=src)}
    if with_tokenizer:
        tok_name, ens_name = f"{name}_tokenizer", f"{name}_ensemble"
        mbs = max_batch_size if batching else 0
        configs[tok_name] = tokenizer_config(manifest, tok_name, mbs, instances)
        configs[ens_name] = ensemble_config(manifest, ens_name, name, tok_name, mbs)
    for text in configs.values():
        parse_config(text)  # a bug here must not reach a server: refuse to write what Triton would reject

    root = Path(repo)
    clash = [m for m in configs if (root / m).exists()]
    if clash and not force:
        raise OptionError(f"{root / clash[0]} exists; pass {option('force', True)} to replace it, or choose another "
                          f"{option('name')}")
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".hts-triton-", dir=root))
    try:
        for model, text in configs.items():
            (staging / model / "1").mkdir(parents=True)
            (staging / model / "config.pbtxt").write_text(text)
        shutil.copyfile(src / MODEL_FILE, staging / name / "1" / "model.pt")
        if sha256_file(staging / name / "1" / "model.pt") != manifest["sha256"]:
            raise ArtifactError(f"the copy of {src / MODEL_FILE} does not match its sha256; check the disk and retry")
        shutil.copyfile(src / "manifest.json", staging / name / "1" / "manifest.json")
        if with_tokenizer:
            shutil.copyfile(_TEMPLATE, staging / tok_name / "1" / "model.py")
            shutil.copyfile(src / manifest["tokenizer"]["file"], staging / tok_name / "1" / "tokenizer.json")
        for model in configs:
            if (root / model).exists():
                shutil.rmtree(root / model)
            os.replace(staging / model, root / model)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return TritonRepository(root, list(configs))


def _check_supported(src: Path, manifest: dict) -> None:
    backend = manifest.get("backend", "torchscript")
    # The format first: an AOTInductor artifact's backend is "aoti", which is not AWS Neuron.
    if manifest.get("format", "torchscript") != "torchscript" or backend == "aoti" or (
            not (src / "model.pt").is_file() and any(src.glob("*.pt2"))):
        raise ArtifactError(f"{src} holds an AOTInductor package (.pt2), not TorchScript; Triton's pytorch_libtorch "
                            "platform loads model.pt only: export with --backend torchscript")
    if backend != "torchscript":
        raise ArtifactError(f"{src} was compiled for {backend} (AWS Neuron); Triton's libtorch backend cannot run it: "
                            "export with --backend torchscript")
    bf16 = [t["name"] for t in manifest["inputs"] + manifest["outputs"] if t["dtype"] == "bfloat16"]
    if bf16:
        raise ArtifactError(f"{', '.join(bf16)} are bfloat16, which Triton's PyTorch backend has no type for: export "
                            "with --dtype float32 (or bfloat16 compute, whose inputs and outputs stay float32)")
    unknown = [f"{t['name']} ({t['dtype']})" for t in manifest["inputs"] + manifest["outputs"] if t["dtype"] not in _TYPES]
    if unknown:
        raise ArtifactError(f"{', '.join(unknown)} have no Triton type; Triton takes {', '.join(_TYPES)}")


def _check_tokenizer_inputs(manifest: dict) -> None:
    names = [i["name"] for i in manifest["inputs"]]
    if not manifest.get("tokenizer"):
        raise ArtifactError("--with-tokenizer: this artifact has no tokenizer (exported from an in-memory model "
                            "without tokenizer=)")
    task = TASKS.get(manifest["task"])
    if task is not None and task.triton_tokenizer_refusal:
        raise OptionError(f"--with-tokenizer sends one text per row; {task.triton_tokenizer_refusal}: tokenize on the "
                          "client and call the model directly, without --with-tokenizer")
    odd = [n for n in names if n not in _TOKEN_INPUTS]
    if odd or any(len(i["shape"]) != 2 for i in manifest["inputs"]):
        raise OptionError(f"--with-tokenizer covers models that take (batch, tokens) from one text; this "
                          f"{manifest['task']} model takes {', '.join(names)}: serve it without --with-tokenizer")


def _batch_axis_leads(manifest: dict) -> bool:
    return all(t["shape"] and t["shape"][0] == BATCH_AXIS for t in manifest["inputs"] + manifest["outputs"])


def _dims(shape: list, batching: bool) -> tuple[list[int], bool]:
    """(dims, scalar): -1 for every named axis; the batch axis dropped when Triton batches."""
    rest = shape[1:] if batching else shape
    dims = [d if isinstance(d, int) else -1 for d in rest]
    return (dims, False) if dims else ([1], True)


def _tensor(name: str, dtype: str, shape: list, batching: bool, comment: str = "") -> str:
    dims, scalar = _dims(shape, batching)
    lines = [f"  {{  # {comment}" if comment else "  {", f'    name: "{name}"', f"    data_type: {_TYPES[dtype]}",
             f"    dims: [ {', '.join(map(str, dims))} ]"]
    if scalar:
        lines.append("    reshape: { shape: [ ] }  # one value per row; Triton needs rank >= 1")
    return "\n".join(lines) + "\n  }"


def model_config(manifest: dict, name: str, max_batch_size: int, instances: int, *, source=None) -> str:
    """config.pbtxt of the libtorch model, from the manifest alone."""
    batching = max_batch_size > 0
    s = manifest["shapes"]
    lengths = f"lengths {s.get('min_length', 1)}..{s.get('max_length', manifest.get('max_length'))}"
    head = [
        f"# Generated by hf-torchscript from {source or 'an artifact'} (model.pt sha256 {manifest['sha256'][:16]}...).",
        f"# {manifest['model_type']} {manifest['task']}; shapes {s['strategy']}, {lengths}"
        + (f", buckets {s['buckets']}" if s.get("buckets") else "") + ": a longer input is refused by the module.",
        "# Outputs, in forward's return order (Triton's PyTorch backend names them OUTPUT__<index>):",
        *[f"#   OUTPUT__{k} = {o['name']} {o['dtype']} ({', '.join(map(str, o['shape']))})"
          for k, o in enumerate(manifest["outputs"])],
        f'name: "{name}"',
        'platform: "pytorch_libtorch"',
        f"max_batch_size: {max_batch_size}" + ("" if batching else "  # the artifact's batch axis is not leading/free"),
        "input [",
        ",\n".join(_tensor(i["name"], i["dtype"], i["shape"], batching, "forward's argument " + str(k))
                   for k, i in enumerate(manifest["inputs"])),
        "]",
        "output [",
        ",\n".join(_tensor(f"OUTPUT__{k}", o["dtype"], o["shape"], batching, o["name"])
                   for k, o in enumerate(manifest["outputs"])),
        "]",
    ]
    if batching:
        head += ["# Requests are merged only when their non-batch dims (the token count) are equal.",
                 "dynamic_batching { }"]
    head += [f"instance_group [ {{ count: {instances} kind: KIND_CPU }} ]", ""]
    return "\n".join(head)


def tokenizer_config(manifest: dict, name: str, max_batch_size: int, instances: int) -> str:
    """config.pbtxt of the Python-backend tokenizer: TEXT -> the model's token inputs, padded like hts.load."""
    batching = max_batch_size > 0
    outs = [i for i in manifest["inputs"]]
    params = {"max_length": manifest["max_length"], "pad_token_id": manifest["pad_token_id"],
              "inputs": ",".join(i["name"] for i in outs), "tokenizer_file": "tokenizer.json"}
    return "\n".join([
        "# Generated by hf-torchscript: tokenizes TEXT with the artifact's tokenizer.json (tokenizers + numpy).",
        "# Pads each request to its longest text with pad_token_id; cuts texts over max_length, like hts.load.",
        f'name: "{name}"',
        'backend: "python"',
        f"max_batch_size: {max_batch_size}",
        "input [",
        _tensor("TEXT", "float32", [BATCH_AXIS, 1] if batching else [-1], batching).replace("TYPE_FP32", "TYPE_STRING"),
        "]",
        "output [",
        ",\n".join(_tensor(i["name"], i["dtype"], i["shape"], batching) for i in outs),
        "]",
        "parameters [",
        ",\n".join(f'  {{ key: "{k}" value: {{ string_value: "{v}" }} }}' for k, v in params.items()),
        "]",
        f"instance_group [ {{ count: {instances} kind: KIND_CPU }} ]",
        "",
    ])


def ensemble_config(manifest: dict, name: str, model: str, tokenizer: str, max_batch_size: int) -> str:
    """config.pbtxt of the ensemble: clients send TEXT, get the outputs under their manifest names."""
    batching = max_batch_size > 0
    inputs = [i["name"] for i in manifest["inputs"]]
    maps = lambda pairs: " ".join(f'{kind} {{ key: "{k}" value: "{v}" }}' for kind, k, v in pairs)
    return "\n".join([
        f"# Generated by hf-torchscript: TEXT -> {tokenizer} -> {model}; outputs keep their manifest names.",
        f'name: "{name}"',
        'platform: "ensemble"',
        f"max_batch_size: {max_batch_size}",
        "input [",
        _tensor("TEXT", "float32", [BATCH_AXIS, 1] if batching else [-1], batching).replace("TYPE_FP32", "TYPE_STRING"),
        "]",
        "output [",
        ",\n".join(_tensor(o["name"], o["dtype"], o["shape"], batching) for o in manifest["outputs"]),
        "]",
        "ensemble_scheduling {",
        "  step [",
        f'    {{ model_name: "{tokenizer}" model_version: -1 '
        + maps([("input_map", "TEXT", "TEXT")] + [("output_map", n, f"_{n}") for n in inputs]) + " },",
        f'    {{ model_name: "{model}" model_version: -1 '
        + maps([("input_map", n, f"_{n}") for n in inputs]
               + [("output_map", f"OUTPUT__{k}", o["name"]) for k, o in enumerate(manifest["outputs"])]) + " }",
        "  ]",
        "}",
        "",
    ])


def parse_config(text: str):
    """Parse config.pbtxt text with Triton's own ModelConfig protobuf (tritonclient); returns the message."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    try:
        return text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as e:
        raise ArtifactError(f"generated config.pbtxt does not parse as a Triton ModelConfig ({e}); "
                            "this is a bug in hf-torchscript") from None


def config_json(text: str) -> str:
    """The config as the JSON Triton hands a Python model's initialize() (``args["model_config"]``)."""
    from google.protobuf import json_format

    return json_format.MessageToJson(parse_config(text), preserving_proto_field_name=True)
