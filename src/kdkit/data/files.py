"""Files on disk: listing a folder or a tar archive the same way, and the cache of decoded arrays.

Decoding 60,000 JPEGs takes a while, so the result is stored once as an uncompressed .npz under
`cache_root()/decoded/`, keyed by the source path plus the size and mtime of what it holds; a
changed source gets a new key. Cache files are written to a temporary name and renamed, so an
interrupted run never leaves a half-written cache behind.
"""
import hashlib
import os
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np

from kdkit.data.dataset import RawData, corrupt_file
from kdkit.errors import KdkitError

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
CACHE_VERSION = 1  # bump when the decoded layout changes, so old cache files are ignored

Tree = dict[str, Callable[[], bytes]]  # relative posix path -> function returning the file's bytes


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
            digest.update(f"|{name}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:20]


def cached(path: Path, build: Callable[[], RawData]) -> RawData:
    """`build()` once per version of `path`; later calls load the stored arrays instead."""
    file = cache_root() / "decoded" / f"{path.name}-{fingerprint(path)}.npz"
    if file.is_file():
        try:
            return _load(file, str(path))
        except (OSError, ValueError, KeyError, EOFError, NotImplementedError, zipfile.BadZipFile,
                zlib.error):
            pass  # damaged cache file: decode again and overwrite it
    raw = build()
    try:
        _save_atomically(file, raw)
    except OSError:
        pass  # a read-only cache only costs speed next time
    return raw


def _save_atomically(file: Path, raw: RawData) -> None:
    arrays = dict(x_train=raw.x_train, y_train=raw.y_train)
    if raw.x_test is not None:
        arrays.update(x_test=raw.x_test, y_test=raw.y_test)
    if raw.classes is not None:
        arrays.update(classes=np.array(raw.classes, dtype=str))
    file.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=file.parent, prefix=file.name, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            np.savez(out, **arrays)
        os.chmod(temporary, 0o644)  # mkstemp creates 0600; a cache is fine to share read-only
        os.replace(temporary, file)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _load(file: Path, origin: str) -> RawData:
    # an open handle: np.load leaks the file it opened itself when the zip is damaged
    with open(file, "rb") as handle, np.load(handle, allow_pickle=False) as stored:
        has_test = "x_test" in stored
        return RawData(x_train=stored["x_train"], y_train=stored["y_train"],
                       x_test=stored["x_test"] if has_test else None,
                       y_test=stored["y_test"] if has_test else None,
                       classes=[str(c) for c in stored["classes"]] if "classes" in stored else None,
                       origin=origin)
