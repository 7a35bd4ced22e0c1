"""Text datasets: one sentence per sample, its label, and a tokenizer per model (docs/text.md).

    data = load_dataset("../shared/data/sst2")                       # label<space>sentence lines
    data = text_dataset((sentences, labels), test=(test_sentences, test_labels))
    teacher_view = text_view(data, HfTokenizer("models/minilm", max_length=64))

Where the sentences come from:
    a folder of train.txt (dev.txt, test.txt optional)   `label sentence` lines, SST-2's layout
    a .txt file                                           the same lines; test and val carved from it
    a .csv, .tsv or .parquet file with text_column set   a text column and label_column
    Python lists                                          text_dataset((sentences, labels), ...)

A text dataset is a tokens dataset (`Dataset.kind` is "tokens"): each split's inputs are the (N, L)
int64 ids of the data's tokenizer, padded with its pad id, cut at max_length, never made float. It
also keeps its sentences (`Dataset.text.sentences`, train first) and every split's `index` points into
them, one row per sentence. So a model with another tokenizer gets its own view of the same samples:
`text_view(data, tokenizer)` is the same splits, rows and labels with that tokenizer's ids, each
sentence tokenised once. Teacher and student may so read one sentence in two ways.

Tokenizers:
    words      a vocabulary built on the TRAINING split only (after val and test are carved): lower
               case, words and punctuation marks split apart, words seen at least vocab_min_count
               times, the vocab_max_size most frequent; 0 = padding, 1 = unknown word
    hf:DIR     a Hugging Face tokenizer, read from DIR/tokenizer.json (the `tokenizers` package; no
               code is run): the ids a transformer saved in DIR takes, padded with its pad id
"""
import json
import re
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from kdkit.data.dataset import Dataset, RawData, Split, build_dataset
from kdkit.errors import KdkitError, did_you_mean, shown

HF_PREFIX = "hf:"
PAD, UNKNOWN = 0, 1  # the word vocabulary's special ids
SST2_FILES = {"train": "train.txt", "val": "dev.txt", "test": "test.txt"}
MASK = "[MASK]"  # a masked word (text_augment): BERT's mask token, the word vocabulary's unknown word
_WORD = re.compile(r"\[mask\]|\w+|[^\w\s]", re.IGNORECASE)  # [MASK], a word, or one punctuation mark


@dataclass(frozen=True)
class TextOptions:
    """How sentences become ids (the config keys of the same names, docs/config.md)."""

    tokenizer: str = "words"  # words, or hf:DIR
    max_length: int = 128  # ids per sentence at most (longer sentences are cut)
    vocab_min_count: int = 1  # words: seen at least this often in the training split
    vocab_max_size: int = 30_000  # words: the most frequent ones kept (plus padding and unknown)
    text_column: str = ""  # a table file: the column holding the sentences (label_column the labels)

    @classmethod
    def of(cls, cfg) -> "TextOptions":
        """The options a run's config gives; tokenizer auto = the student's (or model's) when it is
        hf:DIR, else words."""
        tokenizer = cfg.tokenizer
        if tokenizer == "auto":
            model = getattr(cfg, "student", None) or getattr(cfg, "model", "")
            tokenizer = model if str(model).startswith(HF_PREFIX) else "words"
        return cls(tokenizer, cfg.max_length, cfg.vocab_min_count, cfg.vocab_max_size, cfg.text_column or "")


@dataclass
class Text:
    """The sentences of a text dataset (train first; a split's `index` points here) and the tokenizer
    that made its stored ids."""

    sentences: list[str]
    tokenizer: object  # WordVocabulary or HfTokenizer
    copies: range = range(0)  # the rows of `sentences` that are text_augment's copies of training sentences


# ---------------------------------------------------------------- tokenizers


def words_of(sentence: str) -> list[str]:
    """'It's fine.' -> ['it', "'", 's', 'fine', '.']: lower case, words and punctuation apart ([MASK] one word)."""
    return _WORD.findall(sentence.lower())


def tokens_of(sentence: str) -> list[str]:
    """The words of words_of in their own case: 'It's [MASK].' -> ['It', "'", 's', '[MASK]', '.']."""
    return _WORD.findall(sentence)


