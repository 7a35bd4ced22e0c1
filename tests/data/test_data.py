"""Tests for kdkit.data: file formats, where files are found, splits, BatchLoader, augmentation.

Every test writes its own tiny files under tmp_path; only the last test reads the real
Fashion-MNIST copy in ../shared/data and skips when it is absent.
"""
import dataclasses
import gzip
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from kdkit.data import (BatchLoader, DATASETS, Split, crop, dataset_status, flip, from_arrays,
                        load_dataset, random_crop)
from kdkit.data import download as download_module
from kdkit.data import registry
from kdkit.data.dataset import stratified_split
from kdkit.errors import KdkitError

REAL_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """No test sees the developer's ~/.cache/kdkit, $KDKIT_DATA or $KDKIT_CACHE."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("KDKIT_DATA", raising=False)
    monkeypatch.delenv("KDKIT_CACHE", raising=False)
    return home


# ---------------------------------------------------------------- writers of tiny datasets

def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    data = idx_bytes(array)
    if gz:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def make_mnist(folder: Path, gz: bool = True, n_train: int = 100, n_test: int = 20, seed: int = 0):
    """Random 28x28 images, labels i % 10; returns the arrays written."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = dict(train_x=rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
                  train_y=np.arange(n_train, dtype=np.uint8) % 10,
                  test_x=rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
                  test_y=np.arange(n_test, dtype=np.uint8) % 10)
    write_idx(folder / "train-images-idx3-ubyte", arrays["train_x"], gz)
    write_idx(folder / "train-labels-idx1-ubyte", arrays["train_y"], gz)
    write_idx(folder / "t10k-images-idx3-ubyte", arrays["test_x"], gz)
    write_idx(folder / "t10k-labels-idx1-ubyte", arrays["test_y"], gz)
    return arrays


CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
               "truck"]


def make_cifar(folder: Path, n_per_batch: int = 20, protocol: int = 2) -> dict:
    """A cifar-10-batches-py folder with two train batches; returns the rows written."""
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True)
    rows = {}
    for name in ["data_batch_1", "data_batch_2", "test_batch"]:
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        labels = [i % 10 for i in range(n_per_batch)]
        rows[name] = data
        (folder / name).write_bytes(pickle.dumps({b"data": data, b"labels": labels}, protocol))
    meta = {b"label_names": [n.encode() for n in CIFAR_NAMES]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol))
    return rows


def make_image_folder(root: Path, splits=("train", "test"), classes=("cat", "dog", "emu"),
                      per_class: int = 5, mode: str = "RGB") -> dict:
    """PNG ImageFolder; returns {relative path: array written}."""
    from PIL import Image

    rng = np.random.default_rng(2)
    written = {}
    for split in splits:
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                shape = (8, 8, 3) if mode == "RGB" else (8, 8)
                pixels = rng.integers(0, 256, shape, dtype=np.uint8)
                Image.fromarray(pixels, mode).save(folder / f"{i:03d}.png")
                written[(folder / f"{i:03d}.png").relative_to(root).as_posix()] = pixels
    return written


def make_tar(source: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source, arcname=source.name)
    return archive


def rows_of(images: torch.Tensor) -> set[bytes]:
    return {bytes(image.numpy().tobytes()) for image in images}


# ---------------------------------------------------------------- IDX

@pytest.mark.parametrize("gz", [True, False])
def test_idx_loads_shapes_values_and_stratified_disjoint_splits(tmp_path, gz):
    arrays = make_mnist(tmp_path / "m", gz=gz)
    ds = load_dataset("mnist", data_dir=tmp_path / "m", download=False)
    assert ds.input_shape == (1, 28, 28) and ds.num_classes == 10 and ds.augment == "crop"
    assert (len(ds.train), len(ds.val), len(ds.test)) == (90, 10, 20)
    assert ds.train.images.dtype == torch.uint8 and ds.train.labels.dtype == torch.int64
    assert torch.equal(ds.test.images[:, 0], torch.from_numpy(arrays["test_x"]))  # test untouched
    kept, _ = stratified_split(arrays["train_y"], 0.1, 0)
    assert torch.equal(ds.train.images[:, 0], torch.from_numpy(arrays["train_x"][kept]))
    assert not rows_of(ds.train.images) & rows_of(ds.val.images)
    assert torch.bincount(ds.val.labels, minlength=10).tolist() == [1] * 10
    assert ds.mean[0] == pytest.approx(arrays["train_x"][kept].mean() / 255, rel=1e-6)


