"""Datasets larger than memory: decoding into memory-mapped cache files, splits kept on disk, and
the loader's background workers. Every test forces the on-disk path with KDKIT_MEMORY_LIMIT=0 on
tiny image folders and compares against the in-memory path."""
import errno
import json
import os
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from kdkit.checkpoint import load_weights
from kdkit.config import TrainConfig, apply_overrides
from kdkit.data import BatchLoader, load_dataset
from kdkit.data import dataset as dataset_module
from kdkit.errors import KdkitError
from kdkit.recipes import run_train
from test_data import make_image_folder


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KDKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("KDKIT_MEMORY_LIMIT", raising=False)
    return tmp_path / "cache"


def _load(path, monkeypatch, limit, **kw):
    monkeypatch.setenv("KDKIT_MEMORY_LIMIT", str(limit))
    return load_dataset(str(path), **kw)


def _mapped(split) -> str | None:
    """The file the split's images are memory-mapped from (per /proc/self/maps), None when in RAM."""
    pointer = split.images.data_ptr()
    for line in open("/proc/self/maps"):
        fields = line.split()
        start, end = (int(v, 16) for v in fields[0].split("-"))
        if start <= pointer < end:
            return fields[5] if len(fields) > 5 and fields[5].startswith("/") else None
    return None


@pytest.mark.parametrize("layout", [("train", "test"), ("",)], ids=["with-test", "test-carved"])
def test_on_disk_splits_equal_in_memory_splits(tmp_path, monkeypatch, isolated_cache, layout):
    make_image_folder(tmp_path / "pets", splits=layout, per_class=12)
    memory = _load(tmp_path / "pets", monkeypatch, 10**12, seed=3)
    disk = _load(tmp_path / "pets", monkeypatch, 0, seed=3)
    for name in ("train", "val", "test"):
        a, b = getattr(memory, name), getattr(disk, name)
        assert not _mapped(a) and _mapped(b), name
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels), name
        assert torch.equal(a.index, b.index), name
    assert (memory.mean, memory.std) == (disk.mean, disk.std)
    written = sorted((isolated_cache / "decoded").glob("pets-*/splits/*.npy"))
    # train and val are always copies; a source's own test split is mapped as it is
    assert len(written) == (2 if layout == ("train", "test") else 3)
    stamps = [p.stat().st_mtime_ns for p in written]
    again = _load(tmp_path / "pets", monkeypatch, 0, seed=3)  # same rows: the files are reused
    assert [p.stat().st_mtime_ns for p in written] == stamps
    assert torch.equal(again.train.images, memory.train.images)
    other = _load(tmp_path / "pets", monkeypatch, 0, seed=4)  # another validation carve: new files
    assert len(list((isolated_cache / "decoded").glob("pets-*/splits/*.npy"))) > len(written)
    assert not torch.equal(other.val.index, disk.val.index)


def test_decoded_cache_is_mapped_and_matches_the_pixels(tmp_path, monkeypatch, isolated_cache):
    written = make_image_folder(tmp_path / "mixed", splits=("train", "test"), per_class=2, mode="L")
    from PIL import Image
    colour = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)
    Image.fromarray(colour, "RGB").save(tmp_path / "mixed" / "train" / "cat" / "999.png")
    data = _load(tmp_path / "mixed", monkeypatch, 0, val_fraction=0.0)
    assert data.input_shape == (3, 8, 8)  # one colour image: every image read as RGB
    x_train = np.load(next((isolated_cache / "decoded").glob("mixed-*")) / "x_train.npy", mmap_mode="c")
    paths = sorted(p for p in written if p.startswith("train/")) + ["train/cat/999.png"]
    expected = {p: np.repeat(written[p][None], 3, axis=0) for p in paths[:-1]}
    expected["train/cat/999.png"] = colour.transpose(2, 0, 1)
    assert {bytes(x.tobytes()) for x in x_train} == {bytes(e.tobytes()) for e in expected.values()}
    assert _mapped(data.train).endswith("/x_train.npy")  # val_fraction 0: the decoded file itself, no copy
    assert torch.equal(data.train.images, torch.from_numpy(x_train))


def test_bad_memory_limit_is_one_line(monkeypatch):
    monkeypatch.setenv("KDKIT_MEMORY_LIMIT", "8GB")
    with pytest.raises(KdkitError, match="KDKIT_MEMORY_LIMIT must be a number of bytes, got '8GB'"):
        dataset_module.memory_limit()


def _no_space(fd, offset, length):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_for_splits_is_a_clear_error(tmp_path, monkeypatch):
    make_image_folder(tmp_path / "pets", per_class=6)
    _load(tmp_path / "pets", monkeypatch, 10**12)  # the decoded cache is written while there is room
    monkeypatch.setattr(os, "posix_fallocate", _no_space)
    with pytest.raises(KdkitError, match=r"cannot write a 0\.0 GB split to .*splits .*No space left.*KDKIT_MEMORY_LIMIT"):
        _load(tmp_path / "pets", monkeypatch, 0)
    assert not list(tmp_path.glob("cache/decoded/*/splits/*.tmp"))  # nothing half-written left


