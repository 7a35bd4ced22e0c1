"""Long-tailed runs end to end: imbalanced splits, balanced losses, samplers, BKD / LAKD, shot groups."""
import pytest
import torch

from kdkit import checkpoint as ckpt
from kdkit.config import DistillConfig, TrainConfig, apply_overrides
from kdkit.errors import KdkitError
from kdkit.losses.kd import kd_loss
from kdkit.methods import create_method
from kdkit.models import create_model
from kdkit.recipes import run_distill, run_train


def config(cls, tmp_path, **overrides):
    base = {"dataset": "digits", "epochs": 1, "batch_size": 64, "progress": False, "amp": "off", "out": str(tmp_path / "run")}
    return apply_overrides(cls(), base | overrides)


def models():
    torch.manual_seed(0)
    return create_model("cnn", 10, 1, 8), create_model("cnn-tiny", 10, 1, 8)


def test_bkd_with_equal_counts_is_ce_plus_kd():
    teacher, student = models()
    method = create_method("bkd", student, teacher, class_counts=[7] * 10, temperature=2.0, kd_weight=0.5)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    out = method(x, y)
    expected = kd_loss(student(x), teacher(x), 2.0)
    assert out["kd"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert out["loss"].item() == pytest.approx((out["ce"] + 0.5 * out["kd"]).item(), rel=1e-5)


def test_bkd_forms():
    """bkd_form=authors (the default) distils from the reweighted teacher whatever the labels;
    per_sample weights each sample's KL by its label's class weight."""
    from kdkit.data import UNLABELED
    from kdkit.losses.balanced import balanced_kd_loss, effective_number_weights, per_sample_balanced_kd_loss

    teacher, student = models()
    counts = [100, 50, 20, 10, 5, 5, 3, 2, 1, 1]
    w = effective_number_weights(counts).float()
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    authors = create_method("bkd", student, teacher, class_counts=counts, temperature=2.0).eval()
    assert authors.bkd_form == "authors"
    with torch.no_grad():
        s, t = student(x), teacher(x)
    assert authors(x, y)["kd"].item() == pytest.approx(balanced_kd_loss(s, t, w, 2.0).item(), rel=1e-6)
    assert authors(x, torch.full_like(y, UNLABELED))["kd"].item() == pytest.approx(authors(x, y)["kd"].item(), rel=1e-6)
    per_sample = create_method("bkd", student, teacher, class_counts=counts, temperature=2.0, bkd_form="per_sample").eval()
    want = per_sample_balanced_kd_loss(s, t, y, w, 2.0).item()
    assert per_sample(x, y)["kd"].item() == pytest.approx(want, rel=1e-6)
    with pytest.raises(KdkitError, match="did you mean 'per_sample'"):
        create_method("bkd", student, teacher, class_counts=counts, bkd_form="per-sample")


def test_lakd_with_tau_zero_is_kd():
    teacher, student = models()
    counts = [100, 50, 20, 10, 5, 5, 3, 2, 1, 1]
    lakd = create_method("lakd", student, teacher, class_counts=counts, tau=0.0, temperature=3.0, alpha=0.7)
    kd = create_method("kd", student, teacher, temperature=3.0, alpha=0.7)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    assert lakd(x, y)["loss"].item() == pytest.approx(kd(x, y)["loss"].item(), rel=1e-5)
    # with tau = 1 the tail classes' targets grow: the adjusted teacher puts more mass on class 9
    lakd.tau = 1.0
    assert not torch.isclose(lakd(x, y)["loss"], kd(x, y)["loss"])


def test_long_tailed_train_run_reports_shot_groups(tmp_path, digits):
    summary = run_train(config(TrainConfig, tmp_path, model="cnn-tiny", imbalance="exp:10", balance="logit_adjusted"))
    metrics = summary["metrics"]
    assert {"many_shot_accuracy", "medium_shot_accuracy", "few_shot_accuracy", "shot_thresholds"} <= set(metrics)
    assert len(metrics["per_class"]) == 10 and metrics["n"] == len(digits.test)  # test stays whole


def test_distill_long_tailed_with_balanced_teacher_sampler(tmp_path):
    cfg = config(DistillConfig, tmp_path, teacher="cnn-tiny", method="bkd", imbalance="exp:10",
                 teacher_sampler="class_balanced", posthoc_tau=1.0)
    summary = run_distill(cfg)
    counts = list(summary["train_class_counts"].values())
    assert counts[0] > counts[-1] and round(counts[0] / counts[-1]) == 10
    _, meta = ckpt.load_weights(tmp_path / "run/teacher/best.safetensors")
    assert meta["config"]["sampler"] == "class_balanced"  # the teacher on balanced resampling...
    _, meta = ckpt.load_weights(tmp_path / "run/student/seed0/best.safetensors")
    assert meta["config"]["sampler"] == "none"  # ...the student on the natural distribution
    assert summary["rows"]["student"]["metrics"]["many_shot_accuracy"]["mean"] is not None


def test_bad_imbalance_and_balance_values(tmp_path):
    with pytest.raises(KdkitError, match="exp:100 or step:10"):
        config(TrainConfig, tmp_path, imbalance="exp100")
    with pytest.raises(KdkitError, match="did you mean 'logit_adjusted'"):
        config(TrainConfig, tmp_path, balance="logit_adjust")
    with pytest.raises(KdkitError, match="did you mean 'class_balanced'"):
        config(TrainConfig, tmp_path, sampler="class_balance")


def test_kd_with_rebalanced_teacher_targets():
    import numpy as np

    teacher, student = models()
    counts = [100, 50, 20, 10, 5, 5, 3, 2, 1, 1]
    method = create_method("kd", student, teacher, class_counts=counts, rebalance_tau=1.0, temperature=1.0, alpha=1.0)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    out = method(x, y)
    # independent: teacher probabilities divided by the prior and renormalised, KL to the student (float64)
    t = teacher(x).detach().double().numpy()
    s = student(x).detach().double().numpy()
    p_t = np.exp(t - t.max(1, keepdims=True))
    p_t /= p_t.sum(1, keepdims=True)
    prior = np.array(counts, float) / sum(counts)
    q = p_t / prior
    q /= q.sum(1, keepdims=True)
    log_p_s = s - s.max(1, keepdims=True) - np.log(np.exp(s - s.max(1, keepdims=True)).sum(1, keepdims=True))
    expected = (q * (np.log(q) - log_p_s)).sum(1).mean()
    assert out["kd"].item() == pytest.approx(expected, rel=1e-4)
