"""What a run records while it trains: metrics.jsonl and TensorBoard (Logger), the running sums of
each log window, which also catch NaN/inf (_Sums), the steady-state throughput (_Throughput), and a
failed write in the run directory said in one line (write_error)."""
import contextlib
import errno
import json
import sys
import time
import warnings
from pathlib import Path

import torch

from kdkit import checkpoint as ckpt
from kdkit import distributed
from kdkit.data.labels import UNLABELED
from kdkit.errors import KdkitError


# What a failed write in the run directory means, and the fix (the message says "then rerun with --resume").
WRITE_ERRORS = {errno.ENOSPC: ("disk full", "free disk space"),
                errno.EDQUOT: ("disk quota exceeded", "free space within your quota (or have it raised)"),
                errno.EACCES: ("permission denied", "make '{run}' writable again"),
                errno.EPERM: ("permission denied", "make '{run}' writable again"),
                errno.EROFS: ("read-only file system", "make '{run}' writable again")}


def write_error(error: OSError, what: str, state) -> KdkitError:
    """A failed write (disk full, quota, permissions) during fit as one line: what was being written
    at which step, that the checkpoints are intact (nothing is deleted before its successor is
    complete) and how to continue."""
    run = state.dir.parent
    problem, fix = WRITE_ERRORS.get(error.errno, (error.strerror or type(error).__name__, "check the disk holding '{run}'"))
    kept = f"the checkpoints are intact (newest: {state.path}, step {state.saved_step})" if state.path else \
        "no checkpoint was written yet"
    return KdkitError(f"{problem} while {what} at step {state.step}; {kept}. Fix: {fix.format(run=run)}, then rerun with --resume")


_TENSORBOARD_NOTICE = {"said": False}


def _summary_writer():
    """torch's SummaryWriter, or None without tensorboard (the tensorboard extra): the run goes on with
    metrics.jsonl alone, after one notice per process on stderr."""
    try:
        from kdkit.extras import need

        need("tensorboard", "TensorBoard logging")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torch.utils.tensorboard import SummaryWriter
        return SummaryWriter
    except (KdkitError, ImportError) as e:
        if not _TENSORBOARD_NOTICE["said"]:
            _TENSORBOARD_NOTICE["said"] = True
            print(f"note: no TensorBoard logs (tb/): {e}; metrics.jsonl has every scalar", file=sys.stderr)
        return None


class Logger:
    """Every scalar goes to metrics.jsonl and, when tensorboard is installed, TensorBoard. A resumed
    run first cuts metrics.jsonl back to the lines its checkpoint had seen, so replayed steps are not
    logged twice. A write that fails (disk full, permissions) stops the run with write_error's one line."""

    def __init__(self, run_dir: Path, resume: bool, keep_lines: int = 0, state=None):
        self.path, self.state = run_dir / "metrics.jsonl", state
        self.lines, self.tb = 0, None
        if not distributed.is_main():  # one log per run: rank 0's (its scalars are summed over ranks)
            self.path = None
            return
        with self._writing(f"starting '{self.path}'"):
            if not resume:
                self.path.unlink(missing_ok=True)
            elif self.path.is_file():
                kept = self.path.read_text().splitlines(keepends=True)[:keep_lines]
                ckpt.atomic_write(self.path, "".join(kept).encode())
                self.lines = len(kept)
        writer = _summary_writer()
        if writer is not None:
            with self._writing(f"creating the TensorBoard log '{run_dir / 'tb'}'"):
                self.tb = writer(str(run_dir / "tb"))

    @contextlib.contextmanager
    def _writing(self, what: str):
        try:
            yield
        except OSError as e:
            if self.state is None:
                raise
            raise write_error(e, what, self.state) from None

    def log(self, step: int, epoch: int, scalars: dict):
        if self.path is None:
            return
        with self._writing(f"appending to '{self.path}'"):
            with self.path.open("a") as f:
                f.write(json.dumps({"step": step, "epoch": epoch, **scalars}) + "\n")
        self.lines += 1
        if self.tb:
            with self._writing(f"writing TensorBoard events in '{self.tb.log_dir}'"):
                for k, v in scalars.items():
                    self.tb.add_scalar(k, v, step)

    def close(self):
        tb, self.tb = self.tb, None
        if tb:
            with self._writing(f"closing the TensorBoard log '{tb.log_dir}'"):
                tb.close()

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):  # closed however fit() ends (a tuner's pruning raises out of it)
        try:
            self.close()
        except KdkitError:
            if kind is None:  # a failure while closing must not hide the error that ended the run
                raise


