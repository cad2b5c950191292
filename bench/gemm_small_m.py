"""Which fp32 GEMM is fastest on this CPU for BERT-base's linears at few rows (the 1x16 question).

    python bench/gemm_small_m.py                       # M = 16 and 128; bench/results/gemm_small_m.json
    python bench/gemm_small_m.py --aoti                # also AOTInductor, freezing + max-autotune (~2 min compile)

At 1x16 almost all of BERT-base's time is its 72 Linear layers (12 layers of q, k, v, o, up, down), so
the export is as fast as the GEMM it calls. This measures the GEMMs alone, the same 72 weights chained
as in a BERT layer (q + k + v summed where attention would be, so no library can skip a product), in
one process, interleaved rounds (the order rotates each round), medians:

- ``linear``: torch's ``F.linear`` (MKL sgemm on a plain weight): the plain and frozen exports;
- ``onednn-packed``: ``mkldnn::_linear_pointwise`` on a weight reordered once (``--pack-linears``);
- ``mkl-packed``: ``mkl::_mkl_linear`` on an MKL-packed weight (what Inductor's freezing uses for fp32);
- ``onnxruntime``: the same graph exported to ONNX, ONNX Runtime's CPU provider (MLAS, prepacked);
- ``aoti-autotune`` (``--aoti``): AOTInductor with freezing and max-autotune (its C++ GEMM template).

The machine (CPU model, ISA, load average at start and end) is recorded; a run that starts with a load
average above 1 is marked as not evidence (at the end the load average includes this run's own threads).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

HIDDEN, INTERMEDIATE, LAYERS = 768, 3072, 12  # bert-base-uncased


class Linears(torch.nn.Module):
    """BERT-base's 72 linears, chained as in its layers."""

    def __init__(self):
        super().__init__()
        shapes = [(HIDDEN, HIDDEN)] * 4 + [(HIDDEN, INTERMEDIATE), (INTERMEDIATE, HIDDEN)]
        self.layers = torch.nn.ModuleList(
            torch.nn.ModuleList(torch.nn.Linear(i, o) for i, o in shapes) for _ in range(LAYERS))

    def forward(self, x):
        for q, k, v, o, up, down in self.layers:
            x = down(up(o(q(x) + k(x) + v(x))))
        return x


class Packed(torch.nn.Module):
    """The same chain on pre-packed weights: ``op(x, packed, weight, bias)``."""

    def __init__(self, model: Linears, pack, op):
        super().__init__()
        self.op = op
        self.layers = [[(pack(lin.weight.detach()), lin.weight.detach(), lin.bias.detach()) for lin in layer]
                       for layer in model.layers]

    def forward(self, x):
        for layer in self.layers:
            q, k, v, o, up, down = (lambda t, layer_=layer, i=i: self.op(t, *layer_[i]) for i in range(6))
            x = down(up(o(q(x) + k(x) + v(x))))
        return x


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("flags")), [])
    isa = sorted(f for f in flags if f.startswith(("avx512", "amx")) or f in ("avx2", "avx_vnni", "fma"))
    return {"cpu": cpu, "isa": torch.backends.cpu.get_cpu_capability(), "cpu_flags": isa,
            "threads": torch.get_num_threads(), "cores": os.cpu_count(), "torch": torch.__version__}


