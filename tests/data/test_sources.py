"""kdkit.data.sources.as_dataset on every kind of source (tiny generated data), tables read from
.csv / .parquet by `--dataset` (tables.py, registry.py), and ImageFolder's image_size."""
import json
import sys

import numpy as np
import pytest
import torch

from kdkit.data import from_arrays, load_dataset
from kdkit.data.dataset import TEST_FRACTION, Dataset
from kdkit.data.sources import as_dataset
from kdkit.errors import KdkitError

pandas = pytest.importorskip("pandas")


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Decoded images go to this test's folder, never the developer's cache."""
    monkeypatch.setenv("KDKIT_CACHE", str(tmp_path / "cache"))


def images(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, 3, 4, 4) uint8 images and labels i % 2."""
    return np.random.default_rng(seed).integers(0, 256, (n, 3, 4, 4), dtype=np.uint8), np.arange(n) % 2


def same_splits(a: Dataset, b: Dataset) -> bool:
    return all(torch.equal(getattr(a, s).images, getattr(b, s).images) and torch.equal(getattr(a, s).labels, getattr(b, s).labels)
               for s in ("train", "val", "test")) and a.classes == b.classes


class MapStyle(torch.utils.data.Dataset):
    """A torch Dataset (or a Hugging Face datasets.Dataset: the same protocol) of given samples."""

    def __init__(self, samples):
        self.samples = samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]


# ---------------------------------------------------------------- arrays, a kdkit Dataset

def test_pairs_of_numpy_or_torch_are_from_arrays():
    x, y = images()
    expected = from_arrays(x, y, x[:10], y[:10])
    assert same_splits(as_dataset((x, y), test=(x[:10], y[:10])), expected)
    assert same_splits(as_dataset((torch.from_numpy(x), torch.from_numpy(y)), test=[x[:10], y[:10]]), expected)


def test_a_kdkit_dataset_is_returned_as_it_is():
    x, y = images()
    data = from_arrays(x, y, x[:10], y[:10])
    assert as_dataset(data) is data
    with pytest.raises(KdkitError, match="^train is a kdkit Dataset, which carries its own val and test splits; pass it alone$"):
        as_dataset(data, (x, y))


def test_from_arrays_needs_both_test_arrays_or_neither():
    x, y = images()
    with pytest.raises(KdkitError, match="^give both x_test and y_test, or neither .a test split is then carved from train.$"):
        from_arrays(x, y, x[:4])


def test_val_and_test_given_or_carved():
    x, y = images(100)
    alone = as_dataset((x, y), val_fraction=0.1)  # test carved first, a fixed 20%, as for digits
    assert len(alone.test) == round(TEST_FRACTION * 100) and len(alone.val) == 8 and len(alone.train) == 72
    assert torch.equal(alone.test.images, as_dataset((x, y), seed=5).test.images)
    given = as_dataset((x[:60], y[:60]), (x[60:80], y[60:80]), (x[80:], y[80:]))
    assert len(given.train) == 60 and given.val.index is None
    assert torch.equal(given.val.images, torch.from_numpy(x[60:80])) and torch.equal(given.test.images, torch.from_numpy(x[80:]))
    no_test = as_dataset((x[:60], y[:60]), (x[60:80], y[60:80]))  # a val without a test serves as both
    assert torch.equal(no_test.test.images, no_test.val.images)


# ---------------------------------------------------------------- samples: torch datasets, loaders, iterables

def test_torch_dataset_of_pairs_is_stacked():
    x, y = images()
    samples = MapStyle([(torch.from_numpy(x[i]), torch.tensor(y[i])) for i in range(40)])
    assert same_splits(as_dataset(samples), as_dataset((x, y)))


def test_token_dicts_of_ragged_lengths_are_masked_and_padded():
    lengths = [3, 5, 2, 4] * 6
    samples = [{"input_ids": torch.arange(1, n + 1), "attention_mask": torch.tensor([1] * (n - 1) + [0]),
                "label": i % 2} for i, n in enumerate(lengths)]
    val = [{"input_ids": list(range(1, 8)), "label": i % 2} for i in range(4)]  # longer than any train sample
    data = as_dataset(MapStyle(samples), MapStyle(val))
    assert data.kind == "tokens" and data.train.images.dtype == torch.int64 and data.input_shape == (7,)
    expected = np.zeros((24, 7), dtype=np.int64)  # every split padded to the longest, 7; a masked id is 0
    for row, n in zip(expected, lengths):
        row[:n - 1] = np.arange(1, n)
    assert torch.equal(data.train.images, torch.from_numpy(expected)[data.train.index])
    assert data.val.images.tolist() == [list(range(1, 8))] * 4
    pairs = as_dataset([(np.arange(1, n + 1), i % 2) for i, n in enumerate(lengths)], kind="tokens")  # (x, y) samples too
    assert pairs.input_shape == (5,) and pairs.train.images[pairs.train.index == 2].tolist() == [[1, 2, 0, 0, 0]]


