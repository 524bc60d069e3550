"""Tokenizers for the tiny stand-in text encoders, trained locally on prompt vocabulary.

FLUX.1-dev ships a CLIP BPE tokenizer and a T5 SentencePiece (unigram) tokenizer; the
stand-ins are the same kinds of model (`CLIPTokenizer`, `T5Tokenizer`), trained here on
the class names and prompt words so that nothing is downloaded.
"""

from __future__ import annotations

import json

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import CLIPTokenizer, T5Tokenizer

CLIP_SPECIAL = ["<|startoftext|>", "<|endoftext|>"]
T5_SPECIAL = ["<pad>", "</s>", "<unk>"]
AERIAL_WORDS = (
    "an aerial image of a satellite photo view from above top down scene with the and "
    "area field land road roads buildings houses trees water river lake sea coast beach "
    "forest farm farmland crops grass park parking lot cars airport airplane runway port "
    "harbor ships bridge tennis court baseball golf course residential dense sparse "
    "medium industrial commercial desert mountain meadow storage tanks railway station "
    "church stadium school square pond viaduct overpass intersection freeway chaparral"
)


def prompt_corpus(class_names: list[str], template: str) -> list[str]:
    """Sentences to train the tokenizers on: every class in the template, plus aerial words."""
    prompts = [template.format(class_name=name) for name in sorted(class_names)]
    return prompts * 4 + [AERIAL_WORDS] * 2


def train_clip_tokenizer(corpus: list[str], vocab_size: int) -> CLIPTokenizer:
    """A byte-level BPE with CLIP's pre-tokenizer, normalizer and `</w>` word ends."""
    backend = CLIPTokenizer(vocab={s: i for i, s in enumerate(CLIP_SPECIAL)}, merges=[])
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=CLIP_SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    backend.backend_tokenizer.train_from_iterator(corpus, trainer)
    state = json.loads(backend.backend_tokenizer.to_str())["model"]
    return CLIPTokenizer(
        vocab=state["vocab"], merges=[tuple(m) for m in state["merges"]], model_max_length=77
    )


def train_t5_tokenizer(corpus: list[str], vocab_size: int) -> T5Tokenizer:
    """A unigram (SentencePiece-style) tokenizer with T5's pad/eos/unk ids 0/1/2."""
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=T5_SPECIAL, unk_token="<unk>", show_progress=False
    )
    tokenizer.train_from_iterator(corpus, trainer)
    vocab = [(piece, score) for piece, score in json.loads(tokenizer.to_str())["model"]["vocab"]]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=512)
