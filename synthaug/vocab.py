"""Tokenizers for the tiny stand-in text encoders: one fixed vocabulary, trained locally.

FLUX.1-dev ships a CLIP BPE tokenizer and a T5 SentencePiece (unigram) tokenizer; the
stand-ins are the same kinds of model (`CLIPTokenizer`, `T5Tokenizer`), trained here on a
fixed English corpus of aerial-scene words, so nothing is downloaded and the tokenizers do
not depend on the dataset a study targets (every target shares one base model, as every
FLUX.1-dev study does). Neither has unknown tokens for English text: the CLIP BPE starts
from all 256 byte symbols, the unigram from every printable ASCII character.
"""

from __future__ import annotations

import json
import re
import string

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
    "church stadium school square pond viaduct overpass intersection freeway chaparral "
    "bare center playground resort agricultural diamond mobile home basketball football "
    "cemetery christmas tree closed crosswalk ferry terminal nursing oil gas well solar "
    "panel shipping yard swimming pool transformer wastewater treatment plant marking"
)
# The tokenizers' training text: the aerial words, each alone and in the usual caption.
CORPUS = [AERIAL_WORDS] * 2 + [f"an aerial image of {word}" for word in AERIAL_WORDS.split()]
PRINTABLE = sorted(set(string.printable) - set(string.whitespace) | {" "})


def caption_words(label: str) -> str:
    """A class folder name as words: `DenseResidential`, `dense_residential` and
    `dense-residential` all read `dense residential`."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", label)
    return " ".join(re.split(r"[\s_\-]+", spaced)).strip().lower()


def train_clip_tokenizer(vocab_size: int) -> CLIPTokenizer:
    """A byte-level BPE with CLIP's pre-tokenizer, normalizer and `</w>` word ends. As in
    CLIP's own vocabulary, every byte symbol exists alone and word-final (`x` and `x</w>`),
    so no text has unknown tokens."""
    backend = CLIPTokenizer(vocab={s: i for i, s in enumerate(CLIP_SPECIAL)}, merges=[])
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=CLIP_SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    backend.backend_tokenizer.train_from_iterator(CORPUS, trainer)
    state = json.loads(backend.backend_tokenizer.to_str())["model"]
    vocab = dict(state["vocab"])
    for symbol in pre_tokenizers.ByteLevel.alphabet():
        vocab.setdefault(f"{symbol}</w>", len(vocab))
    return CLIPTokenizer(
        vocab=vocab, merges=[tuple(m) for m in state["merges"]], model_max_length=77
    )


def train_t5_tokenizer(vocab_size: int) -> T5Tokenizer:
    """A unigram (SentencePiece-style) tokenizer with T5's pad/eos/unk ids 0/1/2 and every
    printable ASCII character as a piece."""
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size,
        special_tokens=T5_SPECIAL,
        unk_token="<unk>",
        initial_alphabet=PRINTABLE,
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS + ["".join(PRINTABLE)] * 4, trainer)
    vocab = [(piece, score) for piece, score in json.loads(tokenizer.to_str())["model"]["vocab"]]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=512)
