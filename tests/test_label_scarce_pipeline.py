"""Label-scarce runs end to end (issue 22): what each row trains on and what summary.json records.

The teacher trained in the run and the scratch student see the labelled samples only (repeated, so
every row takes the same steps), the distilled student the labelled and the unlabelled ones; the
step counts in each run's metrics.jsonl show it independently of the counts the summary reports."""
import json

import numpy as np
import pytest

from kdkit.config import DistillConfig, TrainConfig, apply_overrides
from kdkit.errors import KdkitError
from kdkit.recipes import run_distill, run_train


def config(cls, tmp_path, **overrides):
    base = {"dataset": "digits", "epochs": 1, "batch_size": 64, "progress": False, "amp": "off", "report": False,
            "out": str(tmp_path / "run")}
    if cls is TrainConfig:
        base.pop("report")
    return apply_overrides(cls(), base | overrides)


def steps(run_dir) -> int:
    """The last step a run logged (its validation row at the end of the last epoch)."""
    return max(json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines())


def test_distill_rows_train_on_what_they_should(tmp_path, digits):
    np.save(tmp_path / "extra.npy", np.random.default_rng(0).integers(0, 256, (40, 1, 8, 8), dtype=np.uint8))
    cfg = config(DistillConfig, tmp_path, teacher="cnn-tiny", labels_per_class=0.5, unlabeled=str(tmp_path / "extra.npy"))
    summary = run_distill(cfg)
    per_class = np.bincount(digits.train.labels.numpy(), minlength=10)  # digits' split with the same seed
    kept = [max(1, round(0.5 * n)) for n in per_class]
    labelled, unlabelled = sum(kept), len(digits.train) - sum(kept) + 40
    rows = summary["rows"]
    assert rows["teacher"]["train_samples"] == {"labelled": labelled, "unlabeled": 0}
    assert rows["scratch"]["train_samples"] == {"labelled": labelled, "unlabeled": 0}
    assert rows["student"]["train_samples"] == {"labelled": labelled, "unlabeled": unlabelled}
    assert (f"trained on: teacher {labelled:,} labelled; scratch {labelled:,} labelled; student {labelled:,} labelled + "
            f"{unlabelled:,} unlabelled") in (tmp_path / "run" / "summary.md").read_text()
    assert summary["train_class_counts"] == dict(zip(digits.classes, kept))
    out = tmp_path / "run"
    # the same steps for every row (drop_last: full batches): the labelled samples repeated to the split's size
    assert steps(out / "teacher") == steps(out / "scratch" / "seed0") == (labelled + unlabelled) // 64
    assert steps(out / "student" / "seed0") == (labelled + unlabelled) // 64


def test_unlabeled_rest_false_distils_on_the_labelled_samples_only(tmp_path, digits):
    cfg = config(DistillConfig, tmp_path, teacher="cnn-tiny", labels_per_class=10, unlabeled_rest=False, baseline=False)
    summary = run_distill(cfg)
    assert summary["rows"]["student"]["train_samples"] == {"labelled": 100, "unlabeled": 0}
    assert steps(tmp_path / "run" / "student" / "seed0") == len(digits.train) // 64  # repeated: the scratch row's steps


def test_unlabeled_rest_false_needs_labels_per_class(tmp_path):
    with pytest.raises(KdkitError, match="unlabeled_rest=false .* labels_per_class is 0"):
        config(DistillConfig, tmp_path, unlabeled_rest=False)


def test_train_run_fits_the_labelled_samples(tmp_path):
    summary = run_train(config(TrainConfig, tmp_path, model="cnn-tiny", labels_per_class=20))
    assert summary["train_samples"] == {"labelled": 200, "unlabeled": 0}
    assert steps(tmp_path / "run") == 200 // 64


