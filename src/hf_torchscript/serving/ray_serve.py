"""Online serving on Ray Serve: ``hf-torchscript serve ARTIFACT``.

    POST /        {"texts": [...], "pairs": [...]?, "top_k": 5?, "similarity": false?}
                  -> the JSON of `hf-torchscript run --json` (docs/cli.md)
    GET  /health  {"status": "ok", "task": ..., "batches": ..., ...}

Requests are merged by ``@serve.batch`` into model calls of at most ``max_batch_size`` texts
(counted in texts, not requests) after waiting at most ``batch_wait_ms``. A bad request gets a
4xx with ``{"error": "<one line>"}``; a 5xx means a bug in the server, never bad input.
Needs the ``ray`` extra (``ray[serve]``).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

from ..errors import HFTorchScriptError, InputError, OptionError, require_extra
from ..tasks import TASKS

_FIELDS = ("texts", "pairs", "top_k", "similarity")


@dataclass
class _Job:
    texts: list
    pairs: list | None
    top_k: int
    similarity: bool = False

    @property
    def inputs(self) -> list:
        return list(zip(self.texts, self.pairs)) if self.pairs is not None else list(self.texts)


class _BadRequest(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def parse_request(body: bytes, *, max_texts: int) -> _Job:
    """Check one request body; raises _BadRequest with the one line the client gets back."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise _BadRequest(f"the body is not valid JSON ({getattr(e, 'msg', e)}); send {{\"texts\": [\"...\"]}}") from None
    if not isinstance(data, dict):
        raise _BadRequest(f"the body is a JSON {_kind(data)}; send an object like {{\"texts\": [\"...\"]}}")
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise _BadRequest(f"unknown field {unknown[0]!r}; a request takes {', '.join(_FIELDS)}")
    if "texts" not in data:
        raise _BadRequest('no "texts"; send {"texts": ["..."]}')
    texts = _strings(data["texts"], "texts", max_texts)
    pairs = None
    if data.get("pairs") is not None:
        pairs = _strings(data["pairs"], "pairs", max_texts)
        if len(pairs) != len(texts):
            raise _BadRequest(f'"pairs" has {len(pairs)} items for {len(texts)} texts; give one pair per text')
    top_k = data.get("top_k", 5)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= 1000:
        raise _BadRequest(f'"top_k" must be an integer from 1 to 1000, got {json.dumps(top_k)}')
    similarity = data.get("similarity", False)
    if not isinstance(similarity, bool):
        raise _BadRequest(f'"similarity" must be true or false, got {json.dumps(similarity)}')
    return _Job(texts, pairs, top_k, similarity)


def _strings(value, field: str, max_texts: int) -> list[str]:
    if not isinstance(value, list):
        raise _BadRequest(f'"{field}" must be a list of strings, got a JSON {_kind(value)}')
    if not value:
        raise _BadRequest(f'"{field}" is empty; send at least one text')
    if len(value) > max_texts:
        raise _BadRequest(f'{len(value)} {field} is more than this server takes in one request ({max_texts}, '
                          "its --max-batch-size); split the request", status=413)
    for i, t in enumerate(value):
        if not isinstance(t, str):
            raise _BadRequest(f'{field}[{i}] must be a string, got a JSON {_kind(t)}')
        if not t.strip():
            raise _BadRequest(f"{field}[{i}] is empty; send text")
    return value


def _kind(v) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number",
            type(None): "null"}.get(type(v), type(v).__name__)


