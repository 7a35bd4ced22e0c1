"""Reader for ImageFolder trees (a folder or an archive): one subfolder of images per class.

Two layouts are accepted, below any single root folder:
    train/<class>/<image>  and  test/<class>/<image>    the test split is used as given
    <class>/<image>                                      a test split is carved later (dataset.py)
Class names are the sorted train folder names; label i is classes[i]. All images must share one
size. Grey images give 1 channel; if any image has colour, every image is read as RGB (alpha and
palettes are dropped).
"""
import io
from pathlib import PurePosixPath

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from kdkit.data.dataset import RawData
from kdkit.data.files import Tree
from kdkit.errors import KdkitError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
SPLITS = ("train", "test")
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}
_SHOW_PROGRESS_FROM = 2000  # images; small folders decode too fast to need a progress bar


def read_image_tree(tree: Tree, origin: str) -> RawData:
    """Decode every image of an ImageFolder tree into (N, C, H, W) uint8 arrays."""
    entries = _layout(tree, origin)  # [(split, class, path)], sorted by path
    classes = sorted({name for split, name, _ in entries if split != "test"})
    unknown = sorted({name for split, name, _ in entries if split == "test"} - set(classes))
    if unknown:
        raise KdkitError(f"{origin}: test classes {unknown} have no train folder; "
                         "add train/<class> folders for them or remove them from test/")
    images = _stack(_decode_all(tree, [path for _, _, path in entries], origin), entries, origin)
    index = {name: i for i, name in enumerate(classes)}
    labels = np.array([index[name] for _, name, _ in entries], dtype=np.int64)
    if entries[0][0] == "all":
        return RawData(images, labels, None, None, classes, origin)
    is_test = np.array([split == "test" for split, _, _ in entries])
    return RawData(images[~is_test], labels[~is_test], images[is_test], labels[is_test],
                   classes, origin)


def _layout(tree: Tree, origin: str) -> list[tuple[str, str, str]]:
    """(split, class, path) per image; split is 'train', 'test' or 'all' (no split folders)."""
    paths = sorted(p for p in tree if PurePosixPath(p).suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise KdkitError(f"no images found in {origin}; expected train/<class>/<image> and "
                         "test/<class>/<image>, or <class>/<image>")
    parts = [PurePosixPath(p).parts for p in paths]
    with_splits = any(len(ps) >= 3 and ps[-3] in SPLITS for ps in parts)
    depth = 3 if with_splits else 2
    roots = {ps[:-depth] for ps in parts if len(ps) >= depth}
    for path, ps in zip(paths, parts):
        if len(ps) < depth or len(roots) > 1 or (with_splits and ps[-3] not in SPLITS):
            expected = "train/<class>/<image> and test/<class>/<image>" if with_splits \
                else "<class>/<image>"
            raise KdkitError(f"{origin}: image '{path}' is not at {expected} below one root "
                             "folder; move it there or remove it (kdkit carves validation itself)")
    if with_splits and not any(ps[-3] == "train" for ps in parts):
        raise KdkitError(f"{origin}: has test/ but no train/ images; add train/<class>/<image>")
    return [(ps[-3] if with_splits else "all", ps[-2], path) for path, ps in zip(paths, parts)]


def _decode_all(tree: Tree, paths: list[str], origin: str) -> list[np.ndarray]:
    """Each image as (H, W) grey or (H, W, 3) RGB uint8, with a progress bar for big folders."""
    from PIL import Image  # imported here: only ImageFolder sources need pillow

    progress = Progress(TextColumn("decoding {task.description}"), BarColumn(),
                        MofNCompleteColumn(), TimeRemainingColumn(), console=Console(stderr=True),
                        disable=len(paths) < _SHOW_PROGRESS_FROM)
    arrays = []
    with progress:
        task = progress.add_task(origin, total=len(paths))
        for i, path in enumerate(paths):
            arrays.append(_decode(Image, tree[path](), f"{origin}/{path}"))
            if i % 500 == 0:
                progress.update(task, completed=i)
        progress.update(task, completed=len(paths))
    return arrays


def _decode(image_module, data: bytes, origin: str) -> np.ndarray:
    try:
        with image_module.open(io.BytesIO(data)) as image:
            mode = "L" if image.mode in _GREY_MODES else "RGB"
            return np.asarray(image if image.mode == mode else image.convert(mode))
    except (OSError, ValueError, SyntaxError, image_module.DecompressionBombError) as error:
        raise KdkitError(f"cannot decode image {origin} ({error}); the file is damaged: "
                         "replace or remove it") from None


def _stack(arrays: list[np.ndarray], entries, origin: str) -> np.ndarray:
    """(N, C, H, W) uint8; grey images are repeated to 3 channels when others are in colour."""
    sizes = {a.shape[:2] for a in arrays}
    if len(sizes) > 1:
        first = arrays[0].shape[:2]
        odd = next(i for i, a in enumerate(arrays) if a.shape[:2] != first)
        raise KdkitError(f"{origin}: images differ in size ({entries[0][2]} is "
                         f"{first[1]}x{first[0]}, {entries[odd][2]} is "
                         f"{arrays[odd].shape[1]}x{arrays[odd].shape[0]}); "
                         "resize them all to one size first")
    colour = any(a.ndim == 3 for a in arrays)
    if colour:
        arrays = [a if a.ndim == 3 else np.repeat(a[:, :, None], 3, axis=2) for a in arrays]
        stacked = np.stack(arrays)  # (N, H, W, 3)
        return np.ascontiguousarray(stacked.transpose(0, 3, 1, 2))  # (N, 3, H, W)
    return np.stack(arrays)[:, None]  # (N, H, W) -> (N, 1, H, W)
