"""Generation speed: prefill and decode tokens/s, peak memory, cold time to first token (batch 1).

    python bench/generation.py                 # prompt 32 and 128, 64 new tokens, a 4-layer llama (random weights)
    python bench/generation.py --smoke         # tiny sizes, to check the script on a busy machine

Variants, each in its own process (so peak RSS is its own): ``artifact`` (our text-generation
export, TorchScript, driven by hf_torchscript.runtime.generation, with export's default KV cache of 2048
positions: what a user gets), ``artifact-fit`` (the same with the cache sized to prompt + new tokens,
as transformers sizes its static cache), ``artifact-bf16`` (``--dtype bfloat16``: weights, activations
and cache in bf16), ``eager`` (transformers generate, its default dynamic cache), ``eager-bf16`` (the
same on the model cast to bfloat16), ``static`` (generate with cache_implementation="static"), ``compiled``
(static cache + torch.compile of the forward). Decode speed does not depend on the weights, so
the model is random; greedy with EOS disabled, so every variant generates exactly N tokens.
Prefill = time of a 1-token generation; decode tokens/s = (N - 1) / (time(N) - time(1)); medians
of --repeats after a warm-up run. ``floor``: the time of the model's fp32 weight matrices alone at one
token (one GEMV each, torch's best of ``linear(x, W)`` and ``x @ W^T``): no fp32 decode step on this CPU
can be faster, so it bounds what any variant can reach. The machine (CPU model, ISA, load average) is recorded: results
taken while the load average is above 1 are not evidence (the JSON says so).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

VARIANTS = ("artifact", "artifact-fit", "artifact-bf16", "eager", "eager-bf16", "static", "compiled")
DEFAULT_CACHE = 2048  # exporter.generation.DEFAULT_MAX_CACHE_LEN


def machine() -> dict:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    load = os.getloadavg()[0]
    return {"cpu": cpu, "isa": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
            "load_average": round(load, 2), "quiet": load <= 1.0, "torch": torch.__version__}


def build(workdir: Path, smoke: bool, fit_cache: int) -> tuple[Path, dict[str, Path]]:
    """The source model and two exports: the default cache and one sized to the generation."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    import hf_torchscript as hts

    src = workdir / "src"
    outs = {"artifact": workdir / "out", "artifact-fit": workdir / f"out-fit{fit_cache}",
            "artifact-bf16": workdir / "out-bf16"}
    if not (src / "config.json").is_file():
        torch.manual_seed(0)
        size = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128) if smoke else \
            dict(hidden_size=512, num_hidden_layers=4, num_attention_heads=8, intermediate_size=1376)
        cfg = AutoConfig.for_model("llama", vocab_size=4096, num_key_value_heads=size["num_attention_heads"] // 2,
                                   max_position_embeddings=DEFAULT_CACHE, bos_token_id=1, eos_token_id=2,
                                   pad_token_id=0, **size)
        AutoModelForCausalLM.from_config(cfg).save_pretrained(src)
    for name, cache, dtype in (("artifact", None, "float32"), ("artifact-fit", fit_cache, "float32"),
                               ("artifact-bf16", None, "bfloat16")):
        if not (outs[name] / "manifest.json").is_file():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # bf16's CpuWarning: measuring it is the point
                hts.export(src, outs[name], task="text-generation", max_cache_len=cache, dtype=dtype, force=True)
    return src, outs