def test_idx_found_in_subfolder_named_after_dataset(tmp_path):
    make_mnist(tmp_path / "fashion-mnist")
    ds = load_dataset("fashion-mnist", data_dir=tmp_path, download=False)
    assert ds.classes[0] == "T-shirt/top" and len(ds.test) == 20


def test_val_split_depends_on_seed_but_test_never_changes(tmp_path):
    make_mnist(tmp_path)
    a = load_dataset("mnist", data_dir=tmp_path, seed=0, download=False)
    b = load_dataset("mnist", data_dir=tmp_path, seed=1, download=False)
    assert rows_of(a.val.images) != rows_of(b.val.images)
    assert torch.equal(a.test.images, b.test.images)


def test_corrupt_idx_bad_magic_names_the_file(tmp_path):
    make_mnist(tmp_path)
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    bad.write_bytes(gzip.compress(b"\x12\x34\x08\x03" + bytes(100)))
    with pytest.raises(KdkitError, match="train-images-idx3-ubyte.gz.*bad IDX magic"):
        load_dataset("mnist", data_dir=tmp_path, download=False)


def test_truncated_idx_and_truncated_gzip_name_the_file(tmp_path):
    make_mnist(tmp_path)
    images = tmp_path / "train-images-idx3-ubyte.gz"
    data = gzip.decompress(images.read_bytes())
    images.write_bytes(gzip.compress(data[:-100]))
    with pytest.raises(KdkitError, match="train-images-idx3-ubyte.gz.*corrupt"):
        load_dataset("mnist", data_dir=tmp_path, download=False)
    images.write_bytes(gzip.compress(data)[:-500])
    with pytest.raises(KdkitError, match="train-images-idx3-ubyte.gz.*download it again"):
        load_dataset("mnist", data_dir=tmp_path, download=False)


def test_idx_label_count_mismatch(tmp_path):
    make_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(99, np.uint8), gz=True)
    with pytest.raises(KdkitError, match="100 images but labels"):
        load_dataset("mnist", data_dir=tmp_path, download=False)


# ---------------------------------------------------------------- CIFAR pickles

@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL])
def test_cifar_batches_folder(tmp_path, protocol):
    rows = make_cifar(tmp_path / "cifar-10-batches-py", protocol=protocol)
    ds = load_dataset("cifar10", data_dir=tmp_path, val_fraction=0.25, download=False)
    assert ds.classes == CIFAR_NAMES and ds.input_shape == (3, 32, 32) and ds.augment == "crop_flip"
    assert (len(ds.train), len(ds.val), len(ds.test)) == (30, 10, 20)
    expected = torch.from_numpy(rows["test_batch"].reshape(-1, 3, 32, 32))  # R, G, B planes
    assert torch.equal(ds.test.images, expected)


def test_cifar_tar_gz_and_plain_path(tmp_path):
    source = tmp_path / "src" / "cifar-10-batches-py"
    rows = make_cifar(source)
    archive = make_tar(source, tmp_path / "cifar-10-python.tar.gz")
    ds = load_dataset("cifar10", data_dir=tmp_path, download=False)
    assert len(ds.test) == 20 and ds.classes == CIFAR_NAMES
    by_path = load_dataset(str(archive))
    expected = torch.from_numpy(rows["test_batch"]).view(-1, 3, 32, 32)
    assert torch.equal(by_path.test.images, expected)


def test_malicious_pickle_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return exec, (f"open({str(marker)!r}, 'w').write('x')",)

    make_cifar(tmp_path / "cifar-10-batches-py")
    payload = pickle.dumps({b"data": Evil(), b"labels": [0]}, protocol=2)
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(payload)
    with pytest.raises(KdkitError, match="data_batch_1.*refusing to load .*exec"):
        load_dataset("cifar10", data_dir=tmp_path, download=False)
    assert not marker.exists()
    pickle.loads(payload)  # proof that the payload is live: plain pickle runs it
    assert marker.exists()


def test_cifar_labels_out_of_range(tmp_path):
    make_cifar(tmp_path / "cifar-10-batches-py")
    data = np.zeros((4, 3072), np.uint8)
    batch = pickle.dumps({b"data": data, b"labels": [0, 1, 2, 12]})
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(batch)
    with pytest.raises(KdkitError, match="labels range 0..12 but there are 10 classes"):
        load_dataset("cifar10", data_dir=tmp_path, download=False)


