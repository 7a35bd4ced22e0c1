"""Weights and checkpoints on disk: safetensors plus a JSON sidecar, written atomically.

`name.safetensors` holds tensors only (no pickled code can run on load); `name.json` holds the
metadata (architecture, classes, normalisation, metrics, config, training position) and the
SHA-256 of the tensor file, so a truncated or corrupted file is detected before it is used.
Writes go to a temporary file, are fsync'ed, then renamed over the old file: a crash leaves either
the old or the new file, never half of one.
"""
import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from kdkit.errors import KdkitError


def atomic_write(path, data: bytes):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sidecar(path) -> Path:
    return Path(path).with_suffix(".json")


def save_weights(path, tensors: dict[str, torch.Tensor], meta: dict):
    """Write tensors (safetensors) then the sidecar; the sidecar names the tensor file's checksum."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    data = st_save(tensors)
    atomic_write(path, data)
    meta = dict(meta, sha256=hashlib.sha256(data).hexdigest(), format="kdkit-weights-1")
    atomic_write(sidecar(path), json.dumps(meta, indent=1, default=str).encode())


def update_meta(path, **extra):
    """Add keys to a weights file's sidecar (atomically; the tensor checksum stays valid)."""
    meta = load_meta(path) | extra
    atomic_write(sidecar(path), json.dumps(meta, indent=1, default=str).encode())


def load_meta(path) -> dict:
    path = Path(path)
    side = sidecar(path)
    if not side.is_file():
        return {}
    try:
        return json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise KdkitError(f"sidecar '{side}' is not valid JSON; restore it or retrain") from None


def load_weights(path) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, meta). Refuses anything that is not safetensors; verifies the checksum if known."""
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
    if meta.get("sha256") and hashlib.sha256(data).hexdigest() != meta["sha256"]:
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
