"""A run's position on disk: checkpoints written so that one complete checkpoint always exists,
restored exactly by --resume, and the rule for which settings a --resume may change."""
import contextlib
import warnings
from pathlib import Path

import torch

from kdkit import checkpoint as ckpt
from kdkit import distributed
from kdkit.errors import KdkitError
from kdkit.train.meters import write_error


# Keys that may change between a run and its --resume without invalidating the checkpoint's position.
# Any other change is either refused (the position would mean another thing: POSITION_KEYS) or
# allowed with a warning that the result now differs from an uninterrupted run (lr after a NaN stop).
RUN_KEYS = {"resume", "max_steps", "progress", "out", "report", "log_every", "checkpoint_every", "device",
            "data_dir", "download", "seeds", "baseline", "generations", "deterministic", "nan_policy", "compile", "workers",
            "channels_last", "overwrite", "trust_hooks"}


POSITION_KEYS = ("dataset", "model", "student", "teacher", "method", "batch_size", "seed", "val_fraction",
                 "imbalance", "sampler", "teacher_cache", "cache_views", "model_kwargs", "teacher_kwargs",
                 "student_kwargs", "teacher_state_dict", "student_state_dict")


def complete_checkpoints(run_dir) -> list[Path]:
    """A run directory's checkpoints that have their sidecar, newest first: the ones --resume can
    use (tensors without a sidecar were cut off while being written and never counted)."""
    found = sorted((Path(run_dir) / "checkpoints").glob("state-*.safetensors"), reverse=True)
    return [p for p in found if ckpt.sidecar(p).is_file()]


# What --resume reads from a checkpoint's sidecar: each must be there (and is under its checksum).
CHECKPOINT_FIELDS = ("epoch", "step", "best_val_accuracy", "best_epoch", "history", "skipped", "log_lines", "config",
                     "optimizer")


