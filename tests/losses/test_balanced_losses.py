"""kdkit.losses.balanced against independent float64 numpy formulas, hand cases and gradients."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdkit.errors import KdkitError
from kdkit.losses.balanced import (balanced_kd_loss, balanced_softmax_loss, class_balanced_ce, class_prior,
                                   effective_number_weights, logit_adjusted_kd_loss, logit_adjusted_loss,
                                   per_sample_balanced_kd_loss, posthoc_adjust, rebalance_soft_targets)
from kdkit.losses.kd import kd_loss

B, K = 16, 6
COUNTS = [500, 200, 90, 40, 12, 5]


# ---------------------------------------------------------------- numpy references (float64)


def np_log_softmax(z):
    z = np.asarray(z, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def np_ce(z, y):
    return -np_log_softmax(z)[np.arange(len(y)), y]  # (B,)


def np_kl(t, s):
    """KL(softmax(t) || softmax(s)) per row."""
    lt, ls = np_log_softmax(t), np_log_softmax(s)
    return (np.exp(lt) * (lt - ls)).sum(axis=1)


def np_prior(counts):
    n = np.asarray(counts, dtype=np.float64)
    return n / n.sum()


def np_weights(counts, beta):
    n = np.asarray(counts, dtype=np.float64)
    w = (1 - beta) / (1 - beta**n)
    return w / w.sum() * len(n)


def inputs(seed=0):
    rng = np.random.default_rng(seed)
    s, t = rng.normal(size=(B, K)) * 2, rng.normal(size=(B, K)) * 3
    y = rng.integers(0, K, size=B)
    return s, t, y


def f32(a):
    return torch.tensor(a, dtype=torch.float32)


# ---------------------------------------------------------------- against numpy


@pytest.mark.parametrize("beta", [0.0, 0.9, 0.999, 0.9999])
def test_effective_number_weights(beta):
    got = effective_number_weights(COUNTS, beta)
    assert got.shape == (K,)
    np.testing.assert_allclose(got.numpy(), np_weights(COUNTS, beta), rtol=1e-5)
    assert got.sum().item() == pytest.approx(K)
    assert bool((got[1:] >= got[:-1]).all())  # rarer class, larger weight


def test_class_prior():
    np.testing.assert_allclose(class_prior(COUNTS).numpy(), np_prior(COUNTS), rtol=1e-12)
    np.testing.assert_allclose(class_prior(torch.tensor(COUNTS)).numpy(), np_prior(COUNTS), rtol=1e-12)


@pytest.mark.parametrize("tau", [0.0, 0.5, 1.0, 2.0])
def test_logit_adjusted_and_balanced_softmax(tau):
    s, _, y = inputs(1)
    want = np_ce(s + tau * np.log(np_prior(COUNTS)), y).mean()
    got = logit_adjusted_loss(f32(s), torch.tensor(y), COUNTS, tau)
    assert got.item() == pytest.approx(want, rel=1e-5)
    bal = np_ce(s + np.log(np_prior(COUNTS)), y).mean()
    assert balanced_softmax_loss(f32(s), torch.tensor(y), COUNTS).item() == pytest.approx(bal, rel=1e-5)


@pytest.mark.parametrize("tau", [0.5, 1.0])
def test_posthoc_adjust(tau):
    s, _, _ = inputs(2)
    got = posthoc_adjust(f32(s), COUNTS, tau)
    np.testing.assert_allclose(got.numpy(), s - tau * np.log(np_prior(COUNTS)), rtol=1e-5, atol=1e-6)


def test_class_balanced_ce():
    s, _, y = inputs(3)
    w = np_weights(COUNTS, 0.999)
    want = (w[y] * np_ce(s, y)).mean()
    got = class_balanced_ce(f32(s), torch.tensor(y), effective_number_weights(COUNTS, 0.999))
    assert got.item() == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0])
def test_balanced_kd_loss_is_the_authors_reweighted_target(T):
    # Zhang et al.'s released BKD loss: the teacher's softened probabilities times the class
    # weights, renormalised per row, then KL(q || p_s) summed over classes, batch mean, times T^2.
    s, t, _ = inputs(4)
    w = np_weights(COUNTS, 0.9999)
    q = np.exp(np_log_softmax(t / T)) * w  # (B, K)
    q = q / q.sum(axis=1, keepdims=True)
    want = T * T * (q * (np.log(q) - np_log_softmax(s / T))).sum(axis=1).mean()
    got = balanced_kd_loss(f32(s), f32(t), torch.tensor(w), T)
    assert got.item() == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0])
def test_per_sample_balanced_kd_loss(T):
    s, t, y = inputs(4)
    w = np_weights(COUNTS, 0.9999)
    want = T * T * (w[y] * np_kl(t / T, s / T)).mean()
    got = per_sample_balanced_kd_loss(f32(s), f32(t), torch.tensor(y), torch.tensor(w), T)
    assert got.item() == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("T, tau", [(1.0, 1.0), (4.0, 1.0), (2.0, 0.5)])
def test_logit_adjusted_kd_loss(T, tau):
    s, t, _ = inputs(5)
    log_pi = np.log(np_prior(COUNTS))
    want = T * T * np_kl((t - tau * log_pi) / T, s / T).mean()
    got = logit_adjusted_kd_loss(f32(s), f32(t), COUNTS, T, tau)
    assert got.item() == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("tau", [0.5, 1.0])
def test_rebalance_soft_targets(tau):
    _, t, _ = inputs(6)
    p = np.exp(np_log_softmax(t))
    q = p / np_prior(COUNTS) ** tau
    q = q / q.sum(axis=1, keepdims=True)
    got = rebalance_soft_targets(f32(p), COUNTS, tau)
    np.testing.assert_allclose(got.numpy(), q, rtol=1e-5, atol=1e-7)
    # the probability form of the post-hoc adjustment
    torch.testing.assert_close(got, torch.softmax(posthoc_adjust(f32(t), COUNTS, tau), dim=1))


# ---------------------------------------------------------------- hand cases


def test_uniform_counts_reduce_to_the_plain_losses():
    s, t, y = (torch.as_tensor(a) for a in inputs(7))
    s, t = s.float(), t.float()
    uniform = [30] * K
    ce = F.cross_entropy(s, y)
    torch.testing.assert_close(balanced_softmax_loss(s, y, uniform), ce)
    torch.testing.assert_close(logit_adjusted_loss(s, y, uniform, 1.7), ce)
    torch.testing.assert_close(effective_number_weights(uniform, 0.9999), torch.ones(K, dtype=torch.float64))
    torch.testing.assert_close(class_balanced_ce(s, y, torch.ones(K)), ce)
    torch.testing.assert_close(logit_adjusted_kd_loss(s, t, uniform, 3.0), kd_loss(s, t, 3.0))
    p = torch.softmax(t, dim=1)
    torch.testing.assert_close(rebalance_soft_targets(p, uniform), p)


def test_posthoc_adjust_uniform_is_a_constant_shift():
    s = torch.randn(B, K, generator=torch.Generator().manual_seed(0))
    shift = posthoc_adjust(s, [7] * K) - s
    torch.testing.assert_close(shift, torch.full_like(s, np.log(K)))
    assert torch.equal(posthoc_adjust(s, [7] * K).argmax(1), s.argmax(1))


def test_posthoc_adjust_favours_the_tail():
    logits = torch.zeros(1, K)
    assert posthoc_adjust(logits, COUNTS).argmax(1).item() == K - 1


def test_balanced_kd_with_unit_weights_is_kd_loss():
    s, t, y = (torch.as_tensor(a) for a in inputs(8))
    for T in (1.0, 4.0):
        torch.testing.assert_close(balanced_kd_loss(s.float(), t.float(), torch.ones(K), T),
                                   kd_loss(s.float(), t.float(), T))
        torch.testing.assert_close(per_sample_balanced_kd_loss(s.float(), t.float(), y, torch.ones(K), T),
                                   kd_loss(s.float(), t.float(), T))


def test_balanced_kd_by_hand():
    # Two classes, an undecided teacher, class weights 1 and 3: the target is (1/4, 3/4).
    t, w = torch.zeros(1, 2), torch.tensor([1.0, 3.0])
    uniform = torch.zeros(1, 2)
    want = 0.25 * np.log(0.25 / 0.5) + 0.75 * np.log(0.75 / 0.5)  # KL((1/4, 3/4) || (1/2, 1/2)) = 0.130812
    assert balanced_kd_loss(uniform, t, w, 1.0).item() == pytest.approx(want, rel=1e-6)
    assert balanced_kd_loss(uniform, t, w, 2.0).item() == pytest.approx(4 * want, rel=1e-6)  # T^2, same target at any T
    matched = torch.log(torch.tensor([[0.25, 0.75]]))  # the student at the target: loss 0
    assert balanced_kd_loss(matched, t, w, 1.0).item() == pytest.approx(0.0, abs=1e-7)
    # the per-sample form keeps the teacher's (1/2, 1/2) as target and only scales the sample
    assert per_sample_balanced_kd_loss(uniform, t, torch.tensor([1]), w, 1.0).item() == pytest.approx(0.0, abs=1e-7)


def test_logit_adjusted_kd_minimiser_is_the_balanced_teacher():
    # The raw student logits that zero the loss are t - tau log pi: the balanced posterior that the
    # logit-adjusted CE also teaches (not t - 2 tau log pi).
    _, t, _ = inputs(9)
    t = torch.tensor(t)
    balanced = posthoc_adjust(t, COUNTS, 0.8)
    assert logit_adjusted_kd_loss(balanced + 3.0, t, COUNTS, 2.0, 0.8).item() == pytest.approx(0.0, abs=1e-12)
    assert logit_adjusted_kd_loss(t, t, COUNTS, 2.0, 0.8).item() > 1e-3
    s = torch.randn(B, K, generator=torch.Generator().manual_seed(1))
    plain = kd_loss(s, t.float(), 2.0)
    torch.testing.assert_close(logit_adjusted_kd_loss(s, t.float(), COUNTS, 2.0, 0.0), plain)


def test_counts_and_beta_errors():
    s, _, y = (torch.as_tensor(a) for a in inputs(10))
    with pytest.raises(KdkitError, match="class 2 has count 0"):
        logit_adjusted_loss(s.float(), y, [5, 4, 0, 3, 2, 1])
    with pytest.raises(KdkitError, match="one number per class"):
        class_prior([[1, 2], [3, 4]])
    with pytest.raises(KdkitError, match="beta must be in"):
        effective_number_weights(COUNTS, 1.0)


# ---------------------------------------------------------------- dtypes and gradients


def test_dtypes_half_upcast_float64_kept():
    s, t, y = (torch.as_tensor(a) for a in inputs(11))
    w = effective_number_weights(COUNTS)
    losses = {
        "la": lambda a, b: logit_adjusted_loss(a, y, COUNTS),
        "bs": lambda a, b: balanced_softmax_loss(a, y, COUNTS),
        "cb": lambda a, b: class_balanced_ce(a, y, w),
        "bkd": lambda a, b: balanced_kd_loss(a, b, w, 2.0),
        "bkd_per_sample": lambda a, b: per_sample_balanced_kd_loss(a, b, y, w, 2.0),
        "lakd": lambda a, b: logit_adjusted_kd_loss(a, b, COUNTS, 2.0),
        "posthoc": lambda a, b: posthoc_adjust(a, COUNTS),
        "rebalance": lambda a, b: rebalance_soft_targets(torch.softmax(a, 1), COUNTS),
    }
    for name, fn in losses.items():
        assert fn(s, t).dtype == torch.float64, name
        assert fn(s.bfloat16(), t.bfloat16()).dtype == torch.float32, name


def test_gradients_finite_and_gradcheck():
    rng = torch.Generator().manual_seed(0)
    s = torch.randn(4, K, dtype=torch.float64, generator=rng, requires_grad=True)
    t = torch.randn(4, K, dtype=torch.float64, generator=rng) * 5
    y = torch.tensor([0, 5, 5, 2])
    w = effective_number_weights(COUNTS)
    fns = [lambda z: logit_adjusted_loss(z, y, COUNTS, 1.0),
           lambda z: balanced_softmax_loss(z, y, COUNTS),
           lambda z: class_balanced_ce(z, y, w),
           lambda z: balanced_kd_loss(z, t, w, 4.0),
           lambda z: per_sample_balanced_kd_loss(z, t, y, w, 4.0),
           lambda z: logit_adjusted_kd_loss(z, t, COUNTS, 4.0, 1.0)]
    for fn in fns:
        assert torch.autograd.gradcheck(fn, (s,))
    big = (s.detach().float() * 100).requires_grad_()  # large logits: still finite in float32
    for fn in fns:
        fn(big).backward()
        assert torch.isfinite(big.grad).all()
        big.grad = None