def test_dataloader_is_iterated_once_and_unbatched():
    x, y = images()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=16)
    assert same_splits(as_dataset(loader), as_dataset((x, y)))
    dicts = torch.utils.data.DataLoader(MapStyle([{"pixel_values": torch.from_numpy(x[i]), "labels": int(y[i])} for i in range(40)]),
                                        batch_size=7)
    assert same_splits(as_dataset(dicts), as_dataset((x, y)))


def test_iterables_of_pairs_or_dicts():
    x, y = images()
    assert same_splits(as_dataset((x[i], y[i]) for i in range(40)), as_dataset((x, y)))
    rows = np.random.default_rng(1).normal(size=(30, 5)).astype(np.float32)
    data = as_dataset(iter([{"features": rows[i].tolist(), "label": ["b", "a"][i % 2]} for i in range(30)]))
    assert data.kind == "table" and data.classes == ["a", "b"]
    assert same_splits(data, as_dataset((rows, (np.arange(30) + 1) % 2), classes=["a", "b"]))  # 'a' (odd rows) is class 0


def test_hugging_face_style_dataset_of_dicts():
    """datasets.Dataset: len() and [i] give dicts of plain lists (no torch format)."""
    class HFLike:
        def __init__(self, rows):
            self.rows = rows

        def __len__(self):
            return len(self.rows)

        def __getitem__(self, i):
            return dict(self.rows[i])

    x, y = images(20)
    data = as_dataset(HFLike([{"pixel_values": (x[i] / 255).tolist(), "label": int(y[i])} for i in range(20)]))
    assert data.kind == "image" and data.train.images.dtype == torch.float32
    assert same_splits(data, as_dataset(((x / 255).astype(np.float32), y)))
    named = as_dataset(HFLike([{"x": x[i], "target": int(y[i])} for i in range(20)]), label_column="target")
    assert same_splits(named, as_dataset((x, y)))


def test_text_labels_become_sorted_classes_or_follow_classes():
    x, _ = images(40)
    names = np.array(["emu", "cat", "dog", "cat"] * 10)
    data = as_dataset((x, names))
    assert data.classes == ["cat", "dog", "emu"]
    assert same_splits(data, as_dataset((x, np.array([2, 0, 1, 0] * 10)), classes=["cat", "dog", "emu"]))
    ordered = as_dataset([(x[i], names[i]) for i in range(40)], classes=["emu", "dog", "cat"])
    assert ordered.classes == ["emu", "dog", "cat"] and set(ordered.train.labels[ordered.train.index % 4 == 0].tolist()) == {0}
    flags = as_dataset(pandas.DataFrame({"a": np.arange(20.0), "label": [True, False] * 10}))  # a CSV's True/False column
    assert flags.classes == ["False", "True"] and flags.train.labels.tolist() == [int(i % 2 == 0) for i in flags.train.index]
    with pytest.raises(KdkitError, match="^train has the label 'cat', which is not in classes; add it to classes=.* or fix the label$"):
        as_dataset((x, names), classes=["emu", "dog"])
    with pytest.raises(KdkitError, match="^the labels of train are text but those of val are numbers; give labels of one kind$"):
        as_dataset((x, names), (x[:4], np.arange(4)))


# ---------------------------------------------------------------- DataFrames

