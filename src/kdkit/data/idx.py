"""Reader for IDX files, the format of MNIST and Fashion-MNIST (gzipped or not).

An IDX file is: two zero bytes, a type byte, the number of dimensions, one big-endian uint32 per
dimension, then the values. A folder holds four of them under the standard names below.
"""
import gzip
import io
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from kdkit.data.dataset import RawData, corrupt_file
from kdkit.errors import KdkitError

IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
IDX_FILE_LIST = ", ".join(f"{stem}.gz" for stem in IDX_NAMES.values())

_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def find_idx_files(folder: Path) -> dict[str, Path] | None:
    """The four IDX files in `folder` (each gzipped or plain), or None unless all four are there."""
    found = {}
    for key, stem in IDX_NAMES.items():
        options = [folder / f"{stem}.gz", folder / stem]
        path = next((p for p in options if p.is_file()), None)
        if path is None:
            return None
        found[key] = path
    return found


def read_idx(path: Path) -> np.ndarray:
    """The array stored in one IDX file; KdkitError naming the file if it is damaged. A gzipped
    file is decompressed only as far as its header says: a small file claiming (or expanding to)
    gigabytes is refused, not unpacked into memory."""
    raw = path.read_bytes()
    gzipped = raw[:2] == b"\x1f\x8b"  # gzip magic; decided by content, not by the file name
    stream = gzip.GzipFile(fileobj=io.BytesIO(raw)) if gzipped else io.BytesIO(raw)
    magic = _read(stream, 4, path)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _TYPES:
        raise corrupt_file(path, f"bad IDX magic {magic.hex() or 'empty file'}")
    ndim = magic[3]
    dims = _read(stream, 4 * ndim, path)
    if len(dims) < 4 * ndim:
        raise corrupt_file(path, "header cut short")
    shape = struct.unpack(f">{ndim}I", dims)
    dtype = np.dtype(_TYPES[magic[2]])
    expected = math.prod(shape) * dtype.itemsize  # exact: np.prod would wrap around in int64
    if expected > len(raw) * (_MAX_DEFLATE_RATIO if gzipped else 1):
        raise corrupt_file(path, f"shape {shape} needs {expected} bytes of values, more than a "
                                 f"{len(raw)}-byte file can hold")
    data = _read(stream, expected + 1, path)  # one byte more: a longer file is damaged too
    if len(data) != expected:
        raise corrupt_file(path, f"shape {shape} needs {expected} bytes of values, "
                                 f"found {'more' if len(data) > expected else len(data)}")
    try:
        values = np.frombuffer(data, dtype=dtype).reshape(shape)
    except ValueError:  # e.g. (0, 2**32-1, 2**32-1): no values, but a shape numpy cannot hold
        raise corrupt_file(path, f"impossible shape {shape}") from None
    return values.astype(dtype.newbyteorder("="))


_MAX_DEFLATE_RATIO = 1032  # deflate cannot expand data more than this


def _read(stream, n: int, path: Path) -> bytes:
    try:
        return stream.read(n)
    except (OSError, EOFError, zlib.error) as error:
        raise corrupt_file(path, f"gzip: {error}") from None


def load_idx_folder(folder: Path) -> RawData:
    """The four standard IDX files of `folder` as RawData (no class names: IDX has none)."""
    files = find_idx_files(folder)
    if files is None:
        raise KdkitError(f"{folder} does not hold the IDX files {IDX_FILE_LIST}; "
                         "point to the folder that holds them")
    arrays = {key: read_idx(path) for key, path in files.items()}
    for key in ("train_images", "test_images"):
        if arrays[key].ndim != 3 or arrays[key].dtype != np.uint8:
            raise corrupt_file(files[key], f"expected (N, H, W) uint8 images, "
                                           f"got {arrays[key].shape} {arrays[key].dtype}")
    for key in ("train_labels", "test_labels"):
        if arrays[key].ndim != 1:
            raise corrupt_file(files[key], f"expected (N,) labels, got shape {arrays[key].shape}")
    return RawData(x_train=arrays["train_images"][:, None], y_train=arrays["train_labels"],
                   x_test=arrays["test_images"][:, None], y_test=arrays["test_labels"],
                   classes=None, origin=str(folder))
