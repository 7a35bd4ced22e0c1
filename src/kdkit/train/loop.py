"""The one training loop. Teacher training, scratch students and distillation all go through fit().

fit() trains a Method (student + frozen teacher + adapters) on a Dataset and writes into run_dir:
  best.safetensors / last.safetensors (+ .json sidecars)   student weights, best-by-validation and last
  checkpoints/state-NNNNNN.safetensors (+ .json)            everything needed to resume exactly (newest two kept)
  metrics.jsonl, tb/                                         every logged scalar (JSONL and TensorBoard)
The learning rate is a pure function of the step, and each epoch's shuffling and augmentation
(and with `mix`, each batch's partners and mixing) come from a generator seeded by (seed, epoch),
so a resumed run replays exactly what it missed:
killed anywhere (SIGKILL included), `--resume` ends with the same weights and metrics, bit for bit
on CPU with `deterministic`. Faults stop the run with a message naming the last good checkpoint:
NaN/inf in the loss or the gradients (or, with nan_policy=skip, the step is skipped and counted),
out of memory (with a smaller batch size to try), disk full, a quota or a run directory that stops taking
writes (the checkpoints stay intact; free space or fix permissions, then --resume).
"""
import dataclasses
import math
import time
import warnings
from pathlib import Path

import torch

from kdkit import checkpoint as ckpt
from kdkit import distributed
from kdkit.config import TrainConfig, validate
from kdkit.data import BatchLoader, Dataset
from kdkit.errors import KdkitError
from kdkit.evaluate import PeakMemory, predict_logits
from kdkit.teachers.cache import TeacherCache
from kdkit.train.device import autocast_dtype, select_device, uses_channels_last
from kdkit.train.meters import Logger, _Sums, _Throughput, write_error
from kdkit.train.optim import _max_norm_hook, lr_at, make_optimizer
from kdkit.train.progress import progress
from kdkit.train.state import State


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
    steps: int = 0  # optimizer steps of this fit's schedule: full_steps, or its share of step_budget
    full_steps: int = 0  # epochs x steps per epoch (steps < full_steps: budget-limited)


