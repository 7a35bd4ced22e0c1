"""Reader for IDX files, the format of MNIST and Fashion-MNIST (gzipped or not).

An IDX file is: two zero bytes, a type byte, the number of dimensions, one big-endian uint32 per
dimension, then the values. A folder holds four of them under the standard names below.
"""
import gzip
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
    """The array stored in one IDX file; KdkitError naming the file if it is damaged."""
    data = _read_maybe_gzipped(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _TYPES:
        raise corrupt_file(path, f"bad IDX magic {data[:4].hex() or 'empty file'}")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise corrupt_file(path, "header cut short")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_TYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise corrupt_file(path, f"shape {shape} needs {expected} bytes of values, "
                                 f"found {len(data) - header}")
    values = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return values.astype(dtype.newbyteorder("="))


def _read_maybe_gzipped(path: Path) -> bytes:
    data = path.read_bytes()
    if data[:2] != b"\x1f\x8b":  # gzip magic; decided by content, not by the file name
        return data
    try:
        return gzip.decompress(data)
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
