"""Tests for the text students (kdkit.models.text) and Hugging Face models (hf:DIR, kdkit.models.hf): a tiny
BERT built from a config and saved with save_pretrained in tmp_path, loaded offline, and distilled end to end
through `kdkit distill` into a bag-of-ngrams student that reads another tokenisation of the same sentences.
Run: PYTHONPATH=src python -m pytest tests/models/test_text_models.py -q
"""
import os
import random
from pathlib import Path

import pytest
import torch

from kdkit.data.text import text_dataset
from kdkit.errors import KdkitError
from kdkit.models import create_model
from kdkit.models.registry import TEXT_MODELS
from kdkit.weights import build_model

CUES = [["bad", "awful", "boring", "dull"], ["good", "great", "fun", "lovely"]]  # one set of cue words per class
FILLER = "the film was a story with some scenes and an actor in it this movie plot".split()


def need_hf():
    """Skip when the hf extra is missing, except under CI=true, where `make test` installs it: the tests must run."""
    if os.environ.get("CI") == "true":
        import tokenizers  # noqa: F401
        import transformers  # noqa: F401
        return
    pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")


def cue_sentences(count: int, seed: int = 0) -> tuple[list[str], list[int]]:
    """Sentences of 3 filler words and one cue word of the label's class, labels alternating."""
    rng = random.Random(seed)
    sentences, labels = [], []
    for i in range(count):
        words = rng.sample(FILLER, 3) + [rng.choice(CUES[i % 2])]
        rng.shuffle(words)
        sentences.append(" ".join(words) + " .")
        labels.append(i % 2)
    return sentences, labels


