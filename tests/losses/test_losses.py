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


def numpy_standardize(z):
    """Sun et al. 2024, eq. 9: (z - mean) / std over the classes (the authors' code: sample std, + 1e-7)."""
    return (z - z.mean(axis=1, keepdims=True)) / (z.std(axis=1, ddof=1, keepdims=True) + 1e-7)


@pytest.mark.parametrize("method,T", [("kd", 2.0), ("kd", 4.0), ("dkd", 1.0), ("dist", 1.0), ("bkd", 2.0), ("lakd", 3.0)])
def test_logit_standardization_matches_numpy(method, T):
    """Every logit method's distillation term with logit_standardize=True equals the same term on
    z-scored float64 logits, and a teacher's logits shifted and scaled per sample give the same term."""
    from kdkit.methods import create_method

    rng = np.random.default_rng(2)
    x, y = torch.tensor(rng.normal(size=(10, 5)).astype(np.float32)), torch.tensor(rng.integers(0, 4, size=10))
    torch.manual_seed(0)
    student, teacher = torch.nn.Linear(5, 4), torch.nn.Linear(5, 4)
    counts = [40, 20, 10, 5]
    kwargs = {"temperature": T, "logit_standardize": True} | ({"class_counts": counts} if method in ("bkd", "lakd") else {})
    out = create_method(method, student, teacher, **kwargs)(x, y)
    with torch.no_grad():
        s, t = student(x).double().numpy(), teacher(x).double().numpy()
    if method == "lakd":  # its teacher is balanced first (t - tau log prior), then z-scored
        t = t - np.log(np.array(counts) / sum(counts))
    distill = [k for k in out if k not in ("loss", "logits", "ce")]
    if method in ("kd", "lakd"):  # the KD term written out in numpy
        assert out["kd"].item() == pytest.approx(numpy_kd(numpy_standardize(s), numpy_standardize(t), T), rel=1e-4)
    else:  # the method's own (reference-tested) term on logits z-scored in numpy
        z_s, z_t = torch.tensor(numpy_standardize(s)), torch.tensor(numpy_standardize(t))
        plain = create_method(method, _Fixed(z_s), _Fixed(z_t), **(kwargs | {"logit_standardize": False}))(x, y)
        for key in distill:
            assert out[key].item() == pytest.approx(plain[key].item(), rel=1e-4, abs=1e-6), key
    if method == "lakd":  # its prior shift comes after the teacher's scale: not invariant to it
        return
    scale = torch.tensor(rng.uniform(0.2, 5.0, size=(10, 1)), dtype=torch.float32)
    shifted = create_method(method, student, _Affine(teacher, scale, 3.0), **kwargs)(x, y)
    for key in distill:  # invariant to each sample's logit range (the point of the method)
        assert shifted[key].item() == pytest.approx(out[key].item(), rel=1e-3, abs=1e-5), key


class _Fixed(torch.nn.Module):
    """Returns the given logits whatever the input (the z-scored reference)."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.nn.Parameter(logits.float())

    def forward(self, x):
        return self.logits


class _Affine(torch.nn.Module):
    def __init__(self, model, scale, shift):
        super().__init__()
        self.model, self.scale, self.shift = model, scale, shift

    def forward(self, x):
        return self.model(x) * self.scale + self.shift
