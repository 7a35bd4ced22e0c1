"""Tests for text datasets (kdkit.data.text): SST-2's `label sentence` files, text columns of tables, Python
lists; the word vocabulary built on the training split only; one row per sentence, each model its own view.
Run: PYTHONPATH=src python -m pytest tests/data/test_text.py -q
"""
from pathlib import Path

import pytest
import torch

from kdkit.data import as_dataset, load_dataset
from kdkit.data.text import UNKNOWN, TextOptions, WordVocabulary, text_dataset, text_view, words_of
from kdkit.errors import KdkitError
from test_text_models import bert_folder, cue_sentences, need_hf

SHARED_SST2 = Path(__file__).resolve().parents[3] / "shared" / "data" / "sst2"


def write_lines(path: Path, rows):
    path.write_text("".join(f"{label} {sentence}\n" for label, sentence in rows), encoding="utf-8")


def test_sst2_layout_reads_train_dev_and_test(tmp_path):
    write_lines(tmp_path / "train.txt", [(1, "a gripping , funny film"), (0, "dull and slow"), (1, "funny again"),
                                          (0, "slow , dull")])
    write_lines(tmp_path / "dev.txt", [(1, "funny zebra"), (0, "dull")])
    write_lines(tmp_path / "test.txt", [(0, "slow walrus"), (1, "gripping"), (1, "film")])
    data = load_dataset(tmp_path)
    assert (len(data.train), len(data.val), len(data.test)) == (4, 2, 3)
    assert data.kind == "tokens" and data.train.images.dtype == torch.int64 and data.classes == ["0", "1"]
    assert data.val.labels.tolist() == [1, 0] and data.test.labels.tolist() == [0, 1, 1]
    vocabulary = data.text.tokenizer
    assert "zebra" not in vocabulary.words and "walrus" not in vocabulary.words  # dev and test words: unknown
    assert data.val.images[0, 1] == UNKNOWN and data.test.images[0, 1] == UNKNOWN
    assert data.text.sentences[int(data.test.index[0])] == "slow walrus"  # index: the sentence's row
    assert data.vocab_size == len(vocabulary.words) + 2


def test_the_vocabulary_is_built_on_the_training_split_only():
    sentences = [f"word{i} common" for i in range(50)]
    data = text_dataset((sentences, [i % 2 for i in range(50)]), val_fraction=0.2)
    train_words = {w for i in data.train.index.tolist() for w in words_of(sentences[i])}
    assert set(data.text.tokenizer.words) == train_words
    held_out = [i for i in data.val.index.tolist() + data.test.index.tolist()]
    assert held_out and all(f"word{i}" not in train_words for i in held_out)
    assert bool((data.test.images[:, 0] == UNKNOWN).all())  # every held-out sentence's first word is unknown


def test_words_vocabulary_order_min_count_max_size_and_max_length():
    assert words_of("It's FINE, really!") == ["it", "'", "s", "fine", ",", "really", "!"]
    vocabulary = WordVocabulary.fit(["b a a", "c a b", "d"], min_count=2, max_size=10, max_length=2)
    assert vocabulary.words == ["a", "b"]  # most frequent first; c and d seen once
    assert vocabulary.encode(["a b c d", "d"]).tolist() == [[2, 3], [UNKNOWN, 0]]  # cut at 2, padded with 0
    assert WordVocabulary.fit(["b a a", "c a b"], max_size=1).words == ["a"]


def test_a_table_with_a_text_column(tmp_path):
    pytest.importorskip("pandas")
    path = tmp_path / "reviews.tsv"
    path.write_text("sentence\tmood\n" + "".join(f"review {i}, {'nice' if i % 2 else 'poor'}\t{'pos' if i % 2 else 'neg'}\n"
                                                 for i in range(40)))
    data = load_dataset(path, label_column="mood", text=TextOptions(text_column="sentence", max_length=3))
    assert data.classes == ["neg", "pos"] and len(data.train) + len(data.val) + len(data.test) == 40
    assert data.train.images.shape[1] == 3
    with pytest.raises(KdkitError, match="has no column 'text'"):
        load_dataset(path, label_column="mood", text=TextOptions(text_column="text"))


def test_python_lists_and_their_errors():
    data = as_dataset((["good", "bad", "good fun", "bad day"] * 5, ["pos", "neg", "pos", "neg"] * 5))
    assert data.text is not None and data.classes == ["neg", "pos"]
    with pytest.raises(KdkitError, match="3 sentences but 2 labels"):
        text_dataset((["a", "b", "c"], [0, 1]))
    with pytest.raises(KdkitError, match="dataset 'digits' keeps no sentences"):
        text_view(load_dataset("digits"), WordVocabulary([]))


def test_each_model_gets_its_own_view_of_the_same_rows(tmp_path):
    need_hf()
    from kdkit.data.text import HfTokenizer

    data = text_dataset(cue_sentences(40))
    folder = bert_folder(tmp_path / "bert", classifier=False)
    view = text_view(data, HfTokenizer(f"hf:{folder}", max_length=16))
    for split in ("train", "val", "test"):
        mine, theirs = getattr(data, split), getattr(view, split)
        assert torch.equal(mine.index, theirs.index) and torch.equal(mine.labels, theirs.labels)
        assert theirs.images.dtype == torch.int64 and bool((theirs.images[:, 0] == 2).all())  # [CLS] first
    assert not torch.equal(view.train.images[:, 1:7], data.train.images[:, :6])  # another vocabulary's ids


def test_the_shared_sst2_copy():
    if not SHARED_SST2.is_dir():
        pytest.skip(f"{SHARED_SST2} is absent")
    data = load_dataset(SHARED_SST2, text=TextOptions(max_length=64))
    assert (len(data.train), len(data.val), len(data.test)) == (6920, 872, 1821)
    assert data.classes == ["0", "1"] and data.train.images.shape[1] <= 64
    assert 10_000 < data.vocab_size < 20_000
