"""Unlabelled inputs from outside the dataset (`unlabeled`): more of Hinton et al.'s transfer set,
appended to the training split with label UNLABELED (labels.py), for the distilled student only.

    unlabeled = "photos/"            a folder (or .tar/.tar.gz archive) of images, flat or in subfolders
                                     of any depth; folder names are not labels, every image below is used
    unlabeled = "inputs.npy"         an .npy, .npz or .safetensors file holding one array (or one named
                                     "x"), in any layout from_arrays takes: (N, H, W), (N, C, H, W),
                                     (N, H, W, C) or (N, F)
    unlabeled = "mnist:train"        the train (all of it) or test split of another registered dataset
                                     (`kdkit datasets`), found where that dataset is always looked for

Nothing is resized or rescaled: the inputs must have the labelled data's shape (C, H, W) and type
(uint8 images; float arrays, stored as float32 as from_arrays does), or the error names both. Images are decoded as the ImageFolder
reader does (images.py: size limit, truncated files refused, 16-bit grey scaled), grey unless one
of them has colour, once per version of the folder into kdkit's cache (files.py).

Normalisation: the unlabelled inputs are scaled with the labelled dataset's mean and std (measured
on its training split, dataset.channel_stats) and never change them. A teacher trained on that
dataset, here or earlier (its sidecar records the statistics), then sees every input scaled exactly
as in its own training; statistics measured with MNIST mixed into Fashion-MNIST would shift every
input it sees, labelled ones included.

Positions: the appended samples' `index` continues after the source's training array
(source_size, source_size + 1, ...), so saved teacher outputs, keyed by positions in that array,
are never matched to them. The training split is concatenated in memory (a source whose splits stay
memory-mapped on disk, dataset.memory_limit, is read into memory here).
"""
import dataclasses
import re
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from kdkit.data import files
from kdkit.data.arrays import as_inputs
from kdkit.data.dataset import Dataset, RawData, Split
from kdkit.data.imagefolder import IMAGE_SUFFIXES
from kdkit.data.images import GREY_MODES, opened, to_array
from kdkit.data.labels import UNLABELED
from kdkit.data.registry import DATASETS, load_dataset
from kdkit.errors import KdkitError, shown

ARRAY_SUFFIXES = (".npy", ".npz", ".safetensors")
SPLITS = ("train", "test")
_FORMS = "a folder of images, an .npy/.npz/.safetensors array, or DATASET:train or DATASET:test (e.g. mnist:train)"


def load_unlabeled(spec: str, data: Dataset, data_dir=None, download: bool = True) -> torch.Tensor:
    """(M, C, H, W) inputs named by `spec` (see the module docstring), checked against `data`."""
    path, origin = _path(spec), shown(str(spec))
    kind = _kind(path)
    if kind == "array":
        images = _read_array(path, data.kind)
    elif kind == "images":
        images = _read_images(path)
    elif kind == "other":
        raise KdkitError(f"unlabeled {origin} is neither a folder, an archive nor an array file; give {_FORMS}")
    else:
        images = _read_split(spec, data, data_dir, download)
    if len(images) == 0:
        raise KdkitError(f"unlabeled {origin} holds no inputs; give at least one, or drop unlabeled")
    want, got = (tuple(data.input_shape), data.train.images.dtype), (tuple(images.shape[1:]), images.dtype)
    if got != want:
        raise KdkitError(f"unlabeled inputs from {origin} are {got[0]} {str(got[1])[6:]} but the labelled data's are "
                         f"{want[0]} {str(want[1])[6:]}; give inputs of the same shape and type (resize or convert them)")
    return images


def _path(spec: str) -> Path:
    try:
        return Path(spec).expanduser()
    except RuntimeError:  # ~nosuchuser/...
        return Path(spec)


def _kind(path: Path) -> str | None:
    """"array", "images" (a folder or an archive), "other" (another file) or None (nothing there)."""
    try:
        if path.is_file() and path.suffix.lower() in ARRAY_SUFFIXES:
            return "array"
        if path.is_dir() or files.is_archive(path):
            return "images"
        return "other" if path.exists() else None
    except OSError:  # a name too long for the file system
        return None


def add_unlabeled(data: Dataset, images: torch.Tensor) -> Dataset:
    """`data` with `images` (M, C, H, W) appended to its training split, label UNLABELED, their index
    after the source's training array; validation, test, mean and std unchanged."""
    train = data.train
    labels = torch.full((len(images),), UNLABELED, dtype=train.labels.dtype)  # (M,)
    index = None
    if train.index is not None:
        start = data.source_size if data.source_size is not None else int(train.index.max()) + 1 if len(train) else 0
        index = torch.cat([train.index, torch.arange(start, start + len(images))])
    split = Split(images=torch.cat([torch.as_tensor(train.images), images]), labels=torch.cat([train.labels, labels]),
                  index=index)
    return dataclasses.replace(data, train=split)


