"""Is the source folder consistent with itself? Checks that run right after loading, before any trace.

The grid (parity) and the text check (textcheck) compare the export with the model *as the source
folder defines it*. When the folder is internally wrong, the export is faithful to something nobody
trained and both say "passed". This module checks the folder against itself:

  unused_weights     tensors of the checkpoint the model does not use, when they look like the base
                     model's own (same naming, a layer index past the config's count): the config
                     builds a smaller model than the weights describe (``num_hidden_layers`` 4 over
                     6 trained layers). A task head the chosen Auto class drops (``cls.predictions``
                     of a masked-LM checkpoint exported for feature extraction, a pooler a token
                     classifier has no use for) is not an error: its naming matches nothing the
                     loaded model has.
  layer_hint /       which config field most likely disagrees with the weights (``num_hidden_layers``,
  shape_field_hint   ``vocab_size``, ``max_position_embeddings``, ...), for the messages.
  check_finite       every floating tensor of the loaded model (the whole state dict, not only what
                     the validation grid happens to touch) is finite.
  tokenizer_mismatches  the tokenizer fits the model: casing of the normalizer vs the vocabulary,
                     special-token ids vs config.json, every id the tokenizer can produce vs the
                     embedding rows, its max length vs the model's positions, and what a
                     sentence-transformers folder declares (sentence_bert_config.json).

What weights cannot show is not checked here: ``hidden_act`` gelu -> relu, or ``num_attention_heads``
12 -> 6 over the same hidden size, change the function without changing a single shape. Only a
reference computed elsewhere (not from the same folder) can catch those (docs/proof.md).
"""

from __future__ import annotations

import re
from collections import defaultdict

from ..errors import ConsistencyError, option

_INDEX = re.compile(r"\.(\d+)(?=\.|$)")
# config.json fields that count a model's layers, in the order they are tried.
LAYER_FIELDS = ("num_hidden_layers", "n_layer", "n_layers", "num_layers", "encoder_layers", "decoder_layers",
                "num_decoder_layers")
# config.json fields a tensor dimension may come from, in the order they are named.
SIZE_FIELDS = ("vocab_size", "hidden_size", "d_model", "n_embd", "dim", "embedding_size", "intermediate_size",
               "hidden_dim", "d_ff", "n_inner", "max_position_embeddings", "n_positions", "type_vocab_size",
               "num_labels", "d_kv", "num_key_value_heads", "num_attention_heads")
# A vocabulary is judged cased or uncased only with at least this many tokens that hold a cased letter.
MIN_CASED_TOKENS = 200
UNCASED_SHARE = 0.001  # at most this share of those tokens has an uppercase letter: an uncased vocabulary
CASED_SHARE = 0.02  # at least this share: a cased vocabulary
_PROBE = "Hello WORLD Ärger"
# What the manifest's consistency.checked lists (docs/proof.md says what each means).
CHECKS = ("config-vs-checkpoint shapes", "unused checkpoint tensors", "missing checkpoint tensors",
          "finite weights", "tokenizer casing vs vocabulary", "special-token ids vs config",
          "token ids vs embedding rows", "tokenizer max length vs positions", "sentence_bert_config.json")


def _pattern(name: str) -> str:
    """A tensor name with its layer indices replaced: ``encoder.layer.#.output.dense.weight``."""
    return _INDEX.sub(".#", name)


def unused_weights(model, unexpected) -> list[str]:
    """The checkpoint tensors the model does not use that are named like the base model's own tensors.

    ``unexpected``: transformers' ``loading_info["unexpected_keys"]``. A name counts when it (or it
    without the base-model prefix) has the pattern of a tensor the loaded model has, layer indices
    aside: a layer the config does not build. Heads the loaded model has no module for are left out.
    """
    prefix = getattr(model, "base_model_prefix", "") or ""
    base = getattr(model, "base_model", model)
    known = {_pattern(n) for n in model.state_dict()} | {_pattern(n) for n in base.state_dict()}
    out = []
    for k in unexpected:
        k = str(k)
        if _pattern(k) in known or (prefix and _pattern(k.removeprefix(prefix + ".")) in known):
            out.append(k)
    return sorted(out, key=_natural)