class TextModelServer:
    """One replica: the artifact loaded once (sha256 verified), texts of concurrent requests batched."""

    def __init__(self, artifact: str, *, max_batch_size: int = 32, batch_wait_ms: float = 5.0, verify: bool = True):
        from ..runtime.model import load

        self.model = load(artifact, verify=verify)
        self.artifact = str(artifact)
        _check_servable(self.model.manifest)
        self.max_batch_size = max_batch_size
        self.stats = {"requests": 0, "batches": 0, "batched_texts": 0, "largest_batch": 0}

    async def __call__(self, request):
        from starlette.responses import JSONResponse

        path, method = request.url.path, request.method
        root = request.scope.get("root_path", "")  # the app's route prefix, when deployed under one
        if root and path.startswith(root):
            path = path[len(root):]
        path = path.rstrip("/") or "/"
        if path == "/health":
            if method != "GET":
                return JSONResponse({"error": f"{method} /health is not served; use GET"}, status_code=405)
            return JSONResponse({"status": "ok", "task": self.model.task, "model_type": self.model.manifest["model_type"],
                                 "sha256": self.model.manifest.get("sha256"), "max_batch_size": self.max_batch_size,
                                 **self.stats})
        if path != "/":
            return JSONResponse({"error": f"no route {path}; POST / with {{\"texts\": [...]}}, or GET /health"},
                                status_code=404)
        if method != "POST":
            return JSONResponse({"error": f"{method} / is not served; POST a JSON body"}, status_code=405)
        try:
            job = parse_request(await request.body(), max_texts=self.max_batch_size)
            self.stats["requests"] += 1
            result = await self._run_one(job)
            if isinstance(result, HFTorchScriptError):
                raise _BadRequest(str(result))
        except _BadRequest as e:
            return JSONResponse({"error": str(e)}, status_code=e.status)
        return JSONResponse(result)

    async def _run_one(self, job: _Job):
        # `deployment()` replaces this with a @serve.batch method; plain here so the class runs without Serve.
        return (await asyncio.to_thread(self.run_jobs, [job]))[0]

    def run_jobs(self, jobs: list[_Job]) -> list:
        """Answers for jobs batched together: one model call per top_k, texts of all jobs concatenated.

        A job the runtime refuses (e.g. fill-mask text without a mask) gets its error back; the
        others are then run on their own.
        """
        from ..runtime import postprocess

        self.stats["batches"] += 1
        n = sum(len(j.texts) for j in jobs)
        self.stats["batched_texts"] += n
        self.stats["largest_batch"] = max(self.stats["largest_batch"], n)
        answers: list = [None] * len(jobs)
        for top_k in sorted({j.top_k for j in jobs}):
            idx = [i for i, j in enumerate(jobs) if j.top_k == top_k]
            inputs = [x for i in idx for x in jobs[i].inputs]
            try:
                out = postprocess.run_task(self.model, inputs, top_k=top_k)
            except InputError as e:
                if len(idx) == 1:
                    answers[idx[0]] = e
                    continue
                for i in idx:
                    answers[i] = self.run_jobs([jobs[i]])[0]
                continue
            start = 0
            for i in idx:
                k = len(jobs[i].texts)
                answers[i] = self.answer(jobs[i], out[start:start + k])
                start += k
        return answers

    def answer(self, job: _Job, result) -> dict:
        """One job's answer: the document `hf-torchscript run --json` prints for its texts (strict JSON)."""
        from ..runtime import document as display

        task = self.model.task
        if job.similarity and not getattr(TASKS.get(task), "similarity", False):
            return InputError(f'"similarity" compares sentence embeddings; this artifact is {task}')
        similarity = display.cosine_matrix(result) if job.similarity else None
        doc = display.run_document(self.artifact, self.model.manifest, job.inputs, display.run_output(task, result),
                                   similarity=similarity)
        # The batch's NonFiniteOutputWarning cannot be split between jobs: the count is what this job shows.
        return display.finish(doc)


def _check_servable(manifest: dict) -> None:
    task = TASKS.get(manifest["task"])
    if not manifest.get("tokenizer") or (task is not None and not task.plain_texts):
        raise OptionError(f"serve takes texts; this artifact ({manifest['task']}) "
                          + ("has no tokenizer" if not manifest.get("tokenizer") else "does not take plain texts"))


def deployment(artifact: str, *, replicas: int = 1, max_batch_size: int = 32, batch_wait_ms: float = 5.0,
               verify: bool = True):
    """The Ray Serve application for ``artifact`` (bind it with ``serve.run``)."""
    require_extra("ray", "hf-torchscript serve", "ray.serve", "starlette")
    from ray import serve

    class Server(TextModelServer):
        # @serve.batch counts texts (batch_size_fn), so a replica runs at most max_batch_size texts per call.
        @serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=batch_wait_ms / 1000,
                     batch_size_fn=lambda jobs: sum(len(j.texts) for j in jobs))
        async def _run_one(self, jobs: list[_Job]) -> list:
            # The model runs in a thread (torch releases the GIL), so requests keep queueing meanwhile.
            return await asyncio.to_thread(self.run_jobs, jobs)

    Server.__name__ = Server.__qualname__ = "HFTorchScript"
    # Every request may be one text; a replica must accept enough of them to fill a batch while one runs.
    dep = serve.deployment(Server, num_replicas=replicas, max_ongoing_requests=max(2 * max_batch_size, 8),
                           ray_actor_options={"num_cpus": 1})
    return dep.bind(artifact, max_batch_size=max_batch_size, batch_wait_ms=batch_wait_ms, verify=verify)


def start(artifact, *, host: str = "127.0.0.1", port: int = 8000, replicas: int = 1, max_batch_size: int = 32,
          batch_wait_ms: float = 5.0, verify: bool = True, name: str = "hf-torchscript",
          route_prefix: str = "/") -> str:
    """Deploy ``artifact`` on the running Ray cluster (``ray.init()`` first); returns the URL.

    Raises:
        ExtraNotInstalledError: ray[serve] missing.
        ArtifactError, OptionError: a bad artifact (checked here, before any replica starts).
    """
    require_extra("ray", "hf-torchscript serve", "ray.serve", "starlette")
    from pathlib import Path

    from ray import serve

    from ..runtime.artifact import read_manifest
    from ..runtime.artifact import verify as verify_sha

    if batch_wait_ms < 0:
        raise OptionError(f"--batch-wait-ms must be 0 or more, got {batch_wait_ms:g}")
    artifact = str(Path(artifact).resolve())
    # Checked here, once, with a clear error, rather than by replicas that keep failing to start.
    _check_servable(verify_sha(artifact) if verify else read_manifest(artifact))
    serve.start(http_options={"host": host, "port": port})
    serve.run(deployment(artifact, replicas=replicas, max_batch_size=max_batch_size, batch_wait_ms=batch_wait_ms,
                         verify=verify), name=name, route_prefix=route_prefix)
    return f"http://{host}:{port}{route_prefix.rstrip('/')}"


