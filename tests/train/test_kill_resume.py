"""Reliability of a run: SIGKILL anywhere then --resume, damaged checkpoints, disk full, NaN/inf,
out of memory, a pickle where a checkpoint should be, --resume with other settings."""
import dataclasses
import errno
import json
import os
import pickle
import shutil
import sys
import warnings
from pathlib import Path

import pytest
import torch

from kdkit import checkpoint as ckpt
from kdkit.config import TrainConfig, apply_overrides
from kdkit.data import BatchLoader, Split
from kdkit.errors import KdkitError
from kdkit.recipes import cross_entropy, run_train
from kdkit.weights import build_model
from kdkit.train import fit

sys.path.insert(0, str(Path(__file__).parent))
import kill_harness  # noqa: E402


def test_sigkill_at_random_points_then_resume_is_bit_identical(tmp_path):
    """One kill point per scenario here (train; distill's three fits; CRD + long tail + sampler;
    a tune study): the full tally is `python tests/train/kill_harness.py --points 32`, results in
    benchmarks/results/kill_resume.json."""
    result = kill_harness.harness(points=int(os.environ.get("KDKIT_KILL_POINTS", 4)), seed=0, workdir=tmp_path)
    assert result["kills"] >= 1
    failed = [r for r in result["results"] if not r["identical"]]
    assert not failed, failed


def _cfg(tiny, **extra):
    return apply_overrides(TrainConfig(), tiny | {"model": "cnn-tiny", "checkpoint_every": 5} | extra)


def _states(run_dir):
    return sorted((Path(run_dir) / "checkpoints").glob("state-*.safetensors"))


def test_metrics_log_is_not_duplicated_by_resume(tmp_path, digits, tiny):
    run_train(_cfg(tiny, out=str(tmp_path / "full")), digits)
    part = _cfg(tiny, out=str(tmp_path / "part"), max_steps=13, log_every=3)
    run_train(part, digits)
    run_train(apply_overrides(part, {"resume": True, "max_steps": 0}), digits)
    full = _cfg(tiny, out=str(tmp_path / "full2"), log_every=3)
    run_train(full, digits)
    assert (tmp_path / "part/metrics.jsonl").read_text() == (tmp_path / "full2/metrics.jsonl").read_text()


def test_newest_two_checkpoints_are_kept(tmp_path, digits, tiny):
    run_train(_cfg(tiny), digits)
    states = _states(tiny["out"])
    assert len(states) == 2 and all(ckpt.sidecar(s).is_file() for s in states)
    steps = [ckpt.load_meta(s)["step"] for s in states]
    assert steps[0] <= steps[1] == 2 * 20  # 2 epochs of 20 steps (the last two saves: step 40 twice or 35, 40)


@pytest.mark.parametrize("damage", ["truncate", "flip", "no_sidecar"])
def test_damaged_newest_checkpoint_falls_back_to_the_previous(tmp_path, digits, tiny, damage):
    cfg = _cfg(tiny, max_steps=12)  # checkpoints at steps 5 and 10, stop (and save) at 12
    run_train(cfg, digits)
    newest = _states(tiny["out"])[-1]
    data = newest.read_bytes()
    if damage == "truncate":
        newest.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        newest.write_bytes(data[:-100] + bytes([data[-100] ^ 0xFF]) + data[-99:])
    else:
        ckpt.sidecar(newest).unlink()  # killed between the tensors and their sidecar
    with pytest.warns(UserWarning, match="resuming from the checkpoint before it"):
        run_train(apply_overrides(cfg, {"resume": True, "max_steps": 0}), digits)
    reference = _cfg(tiny, out=str(tmp_path / "ref"))
    run_train(reference, digits)
    a, b = ckpt.load_weights(tmp_path / "ref/last.safetensors")[0], ckpt.load_weights(Path(tiny["out"]) / "last.safetensors")[0]
    assert all(torch.equal(a[k], b[k]) for k in a)  # replayed from step 10: same result


def test_every_checkpoint_damaged_is_one_line_error(tmp_path, digits, tiny):
    cfg = _cfg(tiny, max_steps=12)
    run_train(cfg, digits)
    for state in _states(tiny["out"]):
        state.write_bytes(b"garbage")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(KdkitError, match="none of the 2 checkpoints in .* is intact; run without --resume"):
            run_train(apply_overrides(cfg, {"resume": True}), digits)


