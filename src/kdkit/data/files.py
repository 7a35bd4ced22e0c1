"""Files on disk: listing a folder or a tar archive the same way, and the cache of decoded arrays.

Decoding 60,000 JPEGs takes a while, so the result is stored once as a folder of .npy files under
`cache_root()/decoded/`, keyed by the source path plus the size, mtime, inode and sampled content
of every file it holds (`fingerprint`); a changed source gets a new key, even a file rewritten
with the same size and its old mtime put back. Decoders write straight into memory-mapped files of that folder
(`build(alloc)`), so a dataset larger than RAM decodes without ever being held in memory; later
runs map the images instead of reading them (see dataset.py for splits that stay on disk). The
folder is written under a temporary name and renamed, so an interrupted run never leaves a
half-written cache behind.
"""
import hashlib
import os
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np

from kdkit.data.dataset import RawData, corrupt_file, mapped_array
from kdkit.errors import KdkitError

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
CACHE_VERSION = 3  # bump when the decoded layout or values change, so old cache files are ignored
# (3: 16-bit images are scaled, no longer all 255)
SAMPLE_BYTES, SAMPLES = 4096, 8  # a file's content key: all of it up to 32 kB, else 8 evenly spaced 4 kB reads

Tree = dict[str, Callable[[], bytes]]  # relative posix path -> function returning the file's bytes
Alloc = Callable[[str, tuple, np.dtype], np.ndarray]  # (name, shape, dtype) -> an array to fill


def in_memory(name: str, shape: tuple, dtype) -> np.ndarray:
    """The Alloc of decoders that keep their arrays in RAM."""
    return np.empty(shape, dtype)


def cache_root() -> Path:
    """$KDKIT_CACHE, else ~/.cache/kdkit: downloads and decoded arrays live here."""
    return Path(os.environ.get("KDKIT_CACHE") or Path.home() / ".cache" / "kdkit")


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _skipped(parts: tuple[str, ...]) -> bool:
    """Hidden files and macOS archive debris are never data."""
    return any(part.startswith(".") or part == "__MACOSX" for part in parts)


def list_tree(path: Path) -> Tree:
    """Every file under a folder or inside a tar archive, by relative path."""
    if path.is_dir():
        return _list_folder(path)
    if is_archive(path):
        return _list_archive(path)
    raise KdkitError(f"{path} is neither a folder nor a .tar.gz/.tgz/.tar archive; "
                     "give a dataset folder or archive")


def _list_folder(folder: Path) -> Tree:
    tree = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if path.is_file() and not _skipped(relative.parts):
            tree[relative.as_posix()] = path.read_bytes
    return tree


def _list_archive(archive: Path) -> Tree:
    """Reads the archive once, front to back; member names are only used as keys, never as paths
    to write to, so a hostile name like '../x' can do no harm."""
    tree = {}
    try:
        with tarfile.open(archive, "r|*") as tar:
            for member in tar:
                parts = tuple(p for p in PurePosixPath(member.name).parts if p not in (".", "/"))
                if member.isfile() and parts and not _skipped(parts):
                    data = tar.extractfile(member).read()
                    tree["/".join(parts)] = lambda data=data: data
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        raise corrupt_file(archive, f"archive: {error}") from None
    return tree


def fingerprint(path: Path) -> str:
    """A short key that changes when the file, or any file under the folder, changes."""
    path = path.resolve()
    digest = hashlib.sha256(f"v{CACHE_VERSION}|{path}".encode())
    files = sorted(path.rglob("*")) if path.is_dir() else [path]
    for file in files:
        if file.is_file():
            stat = file.stat()
            name = file.relative_to(path.parent)
            digest.update(f"|{name}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ino}|".encode())
            digest.update(_sampled(file, stat.st_size))
    return digest.hexdigest()[:20]


