"""fit() with mix (mixup, cutmix): the teacher labels the very mixed batch the student trains on,
the hard-label rows (scratch, a teacher trained here) mix too, teachers that never saw a mixed
image are refused, and a resumed run is bit-identical."""
from pathlib import Path

import pytest
import torch
from torch import nn

from kdkit import checkpoint as ckpt
from kdkit.config import DistillConfig, TrainConfig, apply_overrides
from kdkit.data import BatchLoader
from kdkit.errors import KdkitError
from kdkit.methods import create_method
from kdkit.recipes import run_distill
from kdkit.train import fit
from kdkit.weights import build_model


@pytest.mark.parametrize("mix", ["mixup", "cutmix"])
def test_online_teacher_labels_the_very_mixed_batch_the_student_trains_on(tmp_path, digits, tiny, mix):
    cfg = apply_overrides(TrainConfig(), tiny | {"epochs": 1, "mix": mix, "mix_alpha": 1.0})
    teacher, student = build_model("cnn-x0.25", digits, 0), build_model("cnn-tiny", digits, 1)
    method = create_method("kd", student, teacher)
    seen = {"teacher": [], "student": [], "lam": []}
    teacher.register_forward_pre_hook(lambda m, args: seen["teacher"].append(args[0].detach().clone()))
    student.register_forward_pre_hook(lambda m, args: seen["student"].append(args[0].detach().clone())
                                      if m.training else None)  # (not validation)
    student.register_forward_pre_hook(lambda m, args: seen["lam"].append(method.mixing.lam.clone())
                                      if m.training else None)
    fit(method, digits, cfg, tmp_path / "fit")
    steps = len(digits.train) // cfg.batch_size
    assert len(seen["teacher"]) == len(seen["student"]) == steps
    assert all(torch.equal(t, s) for t, s in zip(seen["teacher"], seen["student"]))  # one and the same input
    mixed = list(BatchLoader(digits.train, cfg.batch_size, shuffle=True, seed=cfg.seed, augment=digits.augment,
                             mean=digits.mean, std=digits.std, drop_last=True, mix=mix, mix_alpha=1.0))
    plain = list(BatchLoader(digits.train, cfg.batch_size, shuffle=True, seed=cfg.seed, augment=digits.augment,
                             mean=digits.mean, std=digits.std, drop_last=True))
    assert all(torch.equal(t, batch[0]) for t, batch in zip(seen["teacher"], mixed))  # the mixed batches
    assert not any(torch.equal(t, batch[0]) for t, batch in zip(seen["teacher"], plain))  # not the plain ones
    assert all(torch.equal(lam, batch[3].lam) for lam, batch in zip(seen["lam"], mixed))  # hard labels: their lam
    assert method.mixing is None  # reset after fit


def test_scratch_and_a_teacher_trained_here_train_on_mixed_batches_too(tmp_path, digits, tiny):
    """mix is a training key: every fit of the run mixes (its hard-label CE too); the config says so."""
    cfg = apply_overrides(DistillConfig(), tiny | {"teacher": "cnn-x0.25", "student": "cnn-tiny", "epochs": 1,
                                                   "mix": "cutmix", "report": False})
    mixed = run_distill(cfg, digits)
    plain = run_distill(apply_overrides(cfg, {"mix": "none", "out": str(tmp_path / "plain")}), digits)
    for row in ("teacher", "scratch", "student"):  # every row trained on other batches
        a = ckpt.load_weights(Path(cfg.out) / row / ("seed0" if row != "teacher" else "") / "last.safetensors")[0]
        b = ckpt.load_weights(tmp_path / "plain" / row / ("seed0" if row != "teacher" else "") / "last.safetensors")[0]
        assert not all(torch.equal(a[k], b[k]) for k in a), row
    for row in ("teacher", "scratch/seed0", "student/seed0"):
        saved = ckpt.load_weights(Path(cfg.out) / row / "last.safetensors")[1]["config"]
        assert saved["mix"] == "cutmix" and saved["mix_alpha"] == 1.0
    assert set(mixed["rows"]) == set(plain["rows"]) == {"teacher", "scratch", "student"}


class _SavedOutputs(nn.Module):
    """A stand-in for a teacher whose outputs were stored per sample (kdkit.teachers.HybridTeacher with a file)."""

    index_keyed = True
    needs_index = True

    def __init__(self):
        super().__init__()
        self.table = nn.Parameter(torch.zeros(2000, 10), requires_grad=False)

    def forward(self, x, index):
        return self.table[index]


def test_teachers_that_never_saw_a_mixed_image_are_refused(tmp_path, digits, tiny):
    cfg = apply_overrides(TrainConfig(), tiny | {"mix": "mixup"})
    method = create_method("kd", build_model("cnn-tiny", digits, 0), _SavedOutputs())
    with pytest.raises(KdkitError, match="mix=mixup trains on mixed images, but saved teacher outputs and scikit-learn "
                                         "teachers hold one output per unmixed sample; use torch teachers, or mix=none"):
        fit(method, digits, cfg, tmp_path / "fit")
    fit(method, digits, apply_overrides(cfg, {"mix": "none", "epochs": 1}), tmp_path / "plain")  # unmixed: fine
    distill = apply_overrides(DistillConfig(), tiny | {"teacher": "cnn-x0.25,sklearn:logistic", "mix": "cutmix"})
    with pytest.raises(KdkitError, match="mix=cutmix trains on mixed images, but teacher 'sklearn:logistic' holds one "
                                         "output per unmixed sample"):
        run_distill(distill, digits)
    assert not (Path(distill.out) / "teacher1").exists()  # refused before any training


@pytest.mark.parametrize("mix, cache", [("cutmix", False), ("mixup", True)])
def test_resume_mid_epoch_with_mix_is_bit_identical(tmp_path, digits, tiny, mix, cache):
    """Killed inside an epoch: the resumed run draws the same partners, lams and boxes (online), or
    replays the same recorded mixed views (teacher cache)."""
    cfg = apply_overrides(DistillConfig(), tiny | {"teacher": "cnn-x0.25", "student": "cnn-tiny", "mix": mix,
                                                   "teacher_cache": cache, "cache_views": 2, "baseline": False,
                                                   "report": False, "teacher_epochs": 1, "deterministic": True})
    run_distill(cfg, digits)
    part = apply_overrides(cfg, {"out": str(tmp_path / "part"), "max_steps": 27})  # teacher: 20 steps, student: 27 of 40
    assert run_distill(part, digits)["stopped_early"]
    run_distill(apply_overrides(part, {"resume": True, "max_steps": 0}), digits)
    for name in ("last.safetensors", "best.safetensors"):
        a = ckpt.load_weights(Path(cfg.out) / "student/seed0" / name)[0]
        b = ckpt.load_weights(tmp_path / "part/student/seed0" / name)[0]
        assert all(torch.equal(a[k], b[k]) for k in a), name
