"""Text-level validation: real texts through the SHIPPED tokenizer files and the SAVED artifact,
compared with the reference library on the original model (``check_texts``).

The grid (parity.run_grid) proves the graph on random token ids. What a user runs is text: the
artifact's ``tokenizer.json`` used as it is (by Python, C++, Rust or JS), then model.pt, then a
task-level reading of the outputs. This step checks that whole path on a dozen built-in texts
(lengths from one word to over the max length, punctuation, accents, CJK, emoji, pairs where the
task takes pairs, mask tokens, multiple-choice items), in one batch:

  1. ids: ``tokenizers.Tokenizer.from_file(OUT/tokenizer.json).encode_batch(texts)``, no settings
     changed, must give exactly the ids, mask and type ids of the source's transformers tokenizer
     (truncating at the artifact's max length). That is what proves a C++/Rust user gets the right ids.
  2. answers: the artifact, loaded with ``runtime.ExportedModel`` from the written directory, must
     agree with the reference at the task level: top-1 label / token / span / choice / next token,
     greedy tokens (seq2seq), cosine for embeddings; a flip between near-tied reference logits is
     precision, not a failure. The raw outputs must also meet the export's tolerance.

The reference is sentence-transformers' ``encode`` for sentence-embedding (when installed and the
source is a folder), else the fp32 eager model (``Prepared.reference``) on the transformers
tokenizer's ids. What it was compared against is always recorded; nothing is skipped silently.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..tasks.base import single_texts
from .parity import Tolerance, compare_inputs

# The built-in texts live with their tasks (tasks/base.SINGLES for every text task; pairs, questions,
# masked texts and choices in their task's module), each task's ``check_items`` picks its own.

# Words repeated into the text that must exceed the max length (every word is at least one token).
LONG_WORDS = "the city by the river reads a book and the dog runs fast".split()
SEQ2SEQ_STEPS = 8  # greedy tokens compared per text
FP32_COSINE = 0.9999
FP32_TIE = 1e-5  # fp32: a top-1 flip is a tie when the reference margin is under this share of the row's range
TEXT_INPUTS = {"input_ids", "attention_mask", "token_type_ids", "decoder_input_ids", "decoder_attention_mask"}


@dataclass
class TextReport:
    """What the text check compared and found; recorded as ``manifest["validation"]["text"]``."""

    ran: bool
    passed: bool
    texts: int = 0
    tokenizer: str = ""  # what the shipped tokenizer.json's ids were compared with
    reference: str = ""  # what the artifact's task outputs were compared with
    agreement: dict = field(default_factory=dict)  # figure -> "k/n" or a minimum cosine
    failures: list[str] = field(default_factory=list)
    note: str | None = None

    def summary(self) -> str:
        if not self.ran:
            return f"text check not run: {self.note}"
        figures = ", ".join(f"{k} {v:.5f}" if isinstance(v, float) else f"{k} {v}" for k, v in self.agreement.items())
        head = "passed" if self.passed else f"FAILED ({len(self.failures)} disagreements)"
        return f"text check {head}: {self.texts} texts vs {self.reference}; {figures}"

    def to_json(self) -> dict:
        return {**asdict(self), "summary": self.summary()}

    def error_message(self, where: str, limit: int = 10) -> str:
        lines = [f"- {f}" for f in self.failures[:limit]]
        if len(self.failures) > limit:
            lines.append(f"- ... and {len(self.failures) - limit} more")
        return (
            f"text check failed: {where} disagrees with {self.reference} on real texts through the shipped "
            f"tokenizer.json ({len(self.failures)} disagreements); nothing was written. Fix the tokenizer or model "
            "files, or report it with these lines:\n" + "\n".join(lines)
        )


def not_run(note: str) -> TextReport:
    """A text check that could not run: recorded with its reason, never as a pass."""
    return TextReport(ran=False, passed=False, note=note)


def check_texts(p, directory, tolerance: Tolerance) -> TextReport:
    """Run the built-in texts through ``directory``'s tokenizer.json and model.pt; compare with the reference.

    Args:
        p: the ``prepare.Prepared`` model the artifact was exported from (its ``reference`` is fp32 eager).
        directory: a complete artifact directory (the staging dir during export).
        tolerance: the export's tolerance (fp32 allclose, or cosine for bf16/int8).

    Returns:
        A TextReport; ``passed`` is False with ``failures`` when anything disagreed, ``ran`` False
        (with ``note``) when the artifact has no tokenizer or takes inputs that do not come from text.
    """
    from tokenizers import Tokenizer

    from ..runtime.model import ExportedModel, UntrainedWeightsWarning

    with warnings.catch_warnings():
        # An --allow-new-weights export warns on every load; the exporter has already said so.
        warnings.simplefilter("ignore", UntrainedWeightsWarning)
        model = ExportedModel(directory)
    names = [s.name for s in p.specs]
    if model.tokenizer is None:
        return not_run("no tokenizer shipped (an in-memory model exported without tokenizer=): the artifact "
                       "takes token ids only")
    if not set(names) <= TEXT_INPUTS:
        return not_run(f"inputs {', '.join(sorted(set(names) - TEXT_INPUTS))} do not come from text")
    # A fresh Tokenizer with nothing changed: exactly what a C++/Rust/JS user's binding does.
    naive = Tokenizer.from_file(str(Path(directory) / model.manifest["tokenizer"]["file"]))
    run = _Run(p, model, naive, tolerance)
    return run.check()


def _short(text) -> str:
    """A text as failure messages show it: quoted, cut at 48 characters, a long one by its word count."""
    if isinstance(text, tuple) and isinstance(text[1], list):  # multiple-choice (prompt, [choices])
        return f"{_short(text[0])} with {len(text[1])} choices"
    if isinstance(text, tuple):
        return " | ".join(_short(t) for t in text)
    words = text.split()
    if len(words) > 40:
        return f"<long text, {len(words)} words>"
    return repr(text if len(text) <= 48 else text[:45] + "...")


class _Run:
    """One text check: the items, both tokenizations, both model runs, the comparisons."""

    def __init__(self, p, model, naive, tolerance: Tolerance):
        self.p, self.model, self.naive, self.tol = p, model, naive, tolerance
        self.task = p.task
        self.L = int(model.max_length)
        self.hf = p.source.tokenizer
        self.failures: list[str] = []
        self.agreement: dict = {}
        self.tie = tolerance.top1_tie if tolerance.mode == "cosine" else FP32_TIE
        self.min_cosine = tolerance.min_cosine if tolerance.mode == "cosine" else FP32_COSINE

    # -- the texts -------------------------------------------------------------------------------

    def long_text(self, head: str = "") -> str:
        """A text with more words than the max length, so more tokens than the artifact takes."""
        n = self.L + 8
        words = (LONG_WORDS * (n // len(LONG_WORDS) + 1))[:n]
        return (head + " " if head else "") + " ".join(words)

    def items(self) -> list:
        """The inputs of this task (its ``check_items``): strings, (text, text_pair) tuples, or (prompt, [choices])."""
        return (self.task.check_items or single_texts)(self)

    def mask_token(self) -> str:
        tok = getattr(self.hf, "mask_token", None) or (self.model.manifest.get("tokenizer") or {}).get("mask_token")
        return tok or "[MASK]"

    # -- the check -------------------------------------------------------------------------------

    def check(self) -> TextReport:
        items = self.items()
        flat = [(q, c) for q, cs in items for c in cs] if self.task.choices else items
        naive = self.naive.encode_batch(flat)
        ref_rows, ids_note = self.reference_ids(flat, naive)
        got_inputs = self.pack([(e.ids, e.attention_mask, e.type_ids) for e in naive])
        ref_inputs = self.pack(ref_rows)
        if self.task.choices:
            n = len(items)
            got_inputs = {k: v.reshape(n, -1, v.shape[-1]) for k, v in got_inputs.items()}
            ref_inputs = {k: v.reshape(n, -1, v.shape[-1]) for k, v in ref_inputs.items()}
        labels = [f"{i} {_short(item)}" for i, item in enumerate(items)]

        st = self.sentence_transformers()
        want = None
        if st is not None:
            try:  # before the artifact runs: a library mismatch falls back to the eager reference, not a crash
                want = self.encode(st[0], items)
            except Exception as e:  # e.g. sentence-transformers 5.7 + transformers 4.57 pass token_type_ids
                # to DistilBERT, whose forward has **kwargs there but no such input
                self.st_error = (f"sentence-transformers could not encode the texts: {type(e).__name__}: "
                                 f"{str(e).splitlines()[0] if str(e) else ''}")
                st = None
        if st is not None:
            reference = f"sentence-transformers {st[1]} SentenceTransformer.encode"
        elif self.task.pooled:
            reference = "the eager transformers model with the same pooling (" + self.no_st_reason() + ")"
        else:
            reference = f"the eager fp32 {type(self.p.source.model).__name__} (transformers)"
        if self.task.generation:
            self.add_decoder(got_inputs, ref_inputs)

        if st is None and any(got_inputs[k].shape != v.shape for k, v in ref_inputs.items()):
            # Rows of other lengths (the failures above say which): outputs would not line up with the reference's.
            return self.report(len(items), ids_note, reference)
        try:
            got = self.model.run(**got_inputs)
        except Exception as e:  # the artifact failing on real text is a finding, not a crash
            self.failures.append(f"the artifact raised on the texts: {type(e).__name__}: {str(e).splitlines()[0]}")
            return self.report(len(items), ids_note, reference)
        if want is not None:
            self.cosine(got["sentence_embedding"].float(), want.float().cpu(), labels, "sentence_embedding")
        else:
            with torch.no_grad():
                ref_out = self.p.reference(*(ref_inputs[s.name] for s in self.p.specs))
            ref = {o.name: r for o, r in zip(self.p.outputs, ref_out)}
            self.compare_tolerance(got, ref, got_inputs, labels)
            self.compare_task(got, ref, ref_inputs, labels)
        return self.report(len(items), ids_note, reference)

    def report(self, n: int, ids_note: str, reference: str) -> TextReport:
        return TextReport(ran=True, passed=not self.failures, texts=n, tokenizer=ids_note, reference=reference,
                          agreement=self.agreement, failures=self.failures)

    # -- ids -------------------------------------------------------------------------------------

    def reference_ids(self, flat: list, naive: list) -> tuple[list, str]:
        """The transformers tokenizer's (ids, mask, type ids) per row, each compared with the naive encoding."""
        if self.hf is None or not callable(self.hf):
            self.agreement["token ids"] = "not compared"
            return ([(e.ids, e.attention_mask, e.type_ids) for e in naive],
                    "not compared: the source has no transformers tokenizer (the artifact's own tokenizer.json "
                    "gave the reference's ids too)")
        rows, equal, own_types = [], 0, False
        name = type(self.hf).__name__
        takes_types = any(s.name == "token_type_ids" for s in self.p.specs)
        for i, (item, e) in enumerate(zip(flat, naive)):
            a, b = item if isinstance(item, tuple) else (item, None)
            enc = self.hf(a, b, truncation=True, max_length=self.L)
            ids, mask = list(enc["input_ids"]), list(enc["attention_mask"])
            types = enc.get("token_type_ids")
            if types is None:
                # This tokenizer returns no type ids (not in its model_input_names); tokenizer.json's
                # post-processor is then the only source, for the runtime and for the reference alike.
                types = list(e.type_ids) if len(e.type_ids) == len(ids) else [0] * len(ids)
                own_types = own_types or takes_types
            rows.append((ids, mask, list(types)))
            diffs = []
            for what, want, have in (("ids", ids, e.ids), ("attention mask", mask, e.attention_mask),
                                     ("token type ids", list(types) if takes_types else None, e.type_ids)):
                if want is not None and list(have) != want:
                    diffs.append(f"{what} {_diff(have, want)}")
            if diffs:
                self.failures.append(
                    f"text {i} {_short(item)}: the shipped tokenizer.json gives different {'; '.join(diffs)} "
                    f"(tokenizer.json vs {name}, truncation at {self.L})"
                )
            else:
                equal += 1
        self.agreement["token ids"] = f"{equal}/{len(flat)}"
        note = f"{name} (transformers, truncation at {self.L}): ids and masks equal for {equal} of {len(flat)}"
        if own_types:
            note += f"; token type ids from tokenizer.json ({name} returns none)"
        return rows, note

    def pack(self, rows: list) -> dict[str, torch.Tensor]:
        """Right-padded tensors for the artifact's text inputs (pad id where the mask is 0)."""
        L = max(len(r[0]) for r in rows)
        pad = int(self.p.pad_token_id)
        ids = torch.full((len(rows), L), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), L), dtype=torch.long)
        types = torch.zeros((len(rows), L), dtype=torch.long)
        for i, (r_ids, r_mask, r_types) in enumerate(rows):
            n = len(r_ids)
            ids[i, :n] = torch.tensor(r_ids, dtype=torch.long)
            mask[i, :n] = torch.tensor(r_mask, dtype=torch.long)
            types[i, :n] = torch.tensor(r_types, dtype=torch.long)
        out = {"input_ids": ids, "attention_mask": mask}
        if any(s.name == "token_type_ids" for s in self.p.specs):
            out["token_type_ids"] = types
        return out

    # -- references ------------------------------------------------------------------------------

    def sentence_transformers(self):
        """(SentenceTransformer on the source folder, its version) for a pooled task, else None."""
        if not self.task.pooled or self.p.source.path is None or self.p.source.newly_initialized:
            return None
        try:
            import sentence_transformers
        except ImportError:
            return None
        from .source import quiet_transformers

        with quiet_transformers(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                st = sentence_transformers.SentenceTransformer(str(self.p.source.path), device="cpu")
            except Exception as e:  # a folder our loader reads but its own does not (e.g. an older Pooling config)
                first = str(e).splitlines()[0] if str(e) else ""
                self.st_error = f"sentence-transformers could not load the folder: {type(e).__name__}: {first}"
                return None
        st.max_seq_length = self.L  # the artifact's truncation (sentence-transformers' own unless --max-length)
        return st, sentence_transformers.__version__

    def no_st_reason(self) -> str:
        if getattr(self, "st_error", None):
            return self.st_error
        if self.p.source.path is None:
            return "an in-memory model has no sentence-transformers folder to load"
        if self.p.source.newly_initialized:
            return ("the checkpoint lacks tensors (--allow-new-weights) that sentence-transformers would initialise "
                    "at random again")
        return "sentence-transformers is not installed; pip install sentence-transformers to compare with its encode"

    def add_decoder(self, got_inputs: dict, ref_inputs: dict) -> None:
        """Greedy decoding with the fp32 reference; both then run on its tokens (teacher forcing)."""
        gen = self.model.manifest.get("generation") or {}
        start = int(gen.get("decoder_start_token_id", self.p.pad_token_id))
        n = ref_inputs["input_ids"].shape[0]
        decoded = torch.full((n, 1), start, dtype=torch.long)
        step = dict(ref_inputs)
        with torch.no_grad():
            for _ in range(SEQ2SEQ_STEPS):
                step["decoder_input_ids"], step["decoder_attention_mask"] = decoded, torch.ones_like(decoded)
                logits = self.p.reference(*(step[s.name] for s in self.p.specs))[0]
                decoded = torch.cat([decoded, logits[:, -1].argmax(-1, keepdim=True)], 1)
        # Under the causal decoder, position j of a run on decoded[:, :-1] is greedy step j.
        for d in (got_inputs, ref_inputs):
            d["decoder_input_ids"] = decoded[:, :-1]
            d["decoder_attention_mask"] = torch.ones_like(decoded[:, :-1])

    # -- comparisons -----------------------------------------------------------------------------

    def compare_tolerance(self, got: dict, ref: dict, inputs: dict, labels: list) -> None:
        """Each text's raw outputs within the export's tolerance (parity's own comparison, per row)."""
        specs, outputs = self.p.specs, self.p.outputs
        for i, label in enumerate(labels):
            row = {s.name: inputs[s.name][i : i + 1] for s in specs}
            g = tuple(got[o.name][i : i + 1] for o in outputs)
            r = tuple(ref[o.name][i : i + 1] for o in outputs)
            self.failures.extend(
                compare_inputs(lambda *_: g, lambda *_: r, specs, outputs, row, f"text {label}",
                               atol=self.tol.atol, rtol=self.tol.rtol, row_references=False, tolerance=self.tol)
            )

    def compare_task(self, got: dict, ref: dict, inputs: dict, labels: list) -> None:
        """The task-level comparison its module declares (``check_compare``: top-1 labels, spans, cosine ...)."""
        if self.task.check_compare is not None:
            self.task.check_compare(self, got, ref, inputs, labels)

    @staticmethod
    def encode(st, items: list) -> torch.Tensor:
        """sentence-transformers' encode on the raw texts (the artifact gets the shipped tokenizer's ids)."""
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return st.encode(list(items), convert_to_tensor=True, batch_size=len(items), show_progress_bar=False)

    def cosine(self, got: torch.Tensor, ref: torch.Tensor, labels: list, name: str) -> None:
        cos = torch.nn.functional.cosine_similarity(got.double(), ref.double(), dim=-1)
        cos = torch.nan_to_num(cos, nan=-1.0)  # a NaN embedding agrees with nothing
        self.agreement[f"{name} min cosine"] = float(cos.min())
        for i in (cos < self.min_cosine).nonzero().flatten().tolist():
            self.failures.append(f"{name} of text {labels[i]}: cosine {float(cos[i]):.6f} to the reference "
                                 f"< {self.min_cosine:g}")

    def top1(self, got: torch.Tensor, ref: torch.Tensor, labels: list, what: str, show, valid=None) -> None:
        """Each row's argmax must equal the reference's, unless the reference itself nearly ties them."""
        got, ref = got.double(), ref.double()
        gi, ri = got.argmax(-1), ref.argmax(-1)
        lo = ref.masked_fill(~valid, float("inf")).amin(-1) if valid is not None else ref.amin(-1)
        span = (ref.amax(-1) - lo).clamp(min=1e-30)
        margin = ref.gather(-1, ri[:, None])[:, 0] - ref.gather(-1, gi[:, None])[:, 0]
        bad = (gi != ri) & ~(margin <= self.tie * span)  # NaN margins count as disagreement
        self.agreement[what] = f"{int((~bad).sum())}/{len(labels)}"
        for i in bad.nonzero().flatten().tolist():
            self.failures.append(
                f"{what} of text {labels[i]}: artifact {show(int(gi[i]))!r} vs reference {show(int(ri[i]))!r} "
                f"(reference margin {float(margin[i]):.3g}, more than a tie)"
            )

    def label_name(self, k: int) -> str:
        return (self.model.manifest.get("id2label") or {}).get(str(k), f"LABEL_{k}")

    def token_name(self, k: int) -> str:
        return self.naive.id_to_token(k) or str(k)


def _diff(have, want) -> str:
    """'14 vs 12 values, first difference at 3: 1012 vs 2003' for two id lists."""
    have, want = list(have), list(want)
    j = next((k for k, (x, y) in enumerate(zip(have, want)) if x != y), min(len(have), len(want)))
    at = f"{have[j] if j < len(have) else 'end'} vs {want[j] if j < len(want) else 'end'}"
    return f"({len(have)} vs {len(want)} values, first difference at {j}: {at})"
