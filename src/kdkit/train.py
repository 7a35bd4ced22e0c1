"""The one training loop. Teacher training, scratch students and distillation all go through fit().

fit() trains a Method (student + frozen teacher + adapters) on a Dataset and writes into run_dir:
  best.safetensors / last.safetensors (+ .json sidecars)   student weights, best-by-validation and last
  checkpoints/state-NNNNNN.safetensors (+ .json)            everything needed to resume exactly (newest two kept)
  metrics.jsonl, tb/                                         every logged scalar (JSONL and TensorBoard)
The learning rate is a pure function of the step, and each epoch's shuffling and augmentation
come from a generator seeded by (seed, epoch), so a resumed run replays exactly what it missed:
killed anywhere (SIGKILL included), `--resume` ends with the same weights and metrics, bit for bit
on CPU with `deterministic`. Faults stop the run with a message naming the last good checkpoint:
NaN/inf in the loss or the gradients (or, with nan_policy=skip, the step is skipped and counted),
out of memory (with a smaller batch size to try), disk full, a quota or a run directory that stops taking
writes (the checkpoints stay intact; free space or fix permissions, then --resume).
"""
import contextlib
import dataclasses
import errno
import json
import math
import time
import warnings
from pathlib import Path

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from kdkit import checkpoint as ckpt
from kdkit import distributed
from kdkit.config import validate
from kdkit.data import BatchLoader, Dataset
from kdkit.errors import KdkitError, shown
from kdkit.evaluate import PeakMemory, predict_logits


@dataclasses.dataclass
class FitResult:
    run_dir: Path
    best_epoch: int
    best_val_accuracy: float
    last_val_accuracy: float
    seconds: float
    images_per_second: float
    peak_memory: dict
    stopped_early: bool = False  # max_steps reached; --resume continues
    skipped_steps: int = 0  # steps skipped for NaN/inf under nan_policy=skip
    train_images_per_second: float = float("nan")  # steady-state training steps only (see _Throughput)


def select_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if distributed.local_device() is not None:  # torchrun on GPUs: this process's own card
            return distributed.local_device()
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise KdkitError(f"device '{name}' requested but CUDA is not available; use --set device=cpu (or auto)")
    return torch.device(name)


def parse_device(name: str) -> torch.device:
    """select_device, with a one-line error for a string that names no device (e.g. 'gpu')."""
    try:
        return select_device(name)
    except RuntimeError:
        raise KdkitError(f"unknown device {shown(name)}; use auto, cpu, cuda, cuda:N or mps, e.g. --device cpu") from None


def uses_channels_last(setting: str, device: torch.device) -> bool:
    """Whether models and image batches are kept channels_last (NHWC strides) while training. auto:
    on CUDA (tensor cores want NHWC) and on CPU (oneDNN's convolutions; on the 2-core AVX512
    development machine the demo teacher's forward 2.6x and the resnets' steps 1.1-1.3x faster,
    shufflenetv2 in bf16 the one loss, 0.84x: benchmarks/results/layout_cpu.json, docs/speed.md);
    off on MPS, where it is not measured."""
    if setting == "auto":
        return device.type in ("cuda", "cpu")
    return setting == "on"


def autocast_dtype(amp: str, device: torch.device):
    """bf16 where it pays: CUDA with bf16 support, or a CPU with native bf16 (AVX512-BF16 / AMX), where
    it measured 1.6x faster for the demo teacher. Elsewhere emulated bf16 is slower than float32."""
    if amp == "off":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    if device.type == "cpu" and _cpu_has_native_bf16():
        return torch.bfloat16
    return None


def _cpu_has_native_bf16() -> bool:
    try:
        return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def lr_at(step: int, steps_per_epoch: int, cfg) -> float:
    """Learning rate at optimizer step `step` (0-based): linear warmup, then cosine/multistep/constant."""
    total = cfg.epochs * steps_per_epoch
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    if cfg.schedule == "cosine":
        progress = (step - warmup) / max(1, total - warmup)
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))
    if cfg.schedule == "multistep":
        epoch = step // steps_per_epoch
        return cfg.lr * cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    return cfg.lr


