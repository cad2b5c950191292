"""The one-process HTTP server behind ``hf-torchscript serve``: TEI's and OpenAI's APIs over one artifact.

Routes (``ROUTES`` says which task serves which; every error is one JSON line ``{"error", "error_type"}``):

    POST /embed            TEI  sentence-embedding  {"inputs", "normalize", "truncate", "truncation_direction",
                                                     "dimensions"} -> [[float]]
    POST /embed_all        TEI  feature-extraction  {"inputs", "truncate", ...} -> [[[float]]] (per token)
    POST /v1/embeddings    OpenAI sentence-embedding {"input", "model", "encoding_format", "dimensions"}
    POST /similarity       TEI  sentence-embedding  {"inputs": {"source_sentence", "sentences"}} -> [float]
    POST /predict          TEI  text-classification {"inputs", "raw_scores", "truncate"} -> [{"label", "score"}]
    POST /rerank           TEI  text-classification with one label (a cross-encoder)
                                                    {"query", "texts", "return_text", "raw_scores", "truncate"}
    POST /tokenize, /decode, GET /info, /health, /metrics (Prometheus text)      every task
    POST /                 {"inputs": ...}: TEI's answer for the artifact's task (what huggingface_hub's
                           InferenceClient posts to a base URL); {"texts": [...]}: `run --json`'s document.

Requests are tokenized as they arrive, then one batcher task per server takes everything queued,
sorts it by length and runs batches of at most ``max_batch_tokens`` padded tokens in one worker
thread, so the event loop keeps answering while the model runs. Needs the ``serve`` extra.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from ..errors import OptionError, require_extra
from ..tasks import TASKS

# TEI's error types, and the status each is answered with (TEI's own mapping, plus 408 for a stalled body).
_STATUS = {"validation": 413, "empty": 400, "tokenizer": 422, "overloaded": 429, "unhealthy": 503, "backend": 500,
           "timeout": 408, "not_found": 404, "method": 405}

# Which routes each task serves, besides /, /tokenize, /decode, /info, /health, /metrics.
# Keyed by the task's ``tei`` kind (tasks/base.Task): the task says what it is, the server what that kind gets.
ROUTES = {
    "embed": ("/embed", "/v1/embeddings", "/similarity"),
    "embed_all": ("/embed_all",),
    "classify": ("/predict", "/rerank"),
    "generate": ("/v1/completions",),
}

# OpenAI completion fields that only have a neutral value here: any other value is refused (400), never ignored.
_NEUTRAL = {"n": 1, "best_of": 1, "echo": False, "logprobs": None, "presence_penalty": 0, "frequency_penalty": 0,
            "suffix": None, "logit_bias": None}
_COMPLETION_FIELDS = ("model", "prompt", "max_tokens", "temperature", "top_p", "top_k", "stop", "seed", "stream",
                      "stream_options", "user", *_NEUTRAL)


def _tei(task: str | None) -> str | None:
    """The TEI kind of a task name (None for a task the TEI routes do not serve, or an unknown one)."""
    return TASKS[task].tei if task in TASKS else None
_RUN_FIELDS = ("texts", "pairs", "top_k", "similarity")
KEEP_ALIVE_S = 30


@dataclass(frozen=True)
class ServerOptions:
    """What one server accepts; the defaults are TEI's where TEI has the option.

    max_batch_tokens: padded tokens (rows x longest row) in one model call; at least the artifact's max length.
    max_client_batch_size: most inputs in one request (more is answered 413).
    max_concurrent_requests: requests being tokenized, queued or run at once (more are answered 429).
    max_body_bytes: largest request body (TEI's payload limit); bounds memory per connection.
    body_timeout_s: a body not received in full within this is answered 408, so stalled clients let go.
    auto_truncate: cut over-long inputs even when a request does not ask ("truncate": false is then ignored).
    model_id: the name /info and OpenAI's "model" report (default: the artifact folder's name).
    """

    max_batch_tokens: int = 16384
    max_client_batch_size: int = 32
    max_concurrent_requests: int = 512
    max_body_bytes: int = 2_000_000
    body_timeout_s: float = 10.0
    auto_truncate: bool = False
    model_id: str | None = None

    def check(self, max_length: int | None = None) -> None:
        """Raise OptionError (one line, CLI flags) for a value the server cannot run with."""
        for name in ("max_batch_tokens", "max_client_batch_size", "max_concurrent_requests", "max_body_bytes"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise OptionError(f"--{name.replace('_', '-')} must be a positive integer, got {v!r}")
        if not (isinstance(self.body_timeout_s, (int, float)) and math.isfinite(self.body_timeout_s)
                and self.body_timeout_s > 0):
            raise OptionError(f"--body-timeout must be a positive number of seconds, got {self.body_timeout_s!r}")
        if max_length is not None and self.max_batch_tokens < max_length:
            raise OptionError(f"--max-batch-tokens {self.max_batch_tokens} is less than the artifact's max length "
                              f"{max_length}: one full-length input would never fit a batch; pass at least "
                              f"{max_length}")


class RequestError(Exception):
    """A request the server answers with a 4xx (or 429/503): one line, and TEI's error type."""

    def __init__(self, message: str, error_type: str = "validation", status: int | None = None):
        super().__init__(message)
        self.error_type = error_type
        self.status = status or _STATUS[error_type]


def _kind(v) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number",
            type(None): "null"}.get(type(v), type(v).__name__)


# -- the model side: tokenize, batch, run -------------------------------------------------------------


@dataclass
class _Item:
    """One sequence waiting for the model."""

    encoding: object  # tokenizers.Encoding
    future: asyncio.Future
    started: float = 0.0  # when its batch went to the model (perf_counter)


