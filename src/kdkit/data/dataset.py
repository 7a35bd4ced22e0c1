"""The containers every run uses (`Split`, `Dataset`) and how a dataset is assembled from arrays.

Readers (idx.py, cifar.py, imagefolder.py, arrays.py) return a `RawData` of numpy arrays.
`build_dataset` checks the labels, carves a test split when the source has none, carves the
validation split from train (never from test), computes per-channel statistics on the final
train split and wraps everything in torch tensors.

Large sources stay on disk: when the images are a memory-mapped cache file (files.py) larger than
`memory_limit()` (half the RAM, or $KDKIT_MEMORY_LIMIT bytes), each split is written once, in
chunks, to its own memory-mapped file beside the cache (keyed by its rows) instead of being copied
into memory. The loader then gathers batches from it (with background workers: loader.py).

Every split records `index`: where each of its samples sits in the source. Train and validation
rows point into the source's training array (both are carved from it); test rows point into the
source's test array, or into its training array when test was carved from train. Saved teacher
outputs keyed by these positions (see kdkit.teachers) stay valid whatever val_fraction or seed
a run uses.
"""
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kdkit.errors import KdkitError

# Sources without a test split (digits, an ImageFolder of class folders only) get one carved with
# these fixed values, so every run and every user sees the same test images whatever `seed` is.
TEST_FRACTION = 0.2
TEST_SEED = 0


@dataclass
class Split:
    """One split of a dataset, all in memory."""

    # the inputs: (N, C, H, W) uint8 or float32 images, (N, F) float32 table rows, or (N, L) int64
    # token ids (Dataset.kind); the name is historical
    images: torch.Tensor
    labels: torch.Tensor  # (N,) int64
    # (N,) int64 position of each sample in the source's training array (train, val, and test
    # carved from train) or test array (a source's own test split); None for hand-built splits
    index: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Dataset:
    """Train / validation / test splits plus what a model and a loader need to know about them."""

    name: str
    train: Split
    val: Split
    test: Split
    classes: list[str]
    mean: tuple[float, ...]  # per channel (images) or feature (tables), in [0, 1] units for uint8 images,
    std: tuple[float, ...]  # raw units for floats; empty for token ids (never normalised)
    augment: str  # "crop_flip", "crop" or "none"; see augment.py
    # samples in the source's training array, which train and val `index` point into (saved teacher
    # outputs must have exactly this many rows); None for hand-built datasets
    source_size: int | None = None
    # a text dataset's sentences and the tokenizer of its stored ids (data/text.py `Text`); None otherwise
    text: object = None

    @property
    def input_shape(self) -> "InputShape":
        """The shape of one sample, (C, H, W), (F,) or (L,), carrying the dtype a model takes."""
        return sample_shape(self.train.images)

    @property
    def kind(self) -> str:
        """'image' (C, H, W), 'table' (F,) float rows or 'tokens' (L,) integer ids."""
        return input_kind(self.train.images)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def vocab_size(self) -> int:
        """Token ids: the ids a model's embedding must hold (the tokenizer's, else the largest id + 1);
        0 for images and table rows."""
        if self.text is not None:
            return self.text.tokenizer.vocab_size
        if self.kind != "tokens":
            return 0
        return 1 + max(int(split.images.max()) if len(split) else 0 for split in (self.train, self.val, self.test))


class InputShape(tuple):
    """A sample's shape (a plain tuple: (C, H, W), (F,) or (L,)) that also carries the dtype a model
    takes, so a probe of the model builds the right example: example_inputs(shape, batch)."""

    def __new__(cls, shape, dtype=torch.float32):
        self = super().__new__(cls, (int(d) for d in shape))
        self.dtype = dtype
        return self


def example_inputs(shape, batch: int, device=None, dtype=None) -> torch.Tensor:
    """(batch, *shape) zeros a model can take: int64 token ids (padding) for token inputs, else
    float (`dtype`, float32 by default)."""
    wanted = getattr(shape, "dtype", torch.float32)
    if not wanted.is_floating_point:
        return torch.zeros(batch, *shape, device=device, dtype=wanted)
    return torch.zeros(batch, *shape, device=device, dtype=dtype or wanted)


def sample_shape(inputs) -> InputShape:
    """The InputShape of one sample of `inputs` (N, ...)."""
    return InputShape(inputs.shape[1:], torch.float32 if input_kind(inputs) != "tokens" else torch.int64)


def input_kind(inputs) -> str:
    """'image' for (N, C, H, W), 'tokens' for integer (N, L), 'table' for float (N, F)."""
    if inputs.ndim == 4:
        return "image"
    floating = inputs.dtype.is_floating_point if isinstance(inputs, torch.Tensor) else inputs.dtype.kind == "f"
    return "table" if floating else "tokens"