def make_optimizer(params, cfg, fused: bool = False) -> torch.optim.Optimizer:
    """Weight decay on weights (ndim > 1) only; biases and norm parameters are not decayed.
    `fused`: one fused kernel for the whole update (CUDA)."""
    params = [p for p in params if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, fused=fused or None)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0, fused=fused or None)


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


class Logger:
    """Every scalar goes to metrics.jsonl and TensorBoard. A resumed run first cuts metrics.jsonl
    back to the lines its checkpoint had seen, so replayed steps are not logged twice. A write that
    fails (disk full, permissions) stops the run with write_error's one line."""

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
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from torch.utils.tensorboard import SummaryWriter
            with self._writing(f"creating the TensorBoard log '{run_dir / 'tb'}'"):
                self.tb = SummaryWriter(str(run_dir / "tb"))
        except ImportError:  # tensorboard is a dependency, but the loop must not die without it
            pass

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


def fit(method, data: Dataset, cfg, run_dir, *, meta: dict | None = None, desc: str = "train",
        on_epoch=None) -> FitResult:
    """Train `method` (its student and adapters) on data.train, select on data.val. See module docstring.
    on_epoch(epoch, history_row) is called after each epoch's validation and checkpoint (a tuner
    prunes there: whatever it raises ends the fit, the checkpoint is already written)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    distributed.check_batch_size(cfg.batch_size)
    validate(cfg)  # the config schema, again: a config made with dataclasses.replace skipped it
    device = select_device(cfg.device)
    if cfg.deterministic:  # (importing the switch costs ~1.5 s, so only when asked)
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(cfg.seed)
    method.to(device)
    layout = uses_channels_last(getattr(cfg, "channels_last", "auto"), device)
    if layout:
        method.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not cfg.deterministic  # fixed batch shapes: the fastest kernels
    compiled = compile_models(method, getattr(cfg, "compile", "off"))
    augment = data.augment if cfg.augment == "auto" else cfg.augment
    train = BatchLoader(data.train, cfg.batch_size, shuffle=True, seed=cfg.seed, augment=augment,
                        mean=data.mean, std=data.std, device=device, drop_last=len(data.train.labels) > cfg.batch_size,
                        sampler=getattr(cfg, "sampler", "none"), views=getattr(method.teacher, "views", None),
                        workers=getattr(cfg, "workers", 0), channels_last=layout)
    val = BatchLoader(data.val, 512, shuffle=False, mean=data.mean, std=data.std, device=device,
                      workers=getattr(cfg, "workers", 0), channels_last=layout)
    optimizer = make_optimizer(method.parameters(), cfg, fused=device.type == "cuda")
    params = [p for group in optimizer.param_groups for p in group["params"]]
    model = distributed.wrap(method, device)  # DDP under torchrun; the method itself otherwise
    if getattr(cfg, "max_norm", 0):  # rows of the student's Linear weights: one hidden unit's incoming weights
        optimizer.register_step_post_hook(_max_norm_hook([m.weight for m in method.student.modules()
                                                          if isinstance(m, torch.nn.Linear)], cfg.max_norm))
    dtype = autocast_dtype(cfg.amp, device)
    state = State(run_dir, method, optimizer, dataclasses.asdict(cfg))
    state.steps_per_epoch = len(train)
    if cfg.resume:
        state.restore()
    else:
        state.clear()  # checkpoints of a run this one replaces
    logger = state.logger = Logger(run_dir, resume=cfg.resume, keep_lines=state.log_lines, state=state)
    skip_bad = getattr(cfg, "nan_policy", "stop") == "skip"
    stop_at = state.step + cfg.max_steps if cfg.max_steps else None  # max_steps counts this invocation's steps
    meta = dict(meta or {}, config=dataclasses.asdict(cfg))
    steps_per_epoch = len(train)
    total_steps = cfg.epochs * steps_per_epoch
    t0, images = time.perf_counter(), 0
    meter = _Throughput(device, warmup=min(20, max(1, total_steps // 10)))
    with PeakMemory(device) as peak, _progress(cfg.progress and distributed.is_main()) as bar, logger, _out_of_memory(state, cfg, device):
        task = bar.add_task(desc, total=total_steps, completed=state.step, info="")
        while state.epoch < cfg.epochs:
            train.set_epoch(state.epoch)
            if hasattr(method.teacher, "set_epoch"):  # a teacher-output cache: the slot of this epoch's views
                method.teacher.set_epoch(state.epoch)
            method.train()
            sums = state.sums = _Sums(device, state.restored_sums)  # (a mid-epoch resume continues the log window)
            state.restored_sums = None
            for batch in train.iter_from(state.step - state.epoch * steps_per_epoch):
                x, y, idx = (distributed.shard(t) for t in batch)  # this process's slice of the global batch
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(state.step, steps_per_epoch, cfg)
                method.epoch = state.step / steps_per_epoch
                if "reduce-overhead" in compiled:  # CUDA graphs: this step's outputs may overwrite the last's
                    torch.compiler.cudagraph_mark_step_begin()
                out = _step(model, optimizer, params, x, y, idx, dtype, cfg.grad_clip, skip_bad)
                if out is None:  # nan_policy=skip: a NaN/inf step changed nothing
                    state.skipped += 1
                else:
                    sums.add(out, y, state.step)
                state.step += 1
                images += len(y)
                meter.step(len(y))
                bar.update(task, advance=1)
                if state.step % cfg.log_every == 0:
                    scalars = sums.flush(state)
                    logger.log(state.step, state.epoch, {f"train/{k}": v for k, v in scalars.items()} | {"lr": optimizer.param_groups[0]["lr"]}
                               | ({"train/skipped_steps": state.skipped} if skip_bad else {}))
                    bar.update(task, info=f"loss {scalars.get('loss', math.nan):.3f} acc {scalars['accuracy']:.3f} {images / (time.perf_counter() - t0):.0f} img/s")
                if cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0:
                    sums.check(state)
                    state.save()
                if stop_at and state.step >= stop_at:
                    break
            sums.check(state)
            if stop_at and state.step >= stop_at and state.step % steps_per_epoch:
                state.save()  # stopped mid-epoch: --resume continues from here
                break
            state.sums = None  # the next epoch starts a new log window
            meter.pause()
            _end_epoch(state, method, val, device, logger, run_dir, meta, balanced=bool(getattr(cfg, "imbalance", None)))
            if on_epoch is not None:
                on_epoch(state.epoch, state.history[-1])
            meter.resume()
            if stop_at and state.step >= stop_at and state.epoch < cfg.epochs:
                break
    distributed.barrier()  # every process sees the files rank 0 wrote
    stopped = state.epoch < cfg.epochs
    if state.skipped:
        warnings.warn(f"{state.skipped} of {state.step} steps were skipped for NaN/inf (nan_policy=skip)")
    if not stopped:
        _save_student(run_dir / "last.safetensors", method, meta, state, epoch=state.epoch, val_accuracy=state.history[-1]["val_accuracy"],
                      skipped_steps=state.skipped)
        distributed.barrier()
    meter.pause()
    if layout:  # the layout was for training speed: what fit returns is laid out as a freshly loaded model,
        method.to(memory_format=torch.contiguous_format)  # so evaluating it gives bitwise what a reload gives
    return _result(state, run_dir, t0, images * distributed.world_size(), peak, stopped, meter.rate() * distributed.world_size())


def compile_models(method, mode: str) -> str:
    """torch.compile the student and a torch teacher in place (state-dict names unchanged), each only
    when the method taps none of its layers (the taps' hooks would be re-traced every step). Returns
    the mode ("" when off). With "reduce-overhead" (CUDA graphs) fit marks each step's beginning."""
    if mode in ("off", "", None):
        return ""
    if not method.student_layers:
        method.student.compile(mode=mode)
    if isinstance(method.teacher, torch.nn.Module) and not method.teacher_layers:
        method.teacher.compile(mode=mode)
    return mode


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


def _max_norm_hook(weights, bound: float):
    """After every optimizer step, rescale each unit's incoming weight vector to L2 norm <= bound
    (the max-norm constraint of Hinton et al. 2012 / Srivastava et al. 2014, used with dropout)."""
    def hook(optimizer, args, kwargs):
        with torch.no_grad():
            for w in weights:
                w.copy_(torch.renorm(w, p=2, dim=0, maxnorm=bound))
    return hook


class _out_of_memory:
    """Out of device memory anywhere in the loop -> one line with a batch size to try."""

    def __init__(self, state, cfg, device):
        self.state, self.cfg, self.device = state, cfg, device

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        if kind is None or not issubclass(kind, torch.OutOfMemoryError):
            return False
        state, bs = self.state, self.cfg.batch_size
        where = f"last good checkpoint: {state.path} (step {state.saved_step})" if state.path else "no checkpoint was written yet"
        raise KdkitError(f"out of {self.device.type} memory at step {state.step + 1} with batch size {bs}; {where}. "
                         f"Fix: rerun with --set batch_size={max(1, bs // 2)} (a new batch size starts over: no --resume)") from None


def _end_epoch(state, method, val, device, logger, run_dir: Path, meta: dict, balanced: bool = False):
    """Validate, keep the best-by-validation weights, checkpoint. With `balanced` (long-tailed
    data, whose validation split mirrors train's imbalance) the best weights are chosen by
    balanced accuracy, so selection does not favour the head classes; `best_val_accuracy` then
    holds that score."""
    state.epoch += 1
    val_acc, val_balanced = _val_accuracy(method.student, val, device)
    logger.log(state.step, state.epoch, {"val/accuracy": val_acc, "val/balanced_accuracy": val_balanced})
    state.history.append({"epoch": state.epoch, "val_accuracy": val_acc, "val_balanced_accuracy": val_balanced})
    score = val_balanced if balanced else val_acc
    if score > state.best_val_accuracy or not len(val.labels):  # no validation split: best = last
        state.best_val_accuracy, state.best_epoch = score, state.epoch
        _save_student(run_dir / "best.safetensors", method, meta, state, epoch=state.epoch, val_accuracy=val_acc,
                      val_balanced_accuracy=val_balanced, selected_by="balanced_accuracy" if balanced else "accuracy")
    state.save()


def _step(method, optimizer, params, x, y, idx, dtype, grad_clip: float, skip_bad: bool = False) -> dict | None:
    """One optimizer step; out["grad_norm"] is the global gradient norm (before clipping). With
    `skip_bad`, a step whose loss or gradients are NaN/inf is dropped (None) and the buffers its
    forward pass updated (BatchNorm statistics, memory banks) are put back; that mode copies the
    buffers every step and reads the check on the host, so it is slower than the default stop."""
    buffers = [b for b in method.buffers() if b.is_floating_point()] if skip_bad else []
    saved = [b.detach().clone() for b in buffers]
    with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
        out = method(x, y, idx)  # idx: positions in the train split (memory banks, saved teacher outputs)
    optimizer.zero_grad(set_to_none=True)
    out["loss"].backward()
    grads = [p.grad for p in params if p.grad is not None]
    if grad_clip:
        out["grad_norm"] = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    else:
        out["grad_norm"] = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=x.device)
    if skip_bad and not bool(torch.isfinite(out["loss"].detach()) & torch.isfinite(out["grad_norm"])):
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for buffer, value in zip(buffers, saved):
                buffer.copy_(value)
        return None
    optimizer.step()
    return out


