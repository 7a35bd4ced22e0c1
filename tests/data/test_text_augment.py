"""Tests for Tang et al.'s transfer set for text (kdkit.data.text_augment, `text_augment`) and unlabelled
sentences from a file (`unlabeled=FILE.txt`): each operation on hand-made sentences, the seeded draw, the
rows the distilled student alone trains on, a whole run and its resume.
Run: PYTHONPATH=src python -m pytest tests/data/test_text_augment.py -q
"""
import json
from collections import Counter

import pytest
import torch

from kdkit.config import DistillConfig, TrainConfig, apply_overrides
from kdkit.data.labels import UNLABELED, copy_rows, labelled_only
from kdkit.data.prepare import prepare_data
from kdkit.data.text import MASK, UNKNOWN, WordVocabulary, text_view, tokens_of
from kdkit.data.text_augment import Replacements, augment_sentences, kind_of
from kdkit.errors import KdkitError
from kdkit.recipes import run_distill
from test_text_models import bert_folder, cue_sentences, need_hf

SENTENCES = ["the film was a great story , full of fun scenes .", "it was dull and slow , 2 hours of boring !",
             "a lovely actor in a lovely film"]


def write_cues(folder, count=200):
    """SST-2's layout: train.txt and test.txt of cue-word sentences (test_text_models.cue_sentences)."""
    sentences, labels = cue_sentences(count)
    folder.mkdir()
    cut = count * 4 // 5
    for name, rows in (("train.txt", range(cut)), ("test.txt", range(cut, count))):
        (folder / name).write_text("".join(f"{labels[i]} {sentences[i]}\n" for i in rows))
    return folder


def config(tmp_path, **overrides):
    base = {"dataset": str(tmp_path / "cues"), "teacher": "bag-of-ngrams", "student": "bag-of-ngrams", "epochs": 2,
            "batch_size": 32, "optimizer": "adamw", "lr": 0.01, "progress": False, "amp": "off", "report": False,
            "student_kwargs": {"embed_dim": 8, "buckets": 100}, "teacher_kwargs": {"embed_dim": 8, "buckets": 100},
            "out": str(tmp_path / "run")}
    return apply_overrides(DistillConfig(), base | overrides)


# ---------------------------------------------------------------- the operations


def test_the_draw_is_seeded():
    a = augment_sentences(SENTENCES, 5, seed=0)
    assert a == augment_sentences(SENTENCES, 5, seed=0)
    assert a != augment_sentences(SENTENCES, 5, seed=1)
    assert 0 < len(a) <= 15 and len(set(a)) == len(a)  # duplicates dropped
    assert not {" ".join(tokens_of(s)) for s in SENTENCES} & set(a)  # and copies equal to a sentence


def test_a_masked_word_is_the_mask_token_and_the_students_unknown_word():
    copies = augment_sentences(SENTENCES[:1], 1, seed=0, p_mask=1.0, p_replace=0.0, p_ngram=0.0)
    assert copies == [" ".join([MASK] * len(tokens_of(SENTENCES[0])))]
    vocabulary = WordVocabulary.fit(SENTENCES + ["[MASK] seen in training"])  # even a literal [MASK] stays unknown
    assert "[mask]" not in vocabulary.words
    assert vocabulary.encode(copies).tolist() == [[UNKNOWN] * len(tokens_of(SENTENCES[0]))]
    mixed = augment_sentences(SENTENCES, 20, seed=0, p_mask=0.5, p_replace=0.0, p_ngram=0.0)
    for copy in mixed:  # each word masked or kept in place
        words = tokens_of(copy)
        assert any(len(words) == len(tokens_of(s)) and all(w in (MASK, o) for w, o in zip(words, tokens_of(s)))
                   for s in SENTENCES)


def test_a_bert_tokenizer_reads_the_mask_token(tmp_path):
    need_hf()
    from tokenizers import Tokenizer

    from kdkit.data.text import HfTokenizer

    folder = bert_folder(tmp_path / "bert", classifier=True)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.add_special_tokens(["[MASK]"])  # as BERT's own tokenizer.json has it
    tokenizer.save(str(folder / "tokenizer.json"))
    mask_id = tokenizer.token_to_id("[MASK]")
    ids = HfTokenizer(f"hf:{folder}").encode(["the [MASK] film"])[0].tolist()
    assert ids[2] == mask_id and ids.count(mask_id) == 1


def test_a_roberta_tokenizer_reads_the_mask_as_its_own_mask_token(tmp_path):
    need_hf()
    from tokenizers import Tokenizer

    from kdkit.data.text import HfTokenizer

    folder = bert_folder(tmp_path / "roberta", classifier=True)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.add_special_tokens(["<mask>"])  # RoBERTa's mask token, no [MASK]
    tokenizer.save(str(folder / "tokenizer.json"))
    mask_id = tokenizer.token_to_id("<mask>")
    ids = HfTokenizer(f"hf:{folder}").encode(["the [MASK] film [MASK]"])[0].tolist()
    assert ids[2] == mask_id and ids.count(mask_id) == 2