class WordVocabulary:
    """Word ids: 0 padding, 1 unknown, then the vocabulary's words, most frequent first."""

    pad_id = PAD

    def __init__(self, words: list[str], max_length: int = 128):
        self.words = list(words)
        self.max_length = max_length
        self.ids = {word: i + 2 for i, word in enumerate(self.words)}

    @classmethod
    def fit(cls, sentences: list[str], min_count: int = 1, max_size: int = 30_000, max_length: int = 128):
        """The vocabulary of `sentences` (the training split's): words seen min_count times or more,
        the max_size most frequent (ties alphabetical, so the ids never depend on the order)."""
        counts = Counter(word for sentence in sentences for word in words_of(sentence))
        counts.pop(MASK.lower(), None)  # a masked word is always the unknown word
        kept = sorted((word for word, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        return cls(kept[:max_size], max_length)

    @property
    def vocab_size(self) -> int:
        return len(self.words) + 2

    def encode(self, sentences: list[str]) -> torch.Tensor:
        """(S, L) int64 ids, L the longest sentence's words up to max_length (at least 1)."""
        rows = [[self.ids.get(word, UNKNOWN) for word in words_of(s)][:self.max_length] for s in sentences]
        return padded(rows, self.pad_id)

    def describe(self) -> str:
        return f"words ({self.vocab_size:,} ids)"


class HfTokenizer:
    """A Hugging Face tokenizer read from DIR/tokenizer.json (no code run), cut at max_length."""

    def __init__(self, spec: str, max_length: int = 128):
        from kdkit.extras import need

        tokenizers = need("tokenizers", f"the tokenizer {spec}")
        self.spec, self.max_length = spec, max_length
        folder = hf_folder(spec)
        if not (folder / "tokenizer.json").is_file():
            raise KdkitError(f"{folder} has no tokenizer.json; save it there (tokenizer.save_pretrained(DIR)) "
                             "or use tokenizer=words")
        self.tokenizer = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length)
        self.pad_id = hf_pad_id(folder, self.tokenizer)
        # text_augment writes [MASK]; a tokenizer whose mask token is RoBERTa's <mask> reads it as that
        roberta = self.tokenizer.token_to_id(MASK) is None and self.tokenizer.token_to_id("<mask>") is not None
        self.mask = "<mask>" if roberta else MASK

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, sentences: list[str]) -> torch.Tensor:
        """(S, L) int64 ids (special tokens included), padded with the tokenizer's pad id."""
        if self.mask != MASK:
            sentences = [s.replace(MASK, self.mask) for s in sentences]
        return padded([e.ids for e in self.tokenizer.encode_batch(list(sentences))], self.pad_id)

    def describe(self) -> str:
        return f"{self.spec} ({self.vocab_size:,} ids)"


def hf_folder(spec: str) -> Path:
    """The folder of hf:DIR, which must exist."""
    folder = Path(spec[len(HF_PREFIX):] if spec.startswith(HF_PREFIX) else spec).expanduser()
    if not folder.is_dir():
        raise KdkitError(f"{spec}: no such folder; give hf:DIR, DIR a folder written by save_pretrained")
    return folder


def hf_pad_id(folder: Path, tokenizer=None) -> int:
    """The padding id of the model in `folder`: its tokenizer's padding, else config.json's pad_token_id,
    else the id of [PAD] or <pad>, else 0. tokenizer: a tokenizers.Tokenizer, or None to read
    folder/tokenizer.json when there is one."""
    if tokenizer is None and (folder / "tokenizer.json").is_file():
        from kdkit.extras import need

        tokenizer = need("tokenizers", f"the tokenizer of {folder}").Tokenizer.from_file(str(folder / "tokenizer.json"))
    if tokenizer is not None and tokenizer.padding is not None:
        return int(tokenizer.padding["pad_id"])
    config = folder / "config.json"
    if config.is_file():
        pad = json.loads(config.read_text()).get("pad_token_id")
        if isinstance(pad, int):
            return pad
    for token in ("[PAD]", "<pad>"):
        if tokenizer is not None and tokenizer.token_to_id(token) is not None:
            return tokenizer.token_to_id(token)
    return 0


def padded(rows: list[list[int]], pad_id: int) -> torch.Tensor:
    """(S, L) int64 of `rows`, each padded with pad_id to the longest (L at least 1)."""
    length = max([len(row) for row in rows] + [1])
    out = torch.full((len(rows), length), pad_id, dtype=torch.int64)
    for i, row in enumerate(rows):
        out[i, :len(row)] = torch.tensor(row, dtype=torch.int64)
    return out


