"""The benchmark's report: one JSON document (report.json), a text table, a plot, and targets when asked.

Targets are data, not code: a JSON file (the project's own is bench/targets.json) passed with
``--targets FILE``; without one the report states no targets at all.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class BenchmarkReport:
    """Everything one benchmark run measured; ``to_json()`` is what bench/RESULTS.md is rendered from."""

    model: str
    task: str
    environment: dict
    method: dict
    gemm_ceiling_gflops: dict
    variants: dict  # name -> {description, status, reason, dtype, export_seconds, validation, ...}
    grid: list  # per (batch, length): {"batch", "length", "tokens", "gflop", "results": {variant: {...}}}
    mixed: dict
    accuracy: dict  # {"model", "texts", "results": {variant: agreement}} or {"skipped": why}
    profile: dict
    targets: list = field(default_factory=list)
    files: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> BenchmarkReport:
        return cls(**{f.name: data.get(f.name, f.default if f.default is not dataclasses.MISSING else {})
                      for f in dataclasses.fields(cls)})

    def table(self) -> str:
        """Plain text: time ratio to eager fp32 per shape (lower is faster), mixed tokens/s, accuracy on real text."""
        names = [n for n, v in self.variants.items() if v["status"] == "ok"]
        acc = self.accuracy.get("results", {})
        head = f"{'variant':<18}" + "".join(f"{'%dx%d' % (g['batch'], g['length']):>10}" for g in self.grid)
        head += f"{'mixed tok/s':>13}{'min cos':>10}{'top-1':>8}"
        lines = ["time ratio to eager fp32 (median of per-round ratios; lower is faster); accuracy vs eager fp32 "
                 f"on real text ({self.accuracy.get('model', 'not measured')})", head]
        for n in names:
            row = f"{n:<18}"
            for g in self.grid:
                r = g["results"].get(n)
                row += f"{('%.3fx' % r['ratio']) if r else '-':>10}"
            m = self.mixed.get("results", {}).get(n)
            row += f"{('%.0f' % m['tokens_per_s']) if m else '-':>13}"
            a = acc.get(n)
            row += f"{('%.5f' % a['min_cosine']) if a else '-':>10}"
            row += f"{('%.3f' % a['top1_agreement']) if a and a.get('top1_agreement') is not None else '-':>8}"
            lines.append(row)
        for n, v in self.variants.items():
            if v["status"] != "ok":
                lines.append(f"{n:<18} skipped: {v['reason']}")
        if self.accuracy.get("skipped"):
            lines.append(f"accuracy not measured: {self.accuracy['skipped']}")
        if self.targets:
            lines.append("")
            for t in self.targets:
                state = {True: "met", False: "NOT met", None: "not measured"}[t["met"]]
                lines.append(f"[{state}] {t['name']}: {t['value']} (target {t['target']})")
        return "\n".join(lines)

    def save(self, out_dir) -> dict:
        """Write report.json (and plot.png when matplotlib is installed) into ``out_dir``; returns their paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.files = {"json": str(out / "report.json")}
        try:
            plot(self, out / "plot.png")
            self.files["png"] = str(out / "plot.png")
        except ImportError:
            pass  # reported at the start of the run as a missing extra
        (out / "report.json").write_text(json.dumps(self.to_json(), indent=1) + "\n")
        return self.files


# ---------------------------------------------------------------- targets

def load_targets(path) -> list[dict]:
    """Target specs from a JSON file: ``{"targets": [{"name", "metric", "variants", "shape"?, "pick"?, "vs"?,
    "max"|"min"}]}`` (see bench/targets.json)."""
    from ..errors import OptionError

    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise OptionError(f"cannot read targets file {str(path)!r}: {e}; pass a JSON file like bench/targets.json") from None
    specs = data.get("targets") if isinstance(data, dict) else None
    if not isinstance(specs, list):
        raise OptionError(f"{str(path)!r} has no \"targets\" list; see bench/targets.json for the format")
    for t in specs:
        if not {"name", "metric", "variants"} <= set(t) or ("max" in t) == ("min" in t):
            raise OptionError(f"target {t!r} in {str(path)!r} needs name, metric, variants and one of max/min")
    return specs


def evaluate_targets(report: BenchmarkReport, specs: list[dict]) -> list[dict]:
    """Each target's measured value in this run; ``met`` is None when a variant or shape it needs did not run."""
    return [_evaluate(report, t) for t in specs]