def test_full_disk_for_the_decoded_cache_decodes_in_memory(tmp_path, monkeypatch, isolated_cache):
    make_image_folder(tmp_path / "pets", per_class=4)
    monkeypatch.setattr(os, "posix_fallocate", _no_space)
    data = _load(tmp_path / "pets", monkeypatch, 10**12)
    assert len(data.train) + len(data.val) == 12 and len(data.test) == 12
    assert not list((isolated_cache / "decoded").iterdir())  # no cache folder, no temporary left


@pytest.mark.parametrize("augment,sampler", [("crop_flip", "none"), ("crop", "class_balanced"), ("none", "none")])
def test_workers_give_the_same_batches_in_the_same_order(tmp_path, monkeypatch, augment, sampler):
    make_image_folder(tmp_path / "pets", per_class=20)
    data = _load(tmp_path / "pets", monkeypatch, 0)
    assert _mapped(data.train)
    kw = dict(shuffle=True, seed=5, augment=augment, sampler=sampler, mean=data.mean, std=data.std)
    plain = BatchLoader(data.train, 7, **kw)
    threaded = BatchLoader(data.train, 7, workers=3, **kw)
    for epoch in (0, 1):
        plain.set_epoch(epoch)
        threaded.set_epoch(epoch)
        a, b = list(plain), list(threaded)
        assert len(a) == len(b) == len(plain)
        for (xa, ya, ia), (xb, yb, ib) in zip(a, b):
            assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(ia, ib)
    tail = list(threaded.iter_from(3))  # resuming mid-epoch with workers
    assert all(torch.equal(x, y[0]) for (x, *_), y in zip(tail, a[3:]))


def test_breaking_out_of_a_threaded_epoch_stops_its_workers(tmp_path, monkeypatch):
    make_image_folder(tmp_path / "pets", per_class=20)
    data = _load(tmp_path / "pets", monkeypatch, 0)
    loader = BatchLoader(data.train, 2, shuffle=True, workers=2, augment="crop")
    batches = iter(loader)
    next(batches)
    batches.close()  # what a `break` does
    assert not [t for t in threading.enumerate() if t.name.startswith("kdkit-batches")]


def test_negative_workers_are_refused(tmp_path, digits):
    with pytest.raises(KdkitError, match="workers must be 0 .* got -1"):
        BatchLoader(digits.train, 8, shuffle=False, workers=-1)


def test_training_from_disk_with_workers_equals_training_in_memory(tmp_path, monkeypatch, isolated_cache):
    make_image_folder(tmp_path / "pets", per_class=20)
    base = {"dataset": str(tmp_path / "pets"), "model": "cnn-tiny", "epochs": 2, "batch_size": 8, "lr": 0.05,
            "progress": False, "log_every": 5, "device": "cpu"}
    monkeypatch.setenv("KDKIT_MEMORY_LIMIT", str(10**12))
    memory = run_train(apply_overrides(TrainConfig(), base | {"out": str(tmp_path / "memory")}))
    monkeypatch.setenv("KDKIT_MEMORY_LIMIT", "0")
    disk = run_train(apply_overrides(TrainConfig(), base | {"out": str(tmp_path / "disk"), "workers": 2}))
    assert list(isolated_cache.glob("decoded/pets-*/splits/x_train-*.npy"))  # train came from disk
    assert disk["metrics"] == memory["metrics"]
    a, b = load_weights(tmp_path / "memory" / "last.safetensors")[0], load_weights(tmp_path / "disk" / "last.safetensors")[0]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_large_data_benchmark_runs_every_mode_and_writes_ratios(tmp_path):
    """benchmarks/large_data.py at a toy size: every mode runs in its own process, the file is written."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import large_data

    out = tmp_path / "large.json"
    large_data.main(["--gigabytes", "0.003", "--batch-size", "32", "--batches", "4", "--repeats", "2",
                     "--json", str(out)])
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert set(rows) == {"memory", "memory_workers", "disk_first", "disk", "disk_workers"}
    for name, row in rows.items():
        assert row["loader_images_per_second"] > 0 and row["peak_anon_bytes"] > 0, name
        assert len(row["loader_images_per_second_runs"]) == (1 if name == "disk_first" else 2)
    assert rows["disk_workers"]["workers"] == 2 and rows["disk"]["workers"] == 0
    assert report["dataset_bytes"] == rows["memory"]["images_bytes"] > 0.0029e9
    assert report["ratios"]["loader_workers_over_disk"] == pytest.approx(
        rows["disk_workers"]["loader_images_per_second"] / rows["disk"]["loader_images_per_second"])


def test_relative_cache_path_keeps_the_decoded_images(tmp_path, monkeypatch):
    """The decoded file is flushed in place, never saved over itself (which would truncate it)."""
    make_image_folder(tmp_path / "pets", per_class=4)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KDKIT_CACHE", "relative-cache")
    memory = load_dataset(str(tmp_path / "pets"), val_fraction=0.0)
    again = load_dataset(str(tmp_path / "pets"), val_fraction=0.0)  # from the stored files
    monkeypatch.setenv("KDKIT_CACHE", str(tmp_path / "fresh"))
    fresh = load_dataset(str(tmp_path / "pets"), val_fraction=0.0)
    assert torch.equal(memory.train.images, fresh.train.images) and torch.equal(again.train.images, fresh.train.images)
    assert memory.train.images.float().std() > 0  # real pixels, not a zeroed file
