"""Throughput of `hf-torchscript serve` with and without dynamic batching, in one run.

Two Ray Serve apps over the same artifact run side by side on one local cluster, one replica
each: /b1 with --max-batch-size 1 (every request its own model call) and /bN with batching.
Concurrent clients (threads) each send single-text requests over HTTP on 127.0.0.1; the apps are
measured in alternating rounds after a warm-up, and the median requests/s of each is reported with
their ratio (medians within this run, not across runs).

    hf-torchscript export sentence-transformers/all-MiniLM-L6-v2 /tmp/minilm
    python bench/serve_batching.py /tmp/minilm --clients 16 --requests 8 --rounds 5 --batch 16 --wait-ms 10
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path

SENTENCES = [
    "A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby.",
    "A man is riding a horse.", "A woman is playing violin.", "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.", "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.", "A cheetah is running behind its prey.",
]


def _post(url: str, texts: list[str]) -> None:
    req = urllib.request.Request(url + "/", data=json.dumps({"texts": texts}).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        r.read()


def one_round(url: str, clients: int, requests: int) -> float:
    """requests/s for `clients` threads x `requests` single-text requests each."""
    errors = []

    def client(c):
        try:
            for k in range(requests):
                _post(url, [SENTENCES[(c + k) % len(SENTENCES)]])
        except Exception as e:  # noqa: BLE001 - a failed round must not look fast
            errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} clients failed: {errors[0]}")
    return clients * requests / elapsed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("artifact")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=8, help="per client per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=16, help="--max-batch-size of the batching app")
    ap.add_argument("--wait-ms", type=float, default=10.0, help="--batch-wait-ms of the batching app")
    ap.add_argument("--cpus", type=int, default=None, help="CPUs of the local Ray cluster (default: all)")
    ap.add_argument("--out", default="bench/results/serve_batching.json")
    a = ap.parse_args(argv)

    import ray
    from ray import serve

    from hf_torchscript.serving.ray_serve import start

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray.init(num_cpus=a.cpus, include_dashboard=False)
    try:
        urls = {
            "unbatched": start(a.artifact, port=port, max_batch_size=1, batch_wait_ms=0, name="b1",
                               route_prefix="/b1"),
            "batched": start(a.artifact, port=port, max_batch_size=a.batch, batch_wait_ms=a.wait_ms,
                             name=f"b{a.batch}", route_prefix=f"/b{a.batch}"),
        }
        for url in urls.values():  # warm-up: TorchScript's first calls profile and optimize the graph
            one_round(url, a.clients, 2)
        rates = {k: [] for k in urls}
        for r in range(a.rounds):
            for k in (list(urls) if r % 2 == 0 else list(urls)[::-1]):
                rates[k].append(one_round(urls[k], a.clients, a.requests))
                print(f"round {r + 1}: {k:9s} {rates[k][-1]:7.1f} requests/s", file=sys.stderr)
        stats = {}
        for k in urls:
            health = json.loads(urllib.request.urlopen(urls[k] + "/health", timeout=30).read())
            stats[k] = {"median_rps": statistics.median(rates[k]), "rounds": rates[k],
                        "batches": health["batches"], "texts": health["batched_texts"],
                        "largest_batch": health["largest_batch"]}
        ratio = stats["batched"]["median_rps"] / stats["unbatched"]["median_rps"]
        report = {"artifact": str(a.artifact), "clients": a.clients, "requests_per_client": a.requests,
                  "rounds": a.rounds, "max_batch_size": a.batch, "batch_wait_ms": a.wait_ms,
                  "ray_cpus": ray.cluster_resources().get("CPU"), "results": stats, "ratio": ratio}
    finally:
        serve.shutdown()
        ray.shutdown()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=2) + "\n")
    for k, v in stats.items():
        mean = v["texts"] / max(v["batches"], 1)
        print(f"{k:9s} median {v['median_rps']:7.1f} requests/s  (mean batch {mean:.1f} texts, "
              f"largest {v['largest_batch']})")
    print(f"batched / unbatched = {ratio:.2f}x  ({a.clients} clients, single-text requests; wrote {a.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
