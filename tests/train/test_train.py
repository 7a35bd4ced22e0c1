"""The fit() loop: exact resume, NaN stop with the last good checkpoint kept, schedules, files."""
import dataclasses
import json
import re
import math

import numpy as np
import pytest
import torch

from kdkit.checkpoint import load_weights
from kdkit.config import DistillConfig, TrainConfig, apply_overrides
from kdkit.data import BatchLoader, Split, from_arrays
from kdkit.errors import KdkitError
from kdkit.recipes import run_distill, run_train
from kdkit.train import lr_at


def _weights(path):
    return load_weights(path)[0]


def test_resume_mid_epoch_gives_identical_weights(tmp_path, digits, tiny):
    full = apply_overrides(TrainConfig(), tiny | {"model": "cnn-tiny", "out": str(tmp_path / "full"), "epochs": 3})
    run_train(full, digits)
    # 20 steps per epoch at batch 64: stop inside epoch 1, then inside epoch 2, then finish
    part = apply_overrides(full, {"out": str(tmp_path / "part"), "max_steps": 27})
    assert run_train(part, digits)["stopped_early"]
    assert run_train(apply_overrides(part, {"resume": True}), digits)["stopped_early"]
    summary = run_train(apply_overrides(part, {"resume": True, "max_steps": 0}), digits)
    for name in ("last.safetensors", "best.safetensors"):
        a, b = _weights(tmp_path / "full" / name), _weights(tmp_path / "part" / name)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k
    full_summary = json.loads((tmp_path / "full" / "summary.json").read_text())
    assert summary["metrics"]["accuracy"] == full_summary["metrics"]["accuracy"]


def test_distill_resume_skips_finished_phases(tmp_path, digits, tiny):
    cfg = apply_overrides(DistillConfig(), tiny | {"teacher": "cnn-x0.25", "student": "cnn-tiny", "max_steps": 30})
    assert run_distill(cfg, digits)["stopped_early"]  # stopped inside the teacher's training
    resumed = apply_overrides(cfg, {"resume": True, "max_steps": 0})
    summary = run_distill(resumed, digits)
    assert set(summary["rows"]) == {"teacher", "scratch", "student"}
    direct = run_distill(apply_overrides(cfg, {"max_steps": 0, "out": str(tmp_path / "direct")}), digits)
    assert summary["rows"]["student"]["metrics"]["accuracy"] == direct["rows"]["student"]["metrics"]["accuracy"]


def test_nan_loss_stops_and_names_step_and_checkpoint(tmp_path, digits, tiny):
    cfg = apply_overrides(TrainConfig(), tiny | {"model": "cnn-tiny", "checkpoint_every": 2, "log_every": 1})
    # poison the training sample that the seeded epoch-0 order puts into batch 5 (step 6)
    data = dataclasses.replace(digits, train=Split(digits.train.images.float(), digits.train.labels))
    order = [idx for _, _, idx in BatchLoader(data.train, cfg.batch_size, shuffle=True, seed=cfg.seed, drop_last=True)]
    data.train.images[order[5][0]] = float("nan")
    with pytest.raises(KdkitError, match=r"loss became NaN/inf at step (\d+) .*last good checkpoint: (\S+) \(step (\d+)\).*Fix: lower") as err:
        run_train(cfg, data)
    bad, path, good = re.search(r"step (\d+) .*checkpoint: (\S+) \(step (\d+)\)", str(err.value)).groups()
    assert int(good) < int(bad)
    tensors, meta = load_weights(path)  # the kept checkpoint is intact and finite
    assert meta["step"] == int(good)
    assert all(torch.isfinite(t).all() for k, t in tensors.items() if k.startswith("model."))


def test_nan_in_inputs_is_caught(tmp_path, tiny):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 3, 100)
    data = from_arrays(x, y, x[:20], y[:20])  # from_arrays refuses NaN, so the split is poisoned after
    data.train.images[:] = float("nan")  # every batch, so the very first step meets it
    cfg = apply_overrides(TrainConfig(), tiny | {"model": "mlp"})
    with pytest.raises(KdkitError, match="loss became NaN/inf at step 1 .*no checkpoint was written yet"):
        run_train(cfg, data)


