"""Median / p90 latency of one artifact from the Python runtime and from the C++ runner (hts_run).

Both sides get the same token ids (random ids, no padding), the same warm-up count and the same
number of intra-op threads; each call is timed alone, like hts_run --bench does.

    hf-torchscript export sentence-transformers/all-MiniLM-L6-v2 /tmp/minilm
    hf-torchscript cpp-build --build-dir build/cpp
    python bench/cpp_vs_python.py /tmp/minilm --runner build/cpp/hts_run --cases 1x16,8x128 --calls 50 --repeat 3 --threads 1
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import hf_torchscript as hts


def make_inputs(manifest: dict, batch: int, length: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for spec in manifest["inputs"]:
        if spec["name"] == "input_ids":
            out["input_ids"] = torch.randint(1000, 20000, (batch, length), generator=g)
        elif spec["name"] == "attention_mask":
            out["attention_mask"] = torch.ones(batch, length, dtype=torch.long)
        else:
            out[spec["name"]] = torch.zeros(batch, length, dtype=torch.long)
    return out


def time_python(model, inputs: dict, calls: int, warmup: int) -> dict:
    for _ in range(warmup):
        model.run(**inputs)
    ms = []
    for _ in range(calls):
        t0 = time.perf_counter()
        model.run(**inputs)
        ms.append((time.perf_counter() - t0) * 1e3)
    ms.sort()
    return {"median_ms": statistics.median(ms), "p90_ms": ms[max(math.ceil(0.9 * len(ms)), 1) - 1]}


def time_cpp(runner: Path, artifact: Path, inputs: dict, calls: int, warmup: int, threads: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({k: v.tolist() for k, v in inputs.items()}, f)
    proc = subprocess.run(
        [str(runner), str(artifact), f.name, "--bench", str(calls), "--warmup", str(warmup), "--threads", str(threads)],
        capture_output=True, text=True,
    )
    Path(f.name).unlink()
    if proc.returncode != 0:
        sys.exit(f"hts_run failed: {proc.stderr.strip()}")
    return json.loads(proc.stdout)["bench"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("artifact", type=Path)
    p.add_argument("--runner", type=Path, default=Path("build/cpp/hts_run"))
    p.add_argument("--cases", default="1x16,8x128", help="BATCHxLENGTH, comma-separated")
    p.add_argument("--calls", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--repeat", type=int, default=3, help="alternating Python / C++ rounds per case")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    a = p.parse_args(argv)

    torch.set_num_threads(a.threads)
    model = hts.load(a.artifact)
    rows = []
    for case in a.cases.split(","):
        batch, length = (int(x) for x in case.split("x"))
        inputs = make_inputs(model.manifest, batch, length)
        # Alternate rounds so a busy machine slows both sides alike; report the median round.
        pys, ccs = [], []
        for _ in range(a.repeat):
            pys.append(time_python(model, inputs, a.calls, a.warmup))
            ccs.append(time_cpp(a.runner, a.artifact, inputs, a.calls, a.warmup, a.threads))
        py = {k: statistics.median(r[k] for r in pys) for k in ("median_ms", "p90_ms")}
        cc = {k: statistics.median(r[k] for r in ccs) for k in ("median_ms", "p90_ms")}
        rows.append({"batch_size": batch, "sequence_length": length, "threads": a.threads, "calls": a.calls,
                     "repeat": a.repeat,
                     "python_median_ms": py["median_ms"], "python_p90_ms": py["p90_ms"],
                     "cpp_median_ms": cc["median_ms"], "cpp_p90_ms": cc["p90_ms"]})
    print(f"artifact {a.artifact} ({model.manifest['model_type']} {model.task}), torch {torch.__version__}, "
          f"{a.threads} thread(s), {a.repeat} alternating rounds of "
          f"{a.calls} calls after {a.warmup} warm-up (median round)")
    print("| batch x length | Python median (p90) ms | C++ median (p90) ms | C++ / Python |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['batch_size']} x {r['sequence_length']} | {r['python_median_ms']:.2f} ({r['python_p90_ms']:.2f}) "
              f"| {r['cpp_median_ms']:.2f} ({r['cpp_p90_ms']:.2f}) "
              f"| {r['cpp_median_ms'] / r['python_median_ms']:.2f} |")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