def test_truncated_archive_names_the_file(tmp_path):
    make_cifar(tmp_path / "src" / "cifar-10-batches-py")
    archive = make_tar(tmp_path / "src" / "cifar-10-batches-py", tmp_path / "c.tar.gz")
    archive.write_bytes(archive.read_bytes()[:2000])
    with pytest.raises(KdkitError, match="c.tar.gz is corrupt"):
        load_dataset(str(archive))


# ---------------------------------------------------------------- ImageFolder

def test_image_folder_of_pngs(tmp_path):
    written = make_image_folder(tmp_path / "pets")
    ds = load_dataset(str(tmp_path / "pets"), val_fraction=0.2)
    assert ds.name == "pets" and ds.classes == ["cat", "dog", "emu"] and ds.input_shape == (3, 8, 8)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (12, 3, 15)
    expected = np.stack([written[f"test/{c}/{i:03d}.png"] for c in ds.classes for i in range(5)])
    assert torch.equal(ds.test.images, torch.from_numpy(expected).permute(0, 3, 1, 2))
    assert ds.test.labels.tolist() == [0] * 5 + [1] * 5 + [2] * 5


def test_image_folder_tar_gz_is_decoded_once_then_cached(tmp_path, isolated_home, monkeypatch):
    make_image_folder(tmp_path / "pets", mode="L")
    archive = make_tar(tmp_path / "pets", tmp_path / "pets.tar.gz")
    first = load_dataset(str(archive))
    assert first.input_shape == (1, 8, 8) and first.name == "pets" and first.augment == "crop"
    cached = list((isolated_home / ".cache" / "kdkit" / "decoded").glob("pets.tar.gz-*"))
    assert len(cached) == 1 and (cached[0] / "x_train.npy").is_file()
    monkeypatch.setattr(registry.imagefolder, "read_image_tree", None)  # a second decode would fail
    second = load_dataset(str(archive))
    assert torch.equal(first.train.images, second.train.images)
    assert second.classes == first.classes


def test_image_folder_without_splits_carves_fixed_test(tmp_path):
    make_image_folder(tmp_path / "flat", splits=("",), per_class=10)
    a = load_dataset(str(tmp_path / "flat"), seed=0)
    b = load_dataset(str(tmp_path / "flat"), seed=5)
    assert len(a.test) == 6 and torch.equal(a.test.images, b.test.images)
    assert torch.bincount(a.test.labels).tolist() == [2, 2, 2]


def test_undecodable_image_names_the_file(tmp_path):
    make_image_folder(tmp_path / "pets")
    (tmp_path / "pets" / "train" / "dog" / "001.png").write_bytes(b"not a png")
    with pytest.raises(KdkitError, match="train/dog/001.png.*damaged"):
        load_dataset(str(tmp_path / "pets"))


# ---------------------------------------------------------------- digits and arrays

def test_digits_fixed_test_split():
    ds = load_dataset("digits")
    assert len(ds.train) + len(ds.val) + len(ds.test) == 1797
    assert len(ds.test) == pytest.approx(0.2 * 1797, abs=10)
    assert ds.input_shape == (1, 8, 8) and ds.train.images.max() == 255
    assert torch.equal(ds.test.labels, load_dataset("digits", seed=3).test.labels)


def test_from_arrays_images_channels_last_and_tabular():
    x = np.random.default_rng(0).integers(0, 256, (40, 6, 6, 3), dtype=np.uint8)
    y = np.arange(40) % 4
    ds = from_arrays(x, y, x[:8], y[:8])
    assert ds.input_shape == (3, 6, 6) and ds.classes == ["0", "1", "2", "3"]
    assert torch.equal(ds.test.images, torch.from_numpy(x[:8]).permute(0, 3, 1, 2))
    table = torch.randn(50, 5) * 3 + 7
    ds = from_arrays(table, torch.arange(50) % 2, table[:10], torch.arange(10) % 2, val_fraction=0)
    assert ds.input_shape == (5,) and ds.kind == "table" and ds.train.images.dtype == torch.float32
    assert np.allclose(ds.mean, table.mean(0).numpy(), atol=1e-5)
    assert np.allclose(ds.std, table.std(0, unbiased=False).numpy(), atol=1e-5)  # population std, per feature
    before = ds.train.images.clone()
    loader = BatchLoader(ds.train, 64, shuffle=False, mean=ds.mean, std=ds.std)
    x, _, _ = next(iter(loader))  # float data is standardised, never scaled by 1/255
    assert x.shape == (50, 5) and torch.allclose(x.mean(0), torch.zeros(5), atol=1e-5)
    assert torch.allclose(x.std(0, unbiased=False), torch.ones(5), atol=1e-4)
    assert torch.equal(ds.train.images, before)  # normalising in place never touches the split


