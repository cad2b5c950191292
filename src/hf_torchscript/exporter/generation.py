"""``--task text-generation``: a decoder exported with a static KV cache inside the graph, proven against
transformers' ``generate``. (Moves to ``export/generation.py`` with the package restructure.)

The module exported is transformers' own ``integrations/executorch.py`` wrapper
(``TorchExportableModuleWithStaticCache``): a ``StaticCache`` whose key/value tensors are module
buffers, and ``forward(input_ids[1, S], cache_position[S]) -> logits[1, S, vocab]`` with a
dynamic ``S``: the prompt in one call (prefill), then one token per call (decode). We copy its
interface (not optimum-executorch's pins) and add nothing to its graph but a float32 cast.

Formats (docs/formats.md, "text-generation"):

* ``--backend aoti``: ``torch.export(strict=True)`` with ``S`` in ``[1, max_cache_len]``, then
  AOTInductor. strict matters: measured on torch 2.13, a ``strict=False`` export of this wrapper
  fails to compile with AOTInductor at the in-place cache update; the strict one compiles and
  matches ``generate``.
* ``--backend torchscript``: ``torch.jit.trace`` of the same wrapper; the cache update
  (``index_copy_`` on the buffers) is recorded in place on the module's attributes. It is proven
  exactly like the .pt2 (the proof below), so a trace that did not generalise to other lengths
  would be refused, not shipped.

The proof (``prove``) runs the written artifact through the runtime's decode loop
(hf_torchscript.runtime.generation) and compares it with eager ``model.generate(do_sample=False)`` (its
default dynamic cache): every generated token, the logits of every prompt position at prefill and of
every decode step. An export that does not match is refused.
"""

from __future__ import annotations

import contextlib
import platform
import shutil
import time
import warnings
from pathlib import Path

import torch

from ..errors import OptionError, TraceError, ValidationError, option
from ..progress import report as tell
from ..runtime.artifact import MODEL_FILES
from ..runtime.generation import TASK, Generator, SamplingConfig, make_generator
from . import artifact

# Default --max-cache-len cap. The cache is allocated in full (2 x layers x kv_heads x head_dim x
# length floats per sequence), so a config's max_position_embeddings (131072 for Llama 3) would mean
# 34 GB of fp32 cache for an 8B model; 2048 holds a chat turn and costs 0.5 GB there. (Attention reads
# only the filled positions, see traced_graph, so the cap is about memory, not decode speed.)
DEFAULT_MAX_CACHE_LEN = 2048
# Export-time proof: this many prompts (real sentences when the model has a tokenizer), this many
# new tokens each. tests/test_generation.py runs the same proof on 50+ prompts of a trained model.
PROOF_PROMPTS = 8
PROOF_NEW_TOKENS = 16
# Two logits closer than this are a tie: eager and exported may pick either (float summation order),
# so a token flip there ends that prompt's comparison instead of failing it. Anything else is a failure.
TIE = 1e-4


DTYPES = ("float32", "bfloat16")
# bfloat16 keeps 8 bits of mantissa: two bf16 computations of the same logit (the trace and eager, summing in
# another order) differ by a few units in the last place of the hidden states, which the LM head turns into
# differences of ~1e-2 in logits of magnitude ~10. Measured on the tests' trained llama: max 3.1e-2 over
# 56 prompts. Logits within 0.1 + 5% agree; two candidates closer than 0.05 are a tie.
BF16_TOLERANCE = {"atol": 0.1, "rtol": 0.05, "tie": 0.05}


def tolerances(options) -> tuple[float, float, float]:
    """(atol, rtol, tie) of the proof: the options' own in float32, bfloat16's floor otherwise."""
    if options.dtype == "float32":
        return options.atol, options.rtol, TIE
    b = BF16_TOLERANCE
    return max(options.atol, b["atol"]), max(options.rtol, b["rtol"]), b["tie"]


def default_max_cache_len(config) -> int:
    n = (getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
         or DEFAULT_MAX_CACHE_LEN)
    window = _sliding_window(config)
    return int(min(n, DEFAULT_MAX_CACHE_LEN, window or n))


