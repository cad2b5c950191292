"""``info``'s lines for what the source folder was checked for (exporter/consistency.py) and for the
answers on real text at reduced precision (exporter/answers.py), from the manifest alone."""

from __future__ import annotations


def source_lines(manifest: dict) -> list[str]:
    """The consistency checks of the source folder, and any override that let a disagreement through."""
    c = manifest.get("consistency")
    if not isinstance(c, dict):
        return ["source        - (exported before the source-folder checks existed)"]
    lines = []
    unused = c.get("unused_weights") or []
    mism = c.get("tokenizer_mismatches") or []
    if not unused and not mism:
        lines.append(f"source        consistent: {len(c.get('checked') or [])} checks of config.json vs the "
                     "checkpoint, finite weights, and the tokenizer vs the model")
    if unused:
        lines.append(f"source        UNUSED WEIGHTS: {len(unused)} checkpoint tensors the config does not build were "
                     f"dropped ({', '.join(unused[:3])}{'...' if len(unused) > 3 else ''}): exported with "
                     "--allow-unused-weights")
    for m in mism:
        lines.append(f"tokenizer     MISMATCH (exported with --allow-tokenizer-mismatch): {m}")
    return lines


def answer_lines(manifest: dict) -> list[str]:
    """The real-text answer agreement of a reduced-precision artifact (validation.answers), if recorded."""
    a = (manifest.get("validation") or {}).get("answers")
    if not isinstance(a, dict):
        return []
    if not a.get("ran"):
        return [f"answers       not measured: {a.get('note', '-')}"]
    head = "passed" if a.get("passed") else "FAILED"
    lines = [f"answers       {head}: {a.get('texts')} real sentences ({a.get('texts_source', 'texts.py')}), "
             f"{a.get('precision')} vs float32 eager"]
    for f in a.get("figures") or []:
        lines.append(f"  {f['name']:<34} {f['agree']}/{f['of']} = {f['share']:.1%} (needs >= {f['bar']:.0%}; "
                     f"{f.get('ties', 0)} near-ties counted as agreement)")
    return lines