class Engine:
    """The artifact, its tokenizers and the batcher: everything the routes share."""

    def __init__(self, model, options: ServerOptions, *, artifact: str):
        from tokenizers import Tokenizer

        self.model = model
        self.options = options
        self.artifact = artifact
        self.task = model.task
        self.manifest = model.manifest
        self.max_length = int(model.max_length)
        options.check(self.max_length)
        if model.tokenizer is None:
            raise OptionError(f"{artifact} has no tokenizer; the server takes texts (re-export with one)")
        # The server's own tokenizers: ExportedModel switches truncation on its tokenizer while it runs,
        # and these are used from the event loop while the worker thread runs the model.
        spec = model.tokenizer.to_str()
        self.tokenizers = {}
        for direction in ("right", "left"):
            tok = Tokenizer.from_str(spec)
            tok.no_padding()
            tok.enable_truncation(self.max_length, direction=direction)
            self.tokenizers[direction] = tok
        self.plain = Tokenizer.from_str(spec)
        self.plain.no_padding()
        self.plain.no_truncation()
        self.labels = None
        self.generates = _tei(self.task) == "generate"  # a decode loop, one sequence at a time: no batcher
        if _tei(self.task) == "classify":
            n = int(self.manifest["outputs"][0]["shape"][-1]) if isinstance(
                self.manifest["outputs"][0]["shape"][-1], int) else None
            id2label = self.manifest.get("id2label") or {}
            n = n or len(id2label)
            self.labels = [id2label.get(str(i), f"LABEL_{i}") for i in range(n)]
        self.queue: list[_Item] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._loop = None
        # One thread runs the model: torch uses its own threads inside each call, and one call at a time
        # keeps the artifact's memory bounded. Tokenizing long requests uses the loop's default executor.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hts-model")
        self.in_flight = 0
        self.metrics = _Metrics()

    # -- tokenizing ------------------------------------------------------------------------------

    async def tokenize(self, inputs: list, *, truncate: bool, direction: str = "right") -> tuple[list, int]:
        """(encodings, how many were cut) for ``inputs`` (strings or (text, pair) tuples), each <= max_length tokens.

        Raises RequestError 413 for an input over the max length unless ``truncate`` (or --auto-truncate).
        """
        tok = self.tokenizers[direction]
        chars = sum(len(x) if isinstance(x, str) else len(x[0]) + len(x[1]) for x in inputs)
        batch = [tuple(x) if not isinstance(x, str) else x for x in inputs]
        if chars > 20_000:  # a long request would hold the event loop; tokenizers releases the GIL
            encs = await asyncio.get_running_loop().run_in_executor(None, tok.encode_batch, batch)
        else:
            encs = tok.encode_batch(batch)
        cut = [i for i, e in enumerate(encs) if e.overflowing]
        if cut and not (truncate or self.options.auto_truncate):
            raise RequestError(
                f"input {cut[0]} is longer than this model's {self.max_length} tokens ({len(cut)} of {len(inputs)} "
                'inputs are); shorten it, or send "truncate": true to have it cut', "validation", 413)
        return encs, len(cut)

    # -- batching --------------------------------------------------------------------------------

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._loop is not loop:
            self._loop = loop
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._batcher(), name="hts-batcher")

    async def infer(self, encodings: list) -> tuple[list, float]:
        """(per-input model outputs {output name: tensor row}, when the last batch started), batched with others."""
        self._start()
        loop = asyncio.get_running_loop()
        items = [_Item(e, loop.create_future()) for e in encodings]
        self.queue.extend(items)
        self.metrics.queue_peak = max(self.metrics.queue_peak, len(self.queue))
        self._wake.set()
        rows = list(await asyncio.gather(*(i.future for i in items)))
        return rows, max(i.started for i in items)

    async def _batcher(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            # Everything queued now is one round: sorted by length so each batch pads little; what arrives
            # meanwhile waits for the next round, so a long input is never starved by short ones.
            pending, self.queue = self.queue, []
            pending = [i for i in pending if not i.future.done()]  # the client went away
            pending.sort(key=lambda i: len(i.encoding.ids))
            for batch in self._split(pending):
                now = time.perf_counter()
                for i in batch:
                    i.started = now
                try:
                    rows = await loop.run_in_executor(self.executor, self._run, [i.encoding for i in batch])
                except Exception as e:  # noqa: BLE001 - a failing model call fails its requests, not the server
                    for i in batch:
                        if not i.future.done():
                            i.future.set_exception(e)
                    continue
                for i, row in zip(batch, rows):
                    if not i.future.done():
                        i.future.set_result(row)
            if self.queue:
                self._wake.set()

    def _split(self, items: list) -> list[list]:
        batches, cur = [], []
        for it in items:  # ascending length: the newest item is the longest of its batch
            if cur and (len(cur) + 1) * len(it.encoding.ids) > self.options.max_batch_tokens:
                batches.append(cur)
                cur = []
            cur.append(it)
        if cur:
            batches.append(cur)
        return batches

    def _run(self, encodings: list) -> list[dict]:
        """Worker thread: one model call, split back into per-input rows (sequence outputs cut to length)."""
        t0 = time.perf_counter()
        tensors = self.model._pack(encodings)  # padded to the batch's longest (runtime's own packing)
        out = self.model.run(**tensors)
        rows = []
        for i, e in enumerate(encodings):
            n = len(e.ids)
            row = {}
            for spec in self.manifest["outputs"]:
                v = out[spec["name"]][i]
                if "sequence_length" in spec["shape"]:
                    v = v.narrow(spec["shape"].index("sequence_length") - 1, 0, n)
                row[spec["name"]] = v
            rows.append(row)
        m = self.metrics
        m.batches += 1
        m.batch_inputs += len(encodings)
        m.batch_tokens += int(tensors["input_ids"].numel())
        m.inference_s += time.perf_counter() - t0
        return rows

    async def run_document(self, job: dict) -> dict:
        """``run --json``'s document for a {"texts": [...]} request (any task the runtime answers for text)."""
        def work():
            from ..runtime import document as display  # run --json's document, shared with the CLI
            from ..runtime import postprocess
            from ..runtime.model import NonFiniteOutputWarning, TruncationWarning

            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", TruncationWarning)
                warnings.simplefilter("always", NonFiniteOutputWarning)
                result = postprocess.run_task(self.model, job["inputs"], top_k=job["top_k"])
            notes = [str(w.message) for w in caught if issubclass(w.category, TruncationWarning)]
            nonfinite = sum(w.message.count for w in caught if isinstance(w.message, NonFiniteOutputWarning))
            similarity = display.cosine_matrix(result) if job["similarity"] else None
            doc = display.run_document(self.artifact, self.manifest, job["inputs"],
                                       display.run_output(self.task, result), similarity=similarity, warnings=notes)
            return display.finish(doc, nonfinite), len(notes)

        from ..errors import InputError

        self._start()
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, work)
        except InputError as e:
            raise RequestError(str(e), "validation", 400) from None

    def generate(self, prompt: str, cfg, pieces=None, cancelled=None) -> dict:
        """Worker thread: one generation (text-generation artifacts), the Generation fields as a dict.

        ``pieces(text)`` receives the text as it is generated (the runtime's stream: whole characters,
        stop strings held back); ``cancelled()`` true stops it after the current token (the client left)."""
        result: dict = {}
        t0 = time.perf_counter()
        for piece in self.model.generator().stream(prompt, cfg, result=result):
            if pieces is not None:
                pieces(piece)
            if cancelled is not None and cancelled():
                result.setdefault("finish_reason", "cancelled")
                break
        m = self.metrics
        m.inputs += 1
        m.tokens += len(result.get("token_ids", ()))
        m.inference_s += time.perf_counter() - t0
        return result

    def warm_up(self) -> None:
        """Run the model twice on a short text (TorchScript optimizes on its first calls), before serving.

        In the model's own worker thread, the one that serves: a first call from another thread gives the
        process a second OpenMP thread team, and then every call ran ~30% slower (MiniLM, one sentence per
        call, 2 cores: 17-21 ms instead of 11-17 ms)."""
        if self.generates:
            from ..runtime.generation import sampling

            for _ in range(2):
                self.executor.submit(self.generate, "warm up", sampling(max_new_tokens=2)).result()
            self.metrics.inputs = self.metrics.tokens = 0
            self.metrics.inference_s = 0.0
            return
        enc = self.tokenizers["right"].encode("warm up")
        for _ in range(2):
            self.executor.submit(self._run, [enc]).result()
        self.metrics.batches = self.metrics.batch_inputs = self.metrics.batch_tokens = 0
        self.metrics.inference_s = 0.0

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)