def _sliding_window(config) -> int | None:
    # The wrapper replaces sliding-window cache layers by full ones; generation is only equal to eager
    # while the sequence fits in the window, so the cache is capped there.
    w = getattr(config, "sliding_window", None)
    if w is None or getattr(config, "use_sliding_window", True) is False:
        return None
    return int(w)


def max_cache_len_for(config, requested: int | None) -> int:
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if requested is None:
        return default_max_cache_len(config)
    if requested < 2:
        raise OptionError(f"{option('max_cache_len', requested)} is too small; the cache must hold the prompt and "
                          f"the tokens generated: pass e.g. {option('max_cache_len', 512)}")
    if limit is not None and requested > limit:
        raise OptionError(f"{option('max_cache_len', requested)} exceeds the model's {limit} positions; pass at most "
                          f"{option('max_cache_len', int(limit))}")
    window = _sliding_window(config)
    if window is not None and requested > window:
        raise OptionError(f"{option('max_cache_len', requested)} exceeds the model's sliding window ({window}): the "
                          f"exported static cache attends to every position, so it equals eager only within the "
                          f"window; pass at most {option('max_cache_len', window)}")
    return int(requested)


class StaticCacheLM(torch.nn.Module):
    """transformers' ExecuTorch static-cache wrapper: batch 1, positional (input_ids, cache_position), fp32 logits."""

    def __init__(self, model, max_cache_len: int):
        super().__init__()
        from transformers.integrations.executorch import TorchExportableModuleWithStaticCache

        gc = model.generation_config
        saved = gc.cache_implementation
        gc.cache_implementation = "static"  # the wrapper's precondition; the caller's model is left as it was
        try:
            self.inner = TorchExportableModuleWithStaticCache(model, batch_size=1, max_cache_len=max_cache_len,
                                                              device=torch.device("cpu"))
        finally:
            gc.cache_implementation = saved

    def forward(self, input_ids: torch.Tensor, cache_position: torch.Tensor) -> torch.Tensor:
        return self.inner(input_ids=input_ids, cache_position=cache_position).float()


# -- the traced graph's attention and linears ------------------------------------------------------
#
# Measured on a quiet AVX2 EPYC (2 threads, bench/generation.py's 4-layer llama, one decode step of the
# traced module): transformers' sdpa path records ``repeat_kv`` (an expand + reshape that copies the
# whole K and V cache) whenever the model has fewer KV heads than query heads, and attends over all
# max_cache_len positions, filled or not. At the default cache of 2048 positions that made a step
# 10.3 ms (eager `generate`, dynamic cache: ~7.5 ms); SDPA's ``enable_gqa`` (exact: 0.0 difference to
# repeat_kv) alone: 6.6 ms. With attending only to the filled prefix, a generated token costs about the
# same at 2048 positions as at 193 (5.3 vs 5.2 ms), and ``x @ W^T`` with W^T stored contiguous instead of
# ``linear(x, W)`` (a faster one-row layout for MKL) took a step at 193 positions from 5.2 to 4.5 ms.
# docs/generation.md has the end-to-end numbers. The swaps hold only while the wrapper is traced; the
# caller's model (the proof's eager reference) runs transformers' own code before and after.

ATTENTION = "hf_torchscript_sdpa"
_prefix_fn = None


def _filled_prefix(key, value, mask):
    """key/value/mask cut to the positions the cache holds so far (a TorchScript function, so a trace
    records the cut as dynamic rather than the example's length). Positions past the last one the mask
    lets the last query see are masked out anyway: the cut changes which zeros are summed, nothing else."""
    global _prefix_fn
    if _prefix_fn is None:
        from ..deprecation import jit_api

        def filled(key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor):
            row = mask.reshape(-1, mask.shape[-1])[-1]
            n = int((row.to(torch.long) * torch.arange(1, row.shape[0] + 1)).max().item())
            return key[:, :, :n], value[:, :, :n], mask[..., :n]

        with jit_api():
            _prefix_fn = torch.jit.script(filled)
    return _prefix_fn(key, value, mask)