def test_from_arrays_token_ids_stay_integers():
    ids = torch.randint(1, 1000, (40, 12))
    ids[:, 9:] = 0  # padding
    with pytest.raises(KdkitError, match=r"x_train is 40 rows of 12 integers: token ids or table features\? pass kind='tokens'"):
        from_arrays(ids, torch.arange(40) % 2, ids[:8], torch.arange(8) % 2)
    ds = from_arrays(ids, torch.arange(40) % 2, ids[:8], torch.arange(8) % 2, kind="tokens", val_fraction=0)
    assert ds.kind == "tokens" and ds.input_shape == (12,) and ds.input_shape.dtype == torch.int64
    assert ds.mean == () and ds.std == ()
    x, _, idx = next(iter(BatchLoader(ds.train, 16, shuffle=True, mean=ds.mean, std=ds.std)))
    assert x.dtype == torch.int64 and torch.equal(x, ids[idx])  # never made float, never normalised
    with pytest.raises(KdkitError, match="augment=flip transforms images, but these inputs are token ids; use augment=none"):
        BatchLoader(ds.train, 16, shuffle=True, augment="flip")
    with pytest.raises(KdkitError, match="mix=mixup blends inputs, but token ids cannot be blended"):
        BatchLoader(ds.train, 16, shuffle=True, mix="mixup")
    table = from_arrays(ids, torch.arange(40) % 2, ids[:8], torch.arange(8) % 2, kind="table", val_fraction=0)
    assert table.kind == "table" and table.train.images.dtype == torch.float32
    with pytest.raises(KdkitError, match="token ids must be 0 or more"):
        from_arrays(-ids, torch.arange(40) % 2, ids[:8], torch.arange(8) % 2, kind="tokens")


def test_from_arrays_rejects_bad_labels():
    x = np.zeros((10, 4, 4), np.uint8)
    with pytest.raises(KdkitError, match="labels range"):
        from_arrays(x, np.arange(10) % 3, x, np.arange(10) % 3, classes=["a", "b"])
    with pytest.raises(KdkitError, match="10 images but labels"):
        from_arrays(x, np.zeros(9, int), x, np.zeros(10, int))


# ---------------------------------------------------------------- where files are found

def test_resolution_order_data_dir_then_env_then_cache(tmp_path, monkeypatch, isolated_home):
    given = make_mnist(tmp_path / "given", seed=1)["test_x"]
    env = make_mnist(tmp_path / "env", seed=2)["test_x"]
    cache = make_mnist(isolated_home / ".cache" / "kdkit" / "mnist", seed=3)["test_x"]
    monkeypatch.setenv("KDKIT_DATA", str(tmp_path / "env"))

    def test_images(**kwargs):
        return load_dataset("mnist", download=False, **kwargs).test.images[:, 0].numpy()

    assert np.array_equal(test_images(data_dir=tmp_path / "given"), given)
    assert np.array_equal(test_images(), env)
    monkeypatch.delenv("KDKIT_DATA")
    assert np.array_equal(test_images(), cache)


@pytest.fixture
def system_folder(tmp_path, monkeypatch):
    """Stands in for /usr/share/datasets/fashion-mnist, which may or may not be installed."""
    folder = tmp_path / "usr" / "share" / "datasets" / "fashion-mnist"
    spec = dataclasses.replace(registry.NAMED["fashion-mnist"], system_folders=(str(folder),))
    monkeypatch.setitem(registry.NAMED, "fashion-mnist", spec)
    return folder


def test_missing_dataset_lists_every_place(isolated_home, system_folder):
    with pytest.raises(KdkitError) as error:
        load_dataset("fashion-mnist", download=False)
    message = str(error.value)
    for part in ["dataset 'fashion-mnist' not found", "--data-dir (not given)",
                 "$KDKIT_DATA (not set)", str(isolated_home / ".cache/kdkit/fashion-mnist"),
                 str(system_folder), "download disabled", "Fix: pass --data-dir DIR holding",
                 "apt-get install dataset-fashion-mnist"]:
        assert part in message
    assert "\n" not in message


