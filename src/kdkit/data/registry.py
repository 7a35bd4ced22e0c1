"""Named datasets, where their files are looked for, and `load_dataset`, the one entry point.

Besides the names: a path to an ImageFolder or CIFAR folder or archive, to a table (.csv, .tsv or
.parquet: feature columns and a label column, read by tables.py through sources.as_dataset), or to
text (text.py: a folder of train.txt / dev.txt / test.txt, a .txt file, or a table with text_column).

Where the files of a named dataset are looked for, first match wins:
    1. `data_dir` (--data-dir)              2. $KDKIT_DATA
    3. $KDKIT_CACHE or ~/.cache/kdkit       4. system folders (Debian: /usr/share/datasets/...)
    5. the official download, checksummed, into the cache folder (when download=True)
In 1 and 2 the dataset may sit directly in the folder or in a subfolder named after it, so
`--data-dir data` and `--data-dir data/fashion-mnist` both work. In the cache it is always in
the subfolder `<cache>/<name>/`.

Run `python -c "from kdkit.data import dataset_status; print(dataset_status())"` to see what
is found on this machine.
"""
import os
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from kdkit.data import cifar, files, idx, imagefolder
from kdkit.data.arrays import load_digits_raw
from kdkit.data.dataset import Dataset, RawData, build_dataset, classes_from_labels
from kdkit.data.download import fetch
from kdkit.data.sources import as_dataset
from kdkit.data.tables import TABLE_SUFFIXES, read_table
from kdkit.data.text import TextOptions, is_text_source, load_text
from kdkit.errors import KdkitError, unknown

_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_MNIST_URLS = ("https://ossci-datasets.s3.amazonaws.com/mnist/",
               "https://storage.googleapis.com/cvdf-datasets/mnist/")
_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/"


@dataclass(frozen=True)
class NamedDataset:
    """How to find, fetch and label one well-known dataset."""

    description: str
    format: str  # "idx" (four IDX files) or "cifar" (CIFAR batches, ImageFolder, or an archive)
    num_classes: int
    classes: tuple[str, ...]  # used when the files carry no class names (IDX)
    augment: str
    subfolders: tuple[str, ...]  # tried inside a root folder before the root itself
    entries: tuple[str, ...]  # tried inside each of those ("" = the folder itself)
    system_folders: tuple[str, ...]
    downloads: tuple[tuple[str, str, tuple[str, ...]], ...]  # (file name, md5, urls)
    fix: str  # how a user gets the files, for the not-found message


def _idx_downloads(urls, md5s) -> tuple:
    return tuple((f"{stem}.gz", md5, tuple(u + f"{stem}.gz" for u in urls))
                 for stem, md5 in zip(idx.IDX_NAMES.values(), md5s))


# Standard augmentation per dataset: clothing is mirror-symmetric, and on short schedules a
# horizontal flip trained a better teacher than a 2-pixel translation (docs/demo.md).
NAMED = {
    "fashion-mnist": NamedDataset(
        "Fashion-MNIST: 28x28 grey clothing, 10 classes, 60k train / 10k test", "idx", 10,
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
         "Bag", "Ankle boot"), "flip", ("fashion-mnist", "FashionMNIST/raw"), ("",),
        ("/usr/share/datasets/fashion-mnist",),
        _idx_downloads([_FASHION_URL], ["8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                                        "25c81989df183df01b3e8a0aad5dffbe",
                                        "bef4ecab320f06d8554ea6380940ec79",
                                        "bb300cfdad3c16e7a12a480ee83cd310"]),
        f"pass --data-dir DIR holding {idx.IDX_FILE_LIST} (or set $KDKIT_DATA), "
        "or `apt-get install dataset-fashion-mnist`"),
    "mnist": NamedDataset(
        "MNIST: 28x28 grey handwritten digits, 10 classes, 60k train / 10k test", "idx", 10,
        tuple(str(i) for i in range(10)), "crop", ("mnist", "MNIST/raw"), ("",), (),
        _idx_downloads(_MNIST_URLS, ["f68b3c2dcbeaaa9fbdd348bbdeb94873",
                                     "d53e105ee54ea40749a09fcbcd1e9432",
                                     "9fb629c4189551a2d022fa330f9573f3",
                                     "ec29112dd5afa0611ce80d1b7f02629c"]),
        f"pass --data-dir DIR holding {idx.IDX_FILE_LIST} (or set $KDKIT_DATA)"),
    "cifar10": NamedDataset(
        "CIFAR-10: 32x32 colour, 10 classes, 50k train / 10k test", "cifar", 10,
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        "crop_flip", ("cifar10", "cifar-10"),
        ("cifar-10-batches-py", "cifar-10-python.tar.gz", "cifar10-jpeg", "cifar10-jpeg.tar.gz",
         ""),
        (), (("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
              (_CIFAR_URL + "cifar-10-python.tar.gz",)),),
        "pass --data-dir DIR holding cifar-10-batches-py/, cifar-10-python.tar.gz, or an "
        "ImageFolder train/<class>/*.png + test/<class>/ (or its .tar.gz) (or set $KDKIT_DATA)"),
    "cifar100": NamedDataset(
        "CIFAR-100: 32x32 colour, 100 classes, 50k train / 10k test", "cifar", 100, (),
        "crop_flip", ("cifar100", "cifar-100"),
        ("cifar-100-python", "cifar-100-python.tar.gz", "cifar100-jpeg", "cifar100-jpeg.tar.gz",
         ""),
        (), (("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85",
              (_CIFAR_URL + "cifar-100-python.tar.gz",)),),
        "pass --data-dir DIR holding cifar-100-python/, cifar-100-python.tar.gz, or an "
        "ImageFolder train/<class>/*.png + test/<class>/ (or its .tar.gz) (or set $KDKIT_DATA)"),
}

