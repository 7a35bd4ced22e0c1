"""kd_loss against an independent float64 numpy formula, the T^2 factor, and its gradient."""
import numpy as np
import pytest
import torch

from kdkit.losses import kd_loss


def numpy_kd(s, t, T):
    """T^2 * mean_i sum_k p_t log(p_t / p_s), softmaxes written out in float64."""
    def softmax(z):
        z = z / T
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    p_s, p_t = softmax(s.astype(np.float64)), softmax(t.astype(np.float64))
    return T * T * np.mean(np.sum(p_t * (np.log(p_t) - np.log(p_s)), axis=1))


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0, 20.0])
def test_kd_loss_matches_numpy(T):
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(16, 10)) * 3, rng.normal(size=(16, 10)) * 3
    got = kd_loss(torch.tensor(s, dtype=torch.float32), torch.tensor(t, dtype=torch.float32), T).item()
    assert got == pytest.approx(numpy_kd(s, t, T), rel=1e-5, abs=1e-6)


def test_kd_loss_by_hand_two_classes():
    # student logits (0, 0) -> p_s = (1/2, 1/2); teacher logits (ln 3, 0) at T=1 -> p_t = (3/4, 1/4)
    # KL = 3/4 ln(3/2) + 1/4 ln(1/2); at T=2 the teacher's logits become (ln 3 / 2, 0).
    s = torch.zeros(1, 2)
    t = torch.tensor([[np.log(3.0), 0.0]], dtype=torch.float32)
    expected = 0.75 * np.log(1.5) + 0.25 * np.log(0.5)
    assert kd_loss(s, t, 1.0).item() == pytest.approx(expected, rel=1e-6)
    p = np.sqrt(3) / (np.sqrt(3) + 1)  # softmax((ln 3)/2, 0)[0]
    expected_t2 = 4 * (p * np.log(2 * p) + (1 - p) * np.log(2 * (1 - p)))  # the T^2 = 4 factor
    assert kd_loss(s, t, 2.0).item() == pytest.approx(expected_t2, rel=1e-6)


def test_kd_loss_zero_when_equal():
    z = torch.randn(8, 5)
    assert kd_loss(z, z.clone(), 3.0).item() == pytest.approx(0.0, abs=1e-6)


def test_kd_gradient_closed_form():
    # d/ds [T^2 KL(p_t || softmax(s/T))] = T * (softmax(s/T) - p_t) / B  (batch mean)
    T, B = 4.0, 6
    s = torch.randn(B, 7, dtype=torch.float64, requires_grad=True)
    t = torch.randn(B, 7, dtype=torch.float64)
    kd_loss(s, t, T).backward()
    expected = T * (torch.softmax(s.detach() / T, 1) - torch.softmax(t / T, 1)) / B
    torch.testing.assert_close(s.grad.double(), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("alpha,T", [(0.9, 4.0), (0.5, 1.0), (0.0, 2.0), (1.0, 20.0)])
def test_kd_method_loss_is_the_papers_whole_loss(alpha, T):
    """The KD method's whole loss, (1 - alpha) CE + alpha T^2 KL (Hinton et al. 2015), against float64
    numpy: the cross-entropy written out, the KL term from numpy_kd."""
    from kdkit.methods import create_method

    rng = np.random.default_rng(1)
    x = rng.normal(size=(12, 5)).astype(np.float32)
    y = rng.integers(0, 3, size=12)
    torch.manual_seed(0)
    student, teacher = torch.nn.Linear(5, 3), torch.nn.Linear(5, 3)
    method = create_method("kd", student, teacher, temperature=T, alpha=alpha)
    out = method(torch.tensor(x), torch.tensor(y))
    with torch.no_grad():
        s, t = student(torch.tensor(x)).double().numpy(), teacher(torch.tensor(x)).double().numpy()
    log_p = s - s.max(axis=1, keepdims=True)
    log_p = log_p - np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    ce = -np.mean(log_p[np.arange(12), y])
    expected = (1 - alpha) * ce + alpha * numpy_kd(s, t, T)
    assert out["loss"].item() == pytest.approx(expected, rel=1e-4)  # float32 logits; T^2 = 400 scales their rounding