def test_saved_teacher_outputs_cannot_teach_unlabeled_inputs(tmp_path):
    np.save(tmp_path / "extra.npy", np.zeros((4, 1, 8, 8), np.uint8))
    cfg = config(DistillConfig, tmp_path, teacher=str(tmp_path / "outputs.npy"), unlabeled=str(tmp_path / "extra.npy"))
    with pytest.raises(KdkitError, match="saved teacher outputs .* cannot teach the unlabeled inputs"):
        run_distill(cfg)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_estimator_teachers_are_fitted_on_the_labelled_samples(tmp_path, digits):
    # (a fraction keeps every batch partly labelled: the kd loss's hard-label term is not masked yet)
    cfg = config(DistillConfig, tmp_path, teacher="sklearn:logistic,sklearn:logistic", labels_per_class=0.25)
    summary = run_distill(cfg)
    labelled = sum(max(1, round(0.25 * n)) for n in np.bincount(digits.train.labels.numpy()))
    for row in ("teacher1", "teacher2", "teacher"):
        assert summary["rows"][row]["train_samples"] == {"labelled": labelled, "unlabeled": 0}, row
    assert summary["rows"]["student"]["train_samples"] == {"labelled": labelled, "unlabeled": len(digits.train) - labelled}


def test_python_api_takes_the_same_keys(tmp_path):
    import torch
    from torch import nn

    import kdkit

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(200, 4)).astype(np.float32), rng.integers(0, 2, 200)
    np.save(tmp_path / "extra.npy", rng.normal(size=(64, 4)).astype(np.float32))  # tabular (N, F) inputs
    torch.manual_seed(0)
    teacher, student = nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    kdkit.distill(teacher, student, (x[:160], y[:160]), (x[160:], y[160:]), epochs=1, batch_size=32, progress=False,
                  labels_per_class=0.5, unlabeled=str(tmp_path / "extra.npy"), out=tmp_path / "api")
    assert steps(tmp_path / "api" / "student" / "seed0") == (160 + 64) // 32  # the unlabelled inputs were trained on


def test_resume_mid_run_with_unlabelled_samples_is_bit_identical(tmp_path):
    """A label-scarce distill run stopped twice (inside the scratch row, then inside the student's)
    and resumed ends with the weights of the run never stopped, bit for bit."""
    import torch
    from safetensors.torch import load_file

    cfg = config(DistillConfig, tmp_path, teacher="cnn-x0.25", student="cnn-tiny", epochs=2, teacher_epochs=1,
                 labels_per_class=20, deterministic=True, checkpoint_every=7, teacher_cache=True, alpha=0.7)
    run_distill(apply_overrides(cfg, {"out": str(tmp_path / "direct")}))
    part = apply_overrides(cfg, {"out": str(tmp_path / "part"), "max_steps": 30})
    while run_distill(part).get("stopped_early"):
        part = apply_overrides(part, {"resume": True})
    for row in ("scratch", "student"):
        a = load_file(tmp_path / "direct" / row / "seed0" / "last.safetensors")
        b = load_file(tmp_path / "part" / row / "seed0" / "last.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), row


def test_a_teacher_trained_here_takes_teacher_lr(tmp_path):
    """teacher_lr is the teacher's peak learning rate (a pretrained transformer is fine-tuned far below a
    small student's lr); the students keep lr. Read from each phase's metrics.jsonl."""
    summary = run_distill(config(DistillConfig, tmp_path, teacher="cnn-tiny", student="cnn-tiny", lr=0.01, teacher_lr=0.0005,
                                 warmup_epochs=0, schedule="constant", log_every=5))
    assert "rows" in summary

    def lrs(run_dir):
        return {json.loads(line)["lr"] for line in (run_dir / "metrics.jsonl").read_text().splitlines() if "lr" in json.loads(line)}

    assert lrs(tmp_path / "run" / "teacher") == {0.0005}
    assert lrs(tmp_path / "run" / "scratch" / "seed0") == lrs(tmp_path / "run" / "student" / "seed0") == {0.01}