class _Metrics:
    """Counters /metrics reports (Prometheus text format, TEI's te_* names where TEI has one)."""

    def __init__(self):
        self.requests: dict[str, int] = {}
        self.failures: dict[str, int] = {}
        self.batches = self.batch_inputs = self.batch_tokens = 0
        self.inference_s = self.request_s = 0.0
        self.inputs = self.tokens = self.truncated = self.queue_peak = 0

    def text(self, engine: Engine) -> str:
        lines = []

        def metric(name, kind, help_, samples):
            lines.append(f"# HELP {name} {help_}")
            lines.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                lab = "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else ""
                lines.append(f"{name}{lab} {value}")

        metric("te_request_count", "counter", "Requests answered, by route",
               [({"route": r}, n) for r, n in sorted(self.requests.items())] or [({}, 0)])
        metric("te_request_failure", "counter", "Requests answered with an error, by error type",
               [({"err": k}, n) for k, n in sorted(self.failures.items())] or [({}, 0)])
        metric("te_request_duration_seconds_sum", "counter", "Total seconds spent answering requests",
               [({}, round(self.request_s, 6))])
        metric("te_request_input_count", "counter", "Inputs received", [({}, self.inputs)])
        metric("te_request_input_length_sum", "counter", "Tokens received (after truncation)", [({}, self.tokens)])
        metric("te_request_truncated_count", "counter", "Inputs cut to the max length", [({}, self.truncated)])
        metric("te_batch_count", "counter", "Model calls", [({}, self.batches)])
        metric("te_batch_input_count", "counter", "Inputs run, over all model calls", [({}, self.batch_inputs)])
        metric("te_batch_padded_tokens", "counter", "Padded tokens run, over all model calls",
               [({}, self.batch_tokens)])
        metric("te_batch_inference_duration_seconds_sum", "counter", "Seconds spent in model calls",
               [({}, round(self.inference_s, 6))])
        metric("te_queue_size", "gauge", "Inputs waiting for the model", [({}, len(engine.queue))])
        metric("te_queue_size_peak", "gauge", "Most inputs ever waiting at once", [({}, self.queue_peak)])
        metric("te_in_flight_requests", "gauge", "Requests being answered", [({}, engine.in_flight)])
        return "\n".join(lines) + "\n"


# -- request parsing ----------------------------------------------------------------------------------


def _text(v, where: str) -> str:
    if not isinstance(v, str):
        raise RequestError(f"{where} must be a string, got a JSON {_kind(v)}", "validation", 400)
    if not v.strip():
        raise RequestError(f"{where} is empty; send some text", "empty", 400)
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError(f"{where} holds a lone surrogate (e.g. \\ud800), which is not text; send valid UTF-16 "
                           "pairs or UTF-8", "validation", 400) from None
    return v


def _texts(value, field: str, limit: int, *, allow_single: bool = True) -> tuple[list[str], bool]:
    """(texts, was_a_single_string) for a TEI "inputs"/OpenAI "input" value."""
    if isinstance(value, str) and allow_single:
        return [_text(value, f'"{field}"')], True
    if not isinstance(value, list):
        raise RequestError(f'"{field}" must be a string or a list of strings, got a JSON {_kind(value)}',
                           "validation", 400)
    if not value:
        raise RequestError(f'"{field}" is an empty list; send at least one text', "empty", 400)
    _check_count(len(value), limit)
    return [_text(t, f'"{field}"[{i}]') for i, t in enumerate(value)], False


def _check_count(n: int, limit: int) -> None:
    if n > limit:
        raise RequestError(f"{n} inputs is more than this server takes in one request ({limit}, its "
                           "--max-client-batch-size); split the request", "validation", 413)


def _flag(body: dict, name: str, default):
    v = body.get(name, default)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise RequestError(f'"{name}" must be true or false, got {json.dumps(v)[:50]}', "validation", 400)
    return v


def _direction(body: dict) -> str:
    v = body.get("truncation_direction") or "right"
    if not isinstance(v, str) or v.lower() not in ("left", "right"):
        raise RequestError(f'"truncation_direction" must be "left" or "right", got {json.dumps(v)[:50]}',
                           "validation", 400)
    return v.lower()


def _no_prompt(body: dict) -> None:
    if body.get("prompt_name") is not None:
        raise RequestError(f'"prompt_name" {json.dumps(body["prompt_name"])[:50]}: this artifact has no '
                           "sentence-transformers prompts; prepend the prompt to the text yourself", "validation", 400)


def _unknown(body: dict, allowed: tuple) -> None:
    extra = sorted(set(body) - set(allowed))
    if extra:
        raise RequestError(f"unknown field {extra[0]!r}; this route takes {', '.join(allowed)}", "validation", 400)


def _dimensions(body: dict, size: int):
    d = body.get("dimensions")
    if d is None:
        return None
    if isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= size:
        raise RequestError(f'"dimensions" must be an integer from 1 to {size} (this model\'s size), got '
                           f"{json.dumps(d)[:50]}", "validation", 400)
    return d


# -- the app ------------------------------------------------------------------------------------------


