"""Research run: which TorchScript optimisations reach the fp32/bf16 targets, and is a scoped oneDNN switch safe?

    python bench/optimize_research.py                 # ~20-40 min on 2 loaded cores; bench/results/optimize.json
    python bench/render_results.py                    # puts its table into bench/RESULTS.md

BERT-base (random init: speed only), 2 threads, every variant traced at each measured shape as a
bucketed artifact would be, interleaved rounds, ratios to eager fp32 in the same round:

- trace / freeze / freeze + optimize_for_inference (its mkldnn linear prepacking) / eager attention
  instead of SDPA in the trace;
- oneDNN graph fusion (torch.jit.enable_onednn_fusion): the flag is process-wide and read when a
  graph is optimised on its first (profiling) calls, so four ways of switching it are compared:
  on for the whole process; on only around each call (enable, call, restore: what a runtime may
  do); on only during the warm-up calls; never;
- the same in bfloat16;
- whether a fused module still matches eager (max abs diff on padded rows) and whether a module
  run without the flag afterwards is affected (it must not be);
- torch.profiler's top ops for the plain trace and the fused one at 8x128 (where the time goes).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from hf_torchscript.bench import timing  # noqa: E402


class Wrapper(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids, mask):
        return self.model(input_ids=ids, attention_mask=mask, return_dict=True)["last_hidden_state"]


class Cast(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, ids, mask):
        return self.inner(ids, mask).float()


@contextlib.contextmanager
def onednn(on: bool):
    """Switch oneDNN graph fusion and restore the previous value, whatever happens."""
    before = torch.jit.onednn_fusion_enabled()
    torch.jit.enable_onednn_fusion(on)
    try:
        yield
    finally:
        torch.jit.enable_onednn_fusion(before)


def build_model(attn: str, dtype=torch.float32):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                     intermediate_size=3072, max_position_embeddings=512, attn_implementation=attn)
    m = BertModel(cfg, add_pooling_layer=False).eval().to(dtype)
    m.requires_grad_(False)
    return Wrapper(m) if dtype == torch.float32 else Cast(Wrapper(m))


def batch(B: int, L: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 30000, (B, L), generator=g)
    mask = torch.ones(B, L, dtype=torch.long)
    if B > 1:
        mask[-1, L // 2:] = 0  # one padded row, as a served batch has
    return ids, mask


def trace(module, example, *, freeze=True, ofi=False, fuse_at_freeze=False):
    with torch.no_grad():
        t = torch.jit.trace(module, example, check_trace=False)
        if freeze:
            with onednn(fuse_at_freeze):
                t = torch.jit.freeze(t.eval())
        if ofi:
            t = torch.jit.optimize_for_inference(t)
    return t


def variants_at(shape, models):
    """name -> (callable, description), all for inputs of exactly ``shape`` (a bucketed artifact's trace)."""
    ex = batch(*shape)
    fp32, fp32_eager_attn, bf16 = models
    out = {"eager": (lambda: fp32(*ex), "transformers eager fp32 (SDPA attention)")}
    plain = trace(fp32, ex, freeze=False)
    out["trace"] = (lambda: plain(*ex), "torch.jit.trace")
    frozen = trace(fp32, ex)
    out["trace+freeze"] = (lambda: frozen(*ex), "trace + torch.jit.freeze")
    ofi = trace(fp32, ex, ofi=True)
    out["trace+freeze+ofi"] = (lambda: ofi(*ex), "+ torch.jit.optimize_for_inference (mkldnn linear prepacking)")
    eattn = trace(fp32_eager_attn, ex)
    out["trace+freeze, eager attention"] = (lambda: eattn(*ex), "frozen trace of attn_implementation='eager' "
                                                                "(no SDPA kernel in the graph)")
    fused_global = trace(fp32, ex, fuse_at_freeze=True)

    def run_global():
        with onednn(True):
            return fused_global(*ex)
    out["onednn, flag on"] = (run_global, "frozen trace, oneDNN fusion on at freeze and for every call")
    fused_scoped = trace(fp32, ex, fuse_at_freeze=True)

    def run_scoped():
        with onednn(True):  # enable, call, restore: what a runtime can do without changing the process
            return fused_scoped(*ex)
    out["onednn, scoped per call"] = (run_scoped, "enabled around each call and restored after it")
    fused_warm = trace(fp32, ex, fuse_at_freeze=True)
    with onednn(True), torch.no_grad():
        for _ in range(3):
            fused_warm(*ex)  # the profiling executor optimises the graph on these calls
    out["onednn, warm-up only"] = (lambda: fused_warm(*ex), "enabled only for 3 warm-up calls, off afterwards")
    bf = trace(bf16, ex)
    out["bf16 trace+freeze"] = (lambda: bf(*ex), "bfloat16 frozen trace")
    bf_fused = trace(bf16, ex, fuse_at_freeze=True)

    def run_bf_fused():
        with onednn(True):
            return bf_fused(*ex)
    out["bf16 onednn, scoped per call"] = (run_bf_fused, "bfloat16 frozen trace, oneDNN fusion around each call")
    return out, ex


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(HERE / "results" / "optimize.json"))
    ap.add_argument("--shapes", default="1x16,1x128,8x128")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    models = (build_model("sdpa"), build_model("eager"), build_model("sdpa", torch.bfloat16))
    shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")]
    results, descriptions, accuracy, profiles = [], {}, {}, {}
    for shape in shapes:
        print(f"{shape}: building", file=sys.stderr, flush=True)
        fns, ex = variants_at(shape, models)
        descriptions.update({k: d for k, (_, d) in fns.items()})
        calls = {k: f for k, (f, _) in fns.items()}
        with torch.no_grad():
            print(f"{shape}: timing", file=sys.stderr, flush=True)
            times = timing.interleaved(calls, rounds=args.rounds, warmup=2, baseline="eager")
            # After the timed calls, so the fused graphs (built on the first, profiling calls) are what is checked.
            ref = calls["eager"]()
            valid = ex[1].bool()
            accuracy[f"{shape[0]}x{shape[1]}"] = {
                k: float((f().float() - ref)[valid].abs().max()) for k, f in calls.items()}
            # Every switch above was restored: the process must be left as it was found.
            flag_after = torch.jit.onednn_fusion_enabled()
        results.append({"batch": shape[0], "length": shape[1], "flag_after_calls": flag_after,
                        "results": {k: {"ratio": t.ratio, "ratio_of_mins": t.ratio_of_mins,
                                        "median_ms": t.median_s * 1e3} for k, t in times.items()}})
        if shape == (8, 128):
            with torch.no_grad():
                for k in ("trace+freeze", "onednn, scoped per call", "bf16 onednn, scoped per call"):
                    profiles[k] = timing.top_ops(calls[k], n=8)
        print(json.dumps(results[-1]["results"], indent=0), file=sys.stderr, flush=True)
    report = {
        "what": "TorchScript optimisations on BERT-base (random init), traced at each shape",
        "command": " ".join(["python bench/optimize_research.py", *(argv if argv is not None else sys.argv[1:])]),
        "environment": {"cpu": timing_cpu(), "threads": args.threads, "torch": torch.__version__,
                        "python": platform.python_version(), "loadavg_start": list(load_start),
                        "loadavg_end": list(os.getloadavg())},
        "gemm_ceiling_gflops": timing.gemm_ceiling(),
        "descriptions": descriptions, "grid": results, "max_abs_diff_vs_eager": accuracy, "profile_8x128": profiles,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


def timing_cpu() -> str:
    from hf_torchscript.bench.run import _cpu_name

    return _cpu_name()


if __name__ == "__main__":
    raise SystemExit(main())