def _sampled(file: Path, size: int) -> bytes:
    """The bytes of a small file, or evenly spaced samples of a large one: size and mtime can be
    put back by a copy or a tool, and then only the content tells the files apart. Bounded reads
    keep the key cheap for a folder of 60,000 images or one large archive (whose gzip trailer, a
    CRC of all content, is always sampled: the last read ends at the end of the file)."""
    try:
        with file.open("rb") as handle:
            if size <= SAMPLE_BYTES * SAMPLES:
                return handle.read()
            parts = []
            for i in range(SAMPLES):
                handle.seek((size - SAMPLE_BYTES) * i // (SAMPLES - 1))
                parts.append(handle.read(SAMPLE_BYTES))
            return b"".join(parts)
    except OSError:  # unreadable: the decoder will say so; the key still changes with the stat
        return b""


def cached(path: Path, build: Callable[[Alloc], RawData], kind: str = "") -> RawData:
    """`build(alloc)` once per version of `path`; later calls map the stored arrays instead.

    build fills the arrays alloc gives it (memory-mapped files of the cache folder); a cache that
    cannot be written (read-only, disk full) only costs speed: build then runs in memory. `kind`
    keeps apart two decodings of one path (a dataset, and the same folder read as unlabelled images)."""
    folder = cache_root() / "decoded" / f"{path.name}-{kind + '-' if kind else ''}{fingerprint(path)}"
    if folder.is_dir():
        try:
            return _load(folder, str(path))
        except Exception:  # numpy's header parser fails in many ways on a damaged file: all mean the same
            shutil.rmtree(folder, ignore_errors=True)  # damaged cache (a bad header, a cut file): decode again
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        temporary = Path(tempfile.mkdtemp(dir=folder.parent, prefix=folder.name, suffix=".tmp")).resolve()
    except OSError:
        return build(in_memory)
    try:
        try:
            raw = build(lambda name, shape, dtype: mapped_array(temporary / f"{name}.npy", shape, dtype))
            _save(temporary, raw)
        except OSError:  # no room for the cache: decode in memory
            return build(in_memory)
        try:
            os.chmod(temporary, 0o755)  # mkdtemp creates 0700; a cache is fine to share read-only
            os.replace(temporary, folder)
        except OSError:  # another process stored the same source first: use its copy
            pass
        return _load(folder, str(path))
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def _save(folder: Path, raw: RawData) -> None:
    """Every array of `raw` as NAME.npy in `folder` (those decoded into mapped files are flushed)."""
    arrays = dict(x_train=raw.x_train, y_train=raw.y_train)
    if raw.x_test is not None:
        arrays.update(x_test=raw.x_test, y_test=raw.y_test)
    if raw.classes is not None:
        arrays.update(classes=np.array(raw.classes, dtype=str))
    for name, array in arrays.items():
        file = folder / f"{name}.npy"
        if isinstance(array, np.memmap) and Path(array.filename).resolve() == file.resolve():
            array.flush()  # decoded into this very file (np.save over it would truncate what it reads)
        else:
            np.save(file, array, allow_pickle=False)
        os.chmod(file, 0o644)


def _load(folder: Path, origin: str) -> RawData:
    """The stored arrays; images are memory-mapped (copy-on-write: nothing is ever written back)."""
    def array(name, mapped=False):
        file = folder / f"{name}.npy"
        return np.load(file, mmap_mode="c" if mapped else None, allow_pickle=False) if file.is_file() else None

    x_train, y_train, x_test, y_test = (array("x_train", True), array("y_train"), array("x_test", True),
                                        array("y_test"))
    for x, y in ((x_train, y_train), (x_test, y_test)):
        if (x is None) != (y is None) or (x is not None and (x.ndim != 4 or y.shape != (len(x),))):
            raise ValueError(f"{folder}: images and labels do not match")
    if x_train is None:
        raise KeyError(f"{folder} lacks x_train.npy")
    classes = array("classes")
    return RawData(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                   classes=None if classes is None else [str(c) for c in classes], origin=origin)
