"""Reader for ImageFolder trees (a folder or an archive): one subfolder of images per class.

Two layouts are accepted, below any single root folder:
    train/<class>/<image>  and  test/<class>/<image>    the test split is used as given
    <class>/<image>                                      a test split is carved later (dataset.py)
Class names are the sorted train folder names; label i is classes[i]. All images must share one
size, unless `image_size` N > 0: then each is resized to N x N (Pillow's bilinear filter) as it is
decoded, so folders of mixed sizes load. Grey images give 1 channel; if any image has colour, every image is read as RGB (alpha and
palettes are dropped); 16-bit grey is scaled to 8 bits. images.py opens each file: sizes above
$KDKIT_MAX_PIXELS are refused from the header, truncated files are errors.

Two passes: the image headers first (size and colour mode, no pixels), then each image is decoded
into its row of arrays made by `alloc` (memory-mapped cache files, see files.py), so the decoded
dataset is never held in memory twice, or at all.
"""
from pathlib import PurePosixPath

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from kdkit.data.dataset import RawData
from kdkit.data.files import Alloc, Tree, in_memory
from kdkit.data.images import GREY_MODES, DamagedImage, opened, to_array
from kdkit.errors import KdkitError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
SPLITS = ("train", "test")
_SHOW_PROGRESS_FROM = 2000  # images; small folders decode too fast to need a progress bar


def read_image_tree(tree: Tree, origin: str, alloc: Alloc = in_memory, image_size: int = 0) -> RawData:
    """Decode every image of an ImageFolder tree into (N, C, H, W) uint8 arrays made by `alloc`
    (H = W = image_size when it is above 0)."""
    entries = _layout(tree, origin)  # [(split, class, path)], sorted by path
    classes = sorted({name for split, name, _ in entries if split != "test"})
    unknown = sorted({name for split, name, _ in entries if split == "test"} - set(classes))
    if unknown:
        raise KdkitError(f"{origin}: test classes {unknown} have no train folder; "
                         "add train/<class> folders for them or remove them from test/")
    height, width, channels = _shape(tree, entries, origin, image_size)
    index = {name: i for i, name in enumerate(classes)}
    is_test = np.array([split == "test" for split, _, _ in entries])
    labels = np.array([index[name] for _, name, _ in entries], dtype=np.int64)
    x_train = alloc("x_train", (int((~is_test).sum()), channels, height, width), np.uint8)
    x_test = alloc("x_test", (int(is_test.sum()), channels, height, width), np.uint8) if is_test.any() else None
    rows = np.cumsum(~is_test) - 1, np.cumsum(is_test) - 1  # each entry's row in x_train / x_test
    progress = Progress(TextColumn("decoding {task.description}"), BarColumn(),
                        MofNCompleteColumn(), TimeRemainingColumn(), console=Console(stderr=True),
                        disable=len(entries) < _SHOW_PROGRESS_FROM)
    damaged = []  # decoding goes on past a damaged image, so the error can say how many there are
    with progress:
        task = progress.add_task(origin, total=len(entries))
        for i, (_, _, path) in enumerate(entries):
            try:
                pixels = _decode(tree[path](), f"{origin}/{path}", image_size)  # (H, W) or (H, W, 3)
            except DamagedImage as error:
                damaged.append((path, error))
                continue
            target = x_test[rows[1][i]] if is_test[i] else x_train[rows[0][i]]  # (C, H, W)
            target[:] = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)  # grey fills every channel
            if i % 500 == 0:
                progress.update(task, completed=i)
        progress.update(task, completed=len(entries))
    _refuse_damaged(damaged, len(entries), origin)
    if entries[0][0] == "all":
        return RawData(x_train, labels, None, None, classes, origin)
    return RawData(x_train, labels[~is_test], x_test, labels[is_test], classes, origin)


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


def _shape(tree: Tree, entries, origin: str, image_size: int = 0) -> tuple[int, int, int]:
    """(H, W, C) shared by every image (image_size x image_size when above 0), from the headers only;
    C is 3 when any image has colour."""
    first, colour, damaged = None, False, []
    for _, _, path in entries:
        try:
            with opened(tree[path](), f"{origin}/{path}") as image:
                size, mode = image.size, image.mode  # (W, H): the header, no pixels decoded
        except DamagedImage as error:
            damaged.append((path, error))
            continue
        first = first or (size, path)
        if size != first[0] and not image_size:
            raise KdkitError(f"{origin}: images differ in size ({first[1]} is {first[0][0]}x{first[0][1]}, "
                             f"{path} is {size[0]}x{size[1]}); set image_size=N (--set image_size=N) to resize every "
                             "image to N x N as it loads")
        colour = colour or mode not in GREY_MODES
    _refuse_damaged(damaged, len(entries), origin)
    if image_size:
        return image_size, image_size, 3 if colour else 1
    return first[0][1], first[0][0], 3 if colour else 1


def _decode(data: bytes, name: str, image_size: int = 0) -> np.ndarray:
    """(H, W) grey or (H, W, 3) RGB uint8, resized to image_size x image_size when it is above 0."""
    with opened(data, name) as image:
        pixels = to_array(image, name)
    if image_size and pixels.shape[:2] != (image_size, image_size):
        from PIL import Image

        # resized from the 8-bit pixels: Pillow's bilinear filter takes every mode to_array returns
        pixels = np.asarray(Image.fromarray(pixels).resize((image_size, image_size), Image.BILINEAR))
    return pixels


def _refuse_damaged(damaged: list, total: int, origin: str) -> None:
    """One damaged image: its own error; several: how many, and the first."""
    if len(damaged) == 1:
        raise damaged[0][1]
    if damaged:
        path, error = damaged[0]
        raise KdkitError(f"{len(damaged)} of {total} images in {origin} are truncated or damaged "
                         f"(first: {path}: {error.why}); replace or remove them")