def test_malicious_pickle_in_place_of_a_checkpoint_is_never_executed(tmp_path, digits, tiny):
    cfg = _cfg(tiny, max_steps=6)
    run_train(cfg, digits)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return exec, (f"open({str(marker)!r}, 'w').write('x')",)

    payload = pickle.dumps({"model.x": Evil()})
    for state in _states(tiny["out"]):  # (their sidecars stay: the files look like checkpoints)
        state.write_bytes(payload)
    torch.save({"x": Evil()}, _states(tiny["out"])[0])  # torch's zip format too
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(KdkitError, match="none of the 2 checkpoints .* is intact"):
            run_train(apply_overrides(cfg, {"resume": True}), digits)
    assert not marker.exists()
    for state in _states(tiny["out"]):  # without sidecars they are no checkpoints: the run starts over
        ckpt.sidecar(state).unlink()
    run_train(apply_overrides(cfg, {"resume": True, "max_steps": 0}), digits)
    assert (Path(tiny["out"]) / "last.safetensors").is_file() and not marker.exists()
    pickle.loads(payload)  # the payload is live: plain pickle runs it
    assert marker.exists()


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, digits, tiny, monkeypatch):
    cfg = _cfg(tiny, max_steps=12)
    real_fsync, calls = os.fsync, {"n": 0}

    def fsync(fd):  # the 4th checkpoint file written (step 10's tensors) hits a full disk
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp") and ".state-" in os.readlink(f"/proc/self/fd/{fd}"):
            calls["n"] += 1
            if calls["n"] == 3:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(KdkitError, match=r"disk full while writing checkpoint '.*state-000002.safetensors' at step 10; "
                                         r"the previous checkpoint .*state-000001.safetensors \(step 5\) is intact\. Fix: free disk space"):
        run_train(cfg, digits)
    monkeypatch.setattr(os, "fsync", real_fsync)
    states = _states(tiny["out"])
    assert [s.name for s in states] == ["state-000001.safetensors"]  # no half checkpoint, no temporary file
    assert not list((Path(tiny["out"]) / "checkpoints").glob(".*.tmp"))
    assert ckpt.load_weights(states[0])[1]["step"] == 5
    run_train(apply_overrides(cfg, {"resume": True, "max_steps": 0}), digits)  # space freed: --resume finishes
    assert (Path(tiny["out"]) / "last.safetensors").is_file()