class _Sums:
    """Running sums kept on the device: no host synchronisation between log points. Each step adds
    one stacked vector (every logged part, then the correct and the labelled count) and keeps a (2,)
    flag of whether its loss and gradients were finite: a handful of operations per step, whatever
    the parts. Training accuracy is over the labelled samples only (kdkit.data.labels.UNLABELED)."""

    def __init__(self, device, saved: tuple | None = None):
        self.device = device
        self.names, self.total, self.count, self.steps = None, None, 0, 0  # total: (parts + 2,) float32
        self.flags, self.flag_steps = [], []  # per step: (2,) bool finite loss, finite gradients; its number
        if saved and saved[1]["parts"]:  # (tensors, meta) of a checkpoint taken between two log points
            tensors, meta = saved
            self.names = list(meta["parts"])
            correct = tensors.get("sums.correct", torch.zeros(()))
            labelled = tensors.get("sums.labelled", torch.tensor(float(meta["count"])))  # older checkpoints: all labelled
            self.total = torch.stack([tensors[f"sums.{k}"].float() for k in self.names]
                                     + [correct.float(), labelled.float()]).to(device)
            self.count, self.steps = meta["count"], meta["steps"]
        elif saved:
            self.count, self.steps = saved[1]["count"], saved[1]["steps"]

    def add(self, out: dict, y, step: int):
        if self.names is None:
            self.names = [k for k in out if k != "logits"]
        correct = (out["logits"].detach().argmax(1) == y).sum()  # an UNLABELED (-100) sample is never correct
        labelled = (y != UNLABELED).sum()
        values = torch.stack([out[k].detach().float() for k in self.names] + [correct.float(), labelled.float()])  # (parts + 2,)
        self.total = values if self.total is None else self.total + values
        self.flags.append(torch.isfinite(torch.stack([values[self.names.index("loss")], values[self.names.index("grad_norm")]])))
        self.flag_steps.append(step)
        self.count += len(y)
        self.steps += 1

    def check(self, state):
        """Stop on a NaN/inf loss or gradient, naming the step and the last good checkpoint (which
        stays untouched: this runs before every save). Every process stops at the same step."""
        never = 2**62
        if self.flags:
            ok = torch.stack(self.flags)  # (S, 2)
            steps = torch.tensor(self.flag_steps, device=ok.device)  # (S,)
            first = torch.stack([torch.where(~ok[:, 0], steps, never).min(),  # first NaN/inf loss ...
                                 torch.where(ok[:, 0] & ~ok[:, 1], steps, never).min()])  # ... or gradient
        else:
            first = torch.tensor([never, never], device=self.device)
        first = distributed.min_(first).tolist()
        steps = [(s if s < never else -1, what) for s, what in zip(first, ("loss", "gradients"))]
        bad, what = min(((s, w) for s, w in steps if s >= 0), default=(-1, ""))
        if bad >= 0:
            where = f"last good checkpoint: {state.path} (step {state.saved_step})" if state.path else "no checkpoint was written yet"
            raise KdkitError(
                f"{what} became NaN/inf at step {bad + 1} (epoch {bad // max(1, state.steps_per_epoch) + 1}); {where}. "
                "Fix: lower --set lr=..., add --set grad_clip=1.0, check the data for NaN/inf values, "
                "or --set nan_policy=skip to skip such steps"
            )
        self.flags, self.flag_steps = [], []  # all finite: nothing left to look at

    def state(self) -> tuple[dict, dict]:
        tensors = {} if self.total is None else {f"sums.{k}": v for k, v in zip(self.names, self.total[:-2])}
        if self.total is not None:
            tensors["sums.correct"], tensors["sums.labelled"] = self.total[-2], self.total[-1]
        return tensors, {"parts": list(self.names) if self.total is not None else [], "count": self.count, "steps": self.steps}

    def flush(self, state) -> dict:
        """Means since the last flush, over steps and (summed, then divided) over processes."""
        self.check(state)
        names = list(self.names or [])
        sums = self.total.double() if self.total is not None else torch.zeros(2, dtype=torch.float64, device=self.device)
        steps = torch.tensor([float(self.steps)], dtype=torch.float64, device=self.device)
        totals = distributed.sum_(torch.cat([sums.to(self.device), steps])).tolist()  # parts, correct, labelled, steps
        steps = max(1.0, totals[-1])
        scalars = {k: v / steps for k, v in zip(names, totals)}  # (each process's steps: means of means)
        scalars["accuracy"] = totals[-3] / max(1.0, totals[-2])  # over the labelled samples (0 when none)
        self.total, self.count, self.steps = None, 0, 0
        return scalars


class _Throughput:
    """Training images/s of the steady state: from step `warmup` of this invocation on (compilation,
    allocator warm-up and the first batches excluded), training steps only (the end-of-epoch
    validation and checkpoint excluded; a mid-epoch checkpoint_every save is counted). Synchronises the device only at its start and at each pause."""

    def __init__(self, device, warmup: int):
        self.device, self.warmup, self.steps = device, warmup, 0
        self.images, self.seconds, self.started = 0, 0.0, None

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def step(self, images: int):
        self.steps += 1
        if self.started is not None:
            self.images += images
        elif self.steps == self.warmup:
            self.started = self._now()

    def pause(self):
        if self.started is not None:
            self.seconds += self._now() - self.started
            self.started = None

    def resume(self):
        if self.steps >= self.warmup:
            self.started = self._now()

    def rate(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")
