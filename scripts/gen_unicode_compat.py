"""Generate cpp/hts_unicode_compat.hpp: where the Rust `tokenizers` crate's character classes differ
from libutf8proc's Unicode data.

The crate takes three classes from the `unicode_categories` crate, whose tables predate Unicode 10:
punctuation (BertPreTokenizer, Punctuation), "other" (BertNormalizer's clean_text drops Cc/Cf/Co/Cs)
and non-spacing marks (accent stripping); StripAccents's combining marks and the NFC/NFD/NFKC/NFKD
forms come from an older unicode-normalization table too (normalization_protect: characters that
utf8proc decomposes or reorders but the crate leaves alone). Characters given those categories since then are letters or
unknown to the crate, so the C++ tokenizer, which reads libutf8proc's (newer) tables, must treat them
the crate's way to produce the same ids. This script measures each class on the reference itself
(the installed Python `tokenizers`, one probe per code point) and writes the code points where the
two disagree, in both directions, as sorted ranges.

    python scripts/gen_unicode_compat.py > cpp/hts_unicode_compat.hpp

Needs libutf8proc (the shared library the C++ build links) and `tokenizers`; about a minute.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import unicodedata

PUNCT = range(12, 19)  # UTF8PROC_CATEGORY_PC .. PO
OTHER = {26, 27, 28, 29}  # Cc, Cf, Cs, Co (Cn: the crate keeps unassigned code points)
MN = 6


def ranges(points: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for p in points:
        if out and out[-1][1] == p - 1:
            out[-1] = (out[-1][0], p)
        else:
            out.append((p, p))
    return out


def main() -> int:
    import tokenizers
    from tokenizers import normalizers, pre_tokenizers

    lib = ctypes.CDLL(ctypes.util.find_library("utf8proc") or "libutf8proc.so.2")
    lib.utf8proc_category.restype = ctypes.c_int
    lib.utf8proc_version.restype = ctypes.c_char_p
    lib.utf8proc_unicode_version.restype = ctypes.c_char_p
    pre = pre_tokenizers.BertPreTokenizer()
    clean = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=False, strip_accents=False,
                                       lowercase=False)
    # BertNormalizer's accent stripping: NFD, then drop the crate's Mn (StripAccents drops every M*,
    # with newer tables, and needs no correction)
    marks = normalizers.BertNormalizer(clean_text=False, handle_chinese_chars=False, strip_accents=True,
                                       lowercase=False)
    diffs: dict[str, list[int]] = {k: [] for k in ("punct_add", "punct_remove", "other_add", "other_remove",
                                                   "mn_add", "mn_remove", "mark_add", "mark_remove",
                                                   "normalization_protect")}
    strip_marks = normalizers.StripAccents()  # every combining mark, from unicode-normalization's (older) table
    forms = {name: getattr(normalizers, name)() for name in ("NFC", "NFD", "NFKC", "NFKD")}
    lib.utf8proc_get_property.restype = ctypes.POINTER(ctypes.c_int16)  # [0] category, [1] combining class
    lib.utf8proc_map.restype = ctypes.c_ssize_t
    stable, compat, compose, decompose = 1 << 1, 1 << 2, 1 << 3, 1 << 4  # utf8proc_option_t
    options = {"NFC": stable | compose, "NFD": stable | decompose, "NFKC": stable | compose | compat,
               "NFKD": stable | decompose | compat}

    def map1(text: str, opts: int) -> str:
        data = text.encode()
        out = ctypes.c_char_p()
        n = lib.utf8proc_map(data, len(data), ctypes.byref(out), opts)
        return ctypes.string_at(out, n).decode()

    def utf8proc_form(text: str, form: str) -> str:
        return map1(text, options[form])
    for c in range(0x80, 0x110000):
        if 0xD800 <= c <= 0xDFFF:
            continue
        ch = chr(c)
        cat = lib.utf8proc_category(c)
        # punctuation: isolated between two letters
        crate = len(pre.pre_tokenize_str("a" + ch + "a")) == 3 and cat not in (23, 24, 25)
        if crate != (cat in PUNCT) and not ch.isspace():
            diffs["punct_add" if crate else "punct_remove"].append(c)
        # clean_text: dropped (U+FFFD is dropped by name, not by category)
        if c != 0xFFFD and not ch.isspace():
            crate = clean.normalize_str("a" + ch) == "a"
            if crate != (cat in OTHER):
                diffs["other_add" if crate else "other_remove"].append(c)
        # StripAccents: every combining mark (M*)
        crate = strip_marks.normalize_str("a" + ch) == "a"
        if crate != (cat in (6, 7, 8)):
            diffs["mark_add" if crate else "mark_remove"].append(c)
        # NFC/NFD/NFKC/NFKD: a character utf8proc decomposes or reorders (combining class) but the crate's
        # older tables do not know is left alone by the crate: protect it (a starter that blocks both)
        if lib.utf8proc_get_property(c)[1] != 0 or utf8proc_form(ch, "NFKD") != ch:
            for probe in (ch, "a" + ch + "\u0334"):
                if any(forms[f].normalize_str(probe) != utf8proc_form(probe, f) for f in forms):
                    diffs["normalization_protect"].append(c)
                    break
        # accent stripping: removed iff Mn (only characters NFD leaves alone)
        if unicodedata.normalize("NFD", ch) != ch:
            continue
        crate = marks.normalize_str("a" + ch) == "a"
        if crate != (cat == MN):
            diffs["mn_add" if crate else "mn_remove"].append(c)

    out = [
        "// Generated by scripts/gen_unicode_compat.py; do not edit. Code points where the Rust tokenizers",
        f"// crate (tokenizers {tokenizers.__version__}) classifies differently from libutf8proc "
        f"{lib.utf8proc_version().decode()} (Unicode {lib.utf8proc_unicode_version().decode()}):",
        "// *_add: the crate says yes, utf8proc no; *_remove: utf8proc yes, the crate no. Inclusive ranges.",
        "#pragma once",
        "",
        "#include <cstdint>",
        "",
        "namespace hf_torchscript {",
        "namespace tok_compat {",
        "",
        "struct Range {",
        "  uint32_t lo, hi;",
        "};",
        "",
        "template <size_t N>",
        "inline bool in(const Range (&table)[N], uint32_t c) {",
        "  size_t a = 0, b = N;",
        "  while (a < b) {",
        "    size_t m = (a + b) / 2;",
        "    if (c < table[m].lo)",
        "      b = m;",
        "    else if (c > table[m].hi)",
        "      a = m + 1;",
        "    else",
        "      return true;",
        "  }",
        "  return false;",
        "}",
        "",
    ]
    for name, points in diffs.items():
        rs = ranges(points) or [(0xFFFFFFFF, 0xFFFFFFFF)]  # never empty (not valid C++); matches no code point
        out.append(f"inline constexpr Range {name}[] = {{  // {len(points)} code points")
        line = "   "
        for lo, hi in rs:
            item = f" {{0x{lo:X}, 0x{hi:X}}},"
            if len(line) + len(item) > 118:
                out.append(line)
                line = "   "
            line += item
        out.append(line)
        out.append("};")
        out.append("")
    out += ["}  // namespace tok_compat", "}  // namespace hf_torchscript", ""]
    sys.stdout.write("\n".join(out))
    for name, points in diffs.items():
        print(f"{name}: {len(points)} code points in {len(ranges(points))} ranges", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
