"""`hf-torchscript serve`: Ray Serve over HTTP on 127.0.0.1, answers compared with the local runtime."""

from __future__ import annotations

import json
import socket
import sys
import threading
import urllib.error
import urllib.request

import pytest

import hf_torchscript as hts
from hf_torchscript.cli import main

ray = pytest.importorskip("ray", reason="pip install 'hf-torchscript[ray]'")
serve_mod = pytest.importorskip("ray.serve", reason="pip install 'hf-torchscript[ray]'")

MAX_BATCH = 8
TEXTS = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby.",
         "A man is riding a horse.", "A woman is playing violin.", "Two men pushed carts through the woods.",
         "A monkey is playing drums.", "Someone in a gorilla costume is playing a set of drums."]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(minilm_artifact):
    from hf_torchscript.serving.ray_serve import start

    ray.init(num_cpus=2, include_dashboard=False)
    try:
        # A long batch wait, so concurrent test clients surely share batches.
        yield start(minilm_artifact, port=_free_port(), max_batch_size=MAX_BATCH, batch_wait_ms=100)
    finally:
        serve_mod.shutdown()
        ray.shutdown()


def _call(url: str, body=None, *, raw: bytes | None = None, method: str | None = None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data is not None else "GET"),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _run_json(artifact, texts, capsys, *flags) -> dict:
    """What `hf-torchscript run ARTIFACT TEXT... --json` prints: the local runtime, the schema serve must keep."""
    capsys.readouterr()
    assert main(["run", str(artifact), *texts, "--json", *flags]) == 0
    return json.loads(capsys.readouterr().out)


def test_health_names_the_artifact(server, minilm_artifact):
    status, body = _call(server + "/health")
    manifest = json.loads((minilm_artifact / "manifest.json").read_text())
    assert status == 200
    assert (body["status"], body["task"], body["sha256"], body["max_batch_size"]) == (
        "ok", "sentence-embedding", manifest["sha256"], MAX_BATCH)


def test_one_request_gets_exactly_what_run_prints(server, minilm_artifact, capsys):
    status, body = _call(server + "/", {"texts": TEXTS[:3]})
    assert status == 200
    want = _run_json(minilm_artifact, TEXTS[:3], capsys)
    assert body == {**want, "artifact": body["artifact"]}  # alone in its batch: the same model call
    assert body["artifact"] == str(minilm_artifact) and body["similarity"] is None
    status, body = _call(server + "/", {"texts": TEXTS[:3], "similarity": True})
    assert status == 200 and body["similarity"] == _run_json(minilm_artifact, TEXTS[:3], capsys, "--similarity")["similarity"]


def _close(got, want, tol: float, path: str = "") -> None:
    """Equal structure and strings; numbers within tol (batching changes float sums in the last bits)."""
    assert type(got) is type(want) or {type(got), type(want)} <= {int, float}, path
    if isinstance(want, dict):
        assert got.keys() == want.keys(), path
        for k in want:
            _close(got[k], want[k], tol, f"{path}.{k}")
    elif isinstance(want, list):
        assert len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want)):
            _close(g, w, tol, f"{path}[{i}]")
    elif isinstance(want, float):
        assert abs(got - want) <= tol, (path, got, want)
    else:
        assert got == want, path


