"""What a task is: one ``Task`` record of data and small functions, and the helpers the task modules share.

A task module (``tasks/fill_mask.py`` ...) builds its ``Task`` from these fields; the consumers call
them and never name a task: the exporter reads the declared outputs and flags, ``runtime.postprocess``
calls ``run``, the CLI ``to_json`` and ``summary``, the text check ``check_items`` and ``check_compare``,
``map`` ``columns``, the servers the serving flags. Importable without torch or transformers (torch is
imported inside the functions that need it).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import InputError

if TYPE_CHECKING:  # annotations only: the registry is imported without torch
    import torch

# Output axes: symbolic names follow the inputs (batch_size, sequence_length, num_choices,
# decoder_sequence_length); "*" is a size the model fixes (hidden size, vocabulary, labels), read from
# one eager run. A declared symbolic axis whose input dim does not exist (a ViT has no sequence_length:
# its last_hidden_state holds patches) is fixed too. Declared here, as optimum's
# _TASK_TO_COMMON_OUTPUTS does, so an export never has to guess which axis is which; running the model
# only checks the declaration (prepare.declare_outputs).
PER_TOKEN = ("batch_size", "sequence_length", "*")
PER_ROW = ("batch_size", "*")


def flat_outputs(result) -> list[dict]:
    """``run --json``'s ``output`` objects when a task's result is already one flat object per input."""
    return [plain(r) for r in result]


@dataclass(frozen=True)
class Task:
    """One task: what it loads and exports, and its behaviour at every stage (None: the task has none)."""

    name: str
    auto_class: str  # transformers Auto class name, resolved by source.py
    # ModelOutput key -> axes, in export order. With ``optional_outputs`` the model exports those of
    # them it returns (BERT's feature extraction has pooler_output, DistilBERT's has not).
    outputs: Mapping[str, tuple]
    optional_outputs: bool = False
    labels: bool = False  # id2label goes into the manifest
    choices: bool = False  # text inputs gain a num_choices axis: (batch_size, num_choices, sequence_length)
    # config.architectures[0] suffixes that mean this task, for inferring it when none is given (as optimum does).
    suffixes: tuple[str, ...] = ()
    # Which architectures offer it: every encoder (architectures.ENCODER_TASKS), and decoders at this place in
    # their list (architectures.DECODER_TASKS: the order their "supported for gpt2: ..." message shows).
    encoder: bool = False
    decoder_order: int | None = None
    pooled: bool = False  # sentence-transformers pooling (and normalisation) run inside the graph
    generation: bool = False  # an encoder-decoder: the manifest records how to decode greedily
    similarity: bool = False  # one embedding per text: --similarity's cosine matrix applies
    # A decoder with a static KV cache inside the graph: exported by exporter/generation.py (proven against
    # transformers' generate, not the shape grid), driven by runtime/generation.py's decode loop.
    kv_cache: bool = False
    # exporter/answers.py, reduced precision on real text: the figure users feel (None: none for this task yet);
    # answer_inputs (texts, model) -> (texts, pairs) fed to the model (None: the texts as they are);
    # answer_agree (got, ref, mask, ids, model, tie) -> (same, near_tie) per answer; without it the figure is the
    # nearest neighbour of the pooled ``answer_embedding`` output.
    answer_figure: str | None = None
    # serving/http.py: what the TEI-style server answers for the task: "embed" (one vector per text: /embed,
    # /v1/embeddings, /similarity), "embed_all" (vectors per token: /embed_all), "classify" (/predict, /rerank),
    # "generate" (OpenAI's /v1/completions, whole or streamed); None: only what every artifact gets (/,
    # /tokenize, /decode, /info, /health, /metrics).
    tei: str | None = None
    answer_inputs: Callable | None = None
    answer_agree: Callable | None = None
    answer_embedding: str | None = None

    # runtime: (ExportedModel, inputs, top_k) -> the Python result of model(texts); None: tensors only.
    run: Callable | None = None
    # cli/serve: the result as one JSON-ready ``output`` object per input (``run --json``, ``serve``).
    to_json: Callable = flat_outputs
    # cli: (the document's results, top_k) -> lines of the human summary; None: the generic line per input.
    summary: Callable | None = None
    # exporter's text check: (the check run) -> its inputs; (run, got, ref, inputs, labels) -> task-level comparison.
    check_items: Callable | None = None
    check_compare: Callable | None = None
    # serving: map's output columns, (ExportedModel) -> [(name, pyarrow type or builder, value from one result)];
    # None: map refuses the task.
    columns: Callable | None = None
    pairs: bool = False  # map takes a pair column
    pair_required: str | None = None  # map: the pair column is required; what it holds, for the message
    needs_mask: bool = False  # map: a text without the tokenizer's mask token is a row error
    # Triton: why --with-tokenizer (one text per row) cannot feed this task; None: it can.
    triton_tokenizer_refusal: str | None = None

    @property
    def plain_texts(self) -> bool:
        """Whether the task takes strings (or (text, pair) tuples): what ``serve`` accepts."""
        return self.run is not None and not self.choices


# -- text in, shared by the run hooks -------------------------------------------------------------------


def split_pairs(texts):
    if all(isinstance(t, str) for t in texts):
        return texts, None
    if all(isinstance(t, (tuple, list)) and len(t) == 2 for t in texts):
        return [t[0] for t in texts], [t[1] for t in texts]
    raise InputError("pass either strings or (text, text_pair) tuples, not a mix")


def label_names(model, n: int) -> list[str]:
    id2label = model.manifest.get("id2label") or {}
    return [id2label.get(str(i), f"LABEL_{i}") for i in range(n)]


# -- JSON out: strict, short floats ----------------------------------------------------------------------


def to_float(x) -> float:
    # 9 significant digits read back to the same float32: exact, and shorter than a double's repr.
    return float(format(float(x), ".9g"))


def floats(t):
    if t.dim() == 0:
        return to_float(t)
    return [floats(r) for r in t] if t.dim() > 1 else [to_float(v) for v in t.tolist()]


def plain(x):
    import torch

    if isinstance(x, torch.Tensor):
        return floats(x.float()) if x.is_floating_point() else x.tolist()
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, float):
        return to_float(x)
    return x


# -- human summaries ------------------------------------------------------------------------------------

TEXT_WIDTH = 60


def show(item: dict) -> str:
    text = item["text"]
    if "pair" in item:
        text = f"{text} | {item['pair']}"
    elif "choices" in item:
        text = f"{text} | " + " / ".join(item["choices"])
    text = " ".join(text.split())
    return text if len(text) <= TEXT_WIDTH else text[: TEXT_WIDTH - 3] + "..."


def num(v, digits: int) -> str:
    return "nan" if v is None else f"{v:.{digits}f}"


def sort_key(v) -> float:
    return -math.inf if v is None else v


def quoted(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


# -- the text check's inputs ----------------------------------------------------------------------------

# Texts every task sees (a long one, over the max length, is added per artifact: the check's long_text).
SINGLES = (
    "Hi",
    "A man is eating food.",
    "The sky is blue over the city by the river tonight, and the music plays.",
    "Wait... what?! No way -- that's (really) \"surprising\"; isn't it? #1 @home 100%",
    "Crème brûlée, naïve café in São Paulo, Zürich; résumé à la carte.",
    "東京は日本の首都です。北京是中国的首都。서울은 한국의 수도입니다.",
    "I love pizza 🍕🍕 and rockets 🚀! Great job 👍🏽 😂",
    "   leading and trailing spaces,\ttabs\nand newlines   ",
    "UPPER lower MiXeD 12345 3.14159 e=mc^2",
    "Jim Henson was a puppeteer who created the Muppets. " * 4,
)


def single_texts(run) -> list:
    """The built-in single texts and one over the artifact's max length."""
    return list(SINGLES) + [run.long_text()]

def tie_agree(got: torch.Tensor, ref: torch.Tensor, tie: float, valid: torch.Tensor | None = None):
    """Rows (last axis = choices) whose argmax equals the reference's, and those that differ only in a near-tie."""
    import torch  # here, not at the top: the registry is imported without torch

    got, ref = got.double(), ref.double()
    if valid is not None:
        neg = torch.finfo(torch.float64).min
        got, ref = got.masked_fill(~valid, neg), ref.masked_fill(~valid, neg)
        lo = ref.masked_fill(~valid, float("inf")).amin(-1)
    else:
        lo = ref.amin(-1)
    gi, ri = got.argmax(-1), ref.argmax(-1)
    span = (ref.amax(-1) - lo).clamp(min=1e-30)
    margin = ref.gather(-1, ri[..., None])[..., 0] - ref.gather(-1, gi[..., None])[..., 0]
    same = gi == ri
    tie = ~same & (margin <= tie * span)
    return same, tie
