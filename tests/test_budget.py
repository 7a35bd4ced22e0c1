"""kdkit.budget and fit(steps=...): a whole-run step budget shared by the phases in proportion to their
epochs, each phase running its whole schedule compressed into its share, and a run that still ends
with its summary (marked budget-limited). max_steps keeps its own meaning (stop and --resume)."""
import dataclasses
import json
import math

import pytest
import torch

from kdkit.budget import phase_steps, run_epochs
from kdkit.checkpoint import load_weights
from kdkit.config import DistillConfig, TrainConfig, apply_overrides
from kdkit.errors import KdkitError
from kdkit.recipes import run_distill, run_train
from kdkit.tune import tune

# digits: 1,295 training samples, so 20 steps per epoch at batch 64 (the last partial batch dropped)
STEPS_PER_EPOCH = 20


def test_shares_follow_the_phases_epochs(tmp_path):
    cfg = apply_overrides(DistillConfig(), {"teacher": "cnn", "epochs": 2, "teacher_epochs": 4, "seeds": [0, 1],
                                            "step_budget": 60})
    # teacher 4 epochs + 2 seeds x (scratch 2 + student 2) = 12 epochs: 60 * 4 // 12 and 60 * 2 // 12
    assert run_epochs(cfg) == 12 and phase_steps(cfg, 4) == 20 and phase_steps(cfg, 2) == 10
    (tmp_path / "teacher_run").mkdir()  # a run directory: loaded, not trained here
    assert run_epochs(dataclasses.replace(cfg, teacher=str(tmp_path / "teacher_run"))) == 8
    assert run_epochs(dataclasses.replace(cfg, teacher="cnn,sklearn:logistic,resnet8")) == 4 + 4 + 8  # two trained here
    assert run_epochs(dataclasses.replace(cfg, baseline=False, generations=3)) == 4 + 2 * 3 * 2  # gen1, gen2, student
    assert phase_steps(dataclasses.replace(cfg, step_budget=1), 2) == 1  # every phase trains at least one step
    assert phase_steps(dataclasses.replace(cfg, step_budget=0), 2) is None
    train = TrainConfig(epochs=3, step_budget=7)
    assert run_epochs(train) == 3 and phase_steps(train, 3) == 7  # kdkit train: one phase, the whole budget


def test_budgeted_schedule_is_the_full_one_compressed(tmp_path, digits, tiny):
    cfg = apply_overrides(TrainConfig(), tiny | {"model": "mlp", "epochs": 2, "warmup_epochs": 0.5, "log_every": 1,
                                                 "step_budget": 10})
    summary = run_train(cfg, digits)
    assert summary["fit"]["steps"] == 10 and summary["fit"]["full_steps"] == 2 * STEPS_PER_EPOCH
    lrs = [json.loads(line).get("lr") for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    lrs = [lr for lr in lrs if lr is not None]
    # step s runs at the full schedule's step 4 s (40 steps in 10): warmup over its first 10 steps, then cosine
    expected = []
    for s in range(10):
        p = 4 * s
        expected.append(0.05 * (p + 1) / 10 if p < 10 else 0.05 * 0.5 * (1 + math.cos(math.pi * (p - 10) / 30)))
    assert lrs == pytest.approx(expected)
    assert lrs[-1] < 0.1 * 0.05  # it ends near zero, as a full schedule does, rather than cut at its peak
    meta = load_weights(tmp_path / "run" / "last.safetensors")[1]
    assert meta["epoch"] == 1  # one (partial) epoch, validated at its end
    assert not summary.get("stopped_early")


def test_max_steps_still_stops_and_resumes_a_budgeted_run(tmp_path, digits, tiny):
    cfg = apply_overrides(TrainConfig(), tiny | {"model": "mlp", "epochs": 3, "step_budget": 30, "deterministic": True,
                                                 "out": str(tmp_path / "whole")})
    run_train(cfg, digits)  # 30 of 60 steps: one whole epoch and a half one
    part = apply_overrides(cfg, {"out": str(tmp_path / "part"), "max_steps": 25})
    assert run_train(part, digits)["stopped_early"]
    run_train(apply_overrides(part, {"resume": True, "max_steps": 0}), digits)
    a, b = (load_weights(tmp_path / name / "last.safetensors")[0] for name in ("whole", "part"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert load_weights(tmp_path / "part" / "last.safetensors")[1]["epoch"] == 2


def test_distill_with_a_tiny_budget_ends_with_every_row(tmp_path, digits, tiny):
    cfg = apply_overrides(DistillConfig(), tiny | {"teacher": "cnn-x0.25", "student": "cnn-tiny", "seeds": [0, 1],
                                                   "report": False, "step_budget": 20})
    summary = run_distill(cfg, digits)
    # 2 teacher epochs + 2 seeds x (scratch 2 + student 2) = 10 epochs: 4 steps each, of 40
    assert set(summary["rows"]) == {"teacher", "scratch", "student"}
    assert [len(summary["rows"][name]["per_seed"]) for name in ("scratch", "student")] == [2, 2]
    share = {"steps": 4, "full_steps": 2 * STEPS_PER_EPOCH}
    assert summary["step_budget"] == {"budget": 20, "limited": True,
                                      "phases": {"teacher": share, "scratch": share, "student": share}}
    written = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert written["step_budget"] == summary["step_budget"] and "gap_closed" in written
    for phase in ("teacher", "scratch/seed0", "scratch/seed1", "student/seed0", "student/seed1"):
        fit = json.loads((tmp_path / "run" / phase / "fit.json").read_text())
        assert (fit["steps"], fit["full_steps"], fit["stopped_early"]) == (4, 40, False), phase
    text = (tmp_path / "run" / "summary.md").read_text()
    assert ("budget-limited: step_budget=20 shared by the phases in proportion to their epochs (steps of each phase's "
            "schedule, per seed: teacher 4 of 40, scratch 4 of 40, student 4 of 40)") in text


def test_a_budget_longer_than_the_run_changes_nothing(tmp_path, digits, tiny):
    cfg = apply_overrides(TrainConfig(), tiny | {"model": "mlp", "epochs": 1, "step_budget": 1000})
    fit = run_train(cfg, digits)["fit"]
    assert (fit["steps"], fit["full_steps"]) == (STEPS_PER_EPOCH, STEPS_PER_EPOCH)


def test_tune_refuses_a_step_budget_and_it_is_never_negative(tmp_path, tiny):
    cfg = apply_overrides(DistillConfig(), tiny | {"step_budget": 100, "out": str(tmp_path / "tune")})
    with pytest.raises(KdkitError) as error:
        tune(cfg, trials=2)
    assert str(error.value) == "kdkit tune does not take step_budget=100; leave it at its default (0)"
    with pytest.raises(KdkitError) as error:
        apply_overrides(TrainConfig(), {"step_budget": -1})
    assert str(error.value) == "config key 'step_budget' must be in [0, 2147483647], got -1; e.g. --set step_budget=0"