class _Sums:
    """Running sums kept on the device: no host synchronisation between log points. Each step adds
    one stacked vector (every logged part, then the correct count) and keeps a (2,) flag of whether
    its loss and gradients were finite: a handful of operations per step, whatever the parts."""

    def __init__(self, device, saved: tuple | None = None):
        self.device = device
        self.names, self.total, self.count, self.steps = None, None, 0, 0  # total: (parts + 1,) float32
        self.flags, self.flag_steps = [], []  # per step: (2,) bool finite loss, finite gradients; its number
        if saved and saved[1]["parts"]:  # (tensors, meta) of a checkpoint taken between two log points
            tensors, meta = saved
            self.names = list(meta["parts"])
            correct = tensors.get("sums.correct", torch.zeros(()))
            self.total = torch.stack([tensors[f"sums.{k}"].float() for k in self.names] + [correct.float()]).to(device)
            self.count, self.steps = meta["count"], meta["steps"]
        elif saved:
            self.count, self.steps = saved[1]["count"], saved[1]["steps"]

    def add(self, out: dict, y, step: int):
        if self.names is None:
            self.names = [k for k in out if k != "logits"]
        correct = (out["logits"].detach().argmax(1) == y).sum()
        values = torch.stack([out[k].detach().float() for k in self.names] + [correct.float()])  # (parts + 1,)
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
        tensors = {} if self.total is None else {f"sums.{k}": v for k, v in zip(self.names, self.total[:-1])}
        if self.total is not None:
            tensors["sums.correct"] = self.total[-1]
        return tensors, {"parts": list(self.names) if self.total is not None else [], "count": self.count, "steps": self.steps}

    def flush(self, state) -> dict:
        """Means since the last flush, over steps and (summed, then divided) over processes."""
        self.check(state)
        names = list(self.names or [])
        sums = self.total.double() if self.total is not None else torch.zeros(1, dtype=torch.float64, device=self.device)
        counts = torch.tensor([float(self.count), float(self.steps)], dtype=torch.float64, device=self.device)
        totals = distributed.sum_(torch.cat([sums.to(self.device), counts])).tolist()
        steps = max(1.0, totals[-1])
        scalars = {k: v / steps for k, v in zip(names, totals)}  # (each process's steps: means of means)
        scalars["accuracy"] = totals[-3] / max(1.0, totals[-2])
        self.total, self.count, self.steps = None, 0, 0
        return scalars