@dataclass
class RawData:
    """What a reader found, before splitting: numpy arrays, test split optional."""

    x_train: np.ndarray  # (N, C, H, W) uint8 or float32 images, (N, F) float32 rows, (N, L) int64 ids
    y_train: np.ndarray  # (N,) integer
    x_test: np.ndarray | None  # (M, C, H, W), None when the source has no test split
    y_test: np.ndarray | None  # (M,)
    classes: list[str] | None  # None when the source has no class names (IDX files)
    origin: str  # where the data came from, for error messages


# A source without class names gets '0'..'K-1' with K = largest label + 1; labels beyond both this
# and the number of labels are not class indices (and would make a list of billions of names).
MAX_INFERRED_CLASSES = 100_000


def classes_from_labels(labels: list, origin: str, fix: str = "") -> list[str]:
    """'0'..'K-1' for a source without class names, K = its largest integer label + 1 (at least 1);
    non-integer labels are left for check_labels to refuse. `fix` ends the too-large message."""
    integer = [y for y in labels if y is not None and y.size and y.dtype.kind in "iub"]
    top = max([int(y.max()) for y in integer], default=0)
    count = sum(y.size for y in labels if y is not None)
    if top >= max(count, MAX_INFERRED_CLASSES):
        raise KdkitError(f"{origin}: labels go up to {top} but there are only {count} labels; "
                         f"labels must be class indices 0..K-1{fix}")
    return [str(i) for i in range(max(top, 0) + 1)]


def corrupt_file(path, why: str) -> KdkitError:
    """The error for a file kdkit cannot read: names the file and what to do about it."""
    return KdkitError(f"{path} is corrupt or truncated ({why}); delete it and download it again")


def stratified_split(labels: np.ndarray, fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, carved): `fraction` of every class carved out at random, both sorted.

    Each class keeps at least one sample, so a tiny class is never emptied.
    """
    rng = np.random.default_rng(seed)
    carved = [np.empty(0, dtype=np.int64)]
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = min(int(round(fraction * len(members))), len(members) - 1)
        carved.append(rng.permutation(members)[:count])
    carved = np.sort(np.concatenate(carved))
    kept = np.setdiff1d(np.arange(len(labels)), carved)
    return kept, carved


def channel_stats(images: np.ndarray,
                  index: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of images[index]; uint8 images are measured in [0, 1] units.

    Works through chunks so a large float copy of the whole split is never made. A constant
    channel gets std 1 so normalising never divides by zero. Table rows (N, F) get one value per
    feature; token ids none (they are never normalised).
    """
    if input_kind(images) == "tokens":
        return (), ()
    scale = 1 / 255 if images.dtype == np.uint8 else 1.0
    channels = images.shape[1]
    axes = (0, 2, 3) if images.ndim == 4 else (0,)
    total, squares = np.zeros(channels), np.zeros(channels)
    for start in range(0, len(index), 1024):
        chunk = images[index[start:start + 1024]].astype(np.float64) * scale  # (b, C, H, W) or (b, F)
        total += chunk.sum(axis=axes)
        squares += (chunk * chunk).sum(axis=axes)
    count = max(len(index) * int(np.prod(images.shape[2:])), 1)
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean * mean, 0.0))
    std[std < 1e-8] = 1.0
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def check_labels(labels: np.ndarray, count: int, num_classes: int, what: str) -> np.ndarray:
    """Labels as int64 (N,), or a KdkitError when they do not fit the images or the classes."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != count:
        raise KdkitError(f"{what}: {count} images but labels of shape {labels.shape}; "
                         "give exactly one label per image")
    if len(labels) and not np.issubdtype(labels.dtype, np.integer):
        raise KdkitError(f"{what}: labels must be integers, got {labels.dtype}; "
                         "convert them to class indices 0..K-1")
    labels = labels.astype(np.int64)
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise KdkitError(f"{what}: labels range {labels.min()}..{labels.max()} but there are "
                         f"{num_classes} classes; labels must be 0..{num_classes - 1}")
    return labels


def _check_images(images: np.ndarray, what: str) -> None:
    if (images.ndim, images.dtype) not in ((4, np.uint8), (4, np.float32), (2, np.float32), (2, np.int64)):
        raise KdkitError(f"{what}: inputs must be (N, C, H, W) uint8 or float32 images, (N, F) float32 rows "
                         f"or (N, L) int64 token ids, got {images.shape} {images.dtype}")
    if len(images) == 0:
        raise KdkitError(f"{what}: no images; check the source holds data")


def build_dataset(raw: RawData, name: str, augment: str, val_fraction: float = 0.1,
                  seed: int = 0) -> Dataset:
    """Check `raw`, carve test (if missing) and validation splits, and wrap it all as a Dataset."""
    if not 0.0 <= val_fraction < 1.0:
        raise KdkitError(f"val_fraction must be in [0, 1), got {val_fraction}; e.g. 0.1")
    num_classes = len(raw.classes)
    _check_images(raw.x_train, f"{raw.origin} (train)")
    y_train = check_labels(raw.y_train, len(raw.x_train), num_classes, f"{raw.origin} (train)")
    x_train, x_test = raw.x_train, raw.x_test
    rows = np.arange(len(y_train))  # (N,) rows of x_train that train and val are carved from
    if x_test is None:  # test carved from train: its rows point into x_train too
        rows, test = stratified_split(y_train, TEST_FRACTION, TEST_SEED)
        x_test, y_test = x_train, y_train
    else:
        _check_images(x_test, f"{raw.origin} (test)")
        y_test = check_labels(raw.y_test, len(x_test), num_classes, f"{raw.origin} (test)")
        if x_test.shape[1:] != x_train.shape[1:] or x_test.dtype != x_train.dtype:
            raise KdkitError(f"{raw.origin}: test images are {x_test.shape[1:]} {x_test.dtype} "
                             f"but train images are {x_train.shape[1:]} {x_train.dtype}; "
                             "make them match")
        test = np.arange(len(y_test))  # (M,) rows of the source's own test array
    keep, val = stratified_split(y_train[rows], val_fraction, seed)
    train, val = rows[keep], rows[val]
    mean, std = channel_stats(x_train, train)
    return Dataset(name=name, train=_split(x_train, y_train, train), val=_split(x_train, y_train, val),
                   test=_split(x_test, y_test, test), classes=list(raw.classes), mean=mean, std=std,
                   augment=augment, source_size=len(y_train))


def memory_limit() -> int:
    """Bytes of images above which a memory-mapped source's splits stay on disk: $KDKIT_MEMORY_LIMIT,
    else half the physical memory."""
    if os.environ.get("KDKIT_MEMORY_LIMIT"):
        try:
            return int(os.environ["KDKIT_MEMORY_LIMIT"])
        except ValueError:
            raise KdkitError(f"KDKIT_MEMORY_LIMIT must be a number of bytes, got "
                             f"'{os.environ['KDKIT_MEMORY_LIMIT']}'; e.g. 8000000000") from None
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def _split(images: np.ndarray, labels: np.ndarray, rows: np.ndarray) -> Split:
    """The Split of images[rows]; `rows` are also its samples' positions in the source."""
    if isinstance(images, np.memmap) and images.nbytes > memory_limit():
        selected = _rows_on_disk(images, rows)
    else:
        selected = np.ascontiguousarray(images[rows])
    return Split(images=torch.from_numpy(selected), labels=torch.from_numpy(labels[rows].astype(np.int64)),
                 index=torch.from_numpy(rows.astype(np.int64)))