DATASETS: dict[str, str] = {name: spec.description for name, spec in NAMED.items()}
DATASETS["digits"] = ("digits: scikit-learn's 8x8 grey digits, 10 classes, 1,797 images "
                      "(fixed stratified 20% test, seed 0); always available")


def load_dataset(name_or_path, data_dir=None, val_fraction: float = 0.1, seed: int = 0,
                 download: bool = True, label_column: str = "label", image_size: int = 0,
                 text: TextOptions | None = None) -> Dataset:
    """A named dataset (see DATASETS), an ImageFolder / CIFAR folder or archive at a path, a table
    (.csv, .tsv, .parquet: feature columns and `label_column`; tables.py), or text (text.py, read and
    tokenised as `text` says). image_size N > 0: ImageFolder images are resized to N x N as they are
    read; any other source must already be N x N.

    A name wins over a same-named folder in the working directory; write ./mnist for the folder.
    """
    data = _load(str(name_or_path), data_dir, dict(val_fraction=val_fraction, seed=seed), download,
                 label_column, image_size, text or TextOptions())
    if image_size and tuple(data.input_shape[1:]) != (image_size, image_size):
        raise KdkitError(f"image_size={image_size} resizes the images of an ImageFolder, but dataset '{data.name}' has "
                         f"inputs {tuple(data.input_shape)} it cannot resize; remove image_size")
    return data


def loading_options(meta: dict) -> dict:
    """The load_dataset keywords (label_column, image_size, text) a model's run read its data with, from
    its weights sidecar's config, so `kdkit evaluate` and `kdkit export` read a table, a resized
    ImageFolder or sentences as training did; a value of the wrong type (a damaged sidecar) is left out."""
    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    options = {}
    if isinstance(config.get("label_column"), str):
        options["label_column"] = config["label_column"]
    if type(config.get("image_size")) is int and 0 <= config["image_size"] <= 4096:
        options["image_size"] = config["image_size"]
    text = {key: config[key] for key, kind in TEXT_KEYS.items() if type(config.get(key)) is kind}
    if "max_length" in text:  # a text run: the same tokenizer, vocabulary (rebuilt on the same training split) and width
        text["tokenizer"] = text.get("tokenizer", "auto")
        text.setdefault("model", config.get("student") or config.get("model") or "")
        options["text"] = TextOptions.of(SimpleNamespace(**(TEXT_DEFAULTS | text)))
    return options


TEXT_KEYS = {"tokenizer": str, "max_length": int, "vocab_min_count": int, "vocab_max_size": int, "text_column": str,
             "student": str, "model": str}
TEXT_DEFAULTS = {"tokenizer": "auto", "vocab_min_count": 1, "vocab_max_size": 30_000, "text_column": "", "student": "", "model": ""}


def _load(name: str, data_dir, split: dict, download: bool, label_column: str, image_size: int,
          text: TextOptions) -> Dataset:
    if name.lower() == "digits":
        return build_dataset(load_digits_raw(), "digits", "none", **split)
    if name.lower() in NAMED:
        spec = NAMED[name.lower()]
        raw = read_source(locate(name.lower(), data_dir, download), image_size)
        raw.classes = raw.classes or list(spec.classes) or None
        _check_class_count(raw, spec.num_classes, name.lower())
        return build_dataset(raw, name.lower(), spec.augment, **split)
    path = _expanded(name)
    if _exists(path) and is_text_source(path, text):  # sentences and their labels
        return load_text(path, text, label_column, **split)
    if _exists(path) and path.is_file() and path.suffix.lower() in TABLE_SUFFIXES:
        # a table: rows of features, never augmented; test carved as for digits
        return as_dataset(read_table(path), label_column=label_column, name=path.stem, **split)
    if _exists(path):
        raw = read_source(path, image_size)
        if raw.classes is None:
            raw.classes = classes_from_labels([raw.y_train], raw.origin)
        augment = "crop_flip" if raw.x_train.shape[1] == 3 else "crop"
        return build_dataset(raw, _name_of(path), augment, **split)
    if "/" in name or os.sep in name or name.lower().endswith(files.ARCHIVE_SUFFIXES + TABLE_SUFFIXES + (".txt",)):
        raise KdkitError(f"dataset path '{name}' does not exist; check the path")
    raise unknown("dataset", name, DATASETS)


