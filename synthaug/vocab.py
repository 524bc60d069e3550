"""Tokenizers for the tiny stand-in text encoders: one fixed vocabulary, trained locally.

FLUX.1-dev ships a CLIP BPE tokenizer and a T5 SentencePiece (unigram) tokenizer, FLUX.2
[klein] Qwen3's byte-level BPE with a chat template; the stand-ins are the same kinds of
model (`CLIPTokenizer`, `T5Tokenizer`, `Qwen2TokenizerFast`), trained here on a
fixed English corpus of aerial-scene words, so nothing is downloaded and the tokenizers do
not depend on the dataset a study targets (every target shares one base model, as every
FLUX.1-dev study does). Neither has unknown tokens for English text: the CLIP BPE starts
from all 256 byte symbols, the unigram from every printable ASCII character. Both are
built deterministically: the same vocabulary in every process, on every machine.
"""

from __future__ import annotations

import functools
import math
import re
import string
from collections import Counter
from typing import TYPE_CHECKING

from tokenizers import pre_tokenizers

if TYPE_CHECKING:
    from transformers import CLIPTokenizer, Qwen2TokenizerFast, T5Tokenizer

CLIP_SPECIAL = ["<|startoftext|>", "<|endoftext|>"]
T5_SPECIAL = ["<pad>", "</s>", "<unk>"]
QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
# Qwen3's chat layout, which FLUX.2 [klein] wraps each prompt in: one user turn, then the
# assistant's turn opened with an empty thinking block (enable_thinking=False).
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% if enable_thinking is defined and not enable_thinking %}"
    "{{ '<think>\\n\\n</think>\\n\\n' }}{% endif %}{% endif %}"
)
BYTE_SPACE = "\u0120"  # the byte-level alphabet's space (GPT-2, Qwen)
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
PRINTABLE = sorted(set(string.printable) - set(string.whitespace))
META = "\u2581"  # SentencePiece's word-start mark
# How class names become prompt words; part of a LoRA's key (its prompts depend on it).
PROMPT_WORDS = "folder-names-split-into-corpus-words"


def caption_words(label: str) -> str:
    """A class folder name as words: `DenseResidential`, `dense_residential`,
    `dense-residential` and `denseresidential` all read `dense residential`.

    A word the corpus lacks is split into the fewest corpus words that spell it exactly
    (UC Merced's `golfcourse`, `mobilehomepark`); one that no corpus words spell stays."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", label)
    words = re.split(r"[\s_\-]+", spaced.strip().lower())
    known = known_words()
    return " ".join(" ".join(split_compound(w, known) or [w]) for w in words if w)


def split_compound(word: str, known: frozenset[str]) -> list[str] | None:
    """`word` as the fewest `known` words that spell it (itself when known), or None."""
    best: list[list[str] | None] = [[]] + [None] * len(word)
    for end in range(1, len(word) + 1):
        for start in range(end):
            head, current = best[start], best[end]
            shorter = current is None or (head is not None and len(head) + 1 < len(current))
            if head is not None and word[start:end] in known and shorter:
                best[end] = [*head, word[start:end]]
    return best[-1]


def bpe_merges(words: Counter[str], count: int, end: str = "</w>") -> list[tuple[str, str]]:
    """`count` BPE merges learnt from word frequencies, word ends marked `end`, ties broken
    by the pair itself, so the same corpus always gives the same merges (the `tokenizers`
    trainers break ties in hash order, which changes from process to process)."""
    splits = {word: [*word[:-1], word[-1] + end] for word in words}
    merges: list[tuple[str, str]] = []
    while len(merges) < count:
        pairs: Counter[tuple[str, str]] = Counter()
        for word, n in words.items():
            symbols = splits[word]
            for pair in zip(symbols, symbols[1:], strict=False):
                pairs[pair] += n
        if not pairs:
            break
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(best)
        for word, symbols in splits.items():
            merged, i = [], 0
            while i < len(symbols):
                if tuple(symbols[i : i + 2]) == best:
                    merged.append(best[0] + best[1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            splits[word] = merged
    return merges


@functools.cache
def known_words() -> frozenset[str]:
    """The corpus's words: what a folder name is split into."""
    return frozenset(corpus_words())


def corpus_words() -> Counter[str]:
    """Word frequencies of the fixed corpus (lower-case ASCII words)."""
    return Counter(word for line in CORPUS for word in line.lower().split())


def train_clip_tokenizer(vocab_size: int) -> CLIPTokenizer:
    """A byte-level BPE with CLIP's pre-tokenizer, normalizer and `</w>` word ends. As in
    CLIP's own vocabulary, every byte symbol exists alone and word-final (`x` and `x</w>`),
    so no text has unknown tokens; `vocab_size` counts the merged tokens on top of those."""
    # deferred: transformers takes seconds to import; only a tiny stand-in needs it
    from transformers import CLIPTokenizer

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    merges = bpe_merges(corpus_words(), max(0, vocab_size - len(CLIP_SPECIAL) - len(alphabet)))
    tokens = [*CLIP_SPECIAL, *alphabet, *(f"{a}</w>" for a in alphabet)]
    tokens += [a + b for a, b in merges if a + b not in tokens]
    return CLIPTokenizer(
        vocab={token: i for i, token in enumerate(dict.fromkeys(tokens))},
        merges=merges,
        model_max_length=77,
    )


def train_t5_tokenizer(vocab_size: int) -> T5Tokenizer:
    """A unigram (SentencePiece-style) tokenizer with T5's pad/eos/unk ids 0/1/2: the
    corpus's words as whole pieces (scored by frequency, at most `vocab_size` pieces in
    all), and every printable ASCII character, alone and word-initial, for anything else."""
    # deferred: transformers takes seconds to import; only a tiny stand-in needs it
    from transformers import T5Tokenizer

    words = corpus_words()
    total = sum(words.values())
    chars = [f"{META}{c}" for c in PRINTABLE if c != " "] + [META, *PRINTABLE]
    budget = max(0, vocab_size - len(T5_SPECIAL) - len(dict.fromkeys(chars)))
    ranked = sorted(words, key=lambda w: (-words[w], w))[:budget]
    vocab = [(piece, 0.0) for piece in T5_SPECIAL]
    vocab += [(f"{META}{w}", math.log(words[w] / total)) for w in ranked]
    vocab += [(piece, -20.0) for piece in dict.fromkeys(chars) if piece != f"{META} "]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=512)


def train_qwen_tokenizer(vocab_size: int) -> Qwen2TokenizerFast:
    """A byte-level BPE laid out like Qwen3's: the 256 byte symbols, merges learnt from the
    corpus's words with and without the leading byte-space, Qwen's special tokens and its
    chat template (so `apply_chat_template(..., enable_thinking=False)` works as for Qwen3)."""
    # deferred: transformers takes seconds to import; only a tiny stand-in needs it
    from transformers import Qwen2TokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    words = corpus_words()
    spaced = Counter({BYTE_SPACE + w: n for w, n in words.items()}) + words
    merges = bpe_merges(spaced, max(0, vocab_size - len(QWEN_SPECIAL) - len(alphabet)), end="")
    tokens = [*alphabet, *(a + b for a, b in merges)]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    tokenizer = Qwen2TokenizerFast(vocab=vocab, merges=merges, model_max_length=32768)
    tokenizer.add_special_tokens({"additional_special_tokens": QWEN_SPECIAL[1:]})
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    return tokenizer