def test_lr_schedules():
    cfg = TrainConfig(epochs=10, lr=1.0, warmup_epochs=1, schedule="cosine")
    assert lr_at(0, 10, cfg) == pytest.approx(0.1)
    assert lr_at(9, 10, cfg) == pytest.approx(1.0)
    assert lr_at(10 + 45, 10, cfg) == pytest.approx(0.5 * (1 + math.cos(math.pi * 45 / 90)))
    ms = TrainConfig(epochs=10, lr=1.0, schedule="multistep", milestones=[5, 8], gamma=0.1)
    assert [lr_at(e * 10, 10, ms) for e in (0, 4, 5, 8, 9)] == pytest.approx([1, 1, 0.1, 0.01, 0.01])


def test_run_files_and_logged_parts(tmp_path, digits, tiny):
    cfg = apply_overrides(DistillConfig(), tiny | {"teacher": "cnn-x0.25", "student": "cnn-tiny", "seeds": [0]})
    run_distill(cfg, digits)
    out = tmp_path / "run"
    for f in ("config.yaml", "summary.json", "summary.md", "teacher/best.safetensors", "teacher/best.json",
              "scratch/seed0/last.safetensors", "student/seed0/metrics.jsonl"):
        assert (out / f).is_file(), f
    assert list((out / "student/seed0/tb").glob("events.out.tfevents.*"))
    logged = [json.loads(line) for line in (out / "student/seed0/metrics.jsonl").read_text().splitlines()]
    keys = set().union(*logged)
    assert {"train/loss", "train/ce", "train/kd", "train/accuracy", "val/accuracy", "lr"} <= keys


def test_max_norm_bounds_every_unit_and_empty_val_keeps_the_last(tmp_path, digits, tiny):
    """max_norm: every row of every Linear weight ends with L2 norm <= the bound (checked against
    a direct norm); with val_fraction 0 there is no validation split and best = last."""
    from kdkit.data import load_dataset

    data = load_dataset("digits", val_fraction=0.0)
    cfg = apply_overrides(TrainConfig(), tiny | {"model": "mlp-64-64", "max_norm": 0.5, "lr": 0.5, "val_fraction": 0.0})
    run_train(cfg, data)
    weights = _weights(tmp_path / "run/last.safetensors")
    rows = [w for k, w in weights.items() if k.endswith("weight") and w.ndim == 2]
    assert len(rows) == 3 and max(float(w.norm(dim=1).max()) for w in rows) <= 0.5 + 1e-6
    assert max(float(w.norm(dim=1).max()) for w in rows) > 0.49  # the bound was reached, so it acted
    best = _weights(tmp_path / "run/best.safetensors")
    assert all(torch.equal(best[k], weights[k]) for k in weights)


def test_channels_last_layout_while_training_only(tmp_path, tiny):
    """channels_last (auto: CUDA and CPU) holds while fit trains: the weights and every batch are
    NHWC. fit returns the model in the default layout, so evaluating it is bitwise what evaluating a
    reloaded copy is (a --resume that skips the finished fit must report the same metrics)."""
    from kdkit.methods import create_method
    from kdkit.models import create_model
    from kdkit.evaluate import evaluate_model
    from kdkit.train import fit, uses_channels_last

    assert uses_channels_last("auto", torch.device("cpu")) and uses_channels_last("auto", torch.device("cuda"))
    assert not uses_channels_last("auto", torch.device("mps")) and not uses_channels_last("off", torch.device("cuda"))
    assert uses_channels_last("on", torch.device("mps"))
    g = torch.Generator().manual_seed(0)  # 3 channels: a 1-channel NCHW tensor is also channels_last contiguous
    x = torch.randint(0, 256, (256, 3, 8, 8), dtype=torch.uint8, generator=g).numpy()
    data = from_arrays(x, (np.arange(256) % 10), x[:64], np.arange(64) % 10, val_fraction=0.25)
    seen = {}
    for layout in ("on", "off"):
        cfg = apply_overrides(TrainConfig(), tiny | {"out": str(tmp_path / layout), "channels_last": layout, "amp": "off",
                                                     "epochs": 1})
        torch.manual_seed(0)
        student = create_model("cnn-tiny", 10, in_channels=3, image_size=8)
        strides = []
        student.register_forward_pre_hook(lambda m, args: strides.append(
            (args[0].is_contiguous(memory_format=torch.channels_last),
             next(m.parameters()).is_contiguous(memory_format=torch.channels_last))))
        fit(create_method("ce", student), data, cfg, tmp_path / layout)
        assert set(strides) == {(layout == "on", layout == "on")}  # every train and val batch, and the weights
        assert all(p.is_contiguous() for p in student.parameters())  # the default layout again
        seen[layout] = evaluate_model(student, data, "cpu")[1]
        reloaded = create_model("cnn-tiny", 10, in_channels=3, image_size=8)
        reloaded.load_state_dict(_weights(tmp_path / layout / "last.safetensors"))
        assert torch.equal(evaluate_model(reloaded, data, "cpu")[1], seen[layout])
    assert torch.allclose(seen["on"], seen["off"], atol=1e-3)  # the same training, other kernels
    with pytest.raises(KdkitError, match="config key 'channels_last' must be one of auto, on, off, got 'yes'"):
        apply_overrides(TrainConfig(), {"channels_last": "yes"})
    assert apply_overrides(TrainConfig(), {"channels_last": False}).channels_last == "off"  # YAML's `off`