def test_system_folder_is_used_last(system_folder, isolated_home):
    make_mnist(system_folder, n_test=30)
    assert len(load_dataset("fashion-mnist", download=False).test) == 30
    make_mnist(isolated_home / ".cache" / "kdkit" / "fashion-mnist", n_test=40)
    assert len(load_dataset("fashion-mnist", download=False).test) == 40


class _BrokenResponse:
    """Sends a few bytes, then the connection drops."""

    headers = {"Content-Length": "1000"}

    def __init__(self):
        self.sent = False

    def read(self, size):
        if self.sent:
            raise OSError("connection reset")
        self.sent = True
        return b"x" * 100

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_failed_download_leaves_no_partial_file(monkeypatch, isolated_home):
    monkeypatch.setattr(download_module, "urlopen", lambda url, timeout: _BrokenResponse())
    with pytest.raises(KdkitError, match="download failed.*connection reset"):
        load_dataset("mnist")
    folder = isolated_home / ".cache" / "kdkit" / "mnist"
    assert list(folder.iterdir()) == []


def test_download_with_wrong_checksum_is_discarded(tmp_path, monkeypatch):
    def urlopen(url, timeout):
        response = _BrokenResponse()
        response.read = io.BytesIO(b"wrong bytes").read
        return response

    monkeypatch.setattr(download_module, "urlopen", urlopen)
    with pytest.raises(KdkitError, match="checksum mismatch"):
        download_module.fetch("f.gz", "0" * 32, ("http://example.invalid/f.gz",), tmp_path / "d")
    assert list((tmp_path / "d").iterdir()) == []


def test_unknown_name_suggests_the_closest_and_missing_path_is_named():
    with pytest.raises(KdkitError, match="'fashion_mnist'; did you mean 'fashion-mnist'"):
        load_dataset("fashion_mnist")
    with pytest.raises(KdkitError, match="dataset path 'no/such/folder' does not exist"):
        load_dataset("no/such/folder")


def test_named_dataset_with_wrong_class_count_is_refused(tmp_path):
    make_image_folder(tmp_path / "pets")
    make_tar(tmp_path / "pets", tmp_path / "cifar10-jpeg.tar.gz")
    with pytest.raises(KdkitError, match="has 3 classes but cifar10 has 10; is this the right"):
        load_dataset("cifar10", data_dir=tmp_path, download=False)


def test_dataset_status_reports_found_and_missing(tmp_path):
    make_mnist(tmp_path / "mnist")
    status = {row["name"]: row for row in dataset_status(tmp_path)}
    assert set(status) == set(DATASETS)
    assert status["mnist"]["found"] and status["mnist"]["path"] == str(tmp_path / "mnist")
    assert not status["cifar100"]["found"] and status["digits"]["found"]


# ---------------------------------------------------------------- BatchLoader and augmentation

def small_split(n: int = 23) -> Split:
    images = torch.arange(n * 3 * 4 * 4, dtype=torch.int64).remainder(251).add(1)
    return Split(images=images.to(torch.uint8).view(n, 3, 4, 4), labels=torch.arange(n) % 5)


def test_loader_covers_every_sample_once_and_normalises():
    split = small_split()
    loader = BatchLoader(split, 5, shuffle=True, seed=3, mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.1))
    batches = list(loader)
    assert len(loader) == len(batches) == 5
    idx = torch.cat([i for _, _, i in batches])
    assert sorted(idx.tolist()) == list(range(23)) and idx.tolist() != list(range(23))
    x, y, i = batches[0]
    assert x.dtype == torch.float32 and torch.equal(y, split.labels[i])
    expected = (split.images[i].float() / 255 - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) \
        / torch.tensor([0.2, 0.2, 0.1]).view(1, 3, 1, 1)
    assert torch.allclose(x, expected, atol=1e-5)
    assert len(BatchLoader(split, 5, shuffle=False, drop_last=True)) == 4