def fit(method, data: Dataset, cfg: TrainConfig, run_dir, *, meta: dict | None = None, desc: str = "train",
        on_epoch=None, steps: int | None = None, transform=None) -> FitResult:
    """Train `method` (its student and adapters) on data.train, select on data.val. See module docstring.
    on_epoch(epoch, history_row) is called after each epoch's validation and checkpoint (a tuner
    prunes there: whatever it raises ends the fit, the checkpoint is already written).
    steps: this fit's share of a step budget (kdkit.budget). When fewer than cfg.epochs x steps per
    epoch, the whole schedule runs compressed into them: learning-rate warmup and decay, and the
    epoch a method reads (dkd's warmup, fitnet's hint stage), move at full_steps / steps the normal
    pace; the last epoch is cut where the budget ends, then validated like any other.
    transform: a callable applied to every training batch before normalisation (BatchLoader's; not
    to validation), so the student and an online teacher see its output; no config key holds it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    distributed.check_batch_size(cfg.batch_size)
    validate(cfg)  # the config schema, again: a config made with dataclasses.replace skipped it
    device = select_device(cfg.device)
    if cfg.deterministic:  # (importing the switch costs ~1.5 s, so only when asked)
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(cfg.seed)
    method.to(device)
    layout = uses_channels_last(cfg.channels_last, device)
    if layout:
        method.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not cfg.deterministic  # fixed batch shapes: the fastest kernels
    compiled = compile_models(method, cfg.compile)
    augment = data.augment if cfg.augment == "auto" else cfg.augment
    _check_mix(method.teacher, cfg.mix)
    train = BatchLoader(data.train, cfg.batch_size, shuffle=True, seed=cfg.seed, augment=augment,
                        mean=data.mean, std=data.std, device=device, drop_last=len(data.train.labels) > cfg.batch_size,
                        sampler=cfg.sampler, views=getattr(method.teacher, "views", None),
                        workers=cfg.workers, channels_last=layout, mix=cfg.mix, mix_alpha=cfg.mix_alpha,
                        mix_rows=getattr(method.teacher, "mix_rows", None), transform=transform)
    val = BatchLoader(data.val, 512, shuffle=False, mean=data.mean, std=data.std, device=device,
                      workers=cfg.workers, channels_last=layout)
    optimizer = make_optimizer(method.parameters(), cfg, fused=device.type == "cuda")
    params = [p for group in optimizer.param_groups for p in group["params"]]
    model = distributed.wrap(method, device)  # DDP under torchrun; the method itself otherwise
    if cfg.max_norm:  # rows of the student's Linear weights: one hidden unit's incoming weights
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
    skip_bad = cfg.nan_policy == "skip"
    stop_at = state.step + cfg.max_steps if cfg.max_steps else None  # max_steps counts this invocation's steps
    meta = dict(meta or {}, config=dataclasses.asdict(cfg))
    steps_per_epoch = len(train)
    full_steps = cfg.epochs * steps_per_epoch
    total_steps = min(full_steps, steps) if steps else full_steps
    epochs = -(-total_steps // steps_per_epoch)  # the last one cut short where a step budget ends
    t0, images = time.perf_counter(), 0
    meter = _Throughput(device, warmup=min(20, max(1, total_steps // 10)))
    shown = progress(cfg.progress and distributed.is_main(), desc, total_steps, state.step, steps_per_epoch)
    with PeakMemory(device) as peak, shown as bar, logger, _out_of_memory(state, cfg, device):
        while state.epoch < epochs:
            train.set_epoch(state.epoch)
            if hasattr(method.teacher, "set_epoch"):  # a teacher-output cache: the slot of this epoch's views
                method.teacher.set_epoch(state.epoch)
            method.train()
            sums = state.sums = _Sums(device, state.restored_sums)  # (a mid-epoch resume continues the log window)
            state.restored_sums = None
            for batch in train.iter_from(state.step - state.epoch * steps_per_epoch):
                x, y, idx = (distributed.shard(t) for t in batch[:3])  # this process's slice of the global batch
                # mix: x is already mixed (the teacher sees it too); the partners' labels and lam are for hard_ce
                method.mixing = batch[3].map(distributed.shard) if len(batch) > 3 else None
                position = state.step * full_steps // total_steps  # = state.step without a budget
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(position, steps_per_epoch, cfg)
                method.epoch = position / steps_per_epoch
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
                bar.step()
                if state.step % cfg.log_every == 0:
                    scalars = sums.flush(state)
                    logger.log(state.step, state.epoch, {f"train/{k}": v for k, v in scalars.items()} | {"lr": optimizer.param_groups[0]["lr"]}
                               | ({"train/skipped_steps": state.skipped} if skip_bad else {}))
                    bar.note(f"loss {scalars.get('loss', math.nan):.3f} acc {scalars['accuracy']:.3f} {images / (time.perf_counter() - t0):.0f} img/s")
                if cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0:
                    sums.check(state)
                    state.save()
                if (stop_at and state.step >= stop_at) or state.step >= total_steps:
                    break
            sums.check(state)
            if stop_at and state.step >= stop_at and state.step % steps_per_epoch and state.step < total_steps:
                state.save()  # stopped mid-epoch: --resume continues from here
                break
            state.sums = None  # the next epoch starts a new log window
            meter.pause()
            _end_epoch(state, method, val, device, logger, run_dir, meta, balanced=bool(cfg.imbalance))
            bar.epoch(state.epoch, state.history[-1]["val_accuracy"])
            if on_epoch is not None:
                on_epoch(state.epoch, state.history[-1])
            meter.resume()
            if stop_at and state.step >= stop_at and state.epoch < epochs:
                break
    method.mixing = None  # (a method used after fit sees unmixed batches)
    distributed.barrier()  # every process sees the files rank 0 wrote
    stopped = state.epoch < epochs
    if state.skipped:
        warnings.warn(f"{state.skipped} of {state.step} steps were skipped for NaN/inf (nan_policy=skip)")
    if not stopped:
        _save_student(run_dir / "last.safetensors", method, meta, state, epoch=state.epoch, val_accuracy=state.history[-1]["val_accuracy"],
                      skipped_steps=state.skipped)
        distributed.barrier()
    meter.pause()
    if layout:  # the layout was for training speed: what fit returns is laid out as a freshly loaded model,
        method.to(memory_format=torch.contiguous_format)  # so evaluating it gives bitwise what a reload gives
    result = _result(state, run_dir, t0, images * distributed.world_size(), peak, stopped, meter.rate() * distributed.world_size())
    return dataclasses.replace(result, steps=total_steps, full_steps=full_steps)


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


def _check_mix(teacher, mix: str) -> None:
    """With mix on, the teacher must label the very mixed image the student trains on (consistent
    teaching, Beyer et al. 2022): a torch teacher runs on it, a teacher cache must have recorded the
    same mixing; outputs saved per sample (files, scikit-learn) never saw a mixed image."""
    if isinstance(teacher, TeacherCache):
        if teacher.mix != mix:
            raise KdkitError(f"the teacher cache was recorded with mix={teacher.mix}, but this run has mix={mix}; "
                             f"build the cache with mix={mix} (the pipeline does: --teacher-cache)")
    elif mix != "none" and getattr(teacher, "index_keyed", False):
        raise KdkitError(f"mix={mix} trains on mixed images, but saved teacher outputs and scikit-learn teachers hold one "
                         "output per unmixed sample; use torch teachers, or mix=none")


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