def _sdpa(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    """transformers' sdpa attention for a static cache, without the K/V copies (see above)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if (attention_mask is None or attention_mask.dtype != torch.bool or kwargs.get("position_bias") is not None
            or kwargs.get("softcap") is not None or kwargs.get("s_aux") is not None):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    if torch.jit.is_tracing():  # torch.export keeps every position: its .item() would be an unbacked size
        key, value, attention_mask = _filled_prefix(key, value, attention_mask)
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling,
        enable_gqa=getattr(module, "num_key_value_groups", 1) > 1)  # shapes are tensors while tracing
    return out.transpose(1, 2).contiguous(), None


class _TransposedLinear(torch.nn.Module):
    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.weight_t = torch.nn.Parameter(linear.weight.detach().t().contiguous(), requires_grad=False)
        self.bias = linear.bias

    def forward(self, x):
        y = torch.matmul(x, self.weight_t)
        return y if self.bias is None else y + self.bias


@contextlib.contextmanager
def traced_graph(model):
    """While tracing: the attention above (models on transformers' sdpa) and, in float32, transposed linears.

    The attention registers under its own name in transformers' AttentionInterface (additive: no
    other model's attention changes) and the model's config points at it only inside this block."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    from .packed import swapped_linears

    if ATTENTION not in AttentionInterface._global_mapping:
        AttentionInterface.register(ATTENTION, _sdpa)
        AttentionMaskInterface.register(ATTENTION, AttentionMaskInterface._global_mapping["sdpa"])
    config = model.config
    attn = getattr(config, "_attn_implementation", None)
    # fp32 only: in bfloat16, x @ W^T on a contiguous W^T was 6x slower than linear(x, W) (one row, AVX2 EPYC).
    transposed = model.dtype == torch.float32
    with swapped_linears(model, _TransposedLinear) if transposed else contextlib.nullcontext():
        if attn == "sdpa":
            config._attn_implementation = ATTENTION
        try:
            yield
        finally:
            if attn == "sdpa":
                config._attn_implementation = attn


def specs(vocab: int, max_cache_len: int) -> tuple[list[dict], list[dict]]:
    """The manifest's inputs and outputs (the Pt2Module's and C++ header's input checks read them)."""
    inputs = [
        {"name": "input_ids", "dtype": "int64", "shape": [1, "sequence_length"], "range": [0, vocab], "pad_value": 0},
        {"name": "cache_position", "dtype": "int64", "shape": ["sequence_length"], "range": [0, max_cache_len],
         "pad_value": 0},
    ]
    outputs = [{"name": "logits", "dtype": "float32", "shape": [1, "sequence_length", vocab]}]
    return inputs, outputs


def _ids(config, key: str):
    v = getattr(config, key, None)
    if v is None:
        return []
    return [int(x) for x in (v if isinstance(v, (list, tuple)) else [v])]


def generation_metadata(model, tokenizer, max_cache_len: int) -> dict:
    """The manifest's "generation": what a runtime needs to drive the loop without transformers."""
    config, gc = model.config, model.generation_config
    eos = _ids(gc, "eos_token_id") or _ids(config, "eos_token_id")
    bos = (_ids(gc, "bos_token_id") or _ids(config, "bos_token_id") or [None])[0]
    pad = (_ids(gc, "pad_token_id") or _ids(config, "pad_token_id") or [None])[0]
    out = {
        "max_cache_len": max_cache_len,
        "batch_size": 1,
        "vocab_size": int(config.get_text_config().vocab_size),
        "bos_token_id": bos,
        "eos_token_id": eos[0] if eos else None,
        "eos_token_ids": eos,
        "pad_token_id": pad,
        "entry_point": "forward(input_ids[1, S], cache_position[S]) -> logits[1, S, vocab]; S = prompt length "
                       "(prefill) or 1 (decode); positions restart at 0 for each new sequence",
        "cache": {"kind": "static", "layers": int(getattr(config, "num_hidden_layers", 0) or 0),
                  "dtype": str(model.dtype).replace("torch.", "")},
        "concurrency": "one sequence at a time per loaded instance (the cache lives in the model); "
                       "the Python runtime holds a lock, C++ callers need one Generator per thread",
        "chat_template": getattr(tokenizer, "chat_template", None) if tokenizer is not None else None,
        "defaults": {k: getattr(gc, k) for k in ("do_sample", "temperature", "top_k", "top_p", "max_new_tokens")
                     if isinstance(getattr(gc, k, None), (int, float, bool))},
    }
    return out


def _export_aoti(wrapper, max_cache_len: int, example_len: int):
    from torch.export import Dim

    S = Dim("sequence_length", min=1, max=max_cache_len)
    ids = torch.randint(0, 2, (1, example_len))
    pos = torch.arange(example_len)
    with warnings.catch_warnings(), torch.no_grad(), _quiet():
        warnings.simplefilter("ignore")
        try:
            return torch.export.export(wrapper, (ids, pos), dynamic_shapes=({1: S}, {0: S}), strict=True)
        except Exception as e:
            text = " ".join(line.strip() for line in str(e).strip().splitlines()[:3] if line.strip())
            raise TraceError(f"torch.export(strict=True) of the static-cache wrapper failed: {type(e).__name__}: "
                             f"{text[:400]}") from e


def _trace_torchscript(wrapper, example_len: int):
    from ..deprecation import jit_api

    ids = torch.randint(0, 2, (1, example_len))
    pos = torch.arange(example_len)
    with warnings.catch_warnings(), torch.no_grad(), _quiet(), jit_api():
        warnings.simplefilter("ignore")
        try:
            return torch.jit.trace(wrapper, (ids, pos), check_trace=False)
        except Exception as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:400]
            raise TraceError(f"torch.jit.trace of the static-cache wrapper failed: {type(e).__name__}: {first}") from e


def _quiet():
    try:
        from .source import quiet_transformers

        return quiet_transformers()
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()


class _GenerationPt2:
    """The compiled package for text-generation; plugs into artifact.roundtrip/seal like backends.aoti.Pt2Build."""

    def __new__(cls, ep, stub: dict, export_seconds: float, progress):
        from .backends.aoti import Pt2Build

        class Build(Pt2Build):
            def __init__(self):
                self.programs, self.models, self.guards = {"model": ep}, ["model"], []
                self.progress, self.export_seconds = progress, export_seconds
                self.compile_seconds, self.loaded = None, None
                self.info = stub["shapes"]

            def stub_manifest(self):
                return stub

            def finish(self, staging, manifest):
                from ..runtime.pt2 import PT2_FILE
                from .backends.aoti import INDUCTOR_CONFIGS

                if self.loaded is None:
                    self.roundtrip(staging)
                manifest["aoti"] = {
                    "package": PT2_FILE, "models": self.models,
                    "input_checks": "in the runtimes from this manifest (prefill); decode steps feed ids the model "
                                    "produced",
                    "cpu_isa": self.loaded.runners[0].get_metadata().get("AOTI_CPU_ISA"),
                    "machine": platform.machine(), "torch": torch.__version__,
                    "inductor_configs": INDUCTOR_CONFIGS, "export": "torch.export(strict=True)",
                    "export_seconds": round(self.export_seconds, 1),
                    "compile_seconds": round(self.compile_seconds or 0.0, 1),
                    "dynamic_ranges": {"sequence_length": [1, stub["max_length"]]},
                    "guards": [],
                }
                return PT2_FILE

        return Build()


def proof_prompts(tokenizer, vocab: int, n: int, max_len: int, *, seed: int = 0) -> list[list[int]]:
    """Prompts of varied length: real sentences through the tokenizer, or seeded random ids without one."""
    lengths = [1 + (i * 7919) % max(1, max_len) for i in range(n)]
    if tokenizer is not None:
        from ..texts import real_sentences

        sents = [s["text"] for s in real_sentences()]
        out = []
        for i, L in enumerate(lengths):
            ids = tokenizer(sents[(i * 37) % len(sents)] + " " + sents[(i * 37 + 1) % len(sents)],
                            add_special_tokens=True)["input_ids"]
            ids = [t for t in ids if t < vocab][: max(1, L)]
            out.append(ids or [0])
        return out
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (L,), generator=g).tolist() for L in lengths]


