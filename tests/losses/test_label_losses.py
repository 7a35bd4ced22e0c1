"""kdkit.losses.labels: mixed_ce (the hard-label term on a mixed batch) against an independent
float64 numpy formula, with unlabelled sides, class weights and label smoothing; with_log_prior."""
import numpy as np
import pytest
import torch

from kdkit.data.labels import UNLABELED
from kdkit.losses.balanced import class_balanced_ce, effective_number_weights, logit_adjusted_loss, with_log_prior
from kdkit.losses.labels import hard_ce, mixed_ce

B, K = 12, 5


def np_smoothed_ce(z, y, eps=0.0):
    """(1 - eps) CE(z, y) + eps * mean_k -log p_k per row, float64 (Szegedy et al.'s smoothing)."""
    z = np.asarray(z, dtype=np.float64)
    logp = z - z.max(axis=1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(axis=1, keepdims=True))
    return -(1 - eps) * logp[np.arange(len(y)), y] - eps * logp.mean(axis=1)


def np_mixed_ce(z, y, y2, lam, eps=0.0, w=None):
    """sum over labelled sides of share * w * CE, over the sum of their shares; written out per sample."""
    top = shares = 0.0
    for i in range(len(y)):
        for label, share in ((y[i], lam[i]), (y2[i], 1 - lam[i])):
            if label == UNLABELED:
                continue
            weight = 1.0 if w is None else w[label]
            top += share * weight * np_smoothed_ce(z[i:i + 1], [label], eps)[0]
            shares += share
    return top / shares if shares else 0.0


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(B, K)) * 2
    y, y2 = rng.integers(0, K, B), rng.integers(0, K, B)
    lam = rng.beta(0.4, 0.4, B)
    return z, y, y2, lam


def _t(z, y, y2, lam):
    return (torch.tensor(z, dtype=torch.float32), torch.tensor(y), torch.tensor(y2), torch.tensor(lam, dtype=torch.float32))


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_mixed_ce_is_lam_ce_own_plus_the_rest_ce_partner(eps):
    z, y, y2, lam = _batch()
    got = mixed_ce(*_t(z, y, y2, lam), label_smoothing=eps).item()
    assert got == pytest.approx(np_mixed_ce(z, y, y2, lam, eps), rel=1e-5)
    # fully labelled: the papers' mean_i [lam_i CE_i + (1 - lam_i) CE'_i]
    expected = np.mean(lam * np_smoothed_ce(z, y, eps) + (1 - lam) * np_smoothed_ce(z, y2, eps))
    assert got == pytest.approx(expected, rel=1e-5)


def test_unlabelled_sides_drop_out_and_the_rest_is_a_share_weighted_mean():
    z, y, y2, lam = _batch(1)
    y[::3], y2[1::4] = UNLABELED, UNLABELED
    y2[0] = UNLABELED  # sample 0: neither side labelled, no share at all
    got = mixed_ce(*_t(z, y, y2, lam)).item()
    assert got == pytest.approx(np_mixed_ce(z, y, y2, lam), rel=1e-5)
    none = mixed_ce(*_t(z, np.full(B, UNLABELED), np.full(B, UNLABELED), lam))
    assert none.item() == 0.0


def test_every_lam_one_is_hard_ce_and_no_label_gives_a_zero_gradient():
    z, y, y2, _ = _batch(2)
    y[::4] = UNLABELED
    logits, labels, partner, _ = _t(z, y, y2, np.ones(B))
    assert mixed_ce(logits, labels, partner, torch.ones(B)).item() == pytest.approx(hard_ce(logits, labels).item(), rel=1e-6)
    logits.requires_grad_(True)
    hidden = torch.full((B,), UNLABELED)
    mixed_ce(logits, hidden, hidden, torch.rand(B)).backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))
    bad = logits.detach().clone()
    bad[0, 0] = float("nan")
    assert torch.isnan(mixed_ce(bad, labels, partner, torch.full((B,), 0.5)))  # a NaN still shows


def test_class_weights_per_side_and_lam_one_is_class_balanced_ce():
    z, y, y2, lam = _batch(3)
    w = effective_number_weights([50, 20, 9, 4, 2], 0.99).float()
    got = mixed_ce(*_t(z, y, y2, lam), class_weights=w).item()
    assert got == pytest.approx(np_mixed_ce(z, y, y2, lam, w=w.double().numpy()), rel=1e-5)
    logits, labels, partner, _ = _t(z, y, y2, lam)
    assert mixed_ce(logits, labels, partner, torch.ones(B), class_weights=w).item() == pytest.approx(
        class_balanced_ce(logits, labels, w).item(), rel=1e-6)


def test_with_log_prior_is_what_the_logit_adjusted_loss_takes_ce_of():
    z, y, _, _ = _batch(4)
    counts = [50, 20, 9, 4, 2]
    logits = torch.tensor(z, dtype=torch.float32)
    shifted = with_log_prior(logits, counts, 0.7)
    prior = np.asarray(counts, dtype=np.float64) / sum(counts)
    np.testing.assert_allclose(shifted.double().numpy(), z + 0.7 * np.log(prior), rtol=1e-6, atol=1e-6)
    assert torch.equal(hard_ce(shifted, torch.tensor(y)), logit_adjusted_loss(logits, torch.tensor(y), counts, 0.7))
