"""Weights and checkpoints on disk: safetensors plus a JSON sidecar, written atomically.

`name.safetensors` holds tensors only (no pickled code can run on load); `name.json` holds the
metadata (architecture, classes, normalisation, metrics, config, training position) and the
SHA-256 of the tensor file, so a truncated or corrupted file is detected before it is used.
Writes go to a temporary file, are fsync'ed, then renamed over the old file: a crash leaves either
the old or the new file, never half of one. A full disk is a KdkitError naming the file (the
file being replaced stays as it was).
"""
import errno
import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from kdkit import distributed
from kdkit.errors import KdkitError


class DiskFull(KdkitError):
    """No space left while writing `path`; whatever `path` held before is untouched."""

    def __init__(self, path, error: OSError):
        self.path = Path(path)
        super().__init__(f"disk full while writing '{path}' ({error.strerror}); the file it replaces is intact. "
                         "Fix: free disk space or choose another --out, then rerun with --resume")


def atomic_write(path, data: bytes):
    """Write `data` to `path` atomically. In a torchrun run only rank 0 writes (every file kdkit
    writes goes through here), the other processes skip it."""
    if not distributed.is_main():
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise (DiskFull(path, e) if e.errno in (errno.ENOSPC, errno.EDQUOT) else e) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)  # the rename itself survives a power cut
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull(path, e) from None
        raise


def _fsync_dir(folder: Path):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # (not possible on every platform)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json(path, obj):
    """JSON results (summary.json, fit.json) written atomically: a kill never leaves half a file."""
    atomic_write(path, json.dumps(obj, indent=1, default=str).encode())


def sidecar(path) -> Path:
    return Path(path).with_suffix(".json")


FORMAT = "kdkit-weights-2"  # -1: sha256 of the tensors only; -2: also meta_sha256 over the sidecar itself


def meta_checksum(meta: dict) -> str:
    """SHA-256 of a sidecar's content without its own checksum field (keys sorted: order-free)."""
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def _sidecar_bytes(meta: dict) -> bytes:
    meta = json.loads(json.dumps(meta, default=str))  # the values as they will be read back
    meta["meta_sha256"] = meta_checksum(meta)
    return json.dumps(meta, indent=1).encode()


def save_weights(path, tensors: dict[str, torch.Tensor], meta: dict):
    """Write tensors (safetensors) then the sidecar; the sidecar names the tensor file's checksum
    and its own (so an edited step, score or setting is noticed like a flipped bit)."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    data = st_save(tensors)
    atomic_write(path, data)
    meta = dict(meta, sha256=hashlib.sha256(data).hexdigest(), format=FORMAT, written_by="kdkit")
    atomic_write(sidecar(path), _sidecar_bytes(meta))


def update_meta(path, **extra):
    """Add keys to a weights file's sidecar (atomically; both checksums stay valid)."""
    meta = load_meta(path) | extra
    atomic_write(sidecar(path), _sidecar_bytes(dict(meta, format=FORMAT)))


def load_meta(path) -> dict:
    """A weights file's sidecar ({} when there is none), verified: it must be a JSON object, and one
    that kdkit wrote with a checksum of itself must still match it."""
    path = Path(path)
    side = sidecar(path)
    if not side.is_file():
        return {}
    try:
        if side.stat().st_size > 100_000_000:
            raise KdkitError(f"sidecar '{side}' is {side.stat().st_size:,} bytes, far more than kdkit writes; restore it or retrain")
        meta = json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise KdkitError(f"sidecar '{side}' is not valid JSON; restore it or retrain") from None
    if not isinstance(meta, dict):
        raise KdkitError(f"sidecar '{side}' is a JSON {type(meta).__name__}, not an object; restore the sidecar kdkit wrote or retrain")
    if meta.get("format") == FORMAT and meta.get("meta_sha256") != meta_checksum(meta):
        raise KdkitError(f"sidecar '{side}' was changed after kdkit wrote it (its checksum does not match); restore it, "
                         "use another checkpoint or retrain")
    return meta


def load_weights(path) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, meta). Refuses anything that is not safetensors; a sidecar must name the tensors'
    checksum, and it must match."""
    path = Path(path)
    if not path.is_file():
        raise KdkitError(f"weights file '{path}' not found; check the path")
    data = path.read_bytes()
    if path.suffix != ".safetensors" or not _looks_like_safetensors(data):
        raise KdkitError(
            f"'{path}' is not a safetensors file; kdkit never unpickles weights (pickles can run code). "
            "Convert it: torch.load(f, weights_only=True) then safetensors.torch.save_file(state_dict, 'x.safetensors')"
        )
    meta = load_meta(path)
    if meta and not isinstance(meta.get("sha256"), str):
        raise KdkitError(f"sidecar '{sidecar(path)}' has no sha256 of its weights, so they cannot be verified; restore "
                         "the sidecar kdkit wrote, use another checkpoint or retrain")
    if meta and hashlib.sha256(data).hexdigest() != meta["sha256"]:
        raise KdkitError(f"weights file '{path}' is truncated or corrupt (checksum mismatch); use another checkpoint or retrain")
    try:
        tensors = st_load(data)
    except (SafetensorError, Exception) as e:
        raise KdkitError(f"weights file '{path}' is truncated or corrupt ({str(e)[:80]}); use another checkpoint or retrain") from None
    return tensors, meta


def _looks_like_safetensors(data: bytes) -> bool:
    """safetensors = 8-byte little-endian header length, then a JSON header. Pickles and torch's
    zip files fail this before any parser sees them."""
    if len(data) < 10:
        return False
    header = int.from_bytes(data[:8], "little")
    return header < len(data) and data[8:9] == b"{"


def flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """optimizer.state_dict() -> (tensors for safetensors, JSON-able rest)."""
    tensors, rest = {}, {"param_groups": state["param_groups"], "state": {}}
    for pid, pstate in state["state"].items():
        rest["state"][str(pid)] = {}
        for k, v in pstate.items():
            if torch.is_tensor(v):
                tensors[f"optim.{pid}.{k}"] = v
                rest["state"][str(pid)][k] = "__tensor__"
            else:
                rest["state"][str(pid)][k] = v
    return tensors, rest


def unflatten_optimizer(tensors: dict, rest: dict) -> dict:
    state = {}
    for pid, pstate in rest["state"].items():
        state[int(pid)] = {k: (tensors[f"optim.{pid}.{k}"] if v == "__tensor__" else v) for k, v in pstate.items()}
    return {"state": state, "param_groups": rest["param_groups"]}
