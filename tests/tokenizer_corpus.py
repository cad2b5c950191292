"""Deterministic text corpora and tokenizers for the C++ tokenizer tests and benchmark.

Nothing here is committed as data: the sentences come from Debian's bible-kjv (the `bible` program,
31,102 verses of the King James Bible; the 640 sentences shipped in hf_torchscript/data otherwise),
the words from Debian's wamerican list when present, and the other scripts and the adversarial
strings are generated from Unicode blocks with a seeded random generator.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import unicodedata
from pathlib import Path

KJV_RANGE = "Gen1:1-Rev22:21"

# (name, first, last) code point blocks: at least 10 scripts
SCRIPTS = [
    ("latin", 0x00C0, 0x024F), ("greek", 0x0370, 0x03FF), ("cyrillic", 0x0400, 0x04FF),
    ("armenian", 0x0531, 0x058F), ("hebrew", 0x05D0, 0x05EA), ("arabic", 0x0620, 0x06FF),
    ("devanagari", 0x0900, 0x097F), ("bengali", 0x0980, 0x09FF), ("tamil", 0x0B80, 0x0BFF),
    ("thai", 0x0E00, 0x0E7F), ("georgian", 0x10A0, 0x10FF), ("ethiopic", 0x1200, 0x137F),
    ("hangul", 0xAC00, 0xD7A3), ("hiragana", 0x3041, 0x309F), ("katakana", 0x30A0, 0x30FF),
    ("cjk", 0x4E00, 0x9FFF), ("cjk-ext-b", 0x20000, 0x2A6DF), ("mongolian", 0x1820, 0x1877),
]

# Every White_Space character, and more spacing/format characters tokenizers treat specially.
WHITESPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a" \
             "\u2028\u2029\u202f\u205f\u3000\u180e\u200b\u200c\u200d\u2060\ufeff"
CONTROLS = "".join(chr(c) for c in list(range(0, 32)) + list(range(0x7F, 0xA0))) + "\u00ad\u200e\u200f\ufffd\ue000"
EMOJI = ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "❤️", "🇫🇷", "🧑🏿‍🚀", "👩‍❤️‍💋‍👨", "🙂", "✊🏾", "#️⃣", "🤷‍♀️"]
COMBINING = [chr(c) for c in range(0x0300, 0x036F)] + ["\u20dd", "\u0e31", "\u093f", "\u05b4"]
PUNCT = list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") + [
    "«", "»", "¿", "¡", "—", "–", "…", "。", "、", "「", "」", "·", "€", "£", "¥"]
INVALID_UTF8 = [b"\xff", b"\xc3", b"a\x80b", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"abc\xe2\x82",
                b"\xf8\x88\x80\x80\x80", b"ok \xbf\xbf", b"\xe0\x80\x80"]


def kjv_verses() -> list[str]:
    """All KJV verses from Debian's bible-kjv, or the package's 640 sentences when it is missing."""
    if shutil.which("bible"):
        out = subprocess.run(["bible", "-f", KJV_RANGE], capture_output=True, text=True, check=True).stdout
        verses = [line.split(" ", 1)[1] for line in out.splitlines() if " " in line]
        if len(verses) > 30000:
            return verses
    from hf_torchscript.texts import real_sentences

    return [s["text"] for s in real_sentences()]


def english_words() -> list[str]:
    path = Path("/usr/share/dict/words")
    if path.is_file():
        return [w for w in path.read_text(encoding="utf-8", errors="ignore").split() if w]
    return sorted({w for v in kjv_verses() for w in v.split()})


def _letters(first: int, last: int) -> list[str]:
    out = []
    for c in range(first, last + 1):
        ch = chr(c)
        if unicodedata.category(ch)[0] in "LM":  # assigned letters and marks (Python's Unicode data)
            out.append(ch)
    return out


def script_words(rng: random.Random, n: int) -> list[str]:
    alphabets = [(name, _letters(a, b)) for name, a, b in SCRIPTS]
    out = []
    for _ in range(n):
        name, letters = alphabets[rng.randrange(len(alphabets))]
        k = rng.randint(1, 4) if name.startswith("cjk") else rng.randint(1, 12)
        out.append("".join(rng.choice(letters) for _ in range(k)))
    return out


def assigned(rng: random.Random, lo: int, hi: int) -> str:
    """A random code point in lo..hi that Python's Unicode data (14.0 on 3.11) assigns. Characters assigned
    only in Unicode 16 (the crate's Rust regex tables) are unknown to PCRE2 10.42 / utf8proc 2.8 (Unicode 15)
    and may group differently there: a documented limit (docs/cpp.md), kept out of the equality corpus."""
    while True:
        ch = chr(rng.randint(lo, hi))
        if unicodedata.category(ch) not in ("Cn", "Cs"):
            return ch


def adversarial(rng: random.Random, verses: list[str], words: list[str], n: int) -> list[str]:
    """Strings built to break tokenizers: marks, emoji, controls, whitespace, huge words and texts."""
    makers = [
        lambda: rng.choice(words) + "".join(rng.choice(COMBINING) for _ in range(rng.randint(1, 6))),
        lambda: " ".join(rng.choice(EMOJI) for _ in range(rng.randint(1, 5))) + rng.choice(["", " ok", "x"]),
        lambda: rng.choice(words) + rng.choice(CONTROLS) + rng.choice(words),
        lambda: rng.choice(WHITESPACE).join(rng.choice(words) for _ in range(rng.randint(1, 4))),
        lambda: "".join(rng.choice(WHITESPACE) for _ in range(rng.randint(1, 8))),
        lambda: rng.choice(words) * rng.randint(20, 60),  # longer than max_input_chars_per_word
        lambda: " ".join(rng.choice(verses) for _ in range(rng.randint(5, 30))),  # far beyond max length
        lambda: "",
        lambda: "".join(rng.choice(PUNCT) for _ in range(rng.randint(1, 10))),
        lambda: rng.choice(words).upper() + " " + rng.choice(words).title() + " İstanbul ΣΊΣΥΦΟΣ straße ǅ",
        lambda: "".join(rng.choice(["a", "1", "²", "½", "٣", "Ⅻ", "_", "'s", "'LL", " ", "  ", "\n"])
                        for _ in range(12)),
        lambda: rng.choice(verses).replace(" ", rng.choice(["  ", "\t", "\u3000", " \n "])),
        lambda: "".join(assigned(rng, 0x20, 0x2FFF) for _ in range(rng.randint(1, 20))),
        lambda: "".join(assigned(rng, 0x1F300, 0x1FAFF) for _ in range(rng.randint(1, 6))),
        lambda: "ｆｕｌｌｗｉｄｔｈ ① ﬁ ㎏ ｶﾀｶﾅ " + rng.choice(words),  # compatibility forms (NFKC)
    ]
    return [makers[i % len(makers)]() for i in (rng.randrange(len(makers)) for _ in range(n))]


def corpus(n: int, seed: int = 0, specials: list[str] = ()) -> list[dict]:
    """n items {"text": ...} / {"text": ..., "pair": ...} / {"hex": ...} (invalid UTF-8), deterministic.

    About 40% KJV verses, 20% English words and short phrases, 20% other scripts, 15% adversarial,
    5% pairs, plus every invalid UTF-8 sample; `specials` (added tokens) are sprinkled into some texts.
    """
    rng = random.Random(seed)
    verses, words = kjv_verses(), english_words()
    texts: list[str] = []
    texts += [verses[i % len(verses)] for i in range(int(n * 0.4))]
    texts += [" ".join(rng.choice(words) for _ in range(rng.randint(1, 6))) for _ in range(int(n * 0.2))]
    sw = script_words(rng, int(n * 0.4))
    texts += [" ".join(sw[i:i + rng.randint(1, 5)]) for i in range(0, len(sw) // 2)][: int(n * 0.2)]
    texts += adversarial(rng, verses, words, int(n * 0.15))
    if specials:
        for i in range(0, len(texts), 37):
            a, b = rng.sample(range(len(texts[i]) + 1), 2) if len(texts[i]) else (0, 0)
            t = texts[i]
            a, b = min(a, b), max(a, b)
            texts[i] = t[:a] + rng.choice(specials) + t[a:b] + " " + rng.choice(specials) + t[b:]
    items = [{"text": t} for t in texts]
    while len(items) < n - len(INVALID_UTF8):
        items.append({"text": rng.choice(texts), "pair": rng.choice(texts)})
    items += [{"hex": b.hex()} for b in INVALID_UTF8]
    rng.shuffle(items)
    return items[:n] if len(items) > n else items


# ---- tokenizers of every family the registry's models use, trained on the KJV ----

def _train_text() -> list[str]:
    return kjv_verses()


def wordlevel_tokenizer_json() -> str:
    """The tiny test models' own tokenizer (tests/models.py): Lowercase, WhitespaceSplit, WordLevel."""
    from models import build_tokenizer

    return build_tokenizer(0).backend_tokenizer.to_str()


def bert_cased_tokenizer_json() -> str:
    """A cased WordPiece BERT trained here, with Digits/Punctuation, added tokens with every flag,
    truncation LongestFirst and batch padding to a multiple of 8."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=20))
    tok.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=None)
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(), pre_tokenizers.Digits(individual_digits=True)]
    )
    tok.train_from_iterator(_train_text(), trainers.WordPieceTrainer(
        vocab_size=3000, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    tok.add_special_tokens([AddedToken("[MASK]", lstrip=True, rstrip=False)])
    tok.add_tokens([AddedToken("lord god", normalized=True), AddedToken("<WORD>", single_word=True),
                    AddedToken("<R>", rstrip=True), AddedToken("Jesus", normalized=False)])
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.BertProcessing(("[SEP]", sep), ("[CLS]", cls))
    tok.decoder = decoders.WordPiece()
    tok.enable_truncation(48)
    tok.enable_padding(pad_id=0, pad_token="[PAD]", pad_to_multiple_of=8)
    return tok.to_str()


def _bytelevel_bpe(prefix_space: bool, vocab: int = 2000):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=prefix_space)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(_train_text(), trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


def roberta_tokenizer_json() -> str:
    """RoBERTa-style: ByteLevel (prefix space) BPE, RobertaProcessing, <mask> with lstrip, truncation."""
    from tokenizers import AddedToken, processors

    tok = _bytelevel_bpe(True)
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True)])
    tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")),
                                                      ("<s>", tok.token_to_id("<s>")))
    tok.enable_truncation(64)
    return tok.to_str()


def gpt2_tokenizer_json() -> str:
    """GPT-2-style: ByteLevel BPE without prefix space, ByteLevel post-processor, no special tokens added."""
    from tokenizers import processors

    tok = _bytelevel_bpe(False)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok.to_str()


LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def llama3_tokenizer_json() -> str:
    """Llama-3-style: Split with the Llama-3 regex, ByteLevel without regex, BPE ignore_merges, BOS template."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(_train_text(), trainers.BpeTrainer(
        vocab_size=2500, special_tokens=["<|begin_of_text|>", "<|end_of_text|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|>:1 $B:1",
        special_tokens=[("<|begin_of_text|>", bos)])
    return tok.to_str()


def sentencepiece_bpe_tokenizer_json() -> str:
    """Llama-2-style SentencePiece BPE: Prepend + Replace normalizer, byte fallback, fuse_unk, decoders
    Replace/ByteFallback/Fuse/Strip."""
    import json

    from tokenizers import Tokenizer, decoders, models, normalizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.train_from_iterator(_train_text(),
                            trainers.BpeTrainer(vocab_size=1500, special_tokens=["<unk>", "<s>", "</s>"]))
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s>:1 $B:1", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    j = json.loads(tok.to_str())
    vocab = j["model"]["vocab"]
    for b in range(256):  # the byte tokens SentencePiece ships, so that byte fallback has ids
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    return json.dumps(j)


def unigram_tokenizer_json() -> str:
    """SentencePiece-Unigram-style (T5/ALBERT-like): NFKC, Metaspace, Unigram, `$A </s>` template."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
    tok.decoder = decoders.Metaspace(prepend_scheme="first")
    tok.train_from_iterator(_train_text(), trainers.UnigramTrainer(
        vocab_size=1200, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>"))
    eos = tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B:1 </s>:1", special_tokens=[("</s>", eos)])
    return tok.to_str()


def misc_tokenizer_json() -> str:
    """The rarer parts together: NFKD + StripAccents + regex Replace + Strip, Whitespace + Digits,
    BPE with a continuing-subword prefix and an end-of-word suffix (CLIP-like), BPEDecoder, left
    truncation and fixed left padding."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="[UNK]", continuing_subword_prefix="##", end_of_word_suffix="</w>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKD(), normalizers.StripAccents(),
                                           normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Digits()])
    tok.train_from_iterator(_train_text(), trainers.BpeTrainer(
        vocab_size=1500, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"], continuing_subword_prefix="##",
        end_of_word_suffix="</w>"))
    tok.decoder = decoders.BPEDecoder(suffix="</w>")
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tok.enable_truncation(40, direction="left")
    tok.enable_padding(direction="left", length=48, pad_id=0, pad_token="[PAD]")
    return tok.to_str()