def sentence_lines(path: Path, what: str, use: str) -> list[tuple[int, str]]:
    """(line number, sentence) of the non-blank lines of a UTF-8 .txt file, one sentence per line.
    what: the file as errors name it ("unlabeled 'more.txt'"); use: what it is for, said when it is
    not a .txt file."""
    if path.suffix.lower() != ".txt" or not path.is_file():
        raise KdkitError(f"{what} is not a .txt file; {use}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise KdkitError(f"{what} is not UTF-8 text; save it as UTF-8, one sentence per line") from None
    numbered = [(i + 1, line.strip()) for i, line in enumerate(lines) if line.strip()]
    if not numbered:
        raise KdkitError(f"{what} holds no sentences; write one sentence per line")
    return numbered


def make_tokenizer(options: TextOptions, train_sentences: list[str]):
    """The tokenizer `options` name; a word vocabulary is built on `train_sentences`."""
    if options.tokenizer == "words":
        return WordVocabulary.fit(train_sentences, options.vocab_min_count, options.vocab_max_size, options.max_length)
    if options.tokenizer.startswith(HF_PREFIX):
        return HfTokenizer(options.tokenizer, options.max_length)
    raise KdkitError(f"unknown tokenizer {shown(options.tokenizer)}; use words, auto or hf:DIR")


# ---------------------------------------------------------------- datasets


def text_dataset(train, val=None, test=None, *, options: TextOptions = TextOptions(), classes=None,
                 val_fraction: float = 0.1, seed: int = 0, name: str = "text") -> Dataset:
    """A text Dataset from (sentences, labels) pairs: lists of strings and their labels (numbers are
    class indices; text labels become indices, sorted or in the order of `classes`). No val: carved
    from train (val_fraction, stratified, seed); no val and no test: test carved first (the fixed 20%);
    a val without a test also serves as test. The stored ids are options.tokenizer's."""
    parts = {what: _pair(pair, what) for what, pair in (("train", train), ("val", val), ("test", test)) if pair is not None}
    labels, classes = _class_indices({what: y for what, (_, y) in parts.items()}, classes, name)
    sentences = [s for what in parts for s in parts[what][0]]  # train first: its positions are the source's
    start = np.cumsum([0] + [len(parts[what][0]) for what in parts])
    rows = {what: np.arange(start[i], start[i + 1], dtype=np.int64)[:, None] for i, what in enumerate(parts)}
    held = "test" if "test" in parts else "val" if "val" in parts else None
    raw = RawData(rows["train"], labels["train"], rows.get(held), labels.get(held), classes, origin=name)
    data = build_dataset(raw, name, "none", 0.0 if "val" in parts else val_fraction, seed)  # inputs: sentence rows
    if "val" in parts:
        data.val = Split(torch.from_numpy(rows["val"]), torch.from_numpy(labels["val"]))
    data = replace(data, train=_by_row(data.train), val=_by_row(data.val), test=_by_row(data.test))
    train_sentences = [sentences[i] for i in data.train.index.tolist()]
    tokenizer = make_tokenizer(options, train_sentences)  # a vocabulary sees the training split only
    return text_view(replace(data, text=Text(sentences, tokenizer)), tokenizer)


def is_sentences(pair) -> bool:
    """Whether `pair` is (sentences, labels): a list or tuple of strings first."""
    return (isinstance(pair, (tuple, list)) and len(pair) == 2 and isinstance(pair[0], (list, tuple))
            and len(pair[0]) > 0 and isinstance(pair[0][0], str))


def text_view(data: Dataset, tokenizer) -> Dataset:
    """`data` with every split's inputs the ids `tokenizer` gives its sentences (each tokenised once);
    same rows, labels and index. The view's `text.tokenizer` is `tokenizer`."""
    if data.text is None:
        raise KdkitError(f"dataset '{data.name}' keeps no sentences, so no other tokenizer can read it; "
                         "load it as text (a folder of train.txt, or text_column=NAME for a table)")
    ids = tokenizer.encode(data.text.sentences)  # (S, L) every sentence, once

    def view(split: Split) -> Split:
        return replace(split, images=ids.index_select(0, split.index))  # (N, L)

    return replace(data, train=view(data.train), val=view(data.val), test=view(data.test),
                   text=replace(data.text, tokenizer=tokenizer))


def _by_row(split: Split) -> Split:
    """A split of sentence rows (N, 1) whose index is those rows: positions in Text.sentences."""
    return replace(split, index=split.images[:, 0].clone())


def _pair(pair, what: str) -> tuple[list[str], list]:
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
        raise KdkitError(f"{what}: give (sentences, labels), two lists of the same length")
    sentences, labels = list(pair[0]), pair[1]
    labels = list(labels.tolist() if hasattr(labels, "tolist") else labels)
    bad = next((i for i, s in enumerate(sentences) if not isinstance(s, str)), None)
    if bad is not None:
        raise KdkitError(f"{what}: sentence {bad} is {type(sentences[bad]).__name__}, not text; give one string per sample")
    if len(sentences) != len(labels):
        raise KdkitError(f"{what}: {len(sentences)} sentences but {len(labels)} labels; give one label per sentence")
    if not sentences:
        raise KdkitError(f"{what}: no sentences; check the source holds data")
    return sentences, labels


def _class_indices(labels: dict, classes, name: str) -> tuple[dict, list[str]]:
    """Labels as int64 class indices per split, and the class names. Integers are indices; text labels
    are sorted (or ordered by `classes`)."""
    seen = [y for ys in labels.values() for y in ys]
    if all(isinstance(y, (int, np.integer)) and not isinstance(y, bool) for y in seen):
        classes = list(classes) if classes else [str(i) for i in range(max(seen) + 1)]
        return {what: np.asarray(ys, dtype=np.int64) for what, ys in labels.items()}, classes
    texts = sorted({str(y) for y in seen})
    classes = [str(c) for c in classes] if classes else texts
    unknown = next((y for y in texts if y not in classes), None)
    if unknown is not None:
        raise KdkitError(f"{name}: label {shown(unknown)} is not one of the classes {classes[:10]}; name every class")
    position = {c: i for i, c in enumerate(classes)}
    return {what: np.asarray([position[str(y)] for y in ys], dtype=np.int64) for what, ys in labels.items()}, classes


def read_labelled_lines(path: Path) -> tuple[list[str], list]:
    """(sentences, labels) of a file of `label sentence` lines (SST-2's layout); blank lines skipped."""
    sentences, labels = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        label, _, sentence = line.strip().partition(" ")
        if not sentence.strip():
            raise KdkitError(f"{path}:{number} has no sentence after its label {shown(label)}; "
                             "write one `label sentence` per line")
        labels.append(int(label) if label.lstrip("-").isdigit() else label)
        sentences.append(sentence.strip())
    return sentences, labels


def is_text_source(path: Path, options: TextOptions) -> bool:
    """Whether `path` is read as text: a folder with train.txt, a .txt file, or a table when text_column is set."""
    if path.is_dir():
        return (path / SST2_FILES["train"]).is_file()
    return path.suffix.lower() == ".txt" or bool(options.text_column)


def load_text(path: Path, options: TextOptions, label_column: str = "label", val_fraction: float = 0.1,
              seed: int = 0) -> Dataset:
    """The text dataset at `path` (is_text_source): a folder of train.txt / dev.txt / test.txt, a
    .txt file of `label sentence` lines, or a table with options.text_column and label_column."""
    if path.is_dir():
        splits = {what: read_labelled_lines(path / file) for what, file in SST2_FILES.items() if (path / file).is_file()}
        return text_dataset(**splits, options=options, val_fraction=val_fraction, seed=seed, name=path.resolve().name)
    if path.suffix.lower() == ".txt":
        return text_dataset(read_labelled_lines(path), options=options, val_fraction=val_fraction, seed=seed, name=path.stem)
    from kdkit.data.tables import read_table

    frame = read_table(path)
    columns = [str(c) for c in frame.columns]
    for key, column in (("text_column", options.text_column), ("label_column", label_column)):
        if column not in columns:
            raise KdkitError(f"{path.name} has no column {shown(column)} ({key}); {did_you_mean(column, columns)}")
    texts, labels = frame[options.text_column], frame[label_column]
    if texts.isna().any() or labels.isna().any():
        raise KdkitError(f"{path.name}: {int(texts.isna().sum())} missing sentences and {int(labels.isna().sum())} missing "
                         "labels; drop those rows or fill them in")
    pair = ([str(t) for t in texts.tolist()], labels.tolist())
    return text_dataset(pair, options=options, val_fraction=val_fraction, seed=seed, name=path.stem)
