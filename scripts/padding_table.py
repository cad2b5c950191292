"""Write the "what padding to the maximum costs" table of docs/shapes.md from a recorded benchmark.

    python scripts/padding_table.py [bench/results/bert-base/report.json]

The numbers come from `hf-torchscript bench` (bench/run_bert_base.py); nothing is typed by hand.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- padding-cost:start -->", "<!-- padding-cost:end -->"


def render(report: dict) -> str:
    env, method = report["environment"], report["method"]
    rows = [
        "| batch x real length | eager fp32 | dynamic | buckets | static pad-to-max | static / dynamic |",
        "|---|---|---|---|---|---|",
    ]
    for e in report["grid"]:
        r = e["results"]
        if "ts-static" not in r or "ts-dynamic" not in r:
            continue
        ms = {k: r[k]["median_ms"] for k in ("eager", "ts-dynamic", "ts-buckets", "ts-static") if k in r}
        rows.append(
            f"| {e['batch']} x {e['length']} | {ms['eager']:.1f} ms | {ms['ts-dynamic']:.1f} ms | "
            f"{ms.get('ts-buckets', float('nan')):.1f} ms | {ms['ts-static']:.1f} ms | "
            f"**{ms['ts-static'] / ms['ts-dynamic']:.1f}x** |"
        )
    mixed = report.get("mixed") or {}
    lines = [
        START,
        f"Measured by `{env.get('command', 'hf-torchscript bench')}` on {env.get('cpu')} ({env.get('threads')} threads),",
        f"torch {env.get('torch')}, transformers {env.get('transformers')}: {report.get('model')}, median over",
        f"{method.get('rounds')} interleaved rounds after {method.get('warmup')} warm-up rounds. The static artifact",
        "is the docs page's recipe: traced at the max length, every input padded to it.",
        "",
        *rows,
    ]
    if mixed:
        lines += ["", "Mixed-length workload (real sentence lengths, batched like a service; see bench/RESULTS.md):"]
        for name, x in (mixed.get("results") or {}).items():
            if name in ("ts-dynamic", "ts-buckets", "ts-static") and "tokens_per_s" in x:
                lines.append(f"- {name}: {x['tokens_per_s']:.0f} real tokens/s")
    lines.append(END)
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    src = Path(argv[0]) if argv else ROOT / "bench" / "results" / "bert-base" / "report.json"
    report = json.loads(src.read_text())
    doc = ROOT / "docs" / "shapes.md"
    text = doc.read_text()
    block = render(report)
    if START in text:
        text = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text = text.replace("PADDING_COST_TABLE", block)
    doc.write_text(text)
    print(f"wrote the padding-cost table of {doc} from {src}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