FAMILIES = {
    "wordlevel": wordlevel_tokenizer_json,
    "bert-cased": bert_cased_tokenizer_json,
    "roberta": roberta_tokenizer_json,
    "gpt2": gpt2_tokenizer_json,
    "llama3": llama3_tokenizer_json,
    "sentencepiece-bpe": sentencepiece_bpe_tokenizer_json,
    "unigram": unigram_tokenizer_json,
    "misc": misc_tokenizer_json,
}


def python_lines(tokenizer_json: str, items: list[dict], *, decode: bool = False) -> list[str]:
    """What `hts_tokenize --compact` prints, computed with the Python `tokenizers` library."""
    import json

    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(tokenizer_json)
    padding = json.loads(tokenizer_json).get("padding") or {}
    inputs = [None if "hex" in i else (i["text"], i["pair"]) if "pair" in i else i["text"] for i in items]
    if padding.get("strategy", "BatchLongest") == "BatchLongest" and padding:
        encs = [None if x is None else tok.encode(*x) if isinstance(x, tuple) else tok.encode(x) for x in inputs]
    else:  # no padding, or a fixed length: encode_batch gives what encode gives, on every core
        valid = [x for x in inputs if x is not None]
        batch = iter([e for k in range(0, len(valid), 4096) for e in tok.encode_batch(valid[k:k + 4096])])
        encs = [None if x is None else next(batch) for x in inputs]
    out = []
    for e in encs:
        if e is None:
            out.append(None)  # invalid UTF-8: the C++ side must print a one-line error
            continue
        line = f"{' '.join(map(str, e.ids))}|{' '.join(map(str, e.type_ids))}|{' '.join(map(str, e.attention_mask))}"
        if decode:
            line += "\t" + json.dumps(tok.decode(e.ids), ensure_ascii=False)
        out.append(line)
    return out
