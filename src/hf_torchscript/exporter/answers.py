"""Answers, not only vectors: at reduced precision (bf16, fp16, int8), does the artifact give users the
same answers as the float32 model on real text?

A cosine of 0.995 per row says the vectors are close; it does not say whether the nearest neighbour
of a sentence, a classifier's label or an answer span stays the same, which is what users feel. This
step runs ``texts.real_sentences()`` (real, labelled English sentences) through the written
artifact's tokenizer and model file and through the float32 eager model (``Prepared.reference``) on
the same ids, and measures, per task:

  sentence-embedding,   nearest-neighbour agreement: each sentence's nearest other sentence (cosine)
  feature-extraction    among the set is the same (feature extraction: mean over the valid tokens)
  text-classification   top-1 label agreement per sentence
  token-classification  per-token top-1 label agreement (valid tokens)
  question-answering    answer-span agreement (start and end) for a question over each sentence
  fill-mask             top-1 token at a masked word of each sentence
  causal-lm             top-1 next token after each sentence

A different answer still agrees when the float32 reference itself nearly ties the two (the margin
between them is under the precision's ``top1_tie`` share of the row's range: parity.REDUCED_PRECISION);
those near-ties are counted and recorded. Each figure has a bar (``ANSWER_BARS``); missing one fails
the export. float32 artifacts are checked to 1e-4 of the reference, so their answers are not
re-measured here (the record says so).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field

import torch

from ..tasks.base import tie_agree
from ..texts import real_sentences, real_text_source

# The share of real sentences whose answer must stay the same (near-ties counted as agreement), per
# figure, for every reduced precision. Measured on all-MiniLM-L6-v2 (256 sentences, docs/proof.md):
# bf16 (eager) keeps 254 nearest neighbours, the other 2 near-ties; --quantize dynamic-int8 keeps 240
# and 15 more are near-ties (255/256 = 99.6%); a tiny classifier trained on these sentences keeps its
# labels in bf16.
ANSWER_BARS = {
    "nearest neighbour": 0.98,
    "top-1 label": 0.98,
    "per-token label": 0.98,
    "answer span": 0.95,
    "top-1 token at mask": 0.95,
    "top-1 next token": 0.95,
}


def bar(name: str, precision: str) -> float:
    """The bar of figure ``name`` at ``precision`` ("bfloat16", "float16", "dynamic-int8", ...): one bar for all."""
    return ANSWER_BARS[name]
REAL_TEXTS = 256  # sentences measured: 32 from each of the eight books (texts.py)
BATCH = 64


@dataclass
class Figure:
    name: str
    agree: int
    of: int
    ties: int  # disagreements within the reference's own near-tie, counted as agreement
    bar: float

    @property
    def share(self) -> float:
        return self.agree / self.of if self.of else 0.0

    @property
    def passed(self) -> bool:
        return self.of > 0 and self.share >= self.bar


@dataclass
class AnswerReport:
    """What ``check_answers`` measured; recorded as ``manifest["validation"]["answers"]``."""

    ran: bool
    passed: bool
    precision: str = ""
    texts: int = 0
    texts_source: str = ""
    figures: list[Figure] = field(default_factory=list)
    note: str | None = None

    def summary(self) -> str:
        if not self.ran:
            return f"answers not measured: {self.note}"
        figs = ", ".join(f"{f.name} {f.agree}/{f.of}" for f in self.figures)
        return f"answers {'passed' if self.passed else 'FAILED'} on {self.texts} real sentences: {figs}"

    def to_json(self) -> dict:
        out = asdict(self)
        out["figures"] = [{**asdict(f), "share": f.share, "passed": f.passed} for f in self.figures]
        out["summary"] = self.summary()
        return out

    def error_message(self, where: str) -> str:
        bad = [f"{f.name}: {f.agree}/{f.of} = {f.share:.1%} of real sentences keep the float32 answer "
               f"(needs >= {f.bar:.0%})" for f in self.figures if not f.passed]
        return (f"{where} at {self.precision} changes the answers on real text: {'; '.join(bad)}; nothing was "
                "written. Use a higher precision (float32, or bfloat16 instead of int8), or keep more layers float "
                "(--keep-float)")


def not_run(note: str, precision: str = "") -> AnswerReport:
    return AnswerReport(ran=False, passed=False, precision=precision, note=note)


def sentences(n: int = REAL_TEXTS) -> list[str]:
    """``n`` real sentences spread evenly over the books of texts.py (the same ones every time)."""
    rows = real_sentences()
    books: dict[str, list[str]] = {}
    for r in rows:
        books.setdefault(r["label"], []).append(r["text"])
    per = max(1, n // len(books))
    return [t for texts in books.values() for t in texts[:per]][:n]




def nearest_neighbour(got: torch.Tensor, ref: torch.Tensor, tie: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(same, near-tie) per row: is each row's nearest other row by cosine the same under ``got`` as ``ref``?"""
    def sims(x):
        x = torch.nn.functional.normalize(x.double(), dim=-1)
        s = x @ x.T
        s.fill_diagonal_(float("-inf"))
        return s

    sg, sr = sims(got), sims(ref)
    valid = ~torch.eye(len(got), dtype=torch.bool)
    return tie_agree(sg, sr, tie, valid)


