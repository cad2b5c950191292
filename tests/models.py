"""Tiny random models for every registered architecture, saved with save_pretrained and loaded
back through the real from_pretrained path, each with a word-level tokenizer built by `tokenizers`.
"""

from __future__ import annotations

from pathlib import Path

WORDS = (
    "the a of and to in is was who what where paris france capital jim henson puppeteer man woman "
    "eating food bread sky blue city river book reads music plays house dog cat runs fast slow big small"
).split()
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
VOCAB = 128  # > specials + words; the rest are unused ids the fuzzers still draw

_L = 128  # max positions: small, so bucket grids stay cheap
COMMON = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)

TINY_CONFIGS = {
    "bert": dict(COMMON, max_position_embeddings=_L),
    "distilbert": dict(dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=_L),
    "roberta": dict(COMMON, max_position_embeddings=_L + 2, pad_token_id=1, type_vocab_size=1),
    "xlm-roberta": dict(COMMON, max_position_embeddings=_L + 2, pad_token_id=1, type_vocab_size=1),
    "camembert": dict(COMMON, max_position_embeddings=_L + 2, pad_token_id=1, type_vocab_size=1),
    "albert": dict(COMMON, embedding_size=16, max_position_embeddings=_L),
    "electra": dict(COMMON, embedding_size=16, max_position_embeddings=_L),
    "mpnet": dict(COMMON, max_position_embeddings=_L + 2, pad_token_id=1),
    "deberta-v2": dict(
        COMMON, max_position_embeddings=_L, relative_attention=True, position_biased_input=False,
        pos_att_type=["p2c", "c2p"], max_relative_positions=64, type_vocab_size=0,
    ),
    "gpt2": dict(n_embd=32, n_layer=2, n_head=4, n_positions=_L, bos_token_id=2, eos_token_id=3),
    "llama": dict(COMMON, num_key_value_heads=2, max_position_embeddings=_L, bos_token_id=2, eos_token_id=3),
    # text-generation only (tests/test_generation.py); GQA heads as the real families have them.
    "qwen2": dict(COMMON, num_key_value_heads=2, max_position_embeddings=_L, bos_token_id=2, eos_token_id=3),
    "mistral": dict(COMMON, num_key_value_heads=2, max_position_embeddings=_L, sliding_window=None, bos_token_id=2,
                    eos_token_id=3),
    "phi3": dict(COMMON, num_key_value_heads=2, max_position_embeddings=_L, bos_token_id=2, eos_token_id=3),
    "gemma": dict(COMMON, num_key_value_heads=2, head_dim=8, max_position_embeddings=_L, bos_token_id=2,
                  eos_token_id=3),
    "t5": dict(d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4, relative_attention_num_buckets=8,
               decoder_start_token_id=0),
    "vit": dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=37),
}

LABELS = {"text-classification": ["negative", "neutral", "positive"],
          "token-classification": ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"],
          "image-classification": ["cat", "dog", "bird"]}


def tiny_config(model_type: str, task: str):
    from transformers import AutoConfig

    kw = dict(TINY_CONFIGS[model_type])
    if model_type != "vit":
        kw["vocab_size"] = VOCAB
        kw.setdefault("pad_token_id", 0)
    if task in LABELS:
        labels = LABELS[task]
        kw["id2label"] = dict(enumerate(labels))
        kw["label2id"] = {l: i for i, l in enumerate(labels)}
    cfg = AutoConfig.for_model(model_type, **kw)
    return cfg


def build_tokenizer(pad_id: int):
    """A WordLevel tokenizer whose [PAD] sits at the config's pad_token_id."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = list(SPECIALS)
    specials.remove("[PAD]")
    specials.insert(pad_id, "[PAD]")
    vocab = {t: i for i, t in enumerate(specials + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    cls, sep = vocab["[CLS]"], vocab["[SEP]"]
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_max_length=_L,
    )


def save_tiny(model_type: str, task: str, directory: Path, *, seed: int = 0) -> Path:
    """Save a tiny random ``model_type`` model for ``task`` (+ tokenizer) into ``directory``."""
    import torch
    import transformers

    from hf_torchscript.tasks import get_task

    torch.manual_seed(seed)
    cfg = tiny_config(model_type, task)
    auto = getattr(transformers, get_task(task).auto_class)
    model = auto.from_config(cfg)
    directory = Path(directory)
    model.save_pretrained(directory)
    if model_type != "vit":
        build_tokenizer(cfg.pad_token_id).save_pretrained(directory)
    return directory