# ---- the run directory stops taking writes mid-run (issue 20): one line, checkpoints intact, --resume works

def _checkpoint_bytes(run):
    return {p.name: p.read_bytes() for p in sorted((run / "checkpoints").glob("state-*"))}


def _fail_appends(monkeypatch, errno_, after: int, seen: dict):
    """Path.open(metrics.jsonl, "a") raises OSError(errno_) from the (after + 1)-th append on;
    the checkpoint files as they were at that moment go into seen["checkpoints"]."""
    import errno
    import os
    from pathlib import Path

    real_open, calls = Path.open, []

    def open_(self, mode="r", *args, **kwargs):
        if self.name == "metrics.jsonl" and mode == "a":
            calls.append(self)
            if len(calls) > after:
                seen.setdefault("checkpoints", _checkpoint_bytes(self.parent))
                raise OSError(errno_, os.strerror(errno_), str(self))
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", open_)
    return errno


def test_disk_full_on_metrics_keeps_checkpoints_and_resume_finishes(tmp_path, digits, tiny, monkeypatch):
    import errno

    cfg = apply_overrides(TrainConfig(), tiny | {"model": "mlp", "checkpoint_every": 5, "amp": "off"})
    run_train(apply_overrides(cfg, {"out": str(tmp_path / "full")}), digits)
    seen = {}
    with monkeypatch.context() as m:
        _fail_appends(m, errno.ENOSPC, after=2, seen=seen)  # the third log point (step 15)
        with pytest.raises(KdkitError) as err:
            run_train(cfg, digits)
    run = tmp_path / "run"
    assert str(err.value) == (f"disk full while appending to '{run}/metrics.jsonl' at step 15; the checkpoints are intact "
                              f"(newest: {run}/checkpoints/state-000002.safetensors, step 10). "
                              "Fix: free disk space, then rerun with --resume")
    assert _checkpoint_bytes(run) == seen["checkpoints"] and len(seen["checkpoints"]) == 4  # two, with sidecars
    load_weights(run / "checkpoints" / "state-000002.safetensors")  # checksum verified
    run_train(apply_overrides(cfg, {"resume": True}), digits)
    for name in ("best.safetensors", "last.safetensors"):
        a, b = _weights(tmp_path / "full" / name), _weights(run / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert (run / "metrics.jsonl").read_text() == (tmp_path / "full" / "metrics.jsonl").read_text()


@pytest.mark.parametrize("code,start,fix", [
    ("EDQUOT", "disk quota exceeded", "free space within your quota (or have it raised)"),
    ("EACCES", "permission denied", "make '{run}' writable again"),
    ("EROFS", "read-only file system", "make '{run}' writable again"),
])
def test_unwritable_run_directory_mid_run(tmp_path, digits, tiny, monkeypatch, code, start, fix):
    import errno

    cfg = apply_overrides(TrainConfig(), tiny | {"model": "mlp", "checkpoint_every": 5, "epochs": 1})
    _fail_appends(monkeypatch, getattr(errno, code), after=1, seen={})
    with pytest.raises(KdkitError) as err:
        run_train(cfg, digits)
    run = tmp_path / "run"
    assert str(err.value) == (f"{start} while appending to '{run}/metrics.jsonl' at step 10; the checkpoints are intact "
                              f"(newest: {run}/checkpoints/state-000001.safetensors, step 5). "
                              f"Fix: {fix.format(run=run)}, then rerun with --resume")


def test_disk_full_creating_tensorboard_log_on_resume(tmp_path, digits, tiny, monkeypatch):
    import errno

    import torch.utils.tensorboard

    cfg = apply_overrides(TrainConfig(), tiny | {"model": "mlp", "checkpoint_every": 5, "max_steps": 12})
    assert run_train(cfg, digits)["stopped_early"]
    run = tmp_path / "run"
    before = _checkpoint_bytes(run)

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    resume = apply_overrides(cfg, {"resume": True, "max_steps": 0})
    with monkeypatch.context() as m:
        m.setattr(torch.utils.tensorboard, "SummaryWriter", no_space)
        with pytest.raises(KdkitError, match=rf"^disk full while creating the TensorBoard log '{run}/tb' at step 12; the "
                                             rf"checkpoints are intact \(newest: {run}/checkpoints/state-000003.safetensors, "
                                             r"step 12\)\. Fix: free disk space, then rerun with --resume$"):
            run_train(resume, digits)
    assert _checkpoint_bytes(run) == before
    assert not run_train(resume, digits).get("stopped_early")
    assert (run / "last.safetensors").is_file()


def test_disk_full_on_the_first_log_point(tmp_path, digits, tiny, monkeypatch):
    import errno

    cfg = apply_overrides(TrainConfig(), tiny | {"model": "mlp", "epochs": 1})
    _fail_appends(monkeypatch, errno.ENOSPC, after=0, seen={})
    with pytest.raises(KdkitError, match=r"^disk full while appending to .* at step 5; no checkpoint was written yet\. "
                                         r"Fix: free disk space, then rerun with --resume$"):
        run_train(cfg, digits)


def test_permission_denied_writing_a_checkpoint(tmp_path, digits, tiny, monkeypatch):
    import errno
    import os
    import tempfile

    cfg = apply_overrides(TrainConfig(), tiny | {"model": "mlp", "checkpoint_every": 5, "epochs": 1})
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if str(dir).endswith("checkpoints") and list(Path(dir).glob("state-*.json")):  # from the second checkpoint on
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dir))
        return real(*args, dir=dir, **kwargs)

    from pathlib import Path

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    run = tmp_path / "run"
    with pytest.raises(KdkitError, match=rf"^permission denied while writing checkpoint '{run}/checkpoints/state-000002.safetensors' "
                                         rf"at step 10; the checkpoints are intact \(newest: {run}/checkpoints/state-000001.safetensors, "
                                         rf"step 5\)\. Fix: make '{run}' writable again, then rerun with --resume$"):
        run_train(cfg, digits)