def bert_folder(folder: Path, classifier: bool) -> Path:
    """A tiny BERT (hidden 32, 2 layers) with a word-level tokenizer.json ([CLS] ... [SEP]), saved with
    save_pretrained(safe_serialization=True): a sequence classifier of 2 labels, or the bare encoder."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    folder.mkdir(parents=True, exist_ok=True)
    words = sorted({w for cue in CUES for w in cue} | set(FILLER) | {"."})
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3} | {w: i + 4 for i, w in enumerate(words)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tokenizer.save(str(folder / "tokenizer.json"))
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=64, num_labels=2, pad_token_id=0)
    torch.manual_seed(0)
    model = BertForSequenceClassification(config) if classifier else BertModel(config)
    model.save_pretrained(folder, safe_serialization=True)
    return folder


# ---------------------------------------------------------------- the text students


@pytest.mark.parametrize("name", TEXT_MODELS)
def test_text_students_map_ids_to_logits_and_learn(name):
    torch.manual_seed(0)
    model = create_model(name, 3, vocab_size=50, kwargs={"embed_dim": 8})
    ids = torch.randint(2, 50, (4, 7))  # (B, L) int64
    ids[:, 5:] = 0  # padding
    logits = model(ids)
    assert logits.shape == (4, 3) and logits.dtype == torch.float32
    logits.logsumexp(1).sum().backward()
    assert model.embedding.weight.grad is not None and model.head.weight.grad is not None
    assert model(torch.zeros(2, 2, dtype=torch.int64)).shape == (2, 3)  # shorter than a filter, padding only


def test_bag_of_ngrams_ignores_padding_and_reads_word_order():
    torch.manual_seed(0)
    model = create_model("bag-of-ngrams", 2, vocab_size=20, kwargs={"buckets": 100})
    ids = torch.tensor([[5, 6, 7]])
    padded = torch.tensor([[5, 6, 7, 0, 0]])
    assert torch.allclose(model(ids), model(padded))  # padding adds nothing to the mean
    grams, real = model.grams(ids)
    assert grams[0, :3].tolist() == [5, 6, 7] and grams.shape == (1, 5) and bool(real.all())
    assert (grams[0, 3:] >= 20).all()  # bigrams are rows after the words
    assert not torch.allclose(model(ids), model(torch.tensor([[7, 6, 5]])))  # bigrams see the order


def test_the_data_sizes_the_embedding():
    data = text_dataset(cue_sentences(60))
    model = build_model("bilstm", data, 0, {"embed_dim": 8, "hidden": 8}, "student")
    assert model.embedding.num_embeddings == data.vocab_size == data.text.tokenizer.vocab_size
    with pytest.raises(KdkitError, match="vocab_size of model 'bilstm' comes from the data"):
        build_model("bilstm", data, 0, {"vocab_size": 10}, "student")


# ---------------------------------------------------------------- Hugging Face folders


def test_a_sequence_classifier_folder_is_used_as_it_is(tmp_path):
    need_hf()
    from transformers import BertForSequenceClassification

    folder = bert_folder(tmp_path / "bert", classifier=True)
    model = create_model(f"hf:{folder}", 2).eval()
    reference = BertForSequenceClassification.from_pretrained(folder).eval()
    ids = torch.tensor([[2, 10, 11, 3, 0, 0], [2, 12, 3, 0, 0, 0]])
    with torch.no_grad():
        from kdkit.models import logits_of

        ours = logits_of(model(ids), batch=2)
        theirs = reference(input_ids=ids, attention_mask=(ids != 0).long()).logits
    assert torch.allclose(ours, theirs, atol=1e-6)  # the mask is built from the padding id
    assert not model.trained_here
    with pytest.raises(KdkitError, match="classifies 2 labels but the data has 3 classes"):
        create_model(f"hf:{folder}", 3)


def test_padding_columns_are_dropped_without_changing_the_outputs(tmp_path):
    """The forward drops the trailing columns that are padding in every row: logits as with them
    (to float precision), for the encoder with a head and for a sequence classifier."""
    need_hf()
    from kdkit.models import logits_of
    from kdkit.models.hf import trimmed

    ids = torch.tensor([[2, 10, 11, 3, 0, 0, 0, 0], [2, 12, 3, 0, 0, 0, 0, 0]])
    assert trimmed(ids, 0).tolist() == [[2, 10, 11, 3], [2, 12, 3, 0]]
    assert trimmed(torch.zeros(2, 5, dtype=torch.int64), 0).shape == (2, 1)
    for classifier in (False, True):
        model = create_model(f"hf:{bert_folder(tmp_path / str(classifier), classifier)}", 2).eval()
        with torch.no_grad():
            short, long = logits_of(model(ids[:, :4]), batch=2), logits_of(model(ids), batch=2)
        assert torch.allclose(short, long, atol=1e-6)


def test_the_bilstm_reads_each_sentence_to_its_own_end():
    """Packed: a sentence's logits do not depend on how much padding follows it (unpacked, the
    backward direction would read the padding first), and equal an unpadded batch of one."""
    torch.manual_seed(0)
    model = create_model("bilstm", 2, vocab_size=30).eval()
    ids = torch.tensor([[5, 6, 7, 0, 0], [8, 9, 0, 0, 0]])
    with torch.no_grad():
        padded = model(torch.nn.functional.pad(ids, (0, 7)))
        alone = torch.cat([model(ids[:1, :3]), model(ids[1:, :2])])
        states, _ = model.lstm(model.embedding(torch.nn.functional.pad(ids, (0, 7))))  # unpacked, for contrast
    assert torch.allclose(model(ids), padded, atol=1e-6) and torch.allclose(padded, alone, atol=1e-6)
    assert not torch.allclose(states[1, :2], model.lstm(model.embedding(ids[1:, :2]))[0][0], atol=1e-4)


def test_an_encoder_folder_gets_a_head_and_pickles_are_refused(tmp_path):
    need_hf()
    folder = bert_folder(tmp_path / "encoder", classifier=False)
    model = create_model(f"hf:{folder}", 3)
    assert model.trained_here and model(torch.tensor([[2, 9, 3, 0]])).shape == (1, 3)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(KdkitError, match="pytorch_model.bin, a pickle kdkit never loads"):
        create_model(f"hf:{folder}", 3)
    with pytest.raises(KdkitError, match="no such folder"):
        create_model(f"hf:{tmp_path / 'nowhere'}", 3)


def test_a_sidecar_cannot_name_an_hf_folder(tmp_path):
    from kdkit.models.registry import create_model_from_file

    with pytest.raises(KdkitError, match="kdkit never imports code named by a file"):
        create_model_from_file(f"hf:{tmp_path}", "x.json", (), None, num_classes=2, in_channels=8, image_size=1)


def test_bert_teacher_distils_into_bag_of_ngrams_through_the_cli(tmp_path, monkeypatch):
    """hf:DIR (an encoder: its head trained in the run) teaches a bag-of-ngrams student on SST-2-style
    files; each model gets its own tokenisation of the same sentences, as integers."""
    need_hf()
    from kdkit.cli import app
    from kdkit.models.hf import HfEncoderClassifier
    from kdkit.models.text import BagOfNgrams

    sentences, labels = cue_sentences(400)
    data_dir = tmp_path / "cues"
    data_dir.mkdir()
    for name, rows in (("train.txt", range(320)), ("test.txt", range(320, 400))):
        (data_dir / name).write_text("".join(f"{labels[i]} {sentences[i]}\n" for i in rows))
    folder = bert_folder(tmp_path / "bert", classifier=False)
    seen = {"teacher": [], "student": []}  # every input each model's forward got

    def record(module, args, output):
        if isinstance(module, HfEncoderClassifier):
            seen["teacher"].append(args[0])
        elif isinstance(module, BagOfNgrams):
            seen["student"].append(args[0])

    monkeypatch.chdir(tmp_path)
    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        app(["distill", "--dataset", str(data_dir), "--teacher", f"hf:{folder}", "--student", "bag-of-ngrams",
             "--out", "run", "--epochs", "20", "--set", "teacher_epochs=8", "--set", "optimizer=adamw", "--set", "lr=0.005",
             "--set", "batch_size=32", "--set", "report=false", "--set", "progress=false",
             "--set", "student_kwargs={embed_dim: 16, buckets: 500}"], standalone_mode=False)
    finally:
        handle.remove()
    import json

    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    rows = summary["rows"]
    assert rows["teacher"]["metrics"]["accuracy"]["mean"] >= 0.9  # the head learnt the cue words
    assert rows["student"]["metrics"]["accuracy"]["mean"] >= 0.65  # chance is 0.5
    # the teacher's row is timed and counted on its own ids of real test sentences (padding alone
    # would be one token long to it): [CLS], 4 words, ".", [SEP] -> 7 tokens of hidden 32
    assert summary["teacher"]["outputs_seconds"] > 0  # the time its outputs took, said apart from its training
    facts = rows["teacher"]["facts"]
    assert facts["parameters"] > 0 and facts["latency_ms_b1"] > 0 and facts["flops_per_sample"] > 7 * 2 * 2 * 32 * 32
    assert all(x.dtype == torch.int64 for x in seen["teacher"] + seen["student"])  # ids stay integers end to end
    real = [x for x in seen["teacher"] if bool((x != 0).any())]  # (the shape probes feed padding only)
    assert real and all(bool((x[:, 0] == 2).all()) for x in real)  # the teacher reads its own tokenizer's: [CLS] first
    assert not any(bool((x == 2).any()) and bool((x == 3).any()) and bool((x[:, 0] == 2).all())
                   for x in seen["student"] if bool((x != 0).any()))  # the student reads the words' ids
    # one sentence, two tokenisations: the teacher's ids and the student's differ
    from kdkit.data import load_dataset
    from kdkit.data.text import HfTokenizer, TextOptions, text_view

    data = load_dataset(data_dir, text=TextOptions())
    first = data.text.sentences[int(data.test.index[0])]
    teacher_view = text_view(data, HfTokenizer(f"hf:{folder}"))
    assert not torch.equal(teacher_view.test.images[0], data.test.images[0])
    assert teacher_view.test.images[0].tolist()[:3] == [2] + HfTokenizer(f"hf:{folder}").encode([first])[0, 1:3].tolist()
    # the fine-tuned teacher again, from its weights: it reads its own tokenizer's ids, and the user
    # names its folder to let a sidecar load it
    again = ["distill", "--dataset", str(data_dir), "--teacher", "run/teacher", "--student", "bag-of-ngrams", "--out", "again",
             "--epochs", "1", "--no-baseline", "--set", "report=false", "--set", "progress=false",
             "--set", "student_kwargs={embed_dim: 16, buckets: 500}"]
    with pytest.raises(KdkitError, match=f"weights of the Hugging Face model hf:{folder}.*--trust-hook hf:{folder}"):
        app(again, standalone_mode=False)
    app(again + ["--trust-hook", f"hf:{folder}"], standalone_mode=False)
    reused = json.loads((tmp_path / "again" / "summary.json").read_text())["rows"]["teacher"]
    assert reused["metrics"] == rows["teacher"]["metrics"]
