"""What kdkit may write, and who writes it: the rules that keep a user's files safe.

- A run directory (`--out` of train, distill, ensemble, tune) is kdkit's only when it holds the
  marker `.kdkit-run.json`, written when kdkit creates the run. A non-empty folder without it (or a
  run of another command) is refused: kdkit never writes over files it did not create, unless the
  user says `--overwrite`.
- One writer per run directory: `RunLock` holds an exclusive flock on `.kdkit.lock` for as long as
  the process runs. The kernel drops it when the process dies (SIGKILL included), so a killed
  run never leaves a stale lock in the way of `--resume`; a second writer gets the holder's pid
  and host.
- A single output file (`--out` of evaluate, predict, export, compare) is written only where no
  file is, or over a file kdkit wrote (recognised by its content), and never over a file the same
  command reads.
"""
import errno
import json
import os
import socket
from pathlib import Path

from kdkit.errors import KdkitError

MARKER = ".kdkit-run.json"
LOCK = ".kdkit.lock"
KINDS = {"train": "`kdkit train`", "distill": "`kdkit distill`", "tune": "`kdkit tune`", "api": "`kdkit.distill()`"}


def short_path(path, limit: int = 120) -> str:
    """A path as it appears in a one-line message: at most `limit` characters."""
    text = str(path)
    return text if len(text) <= limit else text[: limit // 2 - 2] + "..." + text[-(limit // 2 - 1):]


def run_kind(folder: Path) -> str | None:
    """The command that made `folder` (one of KINDS), or None when kdkit did not."""
    try:
        marker = json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    kind = marker.get("kind") if isinstance(marker, dict) else None
    return kind if kind in KINDS else None


def check_path(out, what: str = "--out") -> Path:
    """Fail on a path no file or folder can be made at: empty, too long, a symlink loop or a
    dangling link, inside a file, unreadable. Nothing is created."""
    path = Path(out)
    if not str(out).strip():
        raise KdkitError(f"{what} is empty; name a path, e.g. {what} runs/kd")
    limit = _name_max(path)
    long = next((part for part in path.parts if len(os.fsencode(part)) > limit), None)
    if long is not None:
        raise KdkitError(f"{what} '{short_path(out)}' has a name of {len(os.fsencode(long))} bytes, longer than the file "
                         f"system allows ({limit}); choose a shorter path")
    try:
        if path.is_symlink() and not path.exists():
            reason = "a symlink loop" if _loops(path) else f"a symlink to '{short_path(os.readlink(path))}', which does not exist"
            raise KdkitError(f"{what} '{short_path(out)}' is {reason}; remove the link or choose another path")
        for parent in path.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise KdkitError(f"{what} '{short_path(out)}' is inside '{short_path(parent)}', which is a file; choose another path")
                break
        path.exists()
    except OSError as e:
        raise KdkitError(f"{what} '{short_path(out)}' cannot be used ({_why(e)}); choose another path") from None
    return path


def _loops(path: Path) -> bool:
    try:
        path.resolve(strict=True)
    except RuntimeError:  # (Python < 3.13 raises RuntimeError for a loop)
        return True
    except OSError as e:
        return e.errno == errno.ELOOP
    return False


def _name_max(path: Path) -> int:
    for folder in path.absolute().parents:  # the nearest existing folder's file system
        try:
            if folder.is_dir():
                return os.pathconf(folder, "PC_NAME_MAX")
        except (OSError, ValueError, AttributeError):
            continue
    return 255


def _why(error: OSError) -> str:
    return error.strerror or type(error).__name__


def check_run_dir(out, kind: str, overwrite: bool = False) -> Path:
    """Before any work: `out` may become (or already is) a `kind` run directory. Nothing is created.
    Under torchrun rank 0 decides (the others would see its run directory half made)."""
    from kdkit import distributed

    path = check_path(out)
    if not distributed.is_main():
        return path
    if path.exists() and not path.is_dir():
        raise KdkitError(f"--out '{short_path(out)}' is a file, not a run directory; choose a folder (new, empty or an earlier "
                         f"{KINDS[kind]} run)")
    if not path.is_dir() or overwrite:
        return path
    found = run_kind(path)
    if found == kind:
        return path
    try:
        entries = sorted(p.name for p in path.iterdir() if not is_ours(p.name))
    except OSError as e:
        raise KdkitError(f"--out '{short_path(out)}' cannot be read ({_why(e)}); choose another folder") from None
    if not entries:
        return path
    if found is not None:
        raise KdkitError(f"--out '{short_path(out)}' is a {KINDS[found]} run, not a {KINDS[kind]} run; choose another "
                         "folder, or add --overwrite to write into it anyway")
    raise KdkitError(f"--out '{short_path(out)}' holds files kdkit did not write (e.g. '{short_path(entries[0], 60)}'); choose a new "
                     "or empty folder, or add --overwrite to write into it anyway (files of the same name are replaced)")


def is_ours(name: str) -> bool:
    """The marker, the lock, and the marker's temporary file while another process writes it."""
    return name in (MARKER, LOCK) or name.startswith(f".{MARKER}.")


def claim_run_dir(out, kind: str, overwrite: bool = False, lock: bool = True) -> "RunLock":
    """Check `out`, create it, mark it as a `kind` run and lock it for this process (a context
    manager; the lock is held until it exits or the process dies). lock=False: the folder is
    shared by design (tune's workers, each trial in its own folder)."""
    from kdkit import distributed

    path = check_run_dir(out, kind, overwrite)
    if not distributed.is_main():  # torchrun: wait until rank 0 has checked and claimed the folder
        distributed.barrier()
        return RunLock(None)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise KdkitError(f"cannot create --out '{short_path(out)}' ({_why(e)}); choose a folder you can write to") from None
    held = RunLock(path) if lock else RunLock(None)
    if run_kind(path) != kind:
        from kdkit.checkpoint import atomic_write

        try:
            atomic_write(path / MARKER, json.dumps({"kind": kind, "written_by": "kdkit"}).encode())
        except OSError as e:
            held.release()
            raise KdkitError(f"cannot write into --out '{short_path(out)}' ({_why(e)}); choose a folder you can write to") from None
    distributed.barrier()
    return held


class RunLock:
    """An exclusive lock on `folder/.kdkit.lock` (flock: released by the kernel when the process
    dies). Only rank 0 of a torchrun job writes, so only rank 0 locks."""

    def __init__(self, folder):
        from kdkit import distributed

        self.path, self.fd = None if folder is None else Path(folder) / LOCK, None
        if folder is None or not distributed.is_main():
            return
        try:
            import fcntl
        except ImportError:  # (Windows: no flock; one writer is then the user's to ensure)
            return
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise KdkitError(f"cannot create the lock file '{short_path(self.path)}' ({_why(e)}); choose a folder you can "
                             "write to") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(self.fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(self.fd)
            self.fd = None
            raise KdkitError(f"run directory '{short_path(self.path.parent)}' is in use by {holder}; wait for it to finish (or "
                             "stop it), then rerun with --resume, or choose another --out") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"pid {os.getpid()} on host {socket.gethostname()}".encode(), 0)

    def release(self):
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def is_kdkit_output(path: Path) -> bool:
    """Whether an existing file was written by kdkit, judged by its content (JSON with a
    'written_by: kdkit' key, kdkit's CSV header, report pages' footer, an .onnx with such a sidecar)."""
    path = Path(path)
    try:
        if path.suffix == ".json":
            if path.stat().st_size > 50_000_000:
                return False
            data = json.loads(path.read_text())
            return isinstance(data, dict) and str(data.get("written_by", "")).startswith("kdkit")
        if path.suffix == ".csv":
            with path.open(encoding="utf-8", errors="replace") as f:
                return f.readline().startswith(CSV_HEADER)
        if path.suffix == ".html":
            with path.open("rb") as f:
                f.seek(max(0, path.stat().st_size - 400))
                return b'<p class="note">written by kdkit ' in f.read()
        if path.suffix == ".onnx":
            return is_kdkit_output(path.with_suffix(".json"))
    except (OSError, ValueError):
        return False
    return False


CSV_HEADER = "input,prediction,probability"  # the first columns of `kdkit predict --out` files


def check_out_file(out, reads=(), example: str = "out.json") -> Path:
    """Before any work: `out` may be written. Refused: a folder, a file this command reads, or an
    existing file kdkit did not write."""
    path = check_path(out)
    if path.is_dir():
        raise KdkitError(f"--out '{short_path(out)}' is a folder; name a file, e.g. --out {short_path(path / example)}")
    for source in reads:
        if _same_file(path, Path(source)):
            raise KdkitError(f"--out '{short_path(out)}' is a file this command reads; write the result to another file, "
                             f"e.g. '{free_name(path, example).name}' beside it")
    if path.exists() and not is_kdkit_output(path):
        raise KdkitError(f"--out '{short_path(out)}' exists and is not a file kdkit wrote; kdkit never writes over a file it did "
                         f"not create: choose another name, e.g. '{free_name(path, example).name}' beside it")
    return path


def free_name(path: Path, example: str) -> Path:
    """A name beside `path` that no file has: `example`, else example-1, example-2, ..."""
    stem, suffix = Path(example).stem, Path(example).suffix
    candidates = [path.with_name(example)] + [path.with_name(f"{stem}-{i}{suffix}") for i in range(1, 100)]
    return next((c for c in candidates if not c.exists() and not c.is_symlink()), candidates[-1])


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False
