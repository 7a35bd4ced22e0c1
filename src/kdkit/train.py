"""The one training loop. Teacher training, scratch students and distillation all go through fit().

fit() trains a Method (student + frozen teacher + adapters) on a Dataset and writes into run_dir:
  best.safetensors / last.safetensors (+ .json sidecars)   student weights, best-by-validation and last
  checkpoints/state.safetensors (+ .json)                   everything needed to resume exactly
  metrics.jsonl, tb/                                         every logged scalar (JSONL and TensorBoard)
The learning rate is a pure function of the step, and each epoch's shuffling and augmentation
come from a generator seeded by (seed, epoch), so a resumed run replays exactly what it missed.
"""
import dataclasses
import json
import math
import time
import warnings
from pathlib import Path

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from kdkit import checkpoint as ckpt
from kdkit.data import BatchLoader, Dataset
from kdkit.errors import KdkitError
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


def select_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise KdkitError(f"device '{name}' requested but CUDA is not available; use --set device=cpu (or auto)")
    return torch.device(name)


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


def make_optimizer(params, cfg) -> torch.optim.Optimizer:
    """Weight decay on weights (ndim > 1) only; biases and norm parameters are not decayed."""
    params = [p for p in params if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)


class Logger:
    """Every scalar goes to metrics.jsonl and TensorBoard."""

    def __init__(self, run_dir: Path, resume: bool):
        self.path = run_dir / "metrics.jsonl"
        if not resume:
            self.path.unlink(missing_ok=True)
        self.tb = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(run_dir / "tb"))
        except ImportError:  # tensorboard is a dependency, but the loop must not die without it
            pass

    def log(self, step: int, epoch: int, scalars: dict):
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, "epoch": epoch, **scalars}) + "\n")
        if self.tb:
            for k, v in scalars.items():
                self.tb.add_scalar(k, v, step)

    def close(self):
        if self.tb:
            self.tb.close()