def figure_from(name: str, same: torch.Tensor, tie: torch.Tensor, precision: str = "bfloat16") -> Figure:
    same, tie = same.reshape(-1), tie.reshape(-1)
    return Figure(name, int((same | tie).sum()), int(same.numel()), int(tie.sum()), bar(name, precision))


def check_answers(p, directory, tolerance, *, n: int = REAL_TEXTS) -> AnswerReport:
    """Run real sentences through ``directory``'s tokenizer and model file and the float32 reference; compare answers.

    Args:
        p: the ``prepare.Prepared`` model (its ``reference`` is float32 eager).
        directory: the artifact directory (the staging dir during export).
        tolerance: the export's tolerance; its ``top1_tie`` decides near-ties.
    """
    from ..runtime.model import ExportedModel, UntrainedWeightsWarning

    opts = p.options
    precision = opts.quantize or opts.dtype
    if tolerance.mode != "cosine":
        return not_run("float32: checked to the export's tolerance against the reference, answers cannot differ "
                       "beyond that", precision)
    task = p.task
    if task.answer_figure is None:
        return not_run(f"no answer figure for {task.name} yet (the grid's and the text check's top-1 figures apply)",
                       precision)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedWeightsWarning)
        model = ExportedModel(directory)
    if model.tokenizer is None:
        return not_run("no tokenizer shipped: real text cannot be fed", precision)
    if not {s.name for s in p.specs} <= {"input_ids", "attention_mask", "token_type_ids"}:
        return not_run(f"inputs {[s.name for s in p.specs]} do not all come from text", precision)
    texts = sentences(n)
    pairs = None
    if task.answer_inputs is not None:
        texts, pairs = task.answer_inputs(texts, model)
    got, ref, masks, ids = [], [], [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # truncation of a long sentence is what a user gets too
        for i in range(0, len(texts), BATCH):
            inputs, _ = model.encode(texts[i:i + BATCH], pairs[i:i + BATCH] if pairs else None)
            out = model.run(**inputs)
            with torch.no_grad():
                r = p.reference(*(inputs[s.name] for s in p.specs))
            got.append({o.name: out[o.name].float() for o in p.outputs})
            ref.append({o.name: t.float() for o, t in zip(p.outputs, r)})
            masks.append(inputs["attention_mask"].bool())
            ids.append(inputs["input_ids"])
    tie = tolerance.top1_tie
    name = task.answer_figure
    figures = []
    if task.answer_agree is None:
        key = task.answer_embedding

        def pooled(outs):
            rows = []
            for o, m in zip(outs, masks):
                x = o[key]
                if x.dim() == 3:  # mean over the valid tokens
                    x = (x * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp(min=1)
                rows.append(x)
            return torch.cat(rows)

        figures.append(figure_from(name, *nearest_neighbour(pooled(got), pooled(ref), tie), precision))
    else:
        sames, ties = [], []
        for g, r, m, x in zip(got, ref, masks, ids):
            s, t = task.answer_agree(g, r, m, x, model, tie)
            sames.append(s.reshape(-1))
            ties.append(t.reshape(-1))
        figures.append(figure_from(name, torch.cat(sames), torch.cat(ties), precision))
    src = real_text_source()
    return AnswerReport(ran=True, passed=all(f.passed for f in figures), precision=precision, texts=len(texts),
                        texts_source=f"{src['source']} (texts.py)", figures=figures)