def _evaluate(report: BenchmarkReport, t: dict) -> dict:
    lower_is_better = "max" in t
    bound = t["max"] if lower_is_better else t["min"]
    goal = f"{'<=' if lower_is_better else '>='} {bound:g}" + (f" of {t['vs']}" if t.get("vs") else "")
    ok = [n for n in t["variants"] if report.variants.get(n, {}).get("status") == "ok"]
    pick = min if lower_is_better else max
    metric = t["metric"]
    shapes = _shapes(report, t.get("shape"))
    cells = []  # (value, variant, where)
    if metric.startswith("accuracy."):
        key = metric.split(".", 1)[1]
        cells = [(report.accuracy.get("results", {}).get(n, {}).get(key), n, "real text") for n in ok]
    elif metric.startswith("mixed."):
        key = metric.split(".", 1)[1]
        cells = [(report.mixed.get("results", {}).get(n, {}).get(key), n, "mixed") for n in ok]
    else:
        # Per shape: the best variant (or the vs-ratio); over shapes ("*"): the worst of those bests.
        per_shape = []
        for g in shapes:
            res = g["results"]
            vals = []
            for n in ok:
                if n not in res:
                    continue
                v = res[n].get(metric)
                if t.get("vs"):
                    other = res.get(t["vs"], {}).get(metric)
                    v = v / other if v is not None and other else None
                vals.append((v, n, f"{g['batch']}x{g['length']}"))
            vals = [x for x in vals if x[0] is not None]
            if vals:
                per_shape.append(pick(vals, key=lambda x: x[0]))
        if per_shape:
            worst = max if lower_is_better else min
            cells = [worst(per_shape, key=lambda x: x[0])]
    cells = [c for c in cells if c[0] is not None]
    if not cells or (t.get("shape") not in (None, "*") and not shapes):
        return {"name": t["name"], "value": "not measured", "target": goal, "met": None}
    value, variant, where = pick(cells, key=lambda x: x[0]) if len(cells) > 1 else cells[0]
    met = value <= bound if lower_is_better else value >= bound
    text = f"{variant} {value:.3f}" + ("" if where in ("real text", "mixed") else f" at {where}")
    if metric == "ratio" and where not in ("real text", "mixed"):
        best = _best_case(report, variant, where, t.get("vs"))
        if best is not None:
            text += f" (best-vs-best {best:.3f})"
    return {"name": t["name"], "value": text, "target": goal, "met": bool(met)}


def _shapes(report: BenchmarkReport, shape: str | None) -> list[dict]:
    if shape in (None, "*"):
        return report.grid
    b, l = (int(x) for x in shape.lower().split("x"))
    return [g for g in report.grid if (g["batch"], g["length"]) == (b, l)]


def _best_case(report, variant: str, where: str, vs: str | None) -> float | None:
    g = _shapes(report, where)[0]["results"]
    r = g[variant]["ratio_of_mins"]
    if vs:
        other = g.get(vs, {}).get("ratio_of_mins")
        return r / other if other else None
    return r


# ---------------------------------------------------------------- plot

def plot(report: BenchmarkReport, path: Path) -> None:
    """Bar chart of the ratios per shape, and the mixed workload's throughput."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, v in report.variants.items() if v["status"] == "ok"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    ax = axes[0]
    width = 0.8 / max(1, len(names))
    for i, n in enumerate(names):
        ys = [g["results"][n]["ratio"] if n in g["results"] else 0 for g in report.grid]
        ax.bar([x + i * width for x in range(len(report.grid))], ys, width, label=n)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_yscale("log")  # ratios span 0.1x (int8, buckets) to 30x (pad-to-max at short lengths)
    ax.set_xticks([x + width * (len(names) - 1) / 2 for x in range(len(report.grid))])
    ax.set_xticklabels([f"{g['batch']}x{g['length']}" for g in report.grid])
    ax.set_ylabel("time / eager fp32 (lower is faster)")
    ax.set_title("fixed shapes (batch x length)")
    ax.legend(fontsize=7, ncol=2)
    ax = axes[1]
    mres = report.mixed.get("results", {})
    if mres:
        ns = [n for n in names if n in mres]
        ax.barh(ns, [mres[n]["tokens_per_s"] for n in ns], color=[f"C{names.index(n) % 10}" for n in ns])
        ax.set_xlabel("real tokens / s")
        ax.set_title(f"mixed lengths ({report.mixed['requests']} requests, batch {report.mixed['batch']})")
        ax.invert_yaxis()
    else:
        ax.axis("off")
    fig.suptitle(f"{report.model}: {report.environment['threads']} threads, {report.environment['cpu']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