def test_disk_full_is_a_one_line_error_for_any_weights_file(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    ckpt.save_weights(tmp_path / "w.safetensors", {"a": torch.ones(3)}, {})
    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(KdkitError, match="disk full while writing '.*w.safetensors' .*the file it replaces is intact"):
        ckpt.save_weights(tmp_path / "w.safetensors", {"a": torch.zeros(3)}, {})
    monkeypatch.undo()
    assert torch.equal(ckpt.load_weights(tmp_path / "w.safetensors")[0]["a"], torch.ones(3))


def _poison(digits, cfg, batch):
    """A copy of digits whose sample in the seeded epoch-0 order's `batch` is NaN."""
    data = dataclasses.replace(digits, train=Split(digits.train.images.float().clone(), digits.train.labels))
    order = [idx for _, _, idx in BatchLoader(data.train, cfg.batch_size, shuffle=True, seed=cfg.seed, drop_last=True)]
    data.train.images[order[batch][0]] = float("nan")
    return data


def test_nan_policy_skip_skips_and_counts(tmp_path, digits, tiny):
    cfg = _cfg(tiny, nan_policy="skip", epochs=1)
    data = _poison(digits, cfg, batch=5)
    summary = run_train(cfg, data)
    assert summary["fit"]["skipped_steps"] == 1
    tensors, meta = ckpt.load_weights(Path(tiny["out"]) / "last.safetensors")
    assert meta["skipped_steps"] == 1 and all(torch.isfinite(t).all() for t in tensors.values())
    logged = [json.loads(line) for line in (Path(tiny["out"]) / "metrics.jsonl").read_text().splitlines()]
    assert logged[-2]["train/skipped_steps"] == 1  # (the last line is validation)


class _SqrtNet(torch.nn.Module):
    """Finite loss, but d/dp sqrt(p) at p = 0 is inf (times 0: NaN): a gradient-only fault."""

    def __init__(self, model):
        super().__init__()
        self.model, self.p = model, torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return self.model(x) + 0.0 * torch.sqrt(self.p)


def test_nan_gradient_with_finite_loss_stops_the_run(tmp_path, digits, tiny):
    cfg = _cfg(tiny, log_every=1)
    method = cross_entropy(_SqrtNet(build_model("cnn-tiny", digits, 0)), cfg, digits)
    with pytest.raises(KdkitError, match=r"gradients became NaN/inf at step 1 \(epoch 1\); no checkpoint was written yet"):
        fit(method, digits, cfg, tmp_path / "g")
    with pytest.warns(UserWarning, match="20 of 20 steps were skipped"):
        fit(cross_entropy(_SqrtNet(build_model("cnn-tiny", digits, 0)), cfg, digits), digits,
            dataclasses.replace(cfg, nan_policy="skip", epochs=1), tmp_path / "h")


def test_out_of_memory_suggests_a_smaller_batch(tmp_path, digits, tiny, monkeypatch):
    cfg = _cfg(tiny)
    method = cross_entropy(build_model("cnn-tiny", digits, 0), cfg, digits)
    forward, calls = method.forward, {"n": 0}

    def oom(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 8:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(*args, **kwargs)

    monkeypatch.setattr(method, "forward", oom)
    with pytest.raises(KdkitError, match=r"out of cpu memory at step 8 with batch size 64; last good checkpoint: "
                                         r".*state-000001.safetensors \(step 5\)\. Fix: rerun with --set batch_size=32"):
        fit(method, digits, cfg, tmp_path / "m")


def test_resume_with_other_settings(tmp_path, digits, tiny):
    cfg = _cfg(tiny, max_steps=6)
    run_train(cfg, digits)
    with pytest.raises(KdkitError, match=r"--resume: the run in .* was made with other settings "
                                         r"\(batch_size: 64 -> 32\); rerun with the original values"):
        run_train(apply_overrides(cfg, {"resume": True, "batch_size": 32}), digits)
    with pytest.warns(UserWarning, match=r"resuming with changed settings \(lr: 0.05 -> 0.01\)"):
        run_train(apply_overrides(cfg, {"resume": True, "lr": 0.01, "max_steps": 0}), digits)


def test_crd_resume_is_exact(tmp_path, digits, tiny):
    """CRD's state beyond weights: both memory banks and the generator drawing its negatives."""
    from kdkit.config import DistillConfig
    from kdkit.recipes import run_distill

    cfg = apply_overrides(DistillConfig(), tiny | {"teacher": "cnn-x0.25", "student": "cnn-tiny", "method": "crd",
                                                   "nce_k": 64, "baseline": False, "report": False, "teacher_epochs": 1})
    run_distill(cfg, digits)
    part = apply_overrides(cfg, {"out": str(tmp_path / "part"), "max_steps": 27})  # teacher: 20 steps, student: 27 of 40
    assert run_distill(part, digits)["stopped_early"]
    run_distill(apply_overrides(part, {"resume": True, "max_steps": 0}), digits)
    a = ckpt.load_weights(Path(tiny["out"]) / "student/seed0/last.safetensors")[0]
    b = ckpt.load_weights(tmp_path / "part/student/seed0/last.safetensors")[0]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_killed_while_writing_the_first_checkpoint_starts_over(tmp_path, digits, tiny):
    """Tensors on disk but no sidecar yet (SIGKILL between the two writes) and nothing earlier:
    there is no checkpoint, so --resume runs the phase from the start (as an uninterrupted run)."""
    from kdkit.config import DistillConfig
    from kdkit.recipes import run_distill

    cfg = apply_overrides(DistillConfig(), tiny | {"teacher": "cnn-x0.25", "student": "cnn-tiny", "baseline": False,
                                                   "report": False})
    run_distill(cfg, digits)
    part = apply_overrides(cfg, {"out": str(tmp_path / "part")})
    run_distill(part, digits)
    student = tmp_path / "part/student/seed0"
    shutil.rmtree(student)  # as if killed at the student's first checkpoint
    (student / "checkpoints").mkdir(parents=True)
    (student / "checkpoints/state-000001.safetensors").write_bytes(b"half a checkpoint")
    run_distill(apply_overrides(part, {"resume": True}), digits)
    a = ckpt.load_weights(Path(tiny["out"]) / "student/seed0/last.safetensors")[0]
    b = ckpt.load_weights(student / "last.safetensors")[0]
    assert all(torch.equal(a[k], b[k]) for k in a)