def prove(model, generator: Generator, prompts: list[list[int]], *, max_new_tokens: int = PROOF_NEW_TOKENS,
          atol: float = 1e-4, rtol: float = 1e-4, tie: float = TIE, progress=None) -> dict:
    """Greedy generation of ``generator`` vs eager ``model.generate(do_sample=False)``, token by token, with logits.

    Per prompt: the exported prefill logits at every prompt position vs an eager forward of the prompt;
    then per step the next-token logits vs ``generate``'s (``output_logits``) and the token chosen. A
    token flip where eager's two candidates are within ``tie`` ends that prompt's comparison as a tie;
    any other flip, or a logit outside ``atol + rtol*|eager|``, is a failure. Returns the report (JSON).
    """
    eos = list(generator.eos_token_ids)
    pad = generator.manifest["generation"].get("pad_token_id")
    failures: list[str] = []
    cases, ties, tokens_compared, prefill_positions = [], 0, 0, 0
    max_prefill = max_step = 0.0
    finish = {"eos": 0, "length": 0, "cache": 0}
    for k, ids in enumerate(prompts):
        tell(progress, "validate", f"greedy generation vs transformers generate, prompt {k + 1}/{len(prompts)}",
             k, len(prompts))
        x = torch.tensor([ids])
        budget = min(max_new_tokens, generator.max_cache_len - len(ids) + 1)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            eager_prefill = model(x).logits[0].float()
            out = model.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=budget,
                                 eos_token_id=eos or None, pad_token_id=pad if pad is not None else (eos or [0])[0],
                                 output_logits=True, return_dict_in_generate=True, top_k=None, top_p=None,
                                 temperature=None)
        want = out.sequences[0, len(ids):].tolist()
        want_logits = [step[0].float() for step in out.logits]
        got_logits: list = []
        got_prefill: list = []
        timings: dict = {}
        got = list(generator.iter_ids(ids, SamplingConfig(max_new_tokens=budget), logits=got_logits,
                                      prefill_logits=got_prefill, timings=timings))
        finish[timings.get("finish_reason", "length")] += 1
        d = float((got_prefill[0] - eager_prefill).abs().max())
        max_prefill = max(max_prefill, d)
        prefill_positions += len(ids)
        if not torch.allclose(got_prefill[0], eager_prefill, atol=atol, rtol=rtol):
            failures.append(f"prompt {k} (length {len(ids)}): prefill logits differ by {d:.2e}")
        case = {"prompt_length": len(ids), "new_tokens": len(want), "equal": got == want}
        for step, (w, g) in enumerate(zip(want, got)):
            if step < len(got_logits) and step < len(want_logits):
                ds = float((got_logits[step] - want_logits[step]).abs().max())
                max_step = max(max_step, ds)
                if not torch.allclose(got_logits[step], want_logits[step], atol=atol, rtol=rtol):
                    failures.append(f"prompt {k}: step {step} logits differ by {ds:.2e}")
                    break
            if w != g:
                margin = float((want_logits[step][w] - want_logits[step][g]).abs())
                if margin <= tie:
                    ties += 1
                    case["tie_at"] = step
                else:
                    failures.append(f"prompt {k} (length {len(ids)}): token {step} is {g}, generate gives {w} "
                                    f"(eager logits {margin:.2e} apart)")
                break
            tokens_compared += 1
        else:
            if len(got) != len(want):
                failures.append(f"prompt {k}: {len(got)} tokens generated, generate gives {len(want)} "
                                "(EOS or max_new_tokens handled differently)")
        cases.append(case)
    passed = not failures
    return {
        "mode": "generation",
        "ran": True,
        "passed": passed,
        "against": "transformers generate(do_sample=False), eager, dynamic cache; prefill logits vs an eager forward",
        "prompts": len(prompts),
        "prompt_lengths": [len(p) for p in prompts],
        "max_new_tokens": max_new_tokens,
        "tokens_compared": tokens_compared,
        "sequences_equal": sum(c["equal"] for c in cases),
        "ties": ties,
        "finish_reasons": finish,
        "prefill_positions_compared": prefill_positions,
        "atol": atol,
        "rtol": rtol,
        "tie": tie,
        "max_abs_diff": {"prefill_logits": max_prefill, "step_logits": max_step},
        "cases": cases,
        "failures": failures,
        "summary": (f"{'passed' if passed else 'FAILED'}: {sum(c['equal'] for c in cases)}/{len(prompts)} greedy "
                    f"sequences equal to transformers generate ({tokens_compared} tokens, {ties} ties), logits "
                    f"max diff prefill {max_prefill:.1e} / decode {max_step:.1e} (atol {atol:g}, rtol {rtol:g})"),
    }


