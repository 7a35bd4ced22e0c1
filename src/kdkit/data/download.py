"""Download of official dataset files, checked against their published MD5.

A file is written under a temporary name in the target folder and renamed only after its
checksum matches, so a failed or interrupted download never leaves a partial file that a later
run would mistake for data.
"""
import hashlib
import http.client
import os
import tempfile
from pathlib import Path
from urllib.request import urlopen

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from kdkit.errors import KdkitError

TIMEOUT_S = 10  # per connection attempt and per read; an offline machine fails at once


def fetch(filename: str, md5: str, urls: tuple[str, ...], folder: Path) -> Path:
    """folder/filename, downloaded from the first URL that works; KdkitError if none does."""
    target = folder / filename
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    reasons = []
    for url in urls:
        try:
            _download(url, target, md5)
            return target
        # URLError and timeouts are OSErrors; a broken HTTP answer is an HTTPException; a
        # malformed header a ValueError
        except (OSError, http.client.HTTPException, ValueError, KdkitError) as error:
            reasons.append(f"{url}: {' '.join(str(error).split())}")  # one line, even for a raw status line
    raise KdkitError(f"could not download {filename} ({'; '.join(reasons)})")


def _download(url: str, target: Path, md5: str) -> None:
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".part")
    try:
        digest = hashlib.md5(usedforsecurity=False)
        with os.fdopen(handle, "wb") as out, urlopen(url, timeout=TIMEOUT_S) as response:
            size = int(response.headers.get("Content-Length") or 0) or None
            with _progress() as progress:
                task = progress.add_task(target.name, total=size)
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
                    progress.advance(task, len(chunk))
        if digest.hexdigest() != md5:
            raise KdkitError(f"checksum mismatch (md5 {digest.hexdigest()}, expected {md5})")
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _progress() -> Progress:
    return Progress(TextColumn("downloading {task.description}"), BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), console=Console(stderr=True))