# Keys that may change between a run and its --resume without invalidating the checkpoint's position.
# Any other change is either refused (the position would mean another thing: POSITION_KEYS) or
# allowed with a warning that the result now differs from an uninterrupted run (lr after a NaN stop).
RUN_KEYS = {"resume", "max_steps", "progress", "out", "report", "log_every", "checkpoint_every", "device",
            "data_dir", "download", "seeds", "baseline", "generations", "deterministic", "nan_policy", "compile", "workers",
            "channels_last", "overwrite", "trust_hooks"}
POSITION_KEYS = ("dataset", "model", "student", "teacher", "method", "batch_size", "seed", "val_fraction",
                 "imbalance", "sampler", "teacher_cache", "cache_views")


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


def _val_accuracy(model, loader, device) -> tuple[float, float]:
    """(accuracy, balanced accuracy: the mean recall over the classes present). Under torchrun each
    process scores its slice of every batch and the per-class counts are summed."""
    if not len(loader.labels):  # val_fraction 0: nothing to score (the last epoch's weights are kept)
        return 0.0, 0.0
    logits, labels = predict_logits(model, ((distributed.shard(x), distributed.shard(y)) for x, y, _ in loader), device)
    k = logits.shape[1]
    hits = torch.bincount(labels[logits.argmax(1) == labels], minlength=k)  # (K,) correct per class
    seen = torch.bincount(labels, minlength=k)  # (K,) samples per class
    hits, seen = distributed.sum_(torch.stack([hits, seen]).double().to(device)).cpu()
    if not seen.sum():
        return 0.0, 0.0
    present = seen > 0
    return float(hits.sum() / seen.sum()), float((hits[present] / seen[present]).mean())


def _save_student(path, method, meta, state, **extra):
    if not distributed.is_main():
        return
    try:
        ckpt.save_weights(path, method.student.state_dict(), dict(meta, **extra))
    except OSError as e:  # (disk full is ckpt.DiskFull, a KdkitError already)
        raise write_error(e, f"writing '{path}'", state) from None


def _result(state, run_dir, t0, images, peak, stopped=False, train_rate=float("nan")) -> FitResult:
    seconds = time.perf_counter() - t0
    last = state.history[-1]["val_accuracy"] if state.history else float("nan")
    return FitResult(run_dir, state.best_epoch, state.best_val_accuracy, last, seconds,
                     images / max(seconds, 1e-9), peak.result, stopped, state.skipped, train_rate)


def _progress(enabled: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), TextColumn("{task.fields[info]}"), disable=not enabled, transient=False)
