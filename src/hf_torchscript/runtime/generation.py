"""The decode loop for ``text-generation`` artifacts: prefill, decode, greedy or seeded sampling, stop rules.

(Moves to ``runtime/generation.py`` with the package restructure.) Needs torch and, for text,
``tokenizers``; never transformers. The artifact holds one ``forward(input_ids[1, S],
cache_position[S]) -> logits[1, S, vocab]`` with a static KV cache inside the graph (module
buffers, transformers' ``integrations/executorch.py`` wrapper): the prompt goes in as one call
(parallel prefill, S = prompt length), each new token as one call with S = 1.

Cache state. The graph writes keys/values at ``cache_position`` and sets the layers' fill counter
to ``cache_position[0]`` on every call, and its attention mask hides every slot after the query's
own position. So a generation that starts again at position 0 never sees the previous one's keys:
stale slots past the current position are masked, the ones before it are overwritten by the new
prefill. No reset call is needed (tests/test_generation.py proves a second generation on the same
instance equals a fresh one). What is not safe is two generations interleaving their calls: one
loaded instance serves one sequence at a time, behind a lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from ..errors import InputError, option
from ..tasks.text_generation import TEXT_GENERATION

TASK = TEXT_GENERATION.name


@dataclass(frozen=True)
class SamplingConfig:
    """How the next token is chosen. Greedy (argmax) unless ``do_sample``; checked on construction."""

    max_new_tokens: int = 32
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def __post_init__(self):
        if not isinstance(self.max_new_tokens, int) or isinstance(self.max_new_tokens, bool) or self.max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}; pass e.g. "
                             f"{option('max_new_tokens', 32)}")
        if not (isinstance(self.temperature, (int, float)) and self.temperature > 0):
            raise InputError(f"temperature must be a number > 0, got {self.temperature!r}; for greedy decoding pass "
                             f"{option('do_sample', False)}")
        if self.top_k is not None and (not isinstance(self.top_k, int) or self.top_k < 1):
            raise InputError(f"top_k must be an integer >= 1 or None, got {self.top_k!r}")
        if self.top_p is not None and not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
            raise InputError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise InputError(f"stop must be a list of non-empty strings, got {list(self.stop)!r}")
        object.__setattr__(self, "stop", tuple(self.stop))


@dataclass
class Generation:
    """One finished generation: the text, the ids, why it stopped and how long each phase took."""

    text: str
    token_ids: list[int]
    prompt_ids: list[int]
    finish_reason: str  # "eos" | "length" (max_new_tokens) | "stop" (a stop string) | "cache" (the cache is full)
    timings: dict = field(default_factory=dict)


def warp_logits(logits: torch.Tensor, cfg: SamplingConfig) -> torch.Tensor:
    """Temperature, then top-k, then top-p, as transformers' sampling processors apply them (1-D logits)."""
    logits = logits.float()
    if cfg.temperature != 1.0:
        logits = logits / cfg.temperature
    if cfg.top_k is not None and cfg.top_k < logits.shape[-1]:
        kth = torch.topk(logits, cfg.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p is not None and cfg.top_p < 1.0:
        # Keep the smallest set of most likely tokens whose probability reaches top_p (always >= 1 token).
        sorted_logits, order = torch.sort(logits, descending=False)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        remove = cum <= (1 - cfg.top_p)
        remove[-1] = False
        logits = logits.masked_fill(remove.scatter(0, order, remove), float("-inf"))
    return logits


class Sampler:
    """Chooses tokens: argmax, or a draw from the warped distribution with its own seeded generator."""

    def __init__(self, cfg: SamplingConfig):
        self.cfg = cfg
        self.rng = None
        if cfg.do_sample:
            # A private generator: seeding never touches the process-wide RNG (the library changes no
            # global setting), and the same seed gives the same tokens run to run.
            self.rng = torch.Generator()
            if cfg.seed is not None:
                self.rng.manual_seed(int(cfg.seed))
            else:
                self.rng.seed()

    def __call__(self, logits: torch.Tensor) -> int:
        if self.rng is None:
            return int(torch.argmax(logits))
        probs = warp_logits(logits, self.cfg).softmax(-1)
        return int(torch.multinomial(probs, 1, generator=self.rng))


class Generator:
    """Drives a loaded ``text-generation`` artifact: one sequence at a time (a lock), batch 1.

    ``forward`` is the artifact's module (``module(input_ids, cache_position) -> (logits,)``);
    ``step`` an optional faster callable for decode steps that skips the per-call input checks
    (ids the model itself produced are in range by construction).
    """

    def __init__(self, forward: Callable, manifest: dict, tokenizer=None, *, step: Callable | None = None):
        gen = manifest.get("generation") or {}
        if manifest.get("task") != TASK or "max_cache_len" not in gen:
            raise InputError(f"this artifact was exported for {manifest.get('task')!r}, not {TASK}; re-export it "
                             f"with {option('task', TASK)}")
        self.forward = forward
        self.step = step or forward
        self.manifest = manifest
        self.tokenizer = tokenizer
        self.max_cache_len = int(gen["max_cache_len"])
        self.vocab_size = int(gen["vocab_size"])
        self.eos_token_ids = tuple(int(i) for i in gen.get("eos_token_ids") or ())
        self.bos_token_id = gen.get("bos_token_id")
        self.lock = threading.Lock()

    # -- ids -------------------------------------------------------------------------------------

    def check_prompt(self, ids: Sequence[int]) -> list[int]:
        ids = [int(i) for i in ids]
        if not ids:
            raise InputError("the prompt is empty; pass at least one token")
        if len(ids) > self.max_cache_len:
            raise InputError(f"the prompt has {len(ids)} tokens but this artifact's KV cache holds "
                             f"{self.max_cache_len}; shorten it, or re-export with a larger "
                             f"{option('max_cache_len')}")
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise InputError(f"prompt token id {bad[0]} is outside the vocabulary [0, {self.vocab_size}); encode "
                             "text with the tokenizer shipped with the artifact")
        return ids

    def _logits(self, out) -> torch.Tensor:
        return out[0] if isinstance(out, (tuple, list)) else out

    def iter_ids(self, prompt_ids: Sequence[int], cfg: SamplingConfig, *, logits: list | None = None,
                 prefill_logits: list | None = None, timings: dict | None = None) -> Iterator[int]:
        """Yield new token ids one at a time (EOS included when hit); holds the lock until exhausted or closed.

        ``logits``: if given, each step's next-token logits (float32, [vocab]) are appended to it;
        ``prefill_logits``: if given, receives the prefill's logits for every prompt position ([S, vocab]).
        ``timings``: filled with prefill_s, decode_s, tokens and finish_reason.
        """
        ids = self.check_prompt(prompt_ids)
        sampler = Sampler(cfg)
        timings = {} if timings is None else timings
        with self.lock, torch.no_grad():
            t0 = time.perf_counter()
            x = torch.tensor([ids], dtype=torch.long)
            out = self._logits(self.forward(x, torch.arange(len(ids), dtype=torch.long)))  # [1, S, V]
            if prefill_logits is not None:
                prefill_logits.append(out[0].float().clone())
            last = out[0, -1].float()
            timings["prefill_s"] = time.perf_counter() - t0
            timings["prompt_tokens"] = len(ids)
            pos, n = len(ids), 0
            t1 = time.perf_counter()
            timings["finish_reason"] = "length"
            while True:
                if logits is not None:
                    logits.append(last.clone())
                token = sampler(last)
                n += 1
                timings["tokens"] = n
                timings["decode_s"] = time.perf_counter() - t1
                yield token
                if token in self.eos_token_ids:
                    timings["finish_reason"] = "eos"
                    return
                if n >= cfg.max_new_tokens:
                    return
                if pos >= self.max_cache_len:
                    timings["finish_reason"] = "cache"
                    return
                out = self._logits(self.step(torch.tensor([[token]], dtype=torch.long),
                                             torch.tensor([pos], dtype=torch.long)))
                last = out[0, -1].float()
                pos += 1

    def generate_ids(self, prompt_ids: Sequence[int], cfg: SamplingConfig | None = None, **kw) -> list[int]:
        """The new token ids for ``prompt_ids`` (EOS included when generated); see ``iter_ids``."""
        cfg = cfg or SamplingConfig(**kw)
        return list(self.iter_ids(prompt_ids, cfg))

    # -- text ------------------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        if self.tokenizer is None:
            raise InputError("this artifact has no tokenizer; pass token ids (generate_ids) instead of text")
        if not isinstance(text, str):
            raise InputError(f"the prompt must be a string, got {type(text).__name__}")
        return self.tokenizer.encode(text).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def stream(self, prompt: str, cfg: SamplingConfig, *, result: dict | None = None) -> Iterator[str]:
        """Yield text pieces as tokens arrive; stops at EOS, max_new_tokens, a full cache or a stop string.

        A piece is the text the newest token adds once decoded with all before it (a token that
        completes no character yet yields nothing until one that does). With ``stop`` strings, text
        that could still be the start of one is held back, and the stop string itself is never yielded.
        ``result`` (a dict) receives the Generation fields when the stream ends.
        """
        prompt_ids = self.encode(prompt)
        timings: dict = {}
        t0 = time.perf_counter()
        new: list[int] = []
        sent = ""  # text already yielded
        finish = None
        it = self.iter_ids(prompt_ids, cfg, timings=timings)
        try:
            for token in it:
                if not new:
                    timings["first_token_s"] = time.perf_counter() - t0
                new.append(token)
                text = self.decode(new)
                if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for the next byte token
                    continue
                if cfg.stop:
                    cut = _stop_at(text, cfg.stop)
                    if cut is not None:
                        text, finish = text[:cut], "stop"
                        if len(text) > len(sent):
                            yield text[len(sent):]
                        sent = text
                        break
                    safe = len(text) - _held_back(text, cfg.stop)
                    if safe > len(sent):
                        yield text[len(sent):safe]
                        sent = text[:safe]
                    continue
                if len(text) > len(sent) and text.startswith(sent):
                    yield text[len(sent):]
                    sent = text
        finally:
            it.close()  # releases the lock if the caller stops early
        if finish is None:
            text = self.decode(new)
            if len(text) > len(sent) and text.startswith(sent):
                yield text[len(sent):]
            sent = text
            finish = timings.get("finish_reason", "length")
        timings["total_s"] = time.perf_counter() - t0
        if result is not None:
            result.update(text=sent, token_ids=new, prompt_ids=prompt_ids, finish_reason=finish,
                          timings=_rounded(timings))

    def generate(self, prompt: str, cfg: SamplingConfig) -> Generation:
        """Text in, a Generation (text, ids, finish reason, timings) out."""
        result: dict = {}
        for _ in self.stream(prompt, cfg, result=result):
            pass
        return Generation(**result)


def make_generator(module, manifest: dict, tokenizer=None) -> Generator:
    """A Generator over a loaded model file (ScriptModule or pt2.Pt2Module); decode steps of a .pt2 skip the checks."""
    step = None
    runners = getattr(module, "runners", None)
    if runners:
        runner = runners[0]

        def step(ids, pos):
            return runner(ids, pos)

    return Generator(module, manifest, tokenizer, step=step)


def sampling(max_new_tokens: int = 32, do_sample: bool = False, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, seed: int | None = None, stop: Sequence[str] = ()) -> SamplingConfig:
    """The keyword form of SamplingConfig used by ExportedModel.generate/stream (checked, one-line errors)."""
    return SamplingConfig(max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature, top_k=top_k,
                          top_p=top_p, seed=seed, stop=tuple([stop] if isinstance(stop, str) else (stop or ())))


def _stop_at(text: str, stops: Sequence[str]) -> int | None:
    hits = [text.find(s) for s in stops if s in text]
    return min(hits) if hits else None


def _held_back(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters of ``text`` could be the start of a stop string."""
    held = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                held = max(held, k)
                break
    return held


def _rounded(t: dict) -> dict:
    out = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in t.items() if k != "finish_reason"}
    if out.get("tokens", 0) > 1 and t.get("decode_s"):
        out["decode_tokens_per_s"] = round((t["tokens"] - 1) / t["decode_s"], 2) if t["decode_s"] > 0 else None
    if t.get("prefill_s"):
        out["prefill_tokens_per_s"] = round(t["prompt_tokens"] / t["prefill_s"], 2)
    return out