def variants(model: Linears, rows: int, workdir: Path, aoti: bool) -> dict:
    """name -> (callable taking a [1, rows, 768] tensor, or None, why not)."""
    out = {"linear": (model, None)}
    if torch.backends.mkldnn.is_available():
        out["onednn-packed"] = (Packed(model, lambda w: torch.ops.mkldnn._reorder_linear_weight(w, rows),
                                       lambda x, p, w, b: torch.ops.mkldnn._linear_pointwise(x, p, b, "none", [], "")),
                                None)
    else:
        out["onednn-packed"] = (None, "this torch has no oneDNN")
    if torch.backends.mkl.is_available():
        out["mkl-packed"] = (Packed(model, lambda w: torch.ops.mkl._mkl_reorder_linear_weight(w, rows),
                                    lambda x, p, w, b: torch.ops.mkl._mkl_linear(x, p, w, b, rows)), None)
    else:
        out["mkl-packed"] = (None, "this torch has no MKL")
    example = torch.randn(1, rows, HIDDEN)
    try:
        import onnxruntime as ort
    except ImportError:
        out["onnxruntime"] = (None, "onnxruntime is not installed (pip install onnxruntime)")
    else:
        path = workdir / "linears.onnx"
        if not path.is_file():
            torch.onnx.export(model, (example,), str(path), dynamo=False, input_names=["x"],
                              dynamic_axes={"x": {1: "length"}})
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        out["onnxruntime"] = (lambda x: session.run(None, {"x": x.numpy()}), None)
    if aoti:  # one package with a dynamic length, as `--backend aoti` exports, compiled once for every M
        package = workdir / "linears.pt2"
        if not package.is_file():
            started = time.perf_counter()
            length = torch.export.Dim("length", min=2, max=512)
            program = torch.export.export(model, (example,), dynamic_shapes=({1: length},))
            torch._inductor.aoti_compile_and_package(
                program, package_path=str(package),
                inductor_configs={"freezing": True, "max_autotune": True, "max_autotune_gemm_backends": "CPP,ATEN"})
            print(f"aoti compile: {time.perf_counter() - started:.0f} s", file=sys.stderr)
        out["aoti-autotune"] = (torch._inductor.aoti_load_package(str(package)), None)
    return out


def measure(rows: int, rounds: int, warmup: int, workdir: Path, aoti: bool) -> dict:
    torch.manual_seed(0)
    model = Linears().eval()
    x = torch.randn(1, rows, HIDDEN)
    found = variants(model, rows, workdir, aoti)
    runnable = {name: fn for name, (fn, _) in found.items() if fn is not None}
    result = {name: {"status": "not run", "reason": why} for name, (fn, why) in found.items() if fn is None}
    with torch.no_grad():
        want = model(x)
        for name, fn in runnable.items():
            got = torch.as_tensor(fn(x)[0] if name == "onnxruntime" else fn(x))
            diff = float((got - want).abs().max())
            if not diff < 1e-3:  # a variant that computes something else is not a speed result
                raise SystemExit(f"{name} differs from torch.nn.Linear by {diff} at M={rows}")
            result[name] = {"status": "ok", "max_abs_diff_to_linear": diff}
            for _ in range(warmup):
                fn(x)
        times = {name: [] for name in runnable}
        names = list(runnable)
        for r in range(rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                started = time.perf_counter()
                runnable[name](x)
                times[name].append(time.perf_counter() - started)
    flop = 2 * rows * LAYERS * (4 * HIDDEN * HIDDEN + 2 * HIDDEN * INTERMEDIATE)
    base = times["linear"]
    for name, ts in times.items():
        median = statistics.median(ts)
        result[name].update(median_ms=round(median * 1e3, 3), min_ms=round(min(ts) * 1e3, 3),
                            gflops=round(flop / median / 1e9, 1),
                            ratio_to_linear=round(statistics.median(t / b for t, b in zip(ts, base)), 3))
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[16, 128], help="M: tokens per call (batch 1)")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--aoti", action="store_true", help="also AOTInductor with freezing + max-autotune")
    parser.add_argument("--json", default=str(Path(__file__).resolve().parent / "results" / "gemm_small_m.json"))
    args = parser.parse_args(argv)
    env = machine()
    env["command"] = " ".join(["python bench/gemm_small_m.py", *(sys.argv[1:] if argv is None else argv)])
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        results = {str(rows): measure(rows, args.rounds, args.warmup, Path(tmp), args.aoti) for rows in args.rows}
    load_end = os.getloadavg()
    env.update(loadavg_start=[round(v, 2) for v in load_start], loadavg_end=[round(v, 2) for v in load_end],
               quiet=load_start[0] <= 1.0)  # at the end the load includes this run's own threads
    report = {"what": __doc__.splitlines()[0], "environment": env,
              "method": {"rounds": args.rounds, "warmup": args.warmup, "order": "rotates by one each round",
                         "ratio": "median over rounds of (variant time / linear time in the same round)"},
              "rows": results}
    for rows, res in results.items():
        for name, r in res.items():
            line = (f"{r['median_ms']:8.2f} ms  {r['gflops']:6.1f} GFLOP/s  x{r['ratio_to_linear']:.2f}"
                    if r["status"] == "ok" else r["reason"])
            print(f"M={rows:>4}  {name:14s} {line}")
    if not env["quiet"]:
        print(f"load average {load_start[0]:.2f} at the start: above 1, not evidence", file=sys.stderr)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