def _rows_on_disk(images: np.memmap, rows: np.ndarray) -> np.memmap:
    """images[rows] as a memory-mapped file beside `images` (copy-on-write: never written back),
    copied in chunks of ~64 MB; the same rows of the same file are copied only once."""
    if len(rows) == len(images) and np.array_equal(rows, np.arange(len(images))):
        return images  # the whole source: no copy needed
    name = hashlib.sha256(np.ascontiguousarray(rows, dtype=np.int64).tobytes()).hexdigest()[:20]
    file = Path(images.filename).parent / "splits" / f"{Path(images.filename).stem}-{name}.npy"
    if not file.is_file():
        temporary = file.with_name(f"{file.name}.{os.getpid()}.tmp")
        try:
            file.parent.mkdir(exist_ok=True)
            out = mapped_array(temporary, (len(rows), *images.shape[1:]), images.dtype)
            step = max(1, (64 << 20) // max(1, images[0].nbytes))
            for start in range(0, len(rows), step):
                out[start:start + step] = images[rows[start:start + step]]
            out.flush()
            del out
            os.replace(temporary, file)
        except OSError as error:
            size = len(rows) * images[0].nbytes
            raise KdkitError(f"cannot write a {size / 1e9:.1f} GB split to {file.parent} ({error}); free "
                             "that much disk there, or raise $KDKIT_MEMORY_LIMIT to keep splits in memory") from None
        finally:
            temporary.unlink(missing_ok=True)
    return np.load(file, mmap_mode="c")


def mapped_array(file: Path, shape: tuple, dtype) -> np.memmap:
    """A new .npy file mapped for writing, its blocks reserved up front: a full disk fails here
    with an OSError, not later with a bus error halfway through filling it."""
    array = np.lib.format.open_memmap(file, mode="w+", dtype=dtype, shape=tuple(shape))
    with open(file, "r+b") as handle:
        os.posix_fallocate(handle.fileno(), 0, os.path.getsize(file))
    return array