def serve_forever(artifact, **kw) -> None:
    """`hf-torchscript serve`: start Ray (RAY_ADDRESS, else local), deploy, block until Ctrl-C."""
    require_extra("ray", "hf-torchscript serve", "ray.serve", "starlette")
    import sys

    import ray
    from ray import serve

    started = not ray.is_initialized()
    if started:
        ray.init()
    try:
        url = start(artifact, **kw)
        print(f"serving {artifact} at {url}: POST / with {{\"texts\": [...]}}, GET /health; Ctrl-C stops", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopping", file=sys.stderr)
    finally:
        serve.shutdown()
        if started:
            ray.shutdown()


# -- the one-process server's application (serving/http.py) on Ray Serve: `hf-torchscript serve --ray` ----


def http_deployment(artifact: str, *, replicas: int = 1, options=None, verify: bool = True):
    """The TEI/OpenAI application of serving/http.py as a Ray Serve deployment (bind it with ``serve.run``).

    Each replica builds the same ASGI app the one-process server runs, so routes, limits and answers are
    the same; Ray adds replicas (and machines) in front of it.
    """
    require_extra("ray", "hf-torchscript serve --ray", "ray.serve", "starlette")
    from dataclasses import asdict

    from ray import serve

    from .http import ServerOptions

    options = options or ServerOptions()

    class HFTorchScriptHTTP:
        def __init__(self, artifact: str, options: dict, verify: bool):
            from .http import ServerOptions, build_app

            # not `self.app`: @serve.ingress defines that name on the class
            self._asgi = build_app(artifact, ServerOptions(**options), verify=verify)
            self._asgi.state.engine.warm_up()

        def __serve_build_asgi_app__(self):
            return self._asgi

    dep = serve.deployment(serve.ingress()(HFTorchScriptHTTP), name="HFTorchScript", num_replicas=replicas,
                           max_ongoing_requests=options.max_concurrent_requests, ray_actor_options={"num_cpus": 1})
    return dep.bind(artifact, asdict(options), verify)


def _ray_failed(step: str, e: BaseException):
    from ..errors import ServingError

    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
    return ServingError(
        f"Ray failed while {step} ({type(e).__name__}: {first}); this is Ray's failure, not the artifact's: check "
        "`ray status` and free CPUs/memory (each replica takes one CPU), set RAY_ADDRESS to a running cluster, or "
        "serve in one process without --ray")


def serve_http_forever(artifact, *, host: str = "127.0.0.1", port: int = 8000, replicas: int = 1, options=None,
                       verify: bool = True) -> None:
    """`hf-torchscript serve --ray`: start Ray (RAY_ADDRESS, else local), deploy the HTTP app, block until Ctrl-C."""
    require_extra("ray", "hf-torchscript serve --ray", "ray.serve", "starlette")
    import sys
    from pathlib import Path

    import ray
    from ray import serve

    artifact = str(Path(artifact).resolve())
    started = not ray.is_initialized()
    try:
        if started:
            try:
                ray.init()
            except Exception as e:  # noqa: BLE001 - Ray's own start-up failures, reported as Ray's
                raise _ray_failed("starting a local cluster", e) from None
        try:
            serve.start(http_options={"host": host, "port": port})
        except Exception as e:  # noqa: BLE001 - Serve's controller or HTTP proxy not starting
            raise _ray_failed("starting Ray Serve", e) from None
        try:
            serve.run(http_deployment(artifact, replicas=replicas, options=options, verify=verify),
                      name="hf-torchscript", route_prefix="/")
        except HFTorchScriptError:
            raise
        except Exception as e:  # noqa: BLE001 - the proxy failing health checks, replicas not starting or failing
            from ..errors import ServingError

            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            raise ServingError(
                f"Ray Serve could not deploy {replicas} replica(s) ({type(e).__name__}: {first}): the replica and "
                "controller logs above say why. If it is Ray's own (its proxy failing health checks, no free CPU "
                "for a replica: each takes one), check `ray status`, free CPUs/memory or set RAY_ADDRESS to a "
                "running cluster; or serve in one process without --ray") from None
        print(f"serving {artifact} at http://{host}:{port} on Ray Serve ({replicas} replica(s)): TEI's routes, "
              "OpenAI's /v1/embeddings, GET /info; Ctrl-C stops", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopping", file=sys.stderr)
    finally:
        try:
            serve.shutdown()
        finally:
            if started:
                ray.shutdown()