class Server:
    """The ASGI application: ``Server(engine).app`` (Starlette)."""

    def __init__(self, engine: Engine):
        require_extra("serve", "hf-torchscript serve", "starlette")
        from starlette.applications import Starlette
        from starlette.routing import Route

        self.engine = engine
        task_routes = set(ROUTES.get(_tei(engine.task), ()))
        posts = {"/embed": self.embed, "/embed_all": self.embed_all, "/v1/embeddings": self.openai_embeddings,
                 "/similarity": self.similarity, "/predict": self.predict, "/rerank": self.rerank,
                 "/v1/completions": self.completions}
        routes = [Route("/", self._wrap("/", self.root), methods=["POST"]),
                  Route("/tokenize", self._wrap("/tokenize", self.tokenize_route), methods=["POST"]),
                  Route("/decode", self._wrap("/decode", self.decode), methods=["POST"]),
                  Route("/info", self._wrap("/info", self.info, body=False), methods=["GET"]),
                  Route("/health", self._wrap("/health", self.health, body=False), methods=["GET"]),
                  Route("/metrics", self.metrics_route, methods=["GET"])]
        for path, handler in posts.items():
            if path in task_routes:
                routes.append(Route(path, self._wrap(path, handler), methods=["POST"]))
            else:
                routes.append(Route(path, self._wrap(path, self._not_for_task(path)), methods=["POST"]))

        async def not_found(request, exc):
            status = getattr(exc, "status_code", 404)
            if status == 405:
                msg, kind = f"{request.method} {request.url.path} is not served; see GET /info", "method"
            else:
                msg, kind = f"no route {request.url.path}; the routes are in docs/serving.md", "not_found"
            return _error_response(RequestError(msg, kind), openai=request.url.path.startswith("/v1/"))

        from contextlib import asynccontextmanager

        @asynccontextmanager
        async def lifespan(app):
            engine._start()
            try:
                yield
            finally:
                engine.close()

        self.app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found}, lifespan=lifespan)
        self.app.state.engine = engine

    # -- plumbing --------------------------------------------------------------------------------

    def _wrap(self, route: str, handler, *, body: bool = True):
        """Read and check the body, count the request against the limit, answer errors as TEI does, time it."""
        from starlette.responses import Response

        engine = self.engine
        openai = route.startswith("/v1/")

        async def endpoint(request):
            t0 = time.perf_counter()
            m = engine.metrics
            m.requests[route] = m.requests.get(route, 0) + 1
            counted = False
            try:
                data = await self._json(request) if body else None
                if body:
                    if engine.in_flight >= engine.options.max_concurrent_requests:
                        raise RequestError(f"the server is answering {engine.in_flight} requests, its "
                                           "--max-concurrent-requests; retry shortly", "overloaded")
                    engine.in_flight += 1
                    counted = True
                timing = {"start": t0}
                result = await handler(data, timing) if body else await handler()
            except RequestError as e:
                m.failures[e.error_type] = m.failures.get(e.error_type, 0) + 1
                return _error_response(e, openai=openai)
            except Exception as e:  # noqa: BLE001 - a server fault: still one JSON line, typed as TEI does
                m.failures["backend"] = m.failures.get("backend", 0) + 1
                first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
                return _error_response(RequestError(f"the model failed: {type(e).__name__}: {first}", "backend"),
                                       openai=openai)
            finally:
                if counted:
                    engine.in_flight -= 1
                m.request_s += time.perf_counter() - t0
            if isinstance(result, Response):
                return result
            payload, headers = result
            try:
                content = _dumps(payload)
            except ValueError:  # NaN/inf from the model: a broken answer is an error, never a quiet null (issue 24)
                from ..runtime.document import strict

                m.failures["backend"] = m.failures.get("backend", 0) + 1
                _, bad = strict(payload)
                return _error_response(RequestError(
                    f"the model returned {bad} NaN/infinite values for this request; the artifact or its weights are "
                    "broken for this input (check it with `hf-torchscript validate`)", "backend"), openai=openai)
            total = time.perf_counter() - t0
            headers = {k: str(v) for k, v in headers.items()}
            if "x-compute-time" in headers or "x-inference-time" in headers:
                headers["x-total-time"] = str(int(total * 1000))
                headers.setdefault("x-compute-time", headers["x-total-time"])
                headers["x-compute-type"] = "cpu"
            return Response(content, media_type="application/json", headers=headers)

        return endpoint

    async def _json(self, request):
        opts = self.engine.options
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > opts.max_body_bytes:
            raise RequestError(f"the body is {int(length)} bytes, more than this server takes ({opts.max_body_bytes}, "
                               "its --max-body-bytes); split the request", "validation", 413)
        chunks, size = [], 0

        async def read():
            nonlocal size
            async for chunk in request.stream():
                size += len(chunk)
                if size > opts.max_body_bytes:
                    raise RequestError(f"the body is more than this server takes ({opts.max_body_bytes} bytes, its "
                                       "--max-body-bytes); split the request", "validation", 413)
                chunks.append(chunk)

        try:
            await asyncio.wait_for(read(), opts.body_timeout_s)
        except asyncio.TimeoutError:
            raise RequestError(f"the body did not arrive within {opts.body_timeout_s:g} s (got {size} bytes); "
                               "send it in one go", "timeout") from None
        raw = b"".join(chunks)
        if not raw.strip():
            raise RequestError('the body is empty; send a JSON object such as {"inputs": "some text"}', "empty")
        try:
            return json.loads(raw)
        except RecursionError:
            raise RequestError("the body is nested too deeply to be a request; send a flat JSON object",
                               "validation", 400) from None
        except (ValueError, UnicodeDecodeError) as e:
            raise RequestError(f"the body is not valid JSON ({getattr(e, 'msg', None) or str(e)[:80]}); send a "
                               'JSON object such as {"inputs": "some text"}', "validation", 400) from None

    def _not_for_task(self, path: str):
        async def handler(data, timing):
            serves = [name for name, task in TASKS.items() if path in ROUTES.get(task.tei, ())]
            raise RequestError(f"{path} answers {' or '.join(serves)} models; this artifact is {self.engine.task} "
                               f"(GET /info says what it serves)", "validation", 400)
        return handler

    @staticmethod
    def _object(data) -> dict:
        if not isinstance(data, dict):
            raise RequestError(f'the body is a JSON {_kind(data)}; send an object such as {{"inputs": "some text"}}',
                               "validation", 400)
        return data

    async def _encode_and_run(self, inputs: list, timing: dict, *, truncate: bool, direction: str = "right"):
        e = self.engine
        t0 = time.perf_counter()
        encs, cut = await e.tokenize(inputs, truncate=truncate, direction=direction)
        t1 = time.perf_counter()
        rows, started = await e.infer(encs)
        t2 = time.perf_counter()
        tokens = sum(len(x.ids) for x in encs)
        e.metrics.inputs += len(encs)
        e.metrics.tokens += tokens
        e.metrics.truncated += cut
        chars = sum(len(x) if isinstance(x, str) else len(x[0]) + len(x[1]) for x in inputs)
        headers = {"x-compute-characters": chars, "x-compute-tokens": tokens,
                   "x-tokenization-time": int((t1 - t0) * 1000), "x-queue-time": int((started - t1) * 1000),
                   "x-inference-time": int((t2 - started) * 1000), "x-compute-time": int((t2 - timing["start"]) * 1000),
                   "x-truncated-inputs": cut}
        return encs, rows, headers

    # -- embeddings ------------------------------------------------------------------------------

    def _size(self) -> int:
        return int(self.engine.manifest["outputs"][0]["shape"][-1])

    async def _embeddings(self, texts, timing, *, truncate, direction, normalize, dimensions):
        _, rows, headers = await self._encode_and_run(texts, timing, truncate=truncate, direction=direction)
        vecs = []
        for r in rows:
            v = r["sentence_embedding"].float()
            if dimensions is not None:
                v = v[:dimensions]  # Matryoshka: the leading dimensions, renormalized below when asked
            if normalize:
                v = v / v.norm().clamp(min=1e-12)
            vecs.append(v)
        return vecs, headers

    async def embed(self, data, timing):
        body = self._object(data)
        _unknown(body, ("inputs", "normalize", "truncate", "truncation_direction", "prompt_name", "dimensions"))
        _no_prompt(body)
        if "inputs" not in body:
            raise RequestError('no "inputs"; send {"inputs": "some text"} or {"inputs": ["a", "b"]}', "validation", 400)
        texts, _ = _texts(body["inputs"], "inputs", self.engine.options.max_client_batch_size)
        vecs, headers = await self._embeddings(texts, timing, truncate=_flag(body, "truncate", False),
                                               direction=_direction(body), normalize=_flag(body, "normalize", True),
                                               dimensions=_dimensions(body, self._size()))
        return [v.tolist() for v in vecs], headers

    async def embed_all(self, data, timing):
        body = self._object(data)
        _unknown(body, ("inputs", "truncate", "truncation_direction", "prompt_name"))
        _no_prompt(body)
        if "inputs" not in body:
            raise RequestError('no "inputs"; send {"inputs": "some text"}', "validation", 400)
        texts, _ = _texts(body["inputs"], "inputs", self.engine.options.max_client_batch_size)
        _, rows, headers = await self._encode_and_run(texts, timing, truncate=_flag(body, "truncate", False),
                                                      direction=_direction(body))
        name = self.engine.manifest["outputs"][0]["name"]
        return [r[name].float().tolist() for r in rows], headers

    async def openai_embeddings(self, data, timing):
        body = self._object(data)
        _unknown(body, ("input", "model", "encoding_format", "dimensions", "user"))
        if "input" not in body:
            raise RequestError('no "input"; send {"input": "some text"} or {"input": ["a", "b"]}', "validation", 400)
        fmt = body.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            raise RequestError(f'"encoding_format" must be "float" or "base64", got {json.dumps(fmt)[:50]}',
                               "validation", 400)
        if isinstance(body["input"], list) and body["input"] and isinstance(body["input"][0], (int, list)):
            raise RequestError('"input" as token ids is not served; send strings', "validation", 400)
        texts, _ = _texts(body["input"], "input", self.engine.options.max_client_batch_size)
        # OpenAI's embeddings are unit length; there is no truncate field, so --auto-truncate decides.
        vecs, headers = await self._embeddings(texts, timing, truncate=False, direction="right", normalize=True,
                                               dimensions=_dimensions(body, self._size()))
        tokens = int(headers["x-compute-tokens"])
        data_ = []
        for i, v in enumerate(vecs):
            emb = base64.b64encode(v.numpy().astype("<f4").tobytes()).decode() if fmt == "base64" else v.tolist()
            data_.append({"object": "embedding", "embedding": emb, "index": i})
        model = body.get("model") if isinstance(body.get("model"), str) else None
        return {"object": "list", "data": data_, "model": model or self.model_id,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}, headers

    async def similarity(self, data, timing):
        body = self._object(data)
        _unknown(body, ("inputs", "parameters"))
        inp = body.get("inputs")
        if not isinstance(inp, dict) or "source_sentence" not in inp or "sentences" not in inp:
            raise RequestError('"inputs" must be {"source_sentence": "...", "sentences": ["...", ...]}', "validation",
                               400)
        params = body.get("parameters") or {}
        if not isinstance(params, dict):
            raise RequestError(f'"parameters" must be an object, got a JSON {_kind(params)}', "validation", 400)
        _unknown(params, ("truncate", "truncation_direction", "prompt_name"))
        _no_prompt(params)
        source = _text(inp["source_sentence"], '"source_sentence"')
        others, _ = _texts(inp["sentences"], "sentences", self.engine.options.max_client_batch_size - 1,
                           allow_single=False)
        vecs, headers = await self._embeddings([source, *others], timing, truncate=_flag(params, "truncate", False),
                                               direction=_direction(params), normalize=True, dimensions=None)
        return [float(vecs[0] @ v) for v in vecs[1:]], headers

    # -- classification --------------------------------------------------------------------------

    def _scores(self, logits, raw: bool, function: str | None = None):
        import torch

        logits = logits.float()
        fn = function or ("none" if raw else ("sigmoid" if logits.numel() == 1 else "softmax"))
        if fn == "softmax":
            return logits.softmax(-1)
        if fn == "sigmoid":
            return torch.sigmoid(logits)
        return logits

    def _predictions(self, logits, raw: bool, top_k=None, function=None) -> list[dict]:
        scores = self._scores(logits, raw, function)
        preds = sorted(({"score": float(s), "label": self.engine.labels[k]} for k, s in enumerate(scores)),
                       key=lambda p: -p["score"])
        return preds[:top_k] if top_k else preds

    async def predict(self, data, timing):
        body = self._object(data)
        _unknown(body, ("inputs", "truncate", "truncation_direction", "raw_scores"))
        if "inputs" not in body:
            raise RequestError('no "inputs"; send {"inputs": "some text"}, a pair ["a", "b"], or a batch '
                               '[["a"], ["b", "c"]]', "validation", 400)
        inputs, single = _predict_inputs(body["inputs"], self.engine.options.max_client_batch_size)
        raw = _flag(body, "raw_scores", False)
        _, rows, headers = await self._encode_and_run(inputs, timing, truncate=_flag(body, "truncate", False),
                                                      direction=_direction(body))
        preds = [self._predictions(r["logits"], raw) for r in rows]
        return (preds[0] if single else preds), headers

    async def rerank(self, data, timing):
        body = self._object(data)
        _unknown(body, ("query", "texts", "truncate", "truncation_direction", "raw_scores", "return_text"))
        if len(self.engine.labels) != 1:
            classifiers = " or ".join(n for n, t in TASKS.items() if t.tei == "classify")
            raise RequestError(f"/rerank needs a cross-encoder (a {classifiers} model with one label); this one "
                               f"has {len(self.engine.labels)} labels: use /predict with [query, text] pairs",
                               "validation", 400)
        if "query" not in body or "texts" not in body:
            raise RequestError('send {"query": "...", "texts": ["...", ...]}', "validation", 400)
        query = _text(body["query"], '"query"')
        texts, _ = _texts(body["texts"], "texts", self.engine.options.max_client_batch_size, allow_single=False)
        raw, return_text = _flag(body, "raw_scores", False), _flag(body, "return_text", False)
        _, rows, headers = await self._encode_and_run([(query, t) for t in texts], timing,
                                                      truncate=_flag(body, "truncate", False),
                                                      direction=_direction(body))
        ranks = []
        for i, r in enumerate(rows):
            rank = {"index": i, "score": float(self._scores(r["logits"], raw)[0])}
            if return_text:
                rank["text"] = texts[i]
            ranks.append(rank)
        ranks.sort(key=lambda r: -r["score"])
        return ranks, headers

    # -- tokenizer and server info -----------------------------------------------------------------

    async def tokenize_route(self, data, timing):
        body = self._object(data)
        _unknown(body, ("inputs", "add_special_tokens", "prompt_name"))
        _no_prompt(body)
        if "inputs" not in body:
            raise RequestError('no "inputs"; send {"inputs": "some text"}', "validation", 400)
        texts, _ = _texts(body["inputs"], "inputs", self.engine.options.max_client_batch_size)
        special = _flag(body, "add_special_tokens", True)
        encs = self.engine.plain.encode_batch(texts, add_special_tokens=special)
        out = []
        for text, e in zip(texts, encs):
            toks = []
            for tid, tok, sp, (a, b) in zip(e.ids, e.tokens, e.special_tokens_mask, e.offsets):
                is_special = bool(sp)
                toks.append({"id": tid, "text": tok if is_special else text[a:b], "special": is_special,
                             "start": None if is_special else a, "stop": None if is_special else b})
            out.append(toks)
        return out, {}

    async def decode(self, data, timing):
        body = self._object(data)
        _unknown(body, ("ids", "skip_special_tokens"))
        ids = body.get("ids")
        single = isinstance(ids, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in ids)
        batch = [ids] if single else ids
        vocab = self.engine.plain.get_vocab_size()
        if not isinstance(batch, list) or not batch or not all(
                isinstance(row, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in row)
                for row in batch):
            raise RequestError('"ids" must be a list of token ids, or a list of such lists', "validation", 400)
        _check_count(len(batch), self.engine.options.max_client_batch_size)
        bad = next((i for row in batch for i in row if not 0 <= i < vocab), None)
        if bad is not None:
            raise RequestError(f"token id {bad} is not in this tokenizer's vocabulary (0 to {vocab - 1})",
                               "validation", 400)
        skip = _flag(body, "skip_special_tokens", True)
        return self.engine.plain.decode_batch(batch, skip_special_tokens=skip), {}

    @property
    def model_id(self) -> str:
        from pathlib import Path

        return self.engine.options.model_id or Path(self.engine.artifact).name

    async def info(self):
        from ..version import __version__

        e = self.engine
        if _tei(e.task) == "classify":
            labels = {str(i): lab for i, lab in enumerate(e.labels)}
            kind = {"reranker" if len(e.labels) == 1 else "classifier":
                    {"id2label": labels, "label2id": {v: int(k) for k, v in labels.items()}}}
        elif _tei(e.task) == "embed":
            pooling = (e.manifest.get("sentence_embedding") or {}).get("pooling") or ["mean"]
            kind = {"embedding": {"pooling": pooling[0]}}
        else:
            kind = {e.task: {}}
        opts = e.options
        return {"model_id": self.model_id, "model_sha": e.manifest.get("sha256"),
                "model_dtype": e.manifest.get("dtype", "float32"), "model_type": kind,
                "max_concurrent_requests": opts.max_concurrent_requests, "max_input_length": e.max_length,
                "max_batch_tokens": opts.max_batch_tokens, "max_batch_requests": None,
                "max_client_batch_size": opts.max_client_batch_size, "auto_truncate": opts.auto_truncate,
                "tokenization_workers": 1, "version": __version__, "sha": None, "docker_label": None,
                "task": e.task, "artifact": e.artifact, "model_type_hf": e.manifest.get("model_type"),
                "routes": sorted(ROUTES.get(_tei(e.task), ())), "options": asdict(opts)}, {}

    async def health(self):
        e = self.engine
        if e._task is not None and e._task.done() and not e._task.cancelled():
            raise RequestError("the batcher stopped; restart the server", "unhealthy")
        return {"status": "ok"}, {}

    async def metrics_route(self, request):
        from starlette.responses import PlainTextResponse

        return PlainTextResponse(self.engine.metrics.text(self.engine), media_type="text/plain; version=0.0.4")

    # -- OpenAI completions (text-generation) ----------------------------------------------------

    async def completions(self, data, timing):
        """OpenAI's POST /v1/completions: the artifact's decode loop, whole or streamed (server-sent events).

        Sampling follows OpenAI's defaults, as vLLM does: temperature 1 (0 is greedy), top_p 1, max_tokens 16.
        Prompts run one after another (one sequence at a time: the KV cache is the model's state)."""
        from ..errors import InputError
        from ..runtime.generation import sampling

        body = self._object(data)
        _unknown(body, _COMPLETION_FIELDS)
        for name, neutral in _NEUTRAL.items():
            if name in body and body[name] != neutral:  # 0.0 == 0: a float penalty of zero is neutral too
                raise RequestError(f'"{name}" {json.dumps(body[name])[:50]} is not served (only {json.dumps(neutral)}); '
                                   "leave it out", "validation", 400)
        if "prompt" not in body:
            raise RequestError('no "prompt"; send {"prompt": "some text", "max_tokens": 16}', "validation", 400)
        if isinstance(body["prompt"], list) and body["prompt"] and isinstance(body["prompt"][0], (int, list)):
            raise RequestError('"prompt" as token ids is not served; send a string', "validation", 400)
        prompts, _ = _texts(body["prompt"], "prompt", self.engine.options.max_client_batch_size)
        max_tokens = body.get("max_tokens", 16)
        if max_tokens is None:
            max_tokens = 16
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise RequestError(f'"max_tokens" must be a positive integer, got {json.dumps(max_tokens)[:50]}',
                               "validation", 400)
        temperature = body.get("temperature", 1.0)
        temperature = 1.0 if temperature is None else temperature
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2:
            raise RequestError(f'"temperature" must be a number from 0 to 2, got {json.dumps(temperature)[:50]}',
                               "validation", 400)
        stop = body.get("stop")
        stop = [stop] if isinstance(stop, str) else (stop or [])
        if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(x, str) and x for x in stop):
            raise RequestError('"stop" must be a non-empty string or a list of up to 4 of them', "validation", 400)
        stream = _flag(body, "stream", False)
        options = body.get("stream_options") or {}
        if not isinstance(options, dict) or set(options) - {"include_usage"}:
            raise RequestError('"stream_options" takes {"include_usage": true|false}', "validation", 400)
        include_usage = _flag(options, "include_usage", False)
        seed = body.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 63):
            raise RequestError(f'"seed" must be an integer from 0 to 2^63-1, got {json.dumps(seed)[:50]}', "validation",
                               400)
        top_k, top_p = body.get("top_k"), body.get("top_p")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise RequestError(f'"top_k" must be a positive integer (or null), got {json.dumps(top_k)[:50]}',
                               "validation", 400)
        if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
            raise RequestError(f'"top_p" must be a number in (0, 1], got {json.dumps(top_p)[:50]}', "validation", 400)
        greedy = temperature == 0
        try:
            cfg = sampling(max_new_tokens=max_tokens, do_sample=not greedy, temperature=1.0 if greedy else temperature,
                           top_k=top_k, top_p=None if top_p == 1 else top_p, seed=seed, stop=stop)
        except (InputError, OptionError) as e:  # anything else the runtime's own checks refuse
            raise RequestError(str(e), "validation", 400) from None
        generator = self.engine.model.generator()
        for p in prompts:  # a prompt longer than the cache: 400 before anything streams
            try:
                generator.check_prompt(generator.encode(p))
            except InputError as e:
                raise RequestError(str(e), "validation", 400) from None
        model = body.get("model") if isinstance(body.get("model"), str) else None
        head = {"id": f"cmpl-{os.urandom(12).hex()}", "object": "text_completion", "created": int(time.time()),
                "model": model or self.model_id}
        loop = asyncio.get_running_loop()
        if not stream:
            choices, prompt_tokens, completion_tokens = [], 0, 0
            for i, p in enumerate(prompts):
                r = await loop.run_in_executor(self.engine.executor, self.engine.generate, p, cfg)
                choices.append({"text": r["text"], "index": i, "logprobs": None,
                                "finish_reason": _openai_finish(r["finish_reason"])})
                prompt_tokens += len(r["prompt_ids"])
                completion_tokens += len(r["token_ids"])
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                     "total_tokens": prompt_tokens + completion_tokens}
            return head | {"choices": choices, "usage": usage}, {"x-compute-time": int(
                (time.perf_counter() - timing["start"]) * 1000)}
        return self._stream_completions(head, prompts, cfg, include_usage)

    def _stream_completions(self, head: dict, prompts: list, cfg, include_usage: bool):
        """Server-sent events as OpenAI streams them: one chunk per piece of text, a last chunk per prompt
        with its finish_reason, the usage chunk when asked, then ``data: [DONE]``. A client that goes away
        stops the generation after the current token."""
        import threading

        from starlette.responses import StreamingResponse

        engine = self.engine

        def event(payload) -> bytes:
            return b"data: " + _dumps(payload) + b"\n\n"

        async def events():
            loop = asyncio.get_running_loop()
            gone = threading.Event()
            usage = {"prompt_tokens": 0, "completion_tokens": 0}
            try:
                for i, p in enumerate(prompts):
                    queue: asyncio.Queue = asyncio.Queue()

                    def pieces(text, queue=queue):
                        loop.call_soon_threadsafe(queue.put_nowait, text)

                    job = loop.run_in_executor(engine.executor, engine.generate, p, cfg, pieces, gone.is_set)
                    job.add_done_callback(lambda _f, queue=queue: loop.call_soon_threadsafe(queue.put_nowait, None))
                    while (text := await queue.get()) is not None:
                        yield event(head | {"choices": [{"text": text, "index": i, "logprobs": None,
                                                         "finish_reason": None}]})
                    try:
                        r = await job
                    except Exception as e:  # noqa: BLE001 - headers are sent: the error is the stream's last event
                        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
                        yield event({"error": {"message": f"the model failed: {type(e).__name__}: {first}",
                                               "type": "backend", "code": 500}})
                        return
                    usage["prompt_tokens"] += len(r["prompt_ids"])
                    usage["completion_tokens"] += len(r["token_ids"])
                    yield event(head | {"choices": [{"text": "", "index": i, "logprobs": None,
                                                     "finish_reason": _openai_finish(r["finish_reason"])}]})
                if include_usage:
                    yield event(head | {"choices": [], "usage": usage | {
                        "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]}})
                yield b"data: [DONE]\n\n"
            finally:
                gone.set()  # the client left (or the stream ended): the worker stops after its current token

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"cache-control": "no-cache", "x-accel-buffering": "no"})

    # -- POST / ----------------------------------------------------------------------------------

    async def root(self, data, timing):
        body = self._object(data)
        if "texts" in body:
            return await self._run_schema(body)
        if "inputs" not in body:
            raise RequestError('send {"inputs": ...} (TEI\'s shape) or {"texts": [...]} (`run --json`\'s)',
                               "validation", 400)
        task, inp = self.engine.task, body["inputs"]
        kind = _tei(task)
        params = body.get("parameters") or {}
        if not isinstance(params, dict):
            raise RequestError(f'"parameters" must be an object, got a JSON {_kind(params)}', "validation", 400)
        if kind == "embed":
            if isinstance(inp, dict):
                return await self.similarity(body, timing)
            return await self.embed({k: v for k, v in body.items() if k != "parameters"} | params, timing)
        if kind == "embed_all":
            return await self.embed_all({k: v for k, v in body.items() if k != "parameters"} | params, timing)
        if kind == "classify":
            _unknown(body, ("inputs", "parameters", "truncate"))
            _unknown(params, ("top_k", "function_to_apply", "truncate"))
            top_k = params.get("top_k")
            if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
                raise RequestError(f'"top_k" must be a positive integer, got {json.dumps(top_k)[:50]}', "validation",
                                   400)
            fn = params.get("function_to_apply")
            if fn is not None and fn not in ("softmax", "sigmoid", "none"):
                raise RequestError(f'"function_to_apply" must be "softmax", "sigmoid" or "none", got '
                                   f"{json.dumps(fn)[:50]}", "validation", 400)
            # HF Inference's shape: one list of {label, score} per input, a string being one input.
            texts, _ = _texts(inp, "inputs", self.engine.options.max_client_batch_size)
            truncate = _flag(params, "truncate", _flag(body, "truncate", False))
            _, rows, headers = await self._encode_and_run(texts, timing, truncate=truncate)
            return [self._predictions(r["logits"], False, top_k, fn) for r in rows], headers
        if kind == "generate":
            raise RequestError(f"this artifact is {task}: send OpenAI's POST /v1/completions "
                               '{"prompt": "...", "max_tokens": 16}', "validation", 400)
        raise RequestError(f'{{"inputs": ...}} answers embedding and classification models; this artifact is {task}: '
                           'send {"texts": [...]} for `run --json`\'s document', "validation", 400)

    async def _run_schema(self, body):
        if self.engine.generates:
            raise RequestError(f"this artifact is {self.engine.task}: send OpenAI's POST /v1/completions "
                               '{"prompt": "...", "max_tokens": 16}', "validation", 400)
        _unknown(body, _RUN_FIELDS)
        limit = self.engine.options.max_client_batch_size
        texts, _ = _texts(body["texts"], "texts", limit, allow_single=False)
        pairs = None
        if body.get("pairs") is not None:
            pairs, _ = _texts(body["pairs"], "pairs", limit, allow_single=False)
            if len(pairs) != len(texts):
                raise RequestError(f'"pairs" has {len(pairs)} items for {len(texts)} texts; give one pair per text',
                                   "validation", 400)
        top_k = body.get("top_k", 5)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= 1000:
            raise RequestError(f'"top_k" must be an integer from 1 to 1000, got {json.dumps(top_k)[:50]}',
                               "validation", 400)
        similarity = _flag(body, "similarity", False)
        if similarity and _tei(self.engine.task) != "embed":
            raise RequestError(f'"similarity" compares sentence embeddings; this artifact is {self.engine.task}',
                               "validation", 400)
        inputs = list(zip(texts, pairs)) if pairs is not None else texts
        doc, cut = await self.engine.run_document({"inputs": inputs, "top_k": top_k, "similarity": similarity})
        return doc, {"x-truncated-inputs": cut}


def _predict_inputs(value, limit: int) -> tuple[list, bool]:
    """TEI's /predict inputs: "text" | ["text", "pair"] | [["text"], ["text", "pair"], ...]; (inputs, single)."""
    if isinstance(value, str):
        return [_text(value, '"inputs"')], True
    if not isinstance(value, list) or not value:
        raise RequestError('"inputs" must be a string, a pair ["text", "pair"], or a batch [["text"], ["a", "b"]]',
                           "validation" if value != [] else "empty", 400)
    if all(isinstance(v, str) for v in value):
        if len(value) != 2:
            raise RequestError(f'"inputs" as a list of strings is one pair and takes 2, got {len(value)}; send a '
                               'batch as [["text"], ["text"]]', "validation", 400)
        return [(_text(value[0], '"inputs"[0]'), _text(value[1], '"inputs"[1]'))], True
    _check_count(len(value), limit)
    out = []
    for i, seq in enumerate(value):
        if not isinstance(seq, list) or len(seq) not in (1, 2):
            raise RequestError(f'"inputs"[{i}] must be ["text"] or ["text", "pair"], got a JSON {_kind(seq)}'
                               + (f" of {len(seq)}" if isinstance(seq, list) else ""), "validation", 400)
        texts = [_text(t, f'"inputs"[{i}][{j}]') for j, t in enumerate(seq)]
        out.append(texts[0] if len(texts) == 1 else (texts[0], texts[1]))
    if any(isinstance(x, tuple) for x in out) and not all(isinstance(x, tuple) for x in out):
        raise RequestError('"inputs" mixes single texts and pairs; send one kind per request', "validation", 400)
    return out, False


def _openai_finish(reason: str) -> str:
    """The runtime's finish reason in OpenAI's words: it ended by itself or at a stop string ("stop"), or at
    max_tokens or a full KV cache ("length")."""
    return "stop" if reason in ("eos", "stop", "cancelled") else "length"


def _dumps(payload) -> bytes:
    """Strict JSON (a NaN/inf raises ValueError: the caller answers it as the model's error, never as null)."""
    return json.dumps(payload, allow_nan=False, separators=(",", ":")).encode()


def _error_response(e: RequestError, *, openai: bool = False):
    from starlette.responses import Response

    if openai:  # OpenAI's shape, which its client reads the message from
        body = {"error": {"message": str(e), "type": e.error_type, "code": e.status}}
    else:
        body = {"error": str(e), "error_type": e.error_type}
    headers = {"retry-after": "1"} if e.status == 429 else None
    return Response(json.dumps(body), status_code=e.status, media_type="application/json", headers=headers)


# -- building and running -----------------------------------------------------------------------------


def check_servable(manifest: dict, directory) -> None:
    """Raise OptionError unless the artifact takes text (it has a tokenizer and a text task)."""
    task = manifest.get("task")
    if not manifest.get("tokenizer"):
        raise OptionError(f"{directory} ({task}) has no tokenizer; the server takes texts: re-export it from a model "
                          "directory that has one")
    if task in TASKS and not TASKS[task].plain_texts and _tei(task) != "generate":  # prompts: /v1/completions
        raise OptionError(f"{directory} is {task}, which does not take plain texts; the server answers text tasks")


def build_app(artifact, options: ServerOptions | None = None, *, verify: bool = True, model=None):
    """The ASGI app serving ``artifact`` (Starlette): run it with any ASGI server, or :func:`serve`.

    Args:
        artifact: an exported artifact directory.
        options: limits and batching (:class:`ServerOptions`); TEI's defaults if left out.
        verify: check model.pt's sha256 before loading.
        model: an already loaded ExportedModel of ``artifact`` (skips loading it again).

    Raises:
        ExtraNotInstalledError: starlette missing (``pip install 'hf-torchscript[serve]'``).
        ArtifactError, OptionError: a bad artifact or option, before anything is served.
    """
    require_extra("serve", "hf-torchscript serve", "starlette")
    options = options or ServerOptions()
    options.check()
    if model is None:
        from ..runtime.model import load

        model = load(artifact, verify=verify)
    check_servable(model.manifest, artifact)
    return Server(Engine(model, options, artifact=str(artifact))).app


def serve(artifact, *, host: str = "127.0.0.1", port: int = 8000, options: ServerOptions | None = None,
          verify: bool = True, on_ready=None) -> None:
    """Run the server in this process until SIGINT/SIGTERM; in-flight requests are finished first.

    ``on_ready(url)`` is called once the socket listens (the CLI prints the URL from it).
    """
    require_extra("serve", "hf-torchscript serve", "starlette", "uvicorn")
    import uvicorn

    options = options or ServerOptions()
    app = build_app(artifact, options, verify=verify)
    app.state.engine.warm_up()
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, lifespan="on",
        # Slow clients: a header block is bounded (h11's incomplete-event limit), bodies by max_body_bytes
        # and body_timeout_s (Engine), open connections by limit_concurrency (503 beyond: memory stays
        # bounded). Idle keep-alive connections close after 30 s: longer than clients keep idle ones
        # (httpx and requests: 5 s), else a client may send on a connection the server is closing.
        timeout_keep_alive=KEEP_ALIVE_S, h11_max_incomplete_event_size=64 * 1024,
        limit_concurrency=max(1024, 2 * options.max_concurrent_requests),
        timeout_graceful_shutdown=30,
    )
    server = _graceful_server(config)
    if on_ready is not None:
        async def main():
            task = asyncio.ensure_future(server.serve())
            while not server.started and not task.done():
                await asyncio.sleep(0.05)
            if server.started:
                sock = server.servers[0].sockets[0].getsockname()
                on_ready(f"http://{_url_host(host)}:{sock[1]}")
            await task

        asyncio.run(main())
    else:
        server.run()
    if not server.started:
        raise OptionError(f"the server could not listen on {host}:{port} (see the message above); pick another "
                          "--host/--port")