def test_loader_same_seed_and_epoch_give_same_batches():
    def run(seed, epoch):
        loader = BatchLoader(small_split(), 4, shuffle=True, seed=seed, augment="crop_flip")
        loader.set_epoch(epoch)
        return [torch.cat([x.flatten(), i.float()]) for x, _, i in loader]

    assert all(torch.equal(a, b) for a, b in zip(run(0, 2), run(0, 2)))
    assert not torch.equal(run(0, 2)[0], run(0, 3)[0])
    assert not torch.equal(run(0, 2)[0], run(1, 2)[0])


def test_iter_from_equals_tail_of_full_iteration():
    loader = BatchLoader(small_split(), 4, shuffle=True, seed=1, augment="crop_flip")
    loader.set_epoch(5)
    full = list(loader)
    tail = list(loader.iter_from(3))
    assert len(tail) == len(full) - 3
    for (xa, ya, ia), (xb, yb, ib) in zip(full[3:], tail):
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(ia, ib)
    with pytest.raises(KdkitError):
        loader.iter_from(99)


def test_crop_zero_shift_and_double_flip_are_identity():
    images = small_split().images
    assert torch.equal(crop(images, torch.zeros(len(images), 2, dtype=torch.long), 4), images)
    mask = torch.arange(len(images)) % 2 == 0
    assert torch.equal(flip(flip(images, mask), mask), images)
    assert torch.equal(flip(images, mask)[0], images[0].flip(2))
    assert torch.equal(flip(images, mask)[1], images[1])


def test_random_crop_pixels_come_from_the_image_or_padding():
    images = small_split().images  # values 1..251: 0 can only be padding
    generator = torch.Generator().manual_seed(0)
    out = random_crop(images, generator, pad=2)
    assert out.shape == images.shape and out.dtype == torch.uint8
    shifts = torch.randint(-2, 3, (len(images), 2), generator=torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for b, (dy, dx) in enumerate(shifts.tolist()):  # a slow per-sample reference
        assert torch.equal(out[b], padded[b, :, 2 + dy:2 + dy + 4, 2 + dx:2 + dx + 4])
    assert (out == 0).any() and set(out[out > 0].tolist()) <= set(images.flatten().tolist())


# ---------------------------------------------------------------- the real Fashion-MNIST copy

@pytest.mark.skipif(not (REAL_DATA / "fashion-mnist").is_dir(),
                    reason="real Fashion-MNIST not present at ../shared/data/fashion-mnist "
                           "(only on development machines)")
def test_real_fashion_mnist():
    ds = load_dataset("fashion-mnist", data_dir=REAL_DATA, download=False)
    assert len(ds.train) + len(ds.val) == 60000 and len(ds.test) == 10000
    assert ds.num_classes == 10 and ds.input_shape == (1, 28, 28)
    assert torch.bincount(ds.test.labels).tolist() == [1000] * 10


def test_flip_only_augment_never_translates():
    import torch

    from kdkit.data import augment_batch

    images = torch.arange(2 * 1 * 3 * 4, dtype=torch.uint8).view(2, 1, 3, 4).repeat(50, 1, 1, 1)
    out = augment_batch(images, torch.Generator().manual_seed(0), "flip")
    same = (out == images).flatten(1).all(1)
    mirrored = (out == images.flip(3)).flatten(1).all(1)
    assert bool((same | mirrored).all()) and 0 < int(mirrored.sum()) < len(images)


def test_idx_gzip_bomb_is_not_unpacked(tmp_path):
    """A small .gz expanding to far more than its header declares is refused after reading only
    what the header declares (+1 byte); a header claiming more than the file can hold is refused
    before any decompression."""
    import gzip
    import struct
    import tracemalloc

    from kdkit.data.idx import read_idx

    bomb = tmp_path / "bomb.gz"
    with gzip.open(bomb, "wb") as f:
        f.write(b"\x00\x00\x08\x01" + struct.pack(">I", 100))
        for _ in range(64):
            f.write(bytes(1 << 20))  # 64 MiB of zeros after a 100-value header: ~64 KB on disk
    tracemalloc.start()
    with pytest.raises(KdkitError, match=r"bomb.gz is corrupt or truncated \(shape \(100,\) needs 100 bytes of values, found more\)"):
        read_idx(bomb)
    assert tracemalloc.get_traced_memory()[1] < 8 << 20
    tracemalloc.stop()
    claim = tmp_path / "claim.gz"
    claim.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + struct.pack(">3I", 1 << 20, 1 << 10, 1 << 10)))
    with pytest.raises(KdkitError, match="more than a .*-byte file can hold"):
        read_idx(claim)
