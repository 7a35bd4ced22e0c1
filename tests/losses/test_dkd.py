"""DKD against a float64 numpy reference and against the paper's identity KD = TCKD + (1 - p_t[gt]) NCKD."""
import numpy as np
import pytest
import torch

from kdkit.losses import kd_loss
from kdkit.losses.dkd import dkd_loss, dkd_parts


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def numpy_dkd(s, t, y, T):
    """TCKD and NCKD per sample, written out from the definitions (Zhao et al. 2022, Sec. 3.1)."""
    tckd, nckd = [], []
    for si, ti, yi in zip(s.astype(np.float64), t.astype(np.float64), y):
        ps, pt = softmax(si / T), softmax(ti / T)
        bs, bt = np.array([ps[yi], 1 - ps[yi]]), np.array([pt[yi], 1 - pt[yi]])
        tckd.append(np.sum(bt * np.log(bt / bs)))
        rest = np.arange(len(si)) != yi
        qs, qt = ps[rest] / ps[rest].sum(), pt[rest] / pt[rest].sum()
        nckd.append(np.sum(qt * np.log(qt / qs)))
    return T * T * np.array(tckd), T * T * np.array(nckd)


@pytest.mark.parametrize("T", [1.0, 4.0])
def test_dkd_parts_match_numpy(T):
    rng = np.random.default_rng(0)
    s, t, y = rng.normal(size=(12, 7)) * 2, rng.normal(size=(12, 7)) * 2, rng.integers(0, 7, 12)
    tckd, nckd = dkd_parts(torch.tensor(s, dtype=torch.float32), torch.tensor(t, dtype=torch.float32), torch.tensor(y), T)
    ref_t, ref_n = numpy_dkd(s, t, y, T)
    np.testing.assert_allclose(tckd.numpy(), ref_t, rtol=1e-4, atol=1e-5)  # float32 vs float64
    np.testing.assert_allclose(nckd.numpy(), ref_n, rtol=1e-4, atol=1e-6)
    loss = dkd_loss(torch.tensor(s), torch.tensor(t), torch.tensor(y), T, alpha=0.5, beta=8.0)
    assert loss.item() == pytest.approx(np.mean(0.5 * ref_t + 8.0 * ref_n), rel=1e-4)


def test_identity_kd_equals_tckd_plus_weighted_nckd():
    # the paper's Eq. 4, per sample: KL(p_t || p_s) = TCKD + (1 - p_t[gt]) * NCKD
    torch.manual_seed(0)
    for _ in range(5):
        s, t, y = torch.randn(1, 10) * 3, torch.randn(1, 10) * 3, torch.randint(0, 10, (1,))
        tckd, nckd = dkd_parts(s, t, y, 2.0)
        p_t_gt = torch.softmax(t / 2.0, 1)[0, y]
        assert (tckd + (1 - p_t_gt) * nckd).item() == pytest.approx(kd_loss(s, t, 2.0).item(), rel=1e-4)


def test_confident_teacher_stays_finite():
    s = torch.tensor([[0.0, 0.0, 0.0]], requires_grad=True)
    t = torch.tensor([[80.0, 0.0, 0.0]])  # p_t[gt] == 1 in float32
    loss = dkd_loss(s, t, torch.tensor([0]), temperature=1.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()


def test_dkd_method_warmup_ramps_the_kd_part():
    from torch import nn

    from kdkit.methods import create_method

    torch.manual_seed(0)
    teacher, student = nn.Linear(4, 3), nn.Linear(4, 3)
    method = create_method("dkd", student, teacher, kd_warmup_epochs=4.0)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    losses = {}
    for epoch in (0.0, 2.0, 4.0, 9.0):
        method.epoch = epoch
        out = method(x, y)
        losses[epoch] = out["loss"].item()
        kd = method.dkd_alpha * out["tckd"] + method.dkd_beta * out["nckd"]
        assert out["loss"].item() == pytest.approx((out["ce"] + min(epoch / 4, 1) * kd).item(), rel=1e-5)
    assert losses[0.0] < losses[2.0] < losses[4.0] == losses[9.0]