def _natural(name: str):
    return [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", name)]


def _containers(names) -> dict[str, set[int]]:
    """``{"encoder.layer": {4, 5}}``: the first indexed container of each name and the indices seen."""
    out: dict[str, set[int]] = defaultdict(set)
    for n in names:
        m = _INDEX.search(n)
        if m:
            out[n[: m.start()]].add(int(m.group(1)))
    return out


def _span(indices) -> str:
    lo, hi = min(indices), max(indices)
    return f"{lo}-{hi}" if hi > lo else str(lo)


def _strip(name: str, prefix: str) -> str:
    return name.removeprefix(prefix + ".") if prefix else name


def layer_hint(model, names, raw_config: dict, *, checkpoint_has_more: bool) -> str | None:
    """"checkpoint has encoder.layer 0-5, config builds 4 (0-3): num_hidden_layers is 4 in config.json"."""
    prefix = getattr(model, "base_model_prefix", "") or ""
    built = _containers(_strip(n, prefix) for n in model.state_dict())
    odd = _containers(_strip(str(n), prefix) for n in names)
    for container, extra in odd.items():
        have = built.get(container)
        if not have:
            continue
        count = len(have)
        field = next((f for f in LAYER_FIELDS if raw_config.get(f) == count), None)
        where = f"{field} is {count} in config.json" if field else "config.json's layer count"
        if checkpoint_has_more and min(extra) > max(have):
            total = sorted(have | extra)
            return (f"the checkpoint has {container} {_span(total)} ({len(total)} layers), the config builds {count} "
                    f"({_span(have)}): {where}, the weights say {len(total)}")
        trained = sorted(have - extra)
        if not checkpoint_has_more and trained and max(trained) < min(extra):  # the top layers missing: a count
            return (f"the config builds {container} {_span(have)} ({count} layers), the checkpoint has "
                    f"{_span(trained)} ({len(trained)}): {where}, the weights say {len(trained)}")
    return None


def shape_field_hint(raw_config: dict, checkpoint_shape, model_shape) -> str | None:
    """The config field a mismatched dimension comes from.

    E.g. "vocab_size is 30000 in config.json, the weights say 30522".
    """
    if checkpoint_shape is None or model_shape is None or len(checkpoint_shape) != len(model_shape):
        return None
    for have, want in zip(checkpoint_shape, model_shape, strict=True):
        if have == want:
            continue
        for f in SIZE_FIELDS:
            v = raw_config.get(f)
            if f == "num_labels" and v is None and isinstance(raw_config.get("id2label"), dict):
                v = len(raw_config["id2label"])
            if isinstance(v, int) and not isinstance(v, bool) and v == want:
                return f"{f} is {want} in config.json, the weights say {have}"
    return None


def unused_message(path, names: list[str], hint: str | None) -> str:
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    why = f"{hint}. " if hint else ""
    return (
        f"{str(path)!r}: the checkpoint holds {len(names)} tensors the model built from config.json does not use "
        f"({shown}): {why}The export would compute a model nobody trained; fix config.json to describe the weights, "
        f"or pass {option('allow_unused_weights', True)} if you mean to drop them (the manifest and info say so)"
    )


# -- every weight finite ----------------------------------------------------------------------------


def nonfinite_tensors(model) -> list[tuple[str, int, int, int, tuple]]:
    """Every floating tensor of ``model`` holding a non-finite value.

    As (name, NaN count, +-inf count, element count, index of the first non-finite value).
    """
    import torch

    out = []
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point() or t.numel() == 0:
                continue
            if bool(torch.isfinite(t).all()):
                continue
            nan = int(torch.isnan(t).sum())
            first = tuple(int(i) for i in (~torch.isfinite(t)).nonzero()[0].tolist())
            out.append((name, nan, int((~torch.isfinite(t)).sum()) - nan, t.numel(), first))
    return out


def check_finite(model, where: str) -> None:
    """Refuse a model with any NaN or infinite value in its weights or buffers (SourceError naming them)."""
    bad = nonfinite_tensors(model)
    if not bad:
        return
    parts = []
    for name, nan, inf, numel, first in bad[:4]:
        counts = " and ".join(x for x in (f"{nan} NaN" if nan else "", f"{inf} infinite" if inf else "") if x)
        parts.append(f"{name} has {counts} of {numel} values (the first at {list(first)})")
    more = f" (and {len(bad) - 4} more tensors)" if len(bad) > 4 else ""
    raise ConsistencyError(
        f"{where} has non-finite weights: {'; '.join(parts)}{more}. Every input that reaches them computes NaN/inf; "
        "the checkpoint is damaged or was saved after training diverged: use another checkpoint"
    )


# -- the tokenizer fits the model ---------------------------------------------------------------------


def _backend(tokenizer):
    """The ``tokenizers.Tokenizer`` of a transformers fast tokenizer (or ``tokenizer`` itself when it is one)."""
    try:
        from tokenizers import Tokenizer

        if isinstance(tokenizer, Tokenizer):
            return tokenizer
    except ImportError:  # pragma: no cover
        pass
    return getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)


