"""Text generation: a decoder whose static KV cache lives inside the graph (``forward(input_ids[1, S],
cache_position[S]) -> logits``), one entry point for prefill and decode.

Export, proof and decode loop are their own modules (exporter/generation.py, runtime/generation.py):
the shape grid does not apply (the cache fixes batch 1 and a maximum length), and the answer is a
token sequence compared with transformers' ``generate``, not a tensor per input.
"""

from __future__ import annotations

from .base import Task

TEXT_GENERATION = Task(
    "text-generation", "AutoModelForCausalLM", {"logits": (1, "sequence_length", "*")},
    decoder_order=3, kv_cache=True, tei="generate",
    triton_tokenizer_refusal="a generation artifact runs a decode loop (prefill, then one token per call), which "
                             "Triton's one-shot libtorch backend does not drive",
)