def test_a_replaced_word_is_a_training_word_of_its_kind_drawn_by_frequency():
    replacements = Replacements(["the the the cat .", "the the the the the cat , 7"])  # the 8, cat 2; . and , once
    # words sorted, each its share of [0, 1): cat [0, 0.2), the [0.2, 1)
    assert [replacements.draw("dog", u) for u in (0.0, 0.19, 0.2, 0.5, 0.99)] == ["cat"] * 2 + ["the"] * 3
    assert {replacements.draw("!", u) for u in (0.1, 0.9)} == {",", "."}  # a mark by a mark
    assert replacements.draw("42", 0.5) == "7"  # a number by a number
    copies = augment_sentences(SENTENCES, 20, seed=0, p_mask=0.0, p_replace=1.0, p_ngram=0.0)
    known = Counter(w for s in SENTENCES for w in tokens_of(s.lower()))
    for copy in copies:
        words = tokens_of(copy)
        original = next(tokens_of(s) for s in SENTENCES if len(tokens_of(s)) == len(words))
        assert all(w in known for w in words)
        assert [kind_of(w) for w in words] == [kind_of(w) for w in original]  # a mark stays a mark, a number a number


def test_an_ngram_is_a_contiguous_slice_of_one_to_five_words():
    sentence = "one two three four five six seven eight nine ten"
    copies = augment_sentences([sentence], 200, seed=0, p_mask=0.0, p_replace=0.0, p_ngram=1.0)
    words = sentence.split()
    lengths = set()
    for copy in copies:
        part = copy.split()
        lengths.add(len(part))
        start = words.index(part[0])
        assert words[start:start + len(part)] == part
    assert lengths == {1, 2, 3, 4, 5}
    assert len(copies) == 10 + 9 + 8 + 7 + 6  # every n-gram drawn once, duplicates dropped


def test_mask_and_replace_probabilities_above_one_are_refused(tmp_path):
    with pytest.raises(KdkitError, match="text_augment_p_mask \\+ text_augment_p_replace is above 1"):
        config(tmp_path, text_augment_p_mask=0.6, text_augment_p_replace=0.6)


# ---------------------------------------------------------------- the rows


def test_only_the_distilled_students_split_holds_the_augmented_rows(tmp_path):
    write_cues(tmp_path / "cues")
    plain = prepare_data(config(tmp_path), None, 0)
    data = prepare_data(config(tmp_path, text_augment=3), None, 0)
    added = len(data.train) - len(plain.train)
    assert 0 < added <= 3 * len(plain.train)
    assert data.train.labels[:len(plain.train)].tolist() == plain.train.labels.tolist()
    assert bool((data.train.labels[len(plain.train):] == UNLABELED).all())
    rows = data.train.index[len(plain.train):].tolist()
    assert rows == list(range(len(plain.text.sentences), len(data.text.sentences)))  # one sentence per row, after all
    sentences = [data.text.sentences[i] for i in rows]
    assert sentences == augment_sentences([plain.text.sentences[i] for i in plain.train.index.tolist()], 3, 0)
    ids = data.text.tokenizer.encode(sentences)  # (M, L') the student's ids of those sentences
    assert torch.equal(data.train.images[len(plain.train):, :ids.shape[1]], ids)
    for split in ("val", "test"):
        assert getattr(data, split).labels.tolist() == getattr(plain, split).labels.tolist()
        assert getattr(data, split).index.tolist() == getattr(plain, split).index.tolist()
    assert data.text.tokenizer.words == plain.text.tokenizer.words  # the vocabulary: the training sentences'


def test_unlabelled_sentences_from_a_file(tmp_path):
    write_cues(tmp_path / "cues")
    (tmp_path / "more.txt").write_text("a fun film\n\n  a boring plot  \n")
    plain = prepare_data(config(tmp_path), None, 0)
    data = prepare_data(config(tmp_path, unlabeled=str(tmp_path / "more.txt")), None, 0)
    assert data.text.sentences[-2:] == ["a fun film", "a boring plot"]
    assert data.train.labels[-2:].tolist() == [UNLABELED] * 2 and len(data.train) == len(plain.train) + 2
    assert data.train.index[-2:].tolist() == [len(data.text.sentences) - 2, len(data.text.sentences) - 1]
    (tmp_path / "latin1.txt").write_bytes("un film \xe9trange\n".encode("latin-1"))
    for bad, message in (("more.csv", "is not a .txt file"), ("empty.txt", "holds no sentences"), ("latin1.txt", "not UTF-8")):
        if not (tmp_path / bad).exists():
            (tmp_path / bad).write_text("\n")
        with pytest.raises(KdkitError, match=message):
            prepare_data(config(tmp_path, unlabeled=str(tmp_path / bad)), None, 0)