def export_generation(src, output_dir: Path, options, *, force: bool, progress=None, start: float | None = None):
    """Export ``src`` (a loaded source.Source) for text-generation; returns an exporter.ExportResult."""
    from ..compat import kv_cache_export_supported
    from .flow import ExportResult
    from .parity import ValidationReport

    if not kv_cache_export_supported():
        import transformers

        raise OptionError(f"{option('task', TASK)} needs transformers 5 (installed: {transformers.__version__}): on 4.x the "
                          "traced static-cache module fails when it runs; upgrade transformers to export it")
    start = time.perf_counter() if start is None else start
    if options.backend not in ("aoti", "torchscript"):
        raise OptionError(f"{option('task', TASK)} exports with {option('backend', 'aoti')} or "
                          f"{option('backend', 'torchscript')}, got {option('backend', options.backend)}")
    if options.dtype not in DTYPES or options.quantize or options.optimize or options.onednn_fusion or \
            options.pack_linears:
        raise OptionError(f"{option('task', TASK)} is exported in float32 or bfloat16 (each proven against generate "
                          f"in its own dtype): drop {option('quantize')}, {option('optimize')}, "
                          f"{option('onednn_fusion')} and {option('pack_linears')}"
                          + ("" if options.dtype in DTYPES else f", and {option('dtype', options.dtype)}"))
    model, config, tokenizer = src.model, src.config, src.tokenizer
    if options.dtype != "float32":
        # Weights, activations and the KV cache in bfloat16, the logits handed out in float32. The proof's eager
        # reference is the same model in the same dtype: generate in bf16 is what this artifact claims to equal.
        model = model.to(getattr(torch, options.dtype))
    max_cache_len = max_cache_len_for(config, options.max_cache_len)
    vocab = int(config.get_text_config().vocab_size)
    tell(progress, "prepare", f"{config.model_type}: static KV cache of {max_cache_len} positions (batch 1)")
    try:
        wrapper = StaticCacheLM(model, max_cache_len).eval()
    except (ValueError, AssertionError, AttributeError, TypeError) as e:
        raise TraceError(f"transformers cannot build a static cache for {config.model_type}: {type(e).__name__}: "
                         f"{str(e).splitlines()[0][:300]}") from None
    inputs, outputs = specs(vocab, max_cache_len)
    example_len = min(8, max_cache_len)
    shapes_info = {"strategy": "dynamic", "requested": "dynamic", "min_length": 1, "max_length": max_cache_len,
                   "buckets": None, "batch_size": 1,
                   "traced": [{"batch_size": 1, "sequence_length": example_len}],
                   "reason": "one entry point: S = prompt length at prefill, 1 per decode step"}
    stub = {"inputs": inputs, "outputs": outputs, "max_length": max_cache_len, "shapes": shapes_info,
            "aoti": {"models": ["model"]}}
    t0 = time.perf_counter()
    if options.backend == "aoti":
        tell(progress, "trace", f"torch.export(strict=True), S in 1..{max_cache_len}")
        with traced_graph(model):
            program = _export_aoti(wrapper, max_cache_len, example_len)
        module = _GenerationPt2(program, stub, 0.0, progress)
        module.export_seconds = time.perf_counter() - t0
        fmt = "aoti-pt2"
    else:
        tell(progress, "trace", f"torch.jit.trace at S={example_len} (cache updated in place)")
        with traced_graph(model):
            module = _trace_torchscript(wrapper, example_len)
        fmt = "torchscript"
    staging = artifact.staging_dir(output_dir)
    try:
        loaded = artifact.roundtrip(module, staging)
        gen_meta = generation_metadata(model, tokenizer, max_cache_len)
        manifest_stub = {"task": TASK, "generation": gen_meta, **stub}
        generator = make_generator(loaded, manifest_stub)
        prompts = proof_prompts(tokenizer, vocab, PROOF_PROMPTS, min(48, max_cache_len - 1), seed=options.seed)
        atol, rtol, tie = tolerances(options)
        proof = prove(model, generator, prompts, atol=atol, rtol=rtol, tie=tie, progress=progress)
        report = ValidationReport(passed=proof["passed"], atol=atol, rtol=rtol, mode="generation",
                                  cases=proof["cases"], max_abs_diff=proof["max_abs_diff"],
                                  failures=list(proof["failures"]), note=proof["summary"])
        if not proof["passed"]:
            hint = ("; AOTInductor on torch 2.13 loses the in-graph cache writes (docs/formats.md, generation): "
                    f"use {option('backend', 'torchscript')}" if fmt == "aoti-pt2" else "")
            raise ValidationError(
                f"the exported {fmt} {TASK} model does not match transformers generate "
                f"({len(proof['failures'])} failures); nothing was written{hint}:\n  - "
                + "\n  - ".join(proof["failures"][:10]),
                report,
            )
        manifest = _manifest(src, options, fmt, inputs, outputs, shapes_info, gen_meta, proof)
        tell(progress, "save", f"{MODEL_FILES[fmt]}, manifest.json, tokenizer files -> {output_dir}")
        artifact.write_artifact(staging, module, manifest, tokenizer)
        _untruncate(staging, manifest)
        artifact.seal(staging, module, manifest)
        artifact.commit(staging, output_dir, force)
    except OSError as e:
        from ..atomic import write_error

        shutil.rmtree(staging, ignore_errors=True)
        raise write_error(e, output_dir) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportResult(output_dir, manifest, report, "dynamic", time.perf_counter() - start, [])


