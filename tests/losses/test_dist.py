"""DIST: dist_loss against an independent float64 numpy formula, edge cases, gradient; the method."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdkit.losses.dist import dist_loss
from kdkit.methods.dist import DIST
from kdkit.methods import names


def numpy_dist(s, t, T, beta, gamma):
    """(loss, inter, intra) with softmaxes and np.corrcoef written out in float64."""
    def softmax(z):
        z = z.astype(np.float64) / T
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    p_s, p_t = softmax(s), softmax(t)
    inter = np.mean([1 - np.corrcoef(p_s[i], p_t[i])[0, 1] for i in range(p_s.shape[0])])
    intra = np.mean([1 - np.corrcoef(p_s[:, k], p_t[:, k])[0, 1] for k in range(p_s.shape[1])])
    return T * T * (beta * inter + gamma * intra), inter, intra


@pytest.mark.parametrize("T, beta, gamma", [(1.0, 1.0, 1.0), (2.0, 1.0, 1.0), (4.0, 2.0, 0.5), (1.0, 0.0, 3.0)])
def test_dist_loss_matches_numpy(T, beta, gamma):
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(16, 10)) * 2, rng.normal(size=(16, 10)) * 3
    got = dist_loss(torch.tensor(s, dtype=torch.float32), torch.tensor(t, dtype=torch.float32), T, beta, gamma)
    loss, inter, intra = numpy_dist(s, t, T, beta, gamma)
    assert got["inter"].item() == pytest.approx(inter, rel=1e-5, abs=1e-6)
    assert got["intra"].item() == pytest.approx(intra, rel=1e-5, abs=1e-6)
    assert got["loss"].item() == pytest.approx(loss, rel=1e-5, abs=1e-6)


def test_dist_loss_defaults_are_the_papers():
    torch.manual_seed(0)
    s, t = torch.randn(8, 5), torch.randn(8, 5)
    assert torch.equal(dist_loss(s, t)["loss"], dist_loss(s, t, 1.0, 1.0, 1.0)["loss"])


def test_dist_loss_zero_when_equal():
    z = torch.randn(8, 5, generator=torch.Generator().manual_seed(0)) * 2
    assert dist_loss(z, z.clone())["loss"].item() == pytest.approx(0.0, abs=1e-6)
    # At high T the softened probabilities are nearly flat, so the 1e-8 in the Pearson denominator
    # is no longer negligible next to their tiny variance; each term stays ~1e-7, T^2 scales the sum.
    out = dist_loss(z, z.clone(), 4.0)
    assert out["inter"].item() == pytest.approx(0.0, abs=1e-6)
    assert out["intra"].item() == pytest.approx(0.0, abs=1e-6)


def test_sharpened_student_stays_positively_correlated():
    # Logits doubled: different probabilities, same ranking of classes, so inter is finite and < 1.
    t = torch.randn(8, 6, generator=torch.Generator().manual_seed(0))
    out = dist_loss(2 * t, t, 2.0)
    assert torch.isfinite(out["loss"]) and 0 < out["inter"].item() < 1


def test_anti_correlated_two_classes_gives_inter_two():
    # p_s = (a, 1 - a), p_t = (1 - a, a): every row has pearson = -1, so inter = 1 - (-1) = 2.
    a = torch.tensor([0.9, 0.7, 0.2], dtype=torch.float64)[:, None]  # (B, 1)
    p_student = torch.cat([a, 1 - a], dim=1)  # (B, 2)
    p_teacher = p_student.flip(1)
    out = dist_loss(p_student.log(), p_teacher.log(), 1.0)
    assert out["inter"].item() == pytest.approx(2.0, abs=1e-6)


def test_dist_loss_keeps_float64_and_upcasts_half():
    s, t = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)  # any values
    assert dist_loss(s, t)["loss"].dtype == torch.float64
    assert dist_loss(s.bfloat16(), t.bfloat16())["loss"].dtype == torch.float32


@pytest.mark.parametrize("T, beta, gamma", [(1.0, 1.0, 1.0), (3.0, 2.0, 0.5)])
def test_dist_loss_gradcheck(T, beta, gamma):
    torch.manual_seed(0)
    s = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    t = torch.randn(4, 3, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda z: dist_loss(z, t, T, beta, gamma)["loss"], (s,))


def test_dist_method_parts_and_frozen_teacher():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    teacher.train()  # as a user might leave it
    running_mean = teacher[1].running_mean.clone()
    running_var = teacher[1].running_var.clone()
    student = nn.Linear(4, 3)
    method = DIST(student, teacher, temperature=2.0, dist_beta=1.5, dist_gamma=0.5, ce_weight=0.3).train()
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    out = method(x, y)
    assert out["logits"].shape == (16, 3)
    assert all(torch.isfinite(out[k]) for k in ("loss", "ce", "inter", "intra"))
    expected = 0.3 * out["ce"] + 4.0 * (1.5 * out["inter"] + 0.5 * out["intra"])
    torch.testing.assert_close(out["loss"], expected)
    torch.testing.assert_close(out["ce"], F.cross_entropy(student(x), y))
    out["loss"].backward()
    assert all(p.grad is not None for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    assert not teacher.training
    assert torch.equal(teacher[1].running_mean, running_mean)
    assert torch.equal(teacher[1].running_var, running_var)
    assert set(names(DIST)) <= set(vars(method))