def test_dataframe_with_a_categorical_column_is_one_hot_encoded(capsys):
    train = pandas.DataFrame({"size": [1.0, 2.0, 3.0, 4.0] * 5, "colour": ["red", "blue", "red", "green"] * 5,
                              "kind": ["cat", "dog"] * 10})
    test = pandas.DataFrame({"kind": ["dog", "cat"], "colour": ["blue", "purple"], "size": [5.0, 6.0]})  # column order may differ
    data = as_dataset(train, test=test, label_column="kind", val_fraction=0.0)
    assert "one-hot encoded colour (3 categories)" in capsys.readouterr().err
    assert data.kind == "table" and data.input_shape == (4,) and data.classes == ["cat", "dog"]
    # features: size, colour=blue, colour=green, colour=red (categories sorted); 'purple' is unseen: all zeros
    assert data.test.images.tolist() == [[5, 1, 0, 0], [6, 0, 0, 0]] and data.test.labels.tolist() == [1, 0]
    assert data.train.images[:4].tolist() == [[1, 0, 0, 1], [2, 1, 0, 0], [3, 0, 0, 1], [4, 0, 1, 0]]
    assert data.train.labels[:4].tolist() == [0, 1, 0, 1]
    assert data.std[0] == pytest.approx(np.std([1.0, 2.0, 3.0, 4.0]))  # standardised per feature from train


def test_dataframe_errors_name_the_column():
    frame = pandas.DataFrame({"a": [1.0, np.nan, 3.0, 4.0], "Target": [0, 1, 0, 1]})
    with pytest.raises(KdkitError, match="^the training table has no label column 'target'; did you mean 'Target'[?] its columns are "
                                         "a, Target; name the label column with label_column=NAME .kdkit: --set label_column=NAME.$"):
        as_dataset(frame, label_column="target")
    with pytest.raises(KdkitError, match="^train: column 'a' has 1 missing values .first in row 1.; fill them in"):
        as_dataset(frame, label_column="Target")
    full = frame.fillna(2.0)
    with pytest.raises(KdkitError, match="^val lacks a, has b too, unlike the training table; give every split the same columns$"):
        as_dataset(full, full.rename(columns={"a": "b"}), label_column="Target")
    with pytest.raises(KdkitError, match="^val is a DataFrame but train is not; give train as a DataFrame too$"):
        as_dataset((full[["a"]].to_numpy(), full["Target"].to_numpy()), full, label_column="Target")


def test_more_table_errors_name_the_column():
    with pytest.raises(KdkitError, match="^val: column 'a' holds text but numbers in the training table; give it numbers in every split$"):
        as_dataset(pandas.DataFrame({"a": [1.0, 2.0], "label": [0, 1]}), pandas.DataFrame({"a": ["x", "y"], "label": [0, 1]}))
    with pytest.raises(KdkitError, match="^train: the label column 'label' has 1 missing values .first in row 0.; drop those rows "
                                         "or fill in their labels$"):
        as_dataset(pandas.DataFrame({"a": [1.0, 2.0], "label": [None, "cat"]}))
    ids = pandas.DataFrame({"name": [f"n{i}" for i in range(1001)], "label": [0, 1] * 500 + [0]})
    with pytest.raises(KdkitError, match="^the training table: column 'name' holds 1,001 distinct texts, too many to one-hot encode "
                                         ".at most 1000.; drop it .an identifier or free text. or encode it yourself$"):
        as_dataset(ids)
    with pytest.raises(KdkitError, match="^the training table has two columns named 'a'; rename one$"):
        as_dataset(pandas.DataFrame([[1.0, 2.0, 0]], columns=["a", "a", "label"]))
    with pytest.raises(KdkitError, match="^the training table has only the label column 'label'; a table needs feature columns too$"):
        as_dataset(pandas.DataFrame({"label": [0, 1]}))


def test_tables_without_pandas_say_what_to_install(tmp_path, monkeypatch):
    (tmp_path / "t.csv").write_text("a,label\n1,0\n")
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas now fails, as when it is not installed
    with pytest.raises(KdkitError, match="^reading the table t.csv needs pandas, which is not installed; pip install pandas$"):
        load_dataset(str(tmp_path / "t.csv"))


# ---------------------------------------------------------------- bad sources

def test_samples_of_different_shapes_name_the_position():
    x, y = images(10)
    samples = [(x[i], y[i]) for i in range(10)]
    samples[7] = (x[7][:, :3], y[7])
    with pytest.raises(KdkitError, match=r"^train: sample 7 has shape \(3, 3, 4\) but sample 0 has \(3, 4, 4\); give every sample "
                                         r"one shape \(resize the images first; token ids of any length are padded with kind='tokens'\)$"):
        as_dataset(samples)