def gemv_floor(src: Path, repeats: int = 50) -> dict:
    """Every fp32 weight matrix of the model once at one token: the least time an fp32 decode step can take."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(src).eval()
    weights = [m.weight.detach() for m in model.modules() if isinstance(m, torch.nn.Linear)]
    transposed = [w.t().contiguous() for w in weights]
    xs = {w.shape[1]: torch.randn(1, w.shape[1]) for w in weights}

    def linear():
        for w in weights:
            torch.nn.functional.linear(xs[w.shape[1]], w)

    def matmul():
        for wt in transposed:
            torch.matmul(xs[wt.shape[0]], wt)

    out = {}
    with torch.no_grad():
        for name, fn in (("linear", linear), ("matmul_transposed", matmul)):
            for _ in range(5):
                fn()
            out[name + "_ms"] = statistics.median(_time(lambda _: fn(), 0) for _ in range(repeats)) * 1e3
    best = min(out.values())
    return {**{k: round(v, 3) for k, v in out.items()}, "weights_mb": round(sum(w.numel() for w in weights) * 4 / 1e6, 1),
            "max_decode_tokens_per_s": round(1e3 / best, 1)}


def child(variant: str, src: str, out: str, prompt: int, new: int, repeats: int) -> dict:
    """One variant in this process: warm up, then median times of 1-token and N-token generations."""
    import torch

    ids = torch.randint(3, 4000, (1, prompt), generator=torch.Generator().manual_seed(prompt)).tolist()[0]
    t0 = time.perf_counter()
    if variant.startswith("artifact"):
        import hf_torchscript as hts
        from hf_torchscript.runtime.generation import SamplingConfig

        g = hts.load(out).generator()
        g.eos_token_ids = ()  # exactly N tokens, like the peers with EOS disabled

        def run(n):
            for i, _ in enumerate(g.iter_ids(ids, SamplingConfig(max_new_tokens=n))):
                if i == 0 and "ttft" not in cold:
                    cold["ttft"] = time.perf_counter() - t0
    else:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(src).eval()
        if variant == "eager-bf16":
            model = model.to(torch.bfloat16)
        kw = {}
        if variant in ("static", "compiled"):
            kw["cache_implementation"] = "static"
        if variant == "compiled":
            model.forward = torch.compile(model.forward, dynamic=False)
        x = torch.tensor([ids])

        def run(n):
            with torch.no_grad():
                model.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=n,
                               min_new_tokens=n, eos_token_id=None, pad_token_id=0, **kw)
            cold.setdefault("ttft", time.perf_counter() - t0)

    cold: dict = {}
    run(1)  # cold: load + first token
    run(new)  # warm-up (compiles, profiling runs)
    one = statistics.median(_time(run, 1) for _ in range(repeats))
    full = statistics.median(_time(run, new) for _ in range(repeats))
    return {"variant": variant, "prompt": prompt, "new_tokens": new, "prefill_s": one,
            "prefill_tokens_per_s": prompt / one,
            # None when noise swamps the difference (a busy machine, one repeat): never a made-up rate
            "decode_tokens_per_s": (new - 1) / (full - one) if full > one else None,
            "cold_first_token_s": cold["ttft"],
            "peak_rss_mb": _peak_rss_mb()}


def _peak_rss_mb() -> float:
    """This process's own peak RSS: VmHWM (a new address space at exec). Not ru_maxrss, which Linux carries
    over from the parent across fork and exec: every child reported the parent's 785 MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _time(fn, n) -> float:
    t = time.perf_counter()
    fn(n)
    return time.perf_counter() - t


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny model and sizes (checks the script, not evidence)")
    p.add_argument("--prompts", default=None, help="prompt lengths, comma-separated (default 32,128; smoke 8)")
    p.add_argument("--new-tokens", type=int, default=None, help="new tokens (default 64; smoke 8)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per variant (default 5; smoke 1)")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--workdir", default="bench/results/generation-work")
    p.add_argument("--json", metavar="FILE", help="write the results here too")
    p.add_argument("--child", nargs=6, metavar=("VARIANT", "SRC", "OUT", "PROMPT", "NEW", "REPEATS"),
                   help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        v, src, out, prompt, new, repeats = a.child
        print(json.dumps(child(v, src, out, int(prompt), int(new), int(repeats))))
        return 0
    prompts = [int(x) for x in (a.prompts or ("8" if a.smoke else "32,128")).split(",")]
    new = a.new_tokens or (8 if a.smoke else 64)
    repeats = a.repeats or (1 if a.smoke else 5)
    src, outs = build(Path(a.workdir), a.smoke, max(prompts) + new + 1)
    doc = {"command": " ".join(["python bench/generation.py", *(argv if argv is not None else sys.argv[1:])]),
           "model": "a 4-layer llama (hidden 512, 8 heads, 4 KV heads, vocab 4096), random weights" if not a.smoke
           else "a 2-layer llama (hidden 64), random weights", "machine": machine(), "smoke": a.smoke, "results": []}
    for prompt in prompts:
        for v in a.variants.split(","):
            out = outs.get(v, outs["artifact"])
            r = subprocess.run([sys.executable, __file__, "--child", v, str(src), str(out), str(prompt), str(new),
                                str(repeats)], capture_output=True, text=True)
            if r.returncode != 0:
                doc["results"].append({"variant": v, "prompt": prompt, "error": r.stderr.strip().splitlines()[-1:]})
                continue
            doc["results"].append(json.loads(r.stdout.strip().splitlines()[-1]))
    doc["floor"] = gemv_floor(src)
    doc["machine"]["load_average_after"] = round(os.getloadavg()[0], 2)
    print(f"{'variant':12} {'prompt':>6} {'prefill tok/s':>14} {'decode tok/s':>13} {'cold TTFT s':>12} {'peak MB':>8}")
    for r in doc["results"]:
        if "error" in r:
            print(f"{r['variant']:12} {r['prompt']:>6} error: {r['error']}")
            continue
        decode = r["decode_tokens_per_s"]
        print(f"{r['variant']:12} {r['prompt']:>6} {r['prefill_tokens_per_s']:>14.1f} "
              f"{decode if decode is None else round(decode, 1)!s:>13} "
              f"{r['cold_first_token_s']:>12.2f} {r['peak_rss_mb']:>8.0f}")
    f = doc["floor"]
    print(f"fp32 GEMV floor: {min(f['linear_ms'], f['matmul_transposed_ms']):.2f} ms per token "
          f"({f['weights_mb']} MB of weights) -> at most {f['max_decode_tokens_per_s']} decode tok/s")
    m = doc["machine"]
    print(f"{m['cpu']}, {m['isa']}, {m['threads']} threads, load {m['load_average']} -> {m['load_average_after']}"
          + ("" if m["quiet"] and not a.smoke else "  (NOT evidence: smoke sizes or a busy machine)"))
    if a.json:
        Path(a.json).write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
