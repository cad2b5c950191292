"""The recorded benchmark: BERT-base speed (random init) and every variant's accuracy on real text (MiniLM).

    python bench/run_bert_base.py            # ~40-90 min on 2 cores; writes bench/results/bert-base/
    python bench/render_results.py           # bench/RESULTS.md from the recorded JSON files

Random weights time exactly like trained ones (same shapes, same kernels), so speed is measured on
BERT-base with random init; accuracy is not, so every variant is built again from the trained
all-MiniLM-L6-v2 and checked on real sentences (per-row cosine of sentence embeddings vs eager
fp32). The project's targets (bench/targets.json) are evaluated on the run. The exported
artifacts (~440 MB each) go to a temp folder, not the repository.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def build_model(directory: Path) -> Path:
    from transformers import BertConfig, BertModel

    if (directory / "config.json").exists():
        return directory
    torch.manual_seed(0)
    # bert-base-uncased's config: 12 layers, hidden 768, 12 heads, FFN 3072, vocab 30522, 512 positions.
    config = BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                        intermediate_size=3072, max_position_embeddings=512)
    BertModel(config).eval().save_pretrained(str(directory))
    return directory


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(HERE / "results" / "bert-base"))
    ap.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "hts-bench-bert-base"))
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--mixed-requests", type=int, default=64)
    ap.add_argument("--variants", default=None)
    ap.add_argument("--max-length", type=int, default=None,
                    help="export max length (default 512; 128 makes each export's validation grid ~4x cheaper)")
    ap.add_argument("--grid", default="1x16,1x128,8x128,1x512")
    args = ap.parse_args(argv)

    import hf_torchscript as hts

    model_dir = build_model(Path(args.workdir) / "bert-base-random")
    report = hts.benchmark(
        model_dir, task="feature-extraction", output_dir=args.out, workdir=args.workdir,
        variants=args.variants.split(",") if args.variants else None,
        grid=tuple(tuple(int(x) for x in s.split("x")) for s in args.grid.split(",")), max_length=args.max_length,
        rounds=args.rounds, warmup=2, mixed_requests=args.mixed_requests, mixed_batch=8, mixed_rounds=3,
        threads=2, accuracy_model="sentence-transformers/all-MiniLM-L6-v2", targets=HERE / "targets.json",
        description="BERT-base (random init, bert-base-uncased config)",
    )
    report.environment["command"] = " ".join(["python bench/run_bert_base.py", *(argv if argv is not None else sys.argv[1:])])
    report.save(args.out)
    print(report.table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