@pytest.mark.parametrize("key,value", [("log_every", 0), ("log_every", -1), ("checkpoint_every", -5)])
def test_log_and_checkpoint_intervals_checked_before_training(tmp_path, digits, tiny, key, value):
    with pytest.raises(KdkitError, match=rf"^config key '{key}' must be "):  # by the schema, at once
        apply_overrides(TrainConfig(), tiny | {"model": "mlp", key: value})
    cfg = dataclasses.replace(apply_overrides(TrainConfig(), tiny | {"model": "mlp"}), **{key: value})
    with pytest.raises(KdkitError, match=rf"^config key '{key}' must be "):  # a config that skipped it: by fit
        run_train(cfg, digits)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_read_only_run_directory_when_saving_best_weights(tmp_path, digits, tiny, monkeypatch):
    import errno
    import os
    import tempfile

    cfg = apply_overrides(TrainConfig(), tiny | {"model": "mlp", "epochs": 1})
    run, real = tmp_path / "run", tempfile.mkstemp

    def mkstemp(*args, dir=None, prefix="", **kwargs):
        if prefix.startswith(".best.safetensors"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
        return real(*args, dir=dir, prefix=prefix, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    with pytest.raises(KdkitError, match=rf"^read-only file system while writing '{run}/best.safetensors' at step \d+; "
                                         rf"no checkpoint was written yet\. Fix: make '{run}' writable again, then rerun with --resume$"):
        run_train(cfg, digits)