def test_concurrent_clients_get_the_local_runtime_answers_and_share_batches(server, minilm_artifact):
    # 8 clients x 4 requests, each request 1-2 texts, every (client, round) a different text mix.
    jobs = {(c, k): [TEXTS[(c + k) % 8]] + ([TEXTS[(c * 3 + k) % 8]] if (c + k) % 2 else [])
            for c in range(8) for k in range(4)}
    answers, failures = {}, []

    def client(c):
        for k in range(4):
            try:
                answers[c, k] = _call(server + "/", {"texts": jobs[c, k]})
            except Exception as e:  # noqa: BLE001 - reported below, not lost in a thread
                failures.append(repr(e))

    threads = [threading.Thread(target=client, args=(c,)) for c in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not failures and len(answers) == 32
    from hf_torchscript.cli import display

    model = hts.load(minilm_artifact)  # what `run --json` computes and prints (checked against `run` above)
    for key, texts in jobs.items():
        status, body = answers[key]
        assert status == 200, body
        outputs = display.run_output(model.task, model(texts))
        want = display.finish(display.run_document(minilm_artifact, model.manifest, texts, outputs))
        # Float32 values to 9 digits; a batch-mate changes the float sums in the last bits.
        _close(body, json.loads(json.dumps(want)), 1.01e-6)
    status, health = _call(server + "/health")
    assert health["largest_batch"] > 2, health  # requests were merged: more texts than any one request sent
    assert health["batches"] < health["requests"], health


@pytest.mark.parametrize("raw,status,message", [
    (b"{not json", 400, "the body is not valid JSON (Expecting property name enclosed in double quotes)"),
    (b'["a"]', 400, 'the body is a JSON array; send an object like {"texts": ["..."]}'),
    (b'{"text": ["a"]}', 400, "unknown field 'text'; a request takes texts, pairs, top_k, similarity"),
    (b'{"top_k": 3}', 400, 'no "texts"; send {"texts": ["..."]}'),
    (b'{"texts": "a"}', 400, '"texts" must be a list of strings, got a JSON string'),
    (b'{"texts": []}', 400, '"texts" is empty; send at least one text'),
    (b'{"texts": ["a", 3]}', 400, "texts[1] must be a string, got a JSON number"),
    (b'{"texts": ["a", null]}', 400, "texts[1] must be a string, got a JSON null"),
    (b'{"texts": ["a", "  "]}', 400, "texts[1] is empty; send text"),
    (json.dumps({"texts": ["a"] * (MAX_BATCH + 1)}).encode(), 413,
     f"{MAX_BATCH + 1} texts is more than this server takes in one request ({MAX_BATCH}, its --max-batch-size)"),
    (b'{"texts": ["a", "b"], "pairs": ["c"]}', 400, '"pairs" has 1 items for 2 texts; give one pair per text'),
    (b'{"texts": ["a"], "top_k": 0}', 400, '"top_k" must be an integer from 1 to 1000, got 0'),
    (b'{"texts": ["a"], "top_k": true}', 400, '"top_k" must be an integer from 1 to 1000, got true'),
    (b'{"texts": ["a"], "similarity": "yes"}', 400, '"similarity" must be true or false, got "yes"'),
])
def test_bad_requests_get_a_4xx_with_one_line(server, raw, status, message):
    got, body = _call(server + "/", raw=raw)
    assert got == status
    assert list(body) == ["error"] and "\n" not in body["error"]
    assert body["error"].startswith(message)


def test_wrong_routes_and_methods(server):
    assert _call(server + "/embed", {"texts": ["a"]}) == (
        404, {"error": 'no route /embed; POST / with {"texts": [...]}, or GET /health'})
    assert _call(server + "/") == (405, {"error": "GET / is not served; POST a JSON body"})
    assert _call(server + "/health", {"texts": ["a"]})[0] == 405


def test_a_request_the_runtime_refuses_fails_alone(tiny_artifact, capsys):
    """Batch-mates of a bad request still get their answers (the replica class, without Serve)."""
    from hf_torchscript.serving.ray_serve import TextModelServer, _Job

    art = tiny_artifact("bert", "fill-mask")
    server = TextModelServer(str(art))
    good = ["paris is the [MASK] of france", "the [MASK] is big"]
    answers = server.run_jobs([_Job(good, None, 3), _Job(["no mask here"], None, 3), _Job(good[:1], None, 5)])
    assert isinstance(answers[1], hts.InputError)
    assert str(answers[1]) == "text 0 has no [MASK] token: 'no mask here'; put [MASK] where a word should be predicted"
    capsys.readouterr()
    assert main(["run", str(art), *good, "--top-k", "3", "--json"]) == 0
    assert json.loads(json.dumps(answers[0])) == json.loads(capsys.readouterr().out)
    assert main(["run", str(art), good[0], "--json"]) == 0
    assert json.loads(json.dumps(answers[2])) == json.loads(capsys.readouterr().out)
    [refused] = server.run_jobs([_Job(good, None, 3, similarity=True)])
    assert str(refused) == '"similarity" compares sentence embeddings; this artifact is fill-mask'


@pytest.mark.slow
def test_serve_command_starts_answers_and_stops_on_ctrl_c(minilm_artifact, tmp_path):
    import os
    import signal
    import subprocess
    import time

    port = _free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in [str(__import__("pathlib").Path(
        __file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")] if p))
    proc = subprocess.Popen([sys.executable, "-m", "hf_torchscript.cli", "serve", str(minilm_artifact), "--ray",
                             "--port", str(port), "--max-client-batch-size", "4"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.time() + 180  # the command says when it is ready: after serve.run returned
        while not any(line.startswith("serving ") for line in lines):
            assert proc.poll() is None and time.time() < deadline, "".join(lines) + (
                proc.stderr.read()[-3000:] if proc.poll() is not None else "")
            time.sleep(0.5)
        url = f"http://127.0.0.1:{port}"
        # the one-process server's application (serving/http.py), on Ray Serve
        status, info = _call(url + "/info")
        assert (status, info["max_client_batch_size"]) == (200, 4)
        assert _call(url + "/", {"texts": ["a"] * 5})[0] == 413
        status, body = _call(url + "/", {"texts": ["A man is eating food."]})
        assert status == 200 and body["results"][0]["output"]["dimension"] == 384
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        reader.join(timeout=10)
    assert proc.returncode == 0, err[-2000:]
    assert f"serving {minilm_artifact} at http://127.0.0.1:{port} on Ray Serve" in "".join(lines)
    assert "stopping" in err


def test_serve_without_the_extra_says_which(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray.serve", None)
    assert main(["serve", str(tmp_path), "--ray"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: hf-torchscript serve --ray needs the 'ray' extra (ray.serve is not installed): "
        "pip install 'hf-torchscript[ray]'"]
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    assert main(["serve", str(tmp_path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: hf-torchscript serve needs the 'serve' extra (uvicorn is not installed): "
        "pip install 'hf-torchscript[serve]'"]
