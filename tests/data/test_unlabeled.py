"""kdkit.data.unlabeled: every kind of `unlabeled` source on tiny files, the shape and type checks,
and what appending does to the training split (labels, index, statistics). The last test reads the
real MNIST and Fashion-MNIST copies in ../shared/data and skips when they are absent."""
import types

import numpy as np
import pytest
import torch
from PIL import Image
from test_data import REAL_DATA, make_mnist, make_tar

from kdkit.data import UNLABELED, from_arrays, load_dataset
from kdkit.data.labels import sample_counts
from kdkit.data.prepare import label_scarce
from kdkit.data.unlabeled import add_unlabeled, load_unlabeled
from kdkit.errors import KdkitError


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Decoded folders go to this test's own cache; no $KDKIT_DATA is seen."""
    monkeypatch.setenv("KDKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("KDKIT_DATA", raising=False)


def grey(shape=(8, 8), n=40, name="arrays", dtype=np.uint8):
    """A labelled dataset of n grey images, 4 classes, val and test carved."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, 1, *shape)).astype(dtype)
    y = np.arange(n) % 4
    return from_arrays(x, y, x[:8], y[:8], val_fraction=0.25, name=name)


def write_pngs(folder, names, shape=(8, 8), mode="L", seed=3) -> dict:
    """PNGs at `names` (relative paths) below folder; returns {name: pixels written}."""
    rng = np.random.default_rng(seed)
    written = {}
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, shape + ((3,) if mode == "RGB" else ()), dtype=np.uint8)
        Image.fromarray(pixels, mode).save(path)
        written[name] = pixels
    return written


def test_flat_and_nested_folders_give_every_image_in_path_order(tmp_path):
    data = grey()
    flat = write_pngs(tmp_path / "flat", ["b.png", "a.png", "c.png"])
    got = load_unlabeled(str(tmp_path / "flat"), data)
    assert got.shape == (3, 1, 8, 8) and got.dtype == torch.uint8
    assert torch.equal(got[:, 0], torch.from_numpy(np.stack([flat[n] for n in ("a.png", "b.png", "c.png")])))
    nested = write_pngs(tmp_path / "nested", ["z.png", "cat/1.png", "deep/er/x.jpg.png"], seed=4)
    (tmp_path / "nested" / "notes.txt").write_text("not an image")
    got = load_unlabeled(str(tmp_path / "nested"), data)  # folder names are no labels; other files ignored
    assert torch.equal(got[:, 0], torch.from_numpy(np.stack([nested[n] for n in sorted(nested)])))
    # an archive of the folder reads the same
    archived = load_unlabeled(str(make_tar(tmp_path / "nested", tmp_path / "nested.tar.gz")), data)
    assert torch.equal(archived, got)


def test_a_folder_read_as_unlabelled_and_as_a_dataset_are_cached_apart(tmp_path):
    written = write_pngs(tmp_path / "imgs", [f"{c}/{i}.png" for c in ("a", "b") for i in range(5)], mode="RGB")
    dataset = load_dataset(str(tmp_path / "imgs"))  # an ImageFolder: 8 train + val, 2 carved as test
    assert len(dataset.train) + len(dataset.val) == 8
    colour = from_arrays(np.zeros((4, 3, 8, 8), np.uint8), np.arange(4) % 2, np.zeros((2, 3, 8, 8), np.uint8),
                         np.arange(2))
    for _ in range(2):  # decoded once, then read from the cache: all 10 images, not the dataset's split
        got = load_unlabeled(str(tmp_path / "imgs"), colour)
        assert got.shape == (10, 3, 8, 8)
        assert torch.equal(got.permute(0, 2, 3, 1), torch.from_numpy(np.stack([written[n] for n in sorted(written)])))
    assert len(load_dataset(str(tmp_path / "imgs")).train) == len(dataset.train)
    decoded = sorted(p.name for p in (tmp_path / "cache" / "decoded").iterdir())
    assert len(decoded) == 2 and sum("-unlabeled-" in name for name in decoded) == 1


def test_image_shape_mismatches_name_both_shapes(tmp_path):
    data = grey()
    write_pngs(tmp_path / "colour", ["a.png", "b.png"], mode="RGB")
    with pytest.raises(KdkitError, match=r"are \(3, 8, 8\) uint8 but the labelled data's are \(1, 8, 8\) uint8"):
        load_unlabeled(str(tmp_path / "colour"), data)
    write_pngs(tmp_path / "big", ["a.png"], shape=(10, 12))
    with pytest.raises(KdkitError, match=r"are \(1, 10, 12\) uint8 but the labelled data's are \(1, 8, 8\)"):
        load_unlabeled(str(tmp_path / "big"), data)
    write_pngs(tmp_path / "mixed", ["a.png"]), write_pngs(tmp_path / "mixed", ["b.png"], shape=(9, 8))
    with pytest.raises(KdkitError, match="differ in size .a.png is 8x8, b.png is 8x9"):
        load_unlabeled(str(tmp_path / "mixed"), data)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "x.txt").write_text("")
    with pytest.raises(KdkitError, match="no images found in"):
        load_unlabeled(str(tmp_path / "empty"), data)
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "a.png").write_bytes((tmp_path / "big" / "a.png").read_bytes()[:40])
    with pytest.raises(KdkitError, match="cut/a.png") as error:
        load_unlabeled(str(tmp_path / "cut"), data)
    assert "\n" not in str(error.value)


def test_array_files_in_every_format_and_layout(tmp_path):
    from safetensors.numpy import save_file

    data = grey()
    x = np.random.default_rng(5).integers(0, 256, (6, 8, 8), dtype=np.uint8)
    expected = torch.from_numpy(x)[:, None]  # (6, 1, 8, 8)
    np.save(tmp_path / "hw.npy", x)  # (N, H, W)
    np.save(tmp_path / "hwc.npy", x[..., None])  # (N, H, W, C)
    np.savez(tmp_path / "one.npz", inputs=x[:, None])  # one array, any name
    np.savez(tmp_path / "named.npz", x=x, y=np.arange(6))  # the one named x
    save_file({"images": x[:, None].copy()}, str(tmp_path / "one.safetensors"))
    for name in ("hw.npy", "hwc.npy", "one.npz", "named.npz", "one.safetensors"):
        assert torch.equal(load_unlabeled(str(tmp_path / name), data), expected), name
    np.savez(tmp_path / "two.npz", a=x, b=x)
    with pytest.raises(KdkitError, match="holds 2 arrays .a, b.; save the inputs alone, or name them 'x'"):
        load_unlabeled(str(tmp_path / "two.npz"), data)
    np.save(tmp_path / "float.npy", x.astype(np.float32) / 255)
    with pytest.raises(KdkitError, match=r"are \(1, 8, 8\) float32 but the labelled data's are \(1, 8, 8\) uint8"):
        load_unlabeled(str(tmp_path / "float.npy"), data)
    np.save(tmp_path / "none.npy", np.zeros((0, 1, 8, 8), np.uint8))
    with pytest.raises(KdkitError, match="holds no inputs"):
        load_unlabeled(str(tmp_path / "none.npy"), data)
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(KdkitError, match="cannot be read"):
        load_unlabeled(str(tmp_path / "objects.npy"), data)  # never unpickled
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(KdkitError, match="neither a folder, an archive nor an array file"):
        load_unlabeled(str(tmp_path / "notes.txt"), data)


def test_float_arrays_for_float_data(tmp_path):
    data = grey(dtype=np.float32)
    x = np.random.default_rng(6).normal(size=(5, 1, 8, 8)).astype(np.float64)
    np.save(tmp_path / "x.npy", x)
    assert torch.equal(load_unlabeled(str(tmp_path / "x.npy"), data), torch.from_numpy(x.astype(np.float32)))


def test_a_split_of_another_registered_dataset(tmp_path):
    arrays = make_mnist(tmp_path / "mnist", n_train=30, n_test=10)
    data = grey((28, 28), name="fashion-mnist")
    train = load_unlabeled("mnist:train", data, data_dir=tmp_path, download=False)
    assert torch.equal(train[:, 0], torch.from_numpy(arrays["train_x"]))  # all of it: no validation carved
    test = load_unlabeled("MNIST:test", data, data_dir=tmp_path, download=False)
    assert torch.equal(test[:, 0], torch.from_numpy(arrays["test_x"]))
    with pytest.raises(KdkitError, match="names split 'val'; use mnist:train or mnist:test"):
        load_unlabeled("mnist:val", data, data_dir=tmp_path, download=False)
    with pytest.raises(KdkitError, match="not a file, a folder or a registered DATASET:split"):
        load_unlabeled("mnst:train", data)
    with pytest.raises(KdkitError, match=r"are \(1, 8, 8\) uint8 but the labelled data's are \(1, 28, 28\)"):
        load_unlabeled("digits:train", data)
    with pytest.raises(KdkitError, match="dataset 'mnist' not found"):
        load_unlabeled("mnist:train", data, data_dir=tmp_path / "elsewhere", download=False)


def test_the_dataset_trained_on_is_refused(tmp_path):
    make_mnist(tmp_path / "mnist", n_train=30, n_test=10)
    for name in ("mnist", "mnist-lt10", "mnist-lt10-step"):
        data = grey((28, 28), name=name)
        with pytest.raises(KdkitError, match="mnist:test is the test split this run is scored on"):
            load_unlabeled("mnist:test", data, data_dir=tmp_path, download=False)
        with pytest.raises(KdkitError, match="mnist:train is this run's own training data .* use labels_per_class"):
            load_unlabeled("mnist:train", data, data_dir=tmp_path, download=False)


def test_appended_samples_are_unlabelled_after_the_source_and_leave_the_statistics(tmp_path):
    data = grey()
    images = torch.full((5, 1, 8, 8), 255, dtype=torch.uint8)  # far from the labelled data's mean
    out = add_unlabeled(data, images)
    n = len(data.train)
    assert len(out.train) == n + 5 and torch.equal(out.train.images[n:], images)
    assert torch.equal(out.train.images[:n], data.train.images) and torch.equal(out.train.labels[:n], data.train.labels)
    assert out.train.labels[n:].tolist() == [UNLABELED] * 5
    assert out.train.index[n:].tolist() == list(range(data.source_size, data.source_size + 5))
    assert (out.mean, out.std) == (data.mean, data.std)
    assert out.val is data.val and out.test is data.test
    assert sample_counts(out.train) == {"labelled": n, "unlabeled": 5}


def test_label_scarce_hides_labels_then_appends(tmp_path):
    data = grey(n=80)
    np.save(tmp_path / "u.npy", np.zeros((7, 1, 8, 8), np.uint8))
    cfg = types.SimpleNamespace(labels_per_class=3, unlabeled=str(tmp_path / "u.npy"), data_dir=None, download=False,
                                progress=False, text_augment=0)
    out = label_scarce(cfg, data, seed=0)
    assert sample_counts(out.train) == {"labelled": 12, "unlabeled": len(data.train) - 12 + 7}
    assert torch.bincount(out.train.labels[out.train.labels >= 0]).tolist() == [3, 3, 3, 3]
    assert torch.equal(out.val.labels, data.val.labels)
    assert label_scarce(types.SimpleNamespace(labels_per_class=0, unlabeled=None, text_augment=0), data, seed=0) is data


@pytest.mark.skipif(not (REAL_DATA / "mnist").is_dir() or not (REAL_DATA / "fashion-mnist").is_dir(),
                    reason="real MNIST / Fashion-MNIST not in ../shared/data")
def test_real_mnist_as_unlabelled_transfer_data_for_fashion_mnist():
    data = load_dataset("fashion-mnist", data_dir=REAL_DATA / "fashion-mnist", download=False)
    images = load_unlabeled("mnist:train", data, data_dir=REAL_DATA, download=False)
    assert images.shape == (60_000, 1, 28, 28) and images.dtype == torch.uint8
    out = add_unlabeled(data, images)
    assert sample_counts(out.train) == {"labelled": 54_000, "unlabeled": 60_000}
    assert (out.mean, out.std) == (data.mean, data.std)
