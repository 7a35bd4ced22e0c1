"""Unlabelled sentences for a text dataset's distilled student: Tang et al.'s augmented transfer set
(`text_augment`) and the user's own sentences (`unlabeled=FILE.txt`), appended to the training split
with label UNLABELED (labels.py) and kept as text, one row each, in `data.text.sentences`.

Tang et al. 2019, "Distilling Task-Specific Knowledge from BERT into Simple Neural Networks",
section 3.2: for each training sentence, n_iter times (`text_augment`), go through its words: with
probability p_mask (`text_augment_p_mask`) a word becomes [MASK]; else with p_pos
(`text_augment_p_replace`) it is replaced by another word of the same part of speech; then, with
p_ng (`text_augment_p_ngram`), the copy is cut to an n-gram of it, n drawn from 1..5. Duplicates
are discarded. Their values: 0.1, 0.1, 0.25.

Replacement without a part-of-speech tagger (none is available offline): the new word is drawn from
the training split's words of the same kind (a word, a number, a punctuation mark) by unigram
frequency. Tang et al. draw from the unigram distribution re-normalised within the tag so that the
copies keep the training distribution; the frequency draw keeps that, the kind keeps punctuation
where it was. It may yield a word of another part of speech ("a dull film" -> "a the film").

The copies are drawn with the run's seed: the same seed gives the same transfer set, so --resume
continues on it. Written as text ([MASK] included), every model reads them with its own tokenizer:
BERT's reads [MASK] as its mask token, the word vocabulary as its unknown word.
"""
import dataclasses
import re
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from kdkit.data.dataset import Dataset
from kdkit.data.labels import UNLABELED
from kdkit.data.text import MASK, Text, sentence_lines, text_view, tokens_of, words_of
from kdkit.errors import KdkitError

MAX_NGRAM = 5  # n-gram sampling: n in 1..5 (Tang et al.)
_STREAM = 0x74657874  # mixed into the seed: not the validation split's or the labels' draw


def kind_of(word: str) -> str:
    """What a word may be replaced by: "number", "word" or "punctuation" (a mark)."""
    return "number" if re.fullmatch(r"\d+", word) else "word" if re.fullmatch(r"\w+", word) else "punctuation"


class Replacements:
    """The words of some sentences by kind, drawn by their frequency there (a unigram distribution)."""

    def __init__(self, sentences: list[str]):
        counts = Counter(word for sentence in sentences for word in words_of(sentence) if word != MASK.lower())
        self.words, self.cumulative = {}, {}
        for kind in ("number", "word", "punctuation"):
            words = sorted(w for w in counts if kind_of(w) == kind)  # sorted: the draw never depends on dict order
            if words:
                self.words[kind] = words
                self.cumulative[kind] = np.cumsum([counts[w] for w in words]) / sum(counts[w] for w in words)

    def draw(self, word: str, u: float) -> str:
        """A word of `word`'s kind for the uniform number u in [0, 1); `word` when none is known."""
        kind = kind_of(word.lower())
        if kind not in self.words:
            return word
        position = int(np.searchsorted(self.cumulative[kind], u, side="right"))
        return self.words[kind][min(position, len(self.words[kind]) - 1)]


def augment_sentence(tokens: list[str], rng: np.random.Generator, replacements: Replacements,
                     p_mask: float, p_replace: float, p_ngram: float) -> list[str]:
    """One copy of a sentence's `tokens`: each masked (p_mask) or replaced (p_replace), then cut to an
    n-gram, n in 1..5, with p_ngram."""
    u = rng.random(len(tokens))  # (T,) one draw per word
    picks = rng.random(len(tokens))  # (T,) the replacement's draw, used where u says replace
    words = [MASK if u[i] < p_mask else replacements.draw(word, picks[i]) if u[i] < p_mask + p_replace else word
             for i, word in enumerate(tokens)]
    if words and rng.random() < p_ngram:
        n = min(int(rng.integers(1, MAX_NGRAM + 1)), len(words))
        start = int(rng.integers(0, len(words) - n + 1))
        words = words[start:start + n]
    return words


def augment_sentences(sentences: list[str], copies: int, seed: int, p_mask: float = 0.1, p_replace: float = 0.1,
                      p_ngram: float = 0.25) -> list[str]:
    """Up to `copies` augmented copies of each sentence (module docstring), in order, drawn with `seed`;
    a copy equal to a sentence or to an earlier copy is dropped. Replacement words: those of `sentences`."""
    if p_mask + p_replace > 1:
        raise KdkitError(f"text_augment_p_mask + text_augment_p_replace is {p_mask + p_replace:g}, above 1: a word is "
                         "masked or replaced, not both; lower one of them")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) % 2**64, _STREAM]))
    replacements = Replacements(sentences)
    seen = {" ".join(tokens_of(s)) for s in sentences}
    out = []
    for sentence in sentences:
        tokens = tokens_of(sentence)
        for _ in range(copies if tokens else 0):
            copy = " ".join(augment_sentence(tokens, rng, replacements, p_mask, p_replace, p_ngram))
            if copy not in seen:
                seen.add(copy)
                out.append(copy)
    return out


def add_sentences(data: Dataset, sentences: list[str], copies: bool = False) -> Dataset:
    """`data` with `sentences` appended to data.text.sentences and, label UNLABELED, to its training
    split (their index: their rows there); every split's ids made again by data's tokenizer, so all
    have one width. Validation and test keep their rows and labels. copies: they are text_augment's
    copies of the training sentences (`Text.copies`; they add no steps to hard-label rows, labels.py)."""
    if not sentences:
        return data
    start = len(data.text.sentences)
    rows = torch.arange(start, start + len(sentences))  # (M,)
    train = data.train
    index = torch.cat([train.index, rows])
    labels = torch.cat([train.labels, torch.full((len(rows),), UNLABELED, dtype=train.labels.dtype)])
    train = dataclasses.replace(train, images=index[:, None], labels=labels, index=index)  # (ids: text_view)
    text = Text(data.text.sentences + list(sentences), data.text.tokenizer,
                range(start, start + len(sentences)) if copies else data.text.copies)
    return text_view(dataclasses.replace(data, train=train, text=text), data.text.tokenizer)


def transfer_sentences(cfg, data: Dataset, seed: int) -> list[str]:
    """cfg.text_augment copies of each training sentence (each distinct row once, in order)."""
    if data.text is None:
        raise KdkitError(f"text_augment augments sentences, but dataset '{data.name}' is not text; drop text_augment "
                         "(augment sets the augmentation of images)")
    rows = dict.fromkeys(data.train.index.tolist())  # distinct, in order
    sentences = [data.text.sentences[i] for i in rows]
    return augment_sentences(sentences, cfg.text_augment, seed, cfg.text_augment_p_mask, cfg.text_augment_p_replace,
                             cfg.text_augment_p_ngram)


def read_sentences(spec: str) -> list[str]:
    """The sentences of a .txt file, one per line (blank lines skipped): `unlabeled` for a text dataset."""
    use = "a text dataset takes unlabelled sentences from a .txt file of one sentence per line"
    return [line for _, line in sentence_lines(Path(spec).expanduser(), f"unlabeled '{spec}'", use)]