def _expanded(path) -> Path:
    """`path` with ~ expanded; as given when it names an unknown user (~nosuchuser/x)."""
    try:
        return Path(path).expanduser()
    except RuntimeError:
        return Path(path)


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # a name too long for the file system
        return False


def read_source(path: Path, image_size: int = 0) -> RawData:
    """Whatever dataset is at `path`: IDX folder, CIFAR batches, ImageFolder (its images resized to
    image_size x image_size when image_size > 0), or an archive."""
    path = Path(path)
    if path.is_dir() and idx.find_idx_files(path):
        return idx.load_idx_folder(path)
    if _has_cifar_batches(path):
        return _decode_tree(path)  # a few pickles load fast: not worth a cache copy
    return files.cached(path, lambda alloc: _decode_tree(path, alloc, image_size),
                        kind=f"{image_size}px" if image_size else "")


def _decode_tree(path: Path, alloc: files.Alloc = files.in_memory, image_size: int = 0) -> RawData:
    tree = files.list_tree(path)
    cifar_files = cifar.find_cifar_files(tree)
    if cifar_files is not None:
        return cifar.read_cifar(tree, cifar_files, str(path))  # a few pickles: read in memory
    return imagefolder.read_image_tree(tree, str(path), alloc, image_size)


def _name_of(path: Path) -> str:
    name = path.resolve().name
    for suffix in files.ARCHIVE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _check_class_count(raw: RawData, expected: int, name: str) -> None:
    if raw.classes is None or len(raw.classes) != expected:
        found = "no" if raw.classes is None else len(raw.classes)
        raise KdkitError(f"{raw.origin} has {found} classes but {name} has {expected}; "
                         f"is this the right folder for {name}?")


def locate(name: str, data_dir=None, download: bool = True) -> Path:
    """The path of a named dataset's files, downloading them if allowed; else a KdkitError
    that lists every place looked in and how to get the files."""
    spec = NAMED[name]
    found, looked = _search(name, data_dir)
    if found is not None:
        return found
    if not download:
        note = "download disabled"
    else:
        folder = files.cache_root() / name
        try:
            for filename, md5, urls in spec.downloads:
                fetch(filename, md5, urls, folder)
            return _search(name, data_dir)[0] or folder
        except (KdkitError, OSError) as error:
            note = f"download failed (offline?): {error}"
    raise KdkitError(f"dataset '{name}' not found; looked in: {', '.join(looked)}; {note}. "
                     f"Fix: {spec.fix}")


def _search(name: str, data_dir) -> tuple[Path | None, list[str]]:
    """(first path holding the dataset or None, the places looked in, in words)."""
    spec = NAMED[name]
    env = os.environ.get("KDKIT_DATA")
    places = [
        (f"--data-dir {data_dir}" if data_dir else "--data-dir (not given)",
         _roots(spec, data_dir)),
        (f"$KDKIT_DATA={env}" if env else "$KDKIT_DATA (not set)", _roots(spec, env)),
        (str(files.cache_root() / name), [files.cache_root() / name]),
    ] + [(folder, [Path(folder)]) for folder in spec.system_folders]
    for _, folders in places:
        for folder in folders:
            for entry in spec.entries:
                if _holds(spec, folder / entry):
                    return folder / entry, [label for label, _ in places]
    return None, [label for label, _ in places]


def _roots(spec: NamedDataset, root) -> list[Path]:
    if not root:
        return []
    root = _expanded(root)
    return [root / sub for sub in spec.subfolders] + [root]


def _holds(spec: NamedDataset, path: Path) -> bool:
    """Whether `path` looks like a copy of the dataset (its content is checked when read)."""
    try:
        if spec.format == "idx":
            return path.is_dir() and idx.find_idx_files(path) is not None
        is_image_folder = (path / "train").is_dir() and (path / "test").is_dir()
        return files.is_archive(path) or _has_cifar_batches(path) or is_image_folder
    except OSError:  # a name too long for the file system, a folder we may not list
        return False


def _has_cifar_batches(path: Path) -> bool:
    return (path / "test_batch").is_file() or (path / "meta").is_file()


def dataset_status(data_dir=None) -> list[dict]:
    """For each named dataset: found or not, where, and where it was looked for. No download."""
    rows = []
    for name, description in DATASETS.items():
        if name == "digits":
            rows.append(dict(name=name, description=description, found=True,
                             path="scikit-learn (bundled)", looked_in=[]))
            continue
        found, looked = _search(name, data_dir)
        rows.append(dict(name=name, description=description, found=found is not None,
                         path=str(found) if found else None, looked_in=looked))
    return rows