def lowercases(tokenizer) -> bool | None:
    """Whether the tokenizer lowercases text before splitting it (None: cannot tell)."""
    backend = _backend(tokenizer)
    if backend is not None:
        norm = backend.normalizer
        if norm is None:
            return False
        try:
            return norm.normalize_str(_PROBE) == norm.normalize_str(_PROBE.lower())
        except Exception:  # noqa: BLE001 - a custom normalizer; only a check depends on it
            return None
    flag = getattr(tokenizer, "do_lower_case", None)
    return bool(flag) if flag is not None else None


def vocabulary_casing(tokenizer) -> tuple[str | None, int, int]:
    """("cased" | "uncased" | None, tokens with an uppercase letter, tokens with a cased letter); specials left out."""
    try:
        vocab = tokenizer.get_vocab()
    except Exception:  # noqa: BLE001 - no vocabulary to judge
        return None, 0, 0
    special = set(getattr(tokenizer, "all_special_tokens", ()) or ())
    added = getattr(tokenizer, "get_added_vocab", None)
    if callable(added):
        try:
            special |= set(added())
        except Exception:  # noqa: BLE001
            pass
    upper = cased = 0
    for tok in vocab:
        if tok in special:
            continue
        letters = [c for c in tok if c.lower() != c.upper()]  # letters that have a case
        if not letters:
            continue
        cased += 1
        upper += any(c != c.lower() for c in letters)
    if cased < MIN_CASED_TOKENS:
        return None, upper, cased
    share = upper / cased
    kind = "uncased" if share <= UNCASED_SHARE else "cased" if share >= CASED_SHARE else None
    return kind, upper, cased


def max_token_id(tokenizer) -> int | None:
    """The largest id the tokenizer can produce: its vocabulary, added and special tokens included."""
    ids = []
    try:
        ids.extend(tokenizer.get_vocab().values())
    except Exception:  # noqa: BLE001
        pass
    backend = _backend(tokenizer)
    if backend is not None:
        try:
            ids.extend(backend.get_vocab(with_added_tokens=True).values())
        except Exception:  # noqa: BLE001
            pass
    for name in ("pad", "unk", "cls", "sep", "bos", "eos", "mask"):
        v = getattr(tokenizer, f"{name}_token_id", None)
        if isinstance(v, int):
            ids.append(v)
    return max(ids) if ids else None


def _ids(v) -> set[int]:
    if isinstance(v, (list, tuple)):
        return {int(x) for x in v if isinstance(x, int)}
    return {int(v)} if isinstance(v, int) and not isinstance(v, bool) else set()