@pytest.mark.parametrize("source, message", [
    (np.zeros((4, 3)), "train is one array of shape (4, 3); give (x, y): the inputs and their labels"),
    ("data.csv", "train is a str; give (x, y) arrays, a DataFrame, a torch or Hugging Face dataset, a DataLoader, "
                 "or an iterable of (x, y) or dict samples"),
    (5, "train is a int, which kdkit cannot read; give (x, y) arrays"),
    (None, "train is None; give (x, y) arrays"),
    ([], "train holds no samples; check the source"),
    ([{"image": 1, "label": 0}], "train: sample 0 has keys ['image', 'label'], none of input_ids, pixel_values, x or features; "
                                 "put the input under one of them"),
    ([{"x": [1.0], "y": 0}], "train: sample 0 has keys ['x', 'y'], none of them label or labels; put the label under label, "
                             "or name its key with label_column=NAME"),
    ([(np.zeros(3), np.eye(2)[0])] * 3, "train: the label of sample 0 is a ndarray of shape (2,); give one class index or name per sample"),
    ([(np.zeros(3), None)], "train: the label of sample 0 is None; give one class index or name per sample"),
    ([({"x": 1}, 0)], "train: the input of sample 0 is {'x': 1}, not an array of numbers; give a tensor, a numpy array"),
    ([{"input_ids": [1, 2], "attention_mask": [1], "label": 0}], "train: the attention_mask of sample 0 has shape (1,) but its "
                                                                 "input_ids (2,); give one mask value per id"),
    ([7, 8], "train: sample 0 is a int; a sample must be (x, y) or a dict"),
    ([{"input_ids": [[1, 2]], "label": 0}], "train: the token ids of sample 0 are (1, 2) int64; give each sample one sequence of "
                                            "integer ids (L,)"),
])
def test_sources_kdkit_cannot_read_are_one_line_errors(source, message):
    with pytest.raises(KdkitError) as error:
        as_dataset(source)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


# ---------------------------------------------------------------- --dataset table.csv / .parquet

def breast_cancer_csv(folder, suffix: str = ".csv"):
    """scikit-learn's breast cancer table (569 rows, 30 features) with text labels under 'target'."""
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    frame["target"] = frame["target"].map({0: "malignant", 1: "benign"})
    path = folder / f"cancer{suffix}"
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path)
    return path, frame


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_table_file_as_dataset(tmp_path, suffix):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    path, frame = breast_cancer_csv(tmp_path, suffix)
    data = load_dataset(str(path), label_column="target", seed=3)
    assert data.name == "cancer" and data.kind == "table" and data.input_shape == (30,) and data.augment == "none"
    assert data.classes == ["benign", "malignant"] and len(data.train) + len(data.val) + len(data.test) == 569
    assert torch.equal(data.test.images, load_dataset(str(path), label_column="target", seed=0).test.images)  # test fixed
    row = int(data.test.index[0])
    assert np.allclose(data.test.images[0].numpy(), frame.drop(columns="target").iloc[row].to_numpy(np.float32))
    with pytest.raises(KdkitError, match="^the training table has no label column 'label'; its columns are mean radius, "):
        load_dataset(str(path))
    with pytest.raises(KdkitError, match=f"^dataset path 'nope{suffix}' does not exist; check the path$"):
        load_dataset(f"nope{suffix}")
    with pytest.raises(KdkitError, match="^image_size=8 resizes the images of an ImageFolder, but dataset 'cancer' has inputs "
                                         r"\(30,\) it cannot resize; remove image_size$"):
        load_dataset(str(path), label_column="target", image_size=8)


def test_damaged_table_is_named(tmp_path):
    path = tmp_path / "t.parquet"
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(KdkitError, match=f"^cannot read the table {path} .*; check that it is a valid PARQUET file$"):
        load_dataset(str(path))