def _untruncate(staging: Path, manifest: dict) -> None:
    # artifact.save_tokenizer sets truncation at the max length; a prompt over the cache must be refused
    # (one line, generation.Generator.check_prompt), never silently cut, so the shipped file truncates nothing.
    tok = manifest.get("tokenizer")
    if not tok:
        return
    from tokenizers import Tokenizer

    path = staging / tok["file"]
    t = Tokenizer.from_file(str(path))
    t.no_truncation()
    t.save(str(path))
    tok["truncation"] = None


def _manifest(src, options, fmt, inputs, outputs, shapes_info, gen_meta, proof) -> dict:
    from .artifact import FORMAT_VERSION, _source, consistency_record, cpu_block, versions

    return {
        "format_version": FORMAT_VERSION,
        "format": fmt,
        "producer": "hf-torchscript",
        "task": TASK,
        "model_type": src.config.model_type,
        "model_class": type(src.model).__name__,
        "source": _source(src),
        "inputs": inputs,
        "outputs": outputs,
        "shapes": shapes_info,
        "max_length": shapes_info["max_length"],
        "pad_token_id": gen_meta["pad_token_id"] if gen_meta["pad_token_id"] is not None else 0,
        "padding_side": "right",
        "id2label": None,
        "tokenizer": None,
        "dtype": options.dtype,
        "quantize": None,
        "optimize": False,
        "precision": {"compute": "float32" if options.dtype == "float32" else
                      f"{options.dtype} (weights, activations, KV cache); logits cast to float32",
                      "outputs_dtype": "float32", "optimizations": [],
                      "validation": f"|exported - eager| <= atol {proof['atol']:g} + rtol {proof['rtol']:g} x |eager| "
                                    f"on logits, eager = transformers in {options.dtype}; greedy tokens equal (a flip "
                                    f"between candidates within {proof['tie']:g} is a tie)"},
        "backend": options.backend,
        "weights": {"tied_embeddings": "shared" if getattr(src.config, "tie_word_embeddings", False) else "none"},
        "validation": {k: v for k, v in proof.items()},
        "tracer_warnings": [],
        "versions": versions(),
        "cpu": cpu_block(options),
        "consistency": consistency_record(src),  # what the source-folder checks let through, as for every export
        "generation": gen_meta,
    }