def tokenizer_mismatches(tokenizer, model, config, *, raw_config: dict | None = None, path=None,
                         pooling: dict | None = None) -> list[str]:
    """Each way the tokenizer does not fit the model, one line naming both sides (empty: it fits)."""
    if tokenizer is None or not callable(tokenizer):
        return []
    raw = raw_config or {}
    out = []
    name = type(tokenizer).__name__
    lower = lowercases(tokenizer)
    kind, upper, cased = vocabulary_casing(tokenizer)
    # What the transformers tokenizer does and what the folder's tokenizer.json does (a tokenizers, C++ or
    # Rust user's view of the same folder) can differ: transformers rebuilds the normalizer from
    # tokenizer_config.json's do_lower_case.
    sides = {f"the tokenizer ({name})": lower}
    file = path / "tokenizer.json" if path is not None else None
    if file is not None and file.is_file():
        try:
            from tokenizers import Tokenizer

            sides["the folder's tokenizer.json"] = lowercases(Tokenizer.from_file(str(file)))
        except Exception:  # noqa: BLE001 - a tokenizer.json that does not load is source.py's to report
            pass
    for side, low in sides.items():
        if kind == "uncased" and low is False:
            out.append(f"the vocabulary is uncased ({upper} of {cased} tokens with letters hold an uppercase letter) "
                       f"but {side} does not lowercase: every capitalised word becomes [UNK] or other pieces than "
                       "in training; turn lowercasing back on (tokenizer.json's normalizer)")
        elif kind == "cased" and low is True:
            out.append(f"the vocabulary is cased ({upper} of {cased} tokens with letters hold an uppercase letter) but "
                       f"{side} lowercases every text: those uppercase tokens can never be produced; turn "
                       "lowercasing off (tokenizer.json's normalizer, tokenizer_config.json's do_lower_case)")
    lows = {v for v in sides.values() if v is not None}
    if len(lows) > 1 and not any("casing" in m or "lowercas" in m for m in out):
        out.append("the folder's tokenizer.json and tokenizer_config.json disagree on lowercasing ("
                   + ", ".join(f"{k}: {'lowercases' if v else 'keeps case'}" for k, v in sides.items())
                   + "): a tokenizers/C++ user of the folder gets other ids than transformers")
    for tok_name in ("pad", "bos", "eos", "cls", "sep"):
        want = _ids(getattr(config, f"{tok_name}_token_id", None))
        have = getattr(tokenizer, f"{tok_name}_token_id", None)
        if want and isinstance(have, int) and have not in want:
            shown = sorted(want)[0] if len(want) == 1 else sorted(want)
            token = getattr(tokenizer, f"{tok_name}_token", None)
            out.append(f"{tok_name}_token_id is {shown} in config.json but the tokenizer's {tok_name} token "
                       f"{token!r} has id {have}")
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    rows = getattr(emb, "num_embeddings", None)
    top = max_token_id(tokenizer)
    if isinstance(rows, int) and top is not None and top >= rows:
        out.append(f"the tokenizer produces ids up to {top} ({len(tokenizer)} tokens with added and special ones) "
                   f"but the input embedding table has {rows} rows (vocab_size {getattr(config, 'vocab_size', '?')}): "
                   "those ids index past it")
    positions = raw.get("max_position_embeddings", raw.get("n_positions"))
    tok_max = getattr(tokenizer, "model_max_length", None)
    if (isinstance(positions, int) and isinstance(tok_max, int) and tok_max < 1_000_000 and tok_max > positions):
        out.append(f"the tokenizer's model_max_length is {tok_max} but config.json's max_position_embeddings is "
                   f"{positions}: texts of {positions + 1} to {tok_max} tokens would index past the position table")
    if pooling is not None and path is not None and (path / "sentence_bert_config.json").is_file():
        from .source import read_json_file

        sb = read_json_file(path / "sentence_bert_config.json", dict, "fix it or remove it")
        if sb.get("do_lower_case") is True and lower is False:
            out.append("sentence_bert_config.json sets do_lower_case true (sentence-transformers lowercases every "
                       f"text) but the tokenizer ({name}) does not lowercase: the shipped tokenizer.json would "
                       "see other text than sentence-transformers does; turn lowercasing on in tokenizer.json")
        seq = sb.get("max_seq_length")
        if isinstance(seq, int) and isinstance(positions, int) and seq > positions:
            out.append(f"sentence_bert_config.json's max_seq_length is {seq} but config.json's "
                       f"max_position_embeddings is {positions}")
    return out


def tokenizer_message(path, mismatches: list[str]) -> str:
    lines = "; ".join(mismatches[:4]) + (f"; and {len(mismatches) - 4} more" if len(mismatches) > 4 else "")
    return (
        f"the tokenizer in {str(path)!r} does not fit the model: {lines}. The export would be faithful to a "
        f"tokenizer the model was not trained with; fix the tokenizer files, or pass "
        f"{option('allow_tokenizer_mismatch', True)} if you mean it (the manifest and info say so)"
    )