def _read_split(spec: str, data: Dataset, data_dir, download: bool) -> torch.Tensor:
    """The images of `NAME:train|test`, a split of another registered dataset."""
    name, sep, split = str(spec).rpartition(":")
    name, split = name.strip().lower(), split.strip().lower()
    if not sep or name not in DATASETS:
        raise KdkitError(f"unlabeled {shown(str(spec))} is not a file, a folder or a registered DATASET:split; "
                         f"give {_FORMS}")
    if split not in SPLITS:
        raise KdkitError(f"unlabeled {shown(str(spec))} names split {shown(split)}; use {name}:train or {name}:test")
    if name == re.sub(r"-lt[^-]*(-step)?$", "", data.name):  # the labelled dataset itself (made long-tailed or not)
        if split == "test":
            raise KdkitError(f"unlabeled {name}:test is the test split this run is scored on; name another dataset's split")
        raise KdkitError(f"unlabeled {name}:train is this run's own training data (its validation images would enter "
                         "training); use labels_per_class to leave part of its labels out, or name another dataset")
    return getattr(load_dataset(name, data_dir, val_fraction=0.0, download=download), split).images


def _read_array(path: Path, kind: str = "image") -> torch.Tensor:
    """The one array (or the one named "x") of an .npy, .npz or .safetensors file, as (N, C, H, W)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            arrays = {"x": np.load(path, allow_pickle=False)}
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                arrays = {name: archive[name] for name in archive.files}
        else:
            from safetensors.torch import load_file

            arrays = load_file(str(path))
    except Exception as error:  # noqa: BLE001 -- numpy and safetensors fail in many ways on a damaged file
        why = " ".join(str(error).split())[:80] or type(error).__name__
        raise KdkitError(f"unlabeled file '{path}' cannot be read ({why}); save the inputs as a plain numeric "
                         "array (np.save, np.savez or safetensors)") from None
    if len(arrays) != 1 and "x" not in arrays:
        names = ", ".join(sorted(arrays)[:5]) + (", ..." if len(arrays) > 5 else "")
        raise KdkitError(f"unlabeled file '{path}' holds {len(arrays)} arrays ({names or 'none'}); save the inputs "
                         "alone, or name them 'x'")
    array = arrays["x"] if "x" in arrays else next(iter(arrays.values()))
    return torch.from_numpy(as_inputs(array, f"unlabeled file '{path}'", kind))  # the labelled data's kind


def _read_images(path: Path) -> torch.Tensor:
    """Every image below a folder or in an archive, decoded once into the cache (as uint8)."""
    raw = files.cached(path, lambda alloc: _decode_images(path, alloc), kind="unlabeled")
    return torch.from_numpy(np.asarray(raw.x_train))


def _decode_images(path: Path, alloc: files.Alloc = files.in_memory) -> RawData:
    """(N, C, H, W) uint8 of every image under `path`, sorted by path: sizes from the headers first
    (all must agree; C = 3 when any image has colour), then each image decoded into its row."""
    tree = files.list_tree(path)
    names = sorted(p for p in tree if PurePosixPath(p).suffix.lower() in IMAGE_SUFFIXES)
    if not names:
        raise KdkitError(f"no images found in '{path}'; unlabeled takes a folder of image files "
                         f"({', '.join(sorted(IMAGE_SUFFIXES)[:4])}, ...), flat or nested")
    first, colour = None, False
    for name in names:
        with opened(tree[name](), f"{path}/{name}") as image:
            size, mode = image.size, image.mode  # (W, H): the header, no pixels decoded
        first = first or (size, name)
        if size != first[0]:
            raise KdkitError(f"unlabeled images in '{path}' differ in size ({first[1]} is {first[0][0]}x{first[0][1]}, "
                             f"{name} is {size[0]}x{size[1]}); resize them to the labelled data's size")
        colour = colour or mode not in GREY_MODES
    (width, height), channels = first[0], 3 if colour else 1
    images = alloc("x_train", (len(names), channels, height, width), np.uint8)
    for row, name in enumerate(names):
        with opened(tree[name](), f"{path}/{name}") as image:
            pixels = to_array(image, f"{path}/{name}", "RGB" if colour else "L")  # (H, W) or (H, W, 3)
        images[row] = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    return RawData(images, np.zeros(len(names), dtype=np.int64), None, None, None, str(path))