def fit(method, data: Dataset, cfg, run_dir, *, meta: dict | None = None, desc: str = "train") -> FitResult:
    """Train `method` (its student and adapters) on data.train, select on data.val. See module docstring."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = select_device(cfg.device)
    if cfg.deterministic:  # (importing the switch costs ~1.5 s, so only when asked)
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(cfg.seed)
    method.to(device)
    if device.type == "cuda":
        method.to(memory_format=torch.channels_last)
    augment = data.augment if cfg.augment == "auto" else cfg.augment
    train = BatchLoader(data.train, cfg.batch_size, shuffle=True, seed=cfg.seed, augment=augment,
                        mean=data.mean, std=data.std, device=device, drop_last=len(data.train.labels) > cfg.batch_size,
                        sampler=getattr(cfg, "sampler", "none"))
    val = BatchLoader(data.val, 512, shuffle=False, mean=data.mean, std=data.std, device=device)
    optimizer = make_optimizer(method.parameters(), cfg)
    dtype = autocast_dtype(cfg.amp, device)
    state = State(run_dir, method, optimizer)
    state.steps_per_epoch = len(train)
    if cfg.resume:
        state.restore()
    logger = Logger(run_dir, resume=cfg.resume)
    stop_at = state.step + cfg.max_steps if cfg.max_steps else None  # max_steps counts this invocation's steps
    meta = dict(meta or {}, config=dataclasses.asdict(cfg))
    steps_per_epoch = len(train)
    total_steps = cfg.epochs * steps_per_epoch
    t0, images = time.perf_counter(), 0
    with PeakMemory(device) as peak, _progress(cfg.progress) as bar:
        task = bar.add_task(desc, total=total_steps, completed=state.step, info="")
        while state.epoch < cfg.epochs:
            train.set_epoch(state.epoch)
            method.train()
            sums = _Sums(device)
            for x, y, idx in train.iter_from(state.step - state.epoch * steps_per_epoch):
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(state.step, steps_per_epoch, cfg)
                method.epoch = state.step / steps_per_epoch
                out = _step(method, optimizer, x, y, idx, dtype, cfg.grad_clip)
                sums.add(out, y, state.step)
                state.step += 1
                images += len(y)
                bar.update(task, advance=1)
                if state.step % cfg.log_every == 0:
                    scalars = sums.flush(state)
                    logger.log(state.step, state.epoch, {f"train/{k}": v for k, v in scalars.items()} | {"lr": optimizer.param_groups[0]["lr"]})
                    bar.update(task, info=f"loss {scalars['loss']:.3f} acc {scalars['accuracy']:.3f} {images / (time.perf_counter() - t0):.0f} img/s")
                if cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0:
                    sums.check(state)
                    state.save()
                if stop_at and state.step >= stop_at:
                    break
            sums.check(state)
            if stop_at and state.step >= stop_at and state.step % steps_per_epoch:
                state.save()  # stopped mid-epoch: --resume continues from here
                break
            _end_epoch(state, method, val, device, logger, run_dir, meta, balanced=bool(getattr(cfg, "imbalance", None)))
            if stop_at and state.step >= stop_at and state.epoch < cfg.epochs:
                break
    logger.close()
    stopped = state.epoch < cfg.epochs
    if not stopped:
        _save_student(run_dir / "last.safetensors", method, meta, epoch=state.epoch, val_accuracy=state.history[-1]["val_accuracy"])
    return _result(state, run_dir, t0, images, peak, stopped)


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
    if score > state.best_val_accuracy:
        state.best_val_accuracy, state.best_epoch = score, state.epoch
        _save_student(run_dir / "best.safetensors", method, meta, epoch=state.epoch, val_accuracy=val_acc,
                      val_balanced_accuracy=val_balanced, selected_by="balanced_accuracy" if balanced else "accuracy")
    state.save()


def _step(method, optimizer, x, y, idx, dtype, grad_clip: float) -> dict:
    with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
        out = method(x, y, idx)  # idx: positions in the train split (memory banks, saved teacher outputs)
    optimizer.zero_grad(set_to_none=True)
    out["loss"].backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(method.parameters(), grad_clip)
    optimizer.step()
    return out


class _Sums:
    """Running sums kept on the device: no host synchronisation between log points."""

    def __init__(self, device):
        self.device = device
        self.parts, self.correct, self.count, self.steps = {}, 0, 0, 0
        self.first_bad = torch.tensor(-1, device=device)

    def add(self, out: dict, y, step: int):
        for k, v in out.items():
            if k != "logits":
                self.parts[k] = self.parts.get(k, 0) + v.detach().float()
        bad = ~torch.isfinite(out["loss"].detach())
        self.first_bad = torch.where(bad & (self.first_bad < 0), step, self.first_bad)
        self.correct = self.correct + (out["logits"].detach().argmax(1) == y).sum()
        self.count += len(y)
        self.steps += 1

    def check(self, state):
        """Stop on NaN/inf loss, naming the step and the last good checkpoint (which stays untouched)."""
        bad = int(self.first_bad)
        if bad >= 0:
            last = state.path if state.path.exists() else None
            where = f"last good checkpoint: {last} (step {state.saved_step})" if last else "no checkpoint was written yet"
            raise KdkitError(
                f"loss became NaN/inf at step {bad + 1} (epoch {bad // max(1, state.steps_per_epoch) + 1}); {where}. "
                "Fix: lower --set lr=..., add --set grad_clip=1.0, or check the data for NaN/inf values"
            )

    def flush(self, state) -> dict:
        self.check(state)
        scalars = {k: float(v) / max(1, self.steps) for k, v in self.parts.items()}
        scalars["accuracy"] = float(self.correct) / max(1, self.count)
        self.parts, self.correct, self.count, self.steps = {}, 0, 0, 0
        return scalars


class State:
    """Training position and everything needed to resume it exactly."""

    def __init__(self, run_dir: Path, method, optimizer):
        self.path = run_dir / "checkpoints" / "state.safetensors"
        self.method, self.optimizer = method, optimizer
        self.epoch, self.step, self.saved_step, self.steps_per_epoch = 0, 0, 0, 1
        self.best_val_accuracy, self.best_epoch, self.history = -1.0, 0, []

    def save(self):
        tensors = {f"model.{k}": v for k, v in self.method.state_dict().items()}
        optim_tensors, optim_rest = ckpt.flatten_optimizer(self.optimizer.state_dict())
        tensors |= optim_tensors | {"rng.cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            tensors["rng.cuda"] = torch.cuda.get_rng_state()
        meta = {k: getattr(self, k) for k in ("epoch", "step", "best_val_accuracy", "best_epoch", "history")}
        prev = self.path.with_name("state.prev.safetensors")
        if self.path.exists():  # keep the previous good checkpoint until the new one is complete
            self.path.replace(prev)
            ckpt.sidecar(self.path).replace(ckpt.sidecar(prev))
        ckpt.save_weights(self.path, tensors, meta | {"optimizer": optim_rest})
        self.saved_step = self.step

    def restore(self):
        if not self.path.exists() and not self.path.with_name("state.prev.safetensors").exists():
            raise KdkitError(f"--resume: no checkpoint in {self.path.parent}; run without --resume to start fresh")
        try:
            tensors, meta = ckpt.load_weights(self.path)
        except KdkitError as e:
            prev = self.path.with_name("state.prev.safetensors")
            if not prev.exists():
                raise
            warnings.warn(f"{e}; resuming from the previous checkpoint {prev}")
            tensors, meta = ckpt.load_weights(prev)
        model = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        self.method.load_state_dict(model)
        self.optimizer.load_state_dict(ckpt.unflatten_optimizer(tensors, meta["optimizer"]))
        torch.set_rng_state(tensors["rng.cpu"])
        if "rng.cuda" in tensors and torch.cuda.is_available():
            torch.cuda.set_rng_state(tensors["rng.cuda"])
        for k in ("epoch", "step", "best_val_accuracy", "best_epoch", "history"):
            setattr(self, k, meta[k])
        self.saved_step = self.step


def _val_accuracy(model, loader, device) -> tuple[float, float]:
    """(accuracy, balanced accuracy: the mean recall over the classes present)."""
    logits, labels = predict_logits(model, loader, device)
    if not len(labels):
        return 0.0, 0.0
    hits = (logits.argmax(1) == labels).float()
    recalls = [hits[labels == k].mean() for k in labels.unique()]
    return float(hits.mean()), float(torch.stack(recalls).mean())


def _save_student(path, method, meta, **extra):
    ckpt.save_weights(path, method.student.state_dict(), dict(meta, **extra))


def _result(state, run_dir, t0, images, peak, stopped=False) -> FitResult:
    seconds = time.perf_counter() - t0
    last = state.history[-1]["val_accuracy"] if state.history else float("nan")
    return FitResult(run_dir, state.best_epoch, state.best_val_accuracy, last, seconds,
                     images / max(seconds, 1e-9), peak.result, stopped)


def _progress(enabled: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), TextColumn("{task.fields[info]}"), disable=not enabled, transient=False)