def test_distill_an_mlp_on_a_csv_end_to_end(tmp_path, monkeypatch, capsys):
    from kdkit.cli import main

    path, _ = breast_cancer_csv(tmp_path)
    monkeypatch.setattr(sys, "argv", ["kdkit", "distill", "--dataset", str(path), "--teacher", "mlp", "--student", "mlp",
                                      "--set", "label_column=target", "--epochs", "1", "--set", "progress=false",
                                      "--set", "report=false", "--out", str(tmp_path / "run")])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code in (0, None), capsys.readouterr().err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["dataset"] == "cancer"
    assert (tmp_path / "run" / "student").is_dir() and "augment: auto" in (tmp_path / "run" / "config.yaml").read_text()
    # evaluate reads the table as training did: label_column comes from the weights' sidecar
    weights = tmp_path / "run" / "student" / "seed0" / "best.safetensors"
    monkeypatch.setattr(sys, "argv", ["kdkit", "evaluate", str(weights), "--dataset", str(path), "--out", str(tmp_path / "m.json")])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code in (0, None), capsys.readouterr().err
    metrics = json.loads((tmp_path / "m.json").read_text())["metrics"]
    assert metrics["accuracy"] == pytest.approx(summary["rows"]["student"]["metrics"]["accuracy"]["mean"])


def test_loading_options_come_from_the_sidecar_config():
    from kdkit.data.registry import loading_options

    assert loading_options({"config": {"label_column": "target", "image_size": 64, "lr": 0.1}}) == \
        {"label_column": "target", "image_size": 64}
    assert loading_options({"config": {"label_column": 3, "image_size": "64"}}) == {}  # a damaged sidecar: left out
    assert loading_options({"config": "nonsense"}) == loading_options({}) == {}


# ---------------------------------------------------------------- ImageFolder image_size

def test_image_folder_of_mixed_sizes_loads_resized(tmp_path):
    from PIL import Image

    from test_data import make_image_folder

    written = make_image_folder(tmp_path / "pets", per_class=3)
    big = np.random.default_rng(5).integers(0, 256, (12, 10, 3), dtype=np.uint8)  # (H, W, C), not 8x8
    Image.fromarray(big).save(tmp_path / "pets" / "train" / "dog" / "001.png")
    with pytest.raises(KdkitError, match=r"differ in size .*; set image_size=N \(--set image_size=N\) to resize every image"):
        load_dataset(str(tmp_path / "pets"))
    data = load_dataset(str(tmp_path / "pets"), image_size=6, val_fraction=0.0)
    assert data.input_shape == (3, 6, 6)
    expected = np.asarray(Image.fromarray(big).resize((6, 6), Image.BILINEAR)).transpose(2, 0, 1).copy()  # Pillow's
    assert torch.equal(data.train.images[4], torch.from_numpy(expected))  # train/dog/001.png: the 5th train image
    small = np.asarray(Image.fromarray(written["test/cat/000.png"]).resize((6, 6), Image.BILINEAR)).transpose(2, 0, 1).copy()
    assert torch.equal(data.test.images[0], torch.from_numpy(small))
    assert load_dataset(str(tmp_path / "pets"), image_size=5).input_shape == (3, 5, 5)  # cached apart per size


def test_junk_samples_and_tables_give_a_dataset_or_one_line():
    """Random samples of random values (the fuzz contract of tests/robustness/test_fuzz.py): either a
    Dataset comes out, or a one-line KdkitError; never another exception."""
    import random

    rng = random.Random(0)
    values = [0, 1, "a", None, 1.5, [1, 2], [[1]], np.zeros(3), torch.zeros(2, 2), {"x": 1}, (1, 2), "", True,
              np.float32(2), torch.tensor(1), float("nan"), [1, "a"], b"x", pandas.NA, "a\nb"]
    keys = ["x", "input_ids", "pixel_values", "features", "label", "labels", "attention_mask", "z"]

    def sample():
        if rng.random() < 0.5:
            return (rng.choice(values), rng.choice(values))
        return {rng.choice(keys): rng.choice(values) for _ in range(3)}

    def outcome(*args, **kwargs):
        try:
            assert isinstance(as_dataset(*args, **kwargs), Dataset)
        except KdkitError as error:
            assert "\n" not in str(error)

    for _ in range(600):
        samples = [sample() for _ in range(rng.randint(0, 4))] * rng.randint(1, 6)
        outcome(samples, kind=rng.choice(["auto", "tokens", "table", "image"]))
    for _ in range(150):
        columns = {f"c{i}": [rng.choice(values) for _ in range(6)] for i in range(rng.randint(0, 2))}
        frame = pandas.DataFrame(columns | {"label": [rng.choice([0, 1, "a", None, True]) for _ in range(6)]})
        other = pandas.DataFrame({name: [rng.choice(values) for _ in range(3)] for name in frame.columns})
        outcome(frame, other if rng.random() < 0.5 else None)