def _graceful_server_class():
    import contextlib
    import signal
    import threading

    import uvicorn

    class GracefulServer(uvicorn.Server):
        """uvicorn's server, but a SIGINT/SIGTERM stop is a clean exit: uvicorn re-raises the signal after
        shutting down (the process then dies by it); here in-flight requests finish and the command returns."""

        @contextlib.contextmanager
        def capture_signals(self):
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            old = {s: signal.signal(s, self.handle_exit) for s in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for s, handler in old.items():
                    signal.signal(s, handler)

    return GracefulServer


def _graceful_server(config):  # the class is made on first use: importing this module needs no uvicorn
    return _graceful_server_class()(config)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def check_listen(host: str, port: int) -> None:
    """Raise OptionError unless ``host:port`` can be listened on now (checked before the model loads)."""
    import ipaddress
    import socket

    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise OptionError(f"--port must be from 0 to 65535 (0: any free port), got {port}")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if all(p.isdigit() for p in host.split(".")):
            raise OptionError(f"--host {host} is not an IP address; pass e.g. 127.0.0.1 (this machine only) or "
                              "0.0.0.0 (every interface)") from None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise OptionError(f"--host {host} does not resolve ({e.strerror}); pass an address of this machine, e.g. "
                          "127.0.0.1 or 0.0.0.0") from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            why = "is in use" if e.errno == 98 else f"cannot be listened on ({e.strerror})"
            raise OptionError(f"{host}:{port} {why}; pick another --port or --host") from None