class State:
    """Training position and everything needed to resume it exactly.

    Checkpoints are checkpoints/state-NNNNNN.safetensors, numbered in the order written, each with
    a JSON sidecar holding the SHA-256 of its tensors. A new checkpoint is complete (tensors, then
    sidecar, each fsync'ed and renamed into place) before older ones are deleted, and the newest
    two are kept, so at every instant at least one complete checkpoint exists. restore() takes
    the newest one that verifies and warns about each it had to skip (truncated, corrupt, or cut
    off before its sidecar was written).
    """

    KEEP = 2

    def __init__(self, run_dir: Path, method, optimizer, config: dict | None = None):
        self.dir = run_dir / "checkpoints"
        self.method, self.optimizer, self.config = method, optimizer, config or {}
        self.path = None  # the newest complete checkpoint
        self.logger, self.sums, self.restored_sums = None, None, None  # sums: the open log window
        self.epoch, self.step, self.saved_step, self.steps_per_epoch = 0, 0, 0, 1
        self.best_val_accuracy, self.best_epoch, self.history = -1.0, 0, []
        self.skipped, self.log_lines = 0, 0

    def checkpoints(self) -> list[Path]:
        """Newest first."""
        return sorted(self.dir.glob("state-*.safetensors"), reverse=True)

    def clear(self):
        if not distributed.is_main():
            return
        for old in self.checkpoints():
            old.unlink(missing_ok=True)
            ckpt.sidecar(old).unlink(missing_ok=True)

    def save(self):
        if not distributed.is_main():  # rank 0 writes; the others only keep count
            self.saved_step = self.step
            return
        tensors = {f"model.{k}": v for k, v in self.method.state_dict().items()}
        optim_tensors, optim_rest = ckpt.flatten_optimizer(self.optimizer.state_dict())
        tensors |= optim_tensors | {"rng.cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            tensors["rng.cuda"] = torch.cuda.get_rng_state()
        meta = {k: getattr(self, k) for k in ("epoch", "step", "best_val_accuracy", "best_epoch", "history", "skipped")}
        meta |= {"log_lines": self.logger.lines if self.logger else 0, "config": self.config, "optimizer": optim_rest}
        if self.sums is not None:
            sums_tensors, meta["sums"] = self.sums.state()
            tensors |= sums_tensors
        existing = self.checkpoints()
        number = int(existing[0].stem.split("-")[1]) + 1 if existing else 1
        path = self.dir / f"state-{number:06d}.safetensors"
        try:
            ckpt.save_weights(path, tensors, meta)
        except (ckpt.DiskFull, OSError) as e:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)  # tensors without their sidecar are no checkpoint
            if isinstance(e, OSError):  # permissions, a read-only file system
                raise write_error(e, f"writing checkpoint '{path}'", self) from None
            kept = f"the previous checkpoint {self.path} (step {self.saved_step}) is intact" if self.path else "no earlier checkpoint exists"
            raise KdkitError(f"disk full while writing checkpoint '{path}' at step {self.step}; {kept}. "
                             "Fix: free disk space or choose another --out, then rerun with --resume") from None
        self.path, self.saved_step = path, self.step
        for old in self.checkpoints()[self.KEEP:]:
            old.unlink(missing_ok=True)
            ckpt.sidecar(old).unlink(missing_ok=True)
        for stale in self.dir.glob(".state-*.tmp"):  # left by a process killed mid-write
            stale.unlink(missing_ok=True)

    def restore(self):
        candidates = self.checkpoints()
        if not candidates:
            raise KdkitError(f"--resume: no checkpoint in {self.dir}; run without --resume to start fresh")
        for path in candidates:
            try:
                tensors, meta = ckpt.load_weights(path)
                if not meta:
                    raise KdkitError(f"checkpoint '{path}' has no sidecar (the run stopped while writing it)")
                missing = [k for k in CHECKPOINT_FIELDS if k not in meta]
                if meta.get("format") != ckpt.FORMAT or missing:
                    why = f"lacks {', '.join(missing)}" if missing else "has no checksum of its own"
                    raise KdkitError(f"checkpoint sidecar '{ckpt.sidecar(path)}' {why}, so it cannot be trusted")
                break
            except KdkitError as e:
                warnings.warn(f"{e}; resuming from the checkpoint before it")
        else:
            raise KdkitError(f"--resume: none of the {len(candidates)} checkpoints in {self.dir} is intact; "
                             "run without --resume to start over")
        self._check_config(meta["config"])
        model = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        self.method.load_state_dict(model)
        self.optimizer.load_state_dict(ckpt.unflatten_optimizer(tensors, meta["optimizer"]))
        torch.set_rng_state(tensors["rng.cpu"])
        if "rng.cuda" in tensors and torch.cuda.is_available():
            torch.cuda.set_rng_state(tensors["rng.cuda"])
        for k in ("epoch", "step", "best_val_accuracy", "best_epoch", "history", "skipped", "log_lines"):
            setattr(self, k, meta[k])
        self.restored_sums = (tensors, meta["sums"]) if meta.get("sums") else None
        self.path, self.saved_step = path, self.step

    def _check_config(self, saved: dict):
        check_resume_settings(saved, self.config, f"the checkpoint in {self.dir}", finished=False)


def check_resume_settings(saved: dict, current: dict, what: str, finished: bool, warn: bool = True):
    """--resume with another batch size, seed, model, ... would continue a different run: refused.
    Other changes (lr, epochs, grad_clip) are allowed with a warning while training remains, and
    refused once it has finished: nothing would be trained with them, only the record would change."""
    changed = {k: (saved[k], v) for k, v in current.items() if k in saved and saved[k] != v and k not in RUN_KEYS}
    refused = list(changed) if finished else [k for k in changed if k in POSITION_KEYS]
    if refused:
        diff = ", ".join(f"{k}: {_short(changed[k][0])} -> {_short(changed[k][1])}" for k in refused[:4])
        state = "finished training with" if finished else "was made with"
        why = " (a finished run is not extended: its learning-rate schedule has ended)" if finished and "epochs" in refused else ""
        raise KdkitError(f"--resume: {what} {state} other settings ({diff}){why}; rerun with the original values, or "
                         "drop --resume (or use another --out) to start over")
    if changed and warn:
        diff = ", ".join(f"{k}: {_short(a)} -> {_short(b)}" for k, (a, b) in changed.items())
        warnings.warn(f"resuming with changed settings ({diff}): the result will differ from an uninterrupted run")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