def test_the_copies_add_no_steps_to_the_scratch_row_or_the_teacher(tmp_path):
    """A hard-label row trains on the labelled sentences: repeated to the steps of the user's own
    unlabelled sentences (the label-scarce protocol), never to those of text_augment's copies."""
    write_cues(tmp_path / "cues")
    (tmp_path / "more.txt").write_text("a fun film\na boring plot\nfun fun fun\n")
    data = prepare_data(config(tmp_path, text_augment=3, unlabeled=str(tmp_path / "more.txt")), None, 0)
    labelled = int((data.train.labels != UNLABELED).sum())
    copies = len(data.train) - labelled - 3
    assert copies > labelled and data.text.copies == range(200, 200 + copies)  # after the 200 sentences of the files
    assert copy_rows(data) == copies
    scratch = labelled_only(data, same_steps=True)
    assert len(scratch.train) == labelled + 3  # the three sentences of more.txt count, the copies do not
    assert bool((scratch.train.labels != UNLABELED).all())
    assert copy_rows(text_view(data, data.text.tokenizer)) == copies  # another tokenizer's view keeps them


def test_text_augment_needs_text_and_a_teacher(tmp_path):
    with pytest.raises(KdkitError, match="is not text; drop text_augment"):
        prepare_data(config(tmp_path, dataset="digits", text_augment=2), None, 0)
    with pytest.raises(KdkitError, match="kdkit train fits hard labels only, so text_augment's sentences would go unused"):
        apply_overrides(TrainConfig(), {"text_augment": 2})
    write_cues(tmp_path / "cues")
    with pytest.raises(KdkitError, match="saved teacher outputs .* cannot teach the augmented sentences"):
        run_distill(config(tmp_path, teacher=str(tmp_path / "outputs.npy"), text_augment=2))
    assert not (tmp_path / "run").exists()  # refused before anything was written


# ---------------------------------------------------------------- a run


def test_a_run_distils_on_the_augmented_sentences_and_resumes_on_them(tmp_path):
    """The student's row trains on the augmented sentences (unlabelled), the scratch row and the teacher
    trained here on the labelled ones; stopped twice and resumed, the run ends with the uninterrupted
    run's weights, bit for bit."""
    from safetensors.torch import load_file

    write_cues(tmp_path / "cues")
    cfg = config(tmp_path, text_augment=2, deterministic=True, checkpoint_every=3, teacher_epochs=1)
    summary = run_distill(apply_overrides(cfg, {"out": str(tmp_path / "direct")}))
    rows = summary["rows"]
    data = prepare_data(cfg, None, 0)
    labelled = int((data.train.labels != UNLABELED).sum())
    unlabelled = len(data.train) - labelled
    assert unlabelled > labelled  # about 2 copies per sentence
    assert rows["student"]["train_samples"] == {"labelled": labelled, "unlabeled": unlabelled}
    assert rows["scratch"]["train_samples"] == rows["teacher"]["train_samples"] == {"labelled": labelled, "unlabeled": 0}
    part, stops = apply_overrides(cfg, {"out": str(tmp_path / "part"), "max_steps": 7}), 0
    while run_distill(part).get("stopped_early"):
        part, stops = apply_overrides(part, {"resume": True}), stops + 1
    assert stops >= 3  # stopped inside the teacher's, the scratch row's and the student's training
    for row in ("scratch", "student"):
        a = load_file(tmp_path / "direct" / row / "seed0" / "last.safetensors")
        b = load_file(tmp_path / "part" / row / "seed0" / "last.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), row


def test_an_hf_teacher_labels_the_augmented_sentences_on_its_own_view(tmp_path, monkeypatch):
    """A tiny BERT teacher's outputs cover every row of the student's split, augmented ones included:
    its own tokenizer reads the augmented sentences once."""
    need_hf()
    from kdkit.teachers.text import TextTeacher

    write_cues(tmp_path / "cues")
    folder = bert_folder(tmp_path / "bert", classifier=True)
    tables = []
    original = TextTeacher.split_table

    def record(self, split, split_name):
        table = original(self, split, split_name)
        tables.append((split_name, len(split), table.shape, len(self.ids)))
        return table

    monkeypatch.setattr(TextTeacher, "split_table", record)
    cfg = config(tmp_path, teacher=f"hf:{folder}", teacher_kwargs={}, text_augment=2, epochs=1)
    summary = run_distill(cfg)
    data = prepare_data(cfg, None, 0)
    samples = summary["rows"]["student"]["train_samples"]
    train = [t for t in tables if t[0] == "train"]
    assert len(train) == 1  # once
    _, rows, shape, sentences = train[0]
    assert rows == samples["labelled"] + samples["unlabeled"] == shape[0] and samples["unlabeled"] > 0
    assert sentences == len(data.text.sentences) == rows + len(data.val) + len(data.test)  # every sentence, once
