"""Which parts of a tokenizer.json the C++ tokenizer (cpp/hts_tokenizer.hpp) implements.

Export records the answer in the manifest (``"cpp_tokenizer": {"supported": ..., "unsupported": [...]}``)
so that a C++ program, and ``info``, know before loading whether the artifact takes text from C++.
Keep these sets equal to the ``make_*`` factories of hts_tokenizer.hpp; the C++ loader refuses the
same components with one line naming them. No heavy imports: json only.
"""

from __future__ import annotations

import json
from pathlib import Path

NORMALIZERS = {"BertNormalizer", "NFC", "NFD", "NFKC", "NFKD", "Lowercase", "StripAccents", "Strip", "Prepend",
               "Replace", "Sequence"}
PRE_TOKENIZERS = {"BertPreTokenizer", "WhitespaceSplit", "Whitespace", "Punctuation", "Split", "Digits",
                  "CharDelimiterSplit", "ByteLevel", "Metaspace", "Sequence"}
MODELS = {"WordPiece", "WordLevel", "BPE", "Unigram"}
POST_PROCESSORS = {"BertProcessing", "RobertaProcessing", "TemplateProcessing", "ByteLevel", "Sequence"}
DECODERS = {"WordPiece", "ByteLevel", "Metaspace", "Replace", "ByteFallback", "Fuse", "Strip", "BPEDecoder",
            "Sequence"}

_KINDS = {
    "normalizer": (NORMALIZERS, "normalizers"),
    "pre_tokenizer": (PRE_TOKENIZERS, "pretokenizers"),
    "post_processor": (POST_PROCESSORS, "processors"),
    "decoder": (DECODERS, "decoders"),
}


def _walk(kind: str, node, out: list[str]) -> None:
    if node is None:
        return
    supported, children = _KINDS[kind]
    name = node.get("type") if isinstance(node, dict) else None
    if name not in supported:
        out.append(f"{kind}.{name}")
        return
    if name == "Sequence":
        for child in node.get(children) or []:
            _walk(kind, child, out)


def unsupported_components(tokenizer) -> list[str]:
    """The components of a tokenizer.json that the C++ tokenizer does not implement, e.g.
    ``["normalizer.Precompiled"]``; empty when C++ can tokenize text for this artifact.

    Args:
        tokenizer: a path to tokenizer.json, its text, or the parsed dict.
    """
    if isinstance(tokenizer, (str, Path)) and not str(tokenizer).lstrip().startswith("{"):
        tokenizer = Path(tokenizer).read_text(encoding="utf-8")
    data = json.loads(tokenizer) if isinstance(tokenizer, str) else tokenizer
    out: list[str] = []
    for kind in _KINDS:
        _walk(kind, data.get(kind), out)
    model = data.get("model") or {}
    name = model.get("type") or ("BPE" if "merges" in model else "WordPiece" if "max_input_chars_per_word" in model
                                 else "Unigram" if "unk_id" in model else "WordLevel")
    if name not in MODELS:
        out.append(f"model.{name}")
    elif name == "BPE" and (model.get("dropout") or 0) > 0:
        out.append("model.BPE.dropout")
    return out


def cpp_tokenizer_entry(tokenizer) -> dict:
    """The manifest's ``cpp_tokenizer`` entry: ``{"supported": bool, "unsupported": [...]}``."""
    missing = unsupported_components(tokenizer)
    return {"supported": not missing, "unsupported": missing}
