"""Reader for the official CIFAR-10 / CIFAR-100 "python version" batches, in a folder or an archive.

CIFAR-10: `cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`.
CIFAR-100: `cifar-100-python/{train, test, meta}`.
Each batch is a pickled dict: b"data" (N, 3072) uint8 rows (1024 red, 1024 green, 1024 blue,
row-major 32x32) and b"labels" (CIFAR-10) or b"fine_labels" (CIFAR-100).
"""
import codecs
import io
import pickle
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np

from kdkit.data.dataset import RawData, corrupt_file
from kdkit.data.files import Tree
from kdkit.errors import KdkitError

_core = getattr(np, "_core", None) or np.core  # numpy 2 renamed numpy.core to numpy._core

# A pickle can name any importable function and make the loader call it: a downloaded or
# shared "dataset" file could run arbitrary code. So only the few callables needed to rebuild
# plain numpy arrays are resolvable; dicts, lists, ints, str and bytes need none at all.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _core.multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _core.multiarray._reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _core.numeric._frombuffer,  # pickle protocol 5
    ("numpy._core.numeric", "_frombuffer"): _core.numeric._frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # how protocol 2 stores bytes from Python 3
}


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that refuses every global outside `_ALLOWED`, so loading never runs code."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not plain array data")
        return _ALLOWED[(module, name)]


def safe_unpickle(data: bytes, origin: str):
    """The object in `data`, or a KdkitError naming `origin` when it is not plain data."""
    try:
        # latin1 reads the Python 2 strings of the official files; real bytes stay bytes.
        return SafeUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as error:  # any failure of untrusted bytes means the same thing: unreadable
        raise corrupt_file(origin, f"not a CIFAR pickle: {error}") from None


@dataclass
class CifarFiles:
    """Where the batches of one CIFAR copy are, as paths inside a Tree."""

    train: list[str]
    test: str
    meta: str | None
    names_key: str  # the meta entry holding class names


def find_cifar_files(tree: Tree) -> CifarFiles | None:
    """The CIFAR-10 or CIFAR-100 batch files in `tree`, or None if it holds neither."""
    by_name = {}
    for path in sorted(tree):
        by_name.setdefault(PurePosixPath(path).name, path)
    batches = [name for name in by_name if re.fullmatch(r"data_batch_\d+", name)]
    if batches and "test_batch" in by_name:
        batches.sort(key=lambda name: int(name.rsplit("_", 1)[1]))
        return CifarFiles(train=[by_name[b] for b in batches], test=by_name["test_batch"],
                          meta=by_name.get("batches.meta"), names_key="label_names")
    if {"train", "test", "meta"} <= by_name.keys():
        return CifarFiles(train=[by_name["train"]], test=by_name["test"], meta=by_name["meta"],
                          names_key="fine_label_names")
    return None


def read_cifar(tree: Tree, files: CifarFiles, origin: str) -> RawData:
    """All batches of one CIFAR copy as RawData; class names come from the meta file if any."""
    train = [_read_batch(tree[path](), f"{origin}/{path}") for path in files.train]
    x_test, y_test = _read_batch(tree[files.test](), f"{origin}/{files.test}")
    classes = None
    if files.meta is not None:
        classes = _read_names(tree[files.meta](), files.names_key, f"{origin}/{files.meta}")
    return RawData(x_train=np.concatenate([x for x, _ in train]),
                   y_train=np.concatenate([y for _, y in train]),
                   x_test=x_test, y_test=y_test, classes=classes, origin=origin)


def _as_text(value) -> str:
    return value.decode("latin1") if isinstance(value, bytes) else str(value)


def _read_batch(data: bytes, origin: str) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 3, 32, 32) uint8, labels (N,)) from one pickled batch."""
    batch = safe_unpickle(data, origin)
    if not isinstance(batch, dict):
        raise corrupt_file(origin, f"expected a dict, found {type(batch).__name__}")
    batch = {_as_text(key): value for key, value in batch.items()}
    images = batch.get("data")
    labels = batch.get("labels", batch.get("fine_labels"))
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 2 \
            or images.shape[1] != 3 * 32 * 32:
        raise corrupt_file(origin, "b'data' must be an (N, 3072) uint8 array")
    if not isinstance(labels, (list, np.ndarray)):
        raise corrupt_file(origin, "no b'labels' / b'fine_labels' list")
    try:
        labels = np.asarray(labels)
    except (ValueError, TypeError, OverflowError):  # ragged or nested lists
        labels = None
    if labels is None or labels.ndim != 1:
        raise corrupt_file(origin, "b'labels' / b'fine_labels' must be a flat list of integers")
    if len(labels) != len(images):
        raise KdkitError(f"{origin}: {len(images)} images but {len(labels)} labels; "
                         "the file is damaged: delete it and download it again")
    return images.reshape(-1, 3, 32, 32), labels


def _read_names(data: bytes, key: str, origin: str) -> list[str]:
    meta = safe_unpickle(data, origin)
    if not isinstance(meta, dict):
        raise corrupt_file(origin, f"expected a dict, found {type(meta).__name__}")
    meta = {_as_text(k): v for k, v in meta.items()}
    names = meta.get(key)
    if not isinstance(names, list):
        raise corrupt_file(origin, f"no list of class names under '{key}'")
    return [_as_text(name) for name in names]
