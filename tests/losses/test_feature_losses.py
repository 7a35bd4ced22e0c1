"""Feature/relation losses and CRD against independent float64 numpy formulas, edge cases, gradients."""
import numpy as np
import pytest
import torch

from kdkit.losses.crd import ContrastMemory, CRDLoss, nce_loss, sample_negatives
from kdkit.losses.feature import (at_loss, attention_map, fitnet_loss, linear_cka, match_spatial, nst_loss,
                                  pkt_loss, rkd_loss, similarity_matrix, sp_loss)

REL, ABS = 1e-5, 1e-7


def tensor(a):
    return torch.tensor(a, dtype=torch.float32)


def unit(v):
    return v / np.linalg.norm(v)


def huber(x):
    x = np.abs(x)
    return np.where(x < 1, 0.5 * x * x, x - 0.5)


def np_block_pool(f, size):
    """Adaptive average pooling for sizes that divide evenly: plain block means."""
    b, c, h, w = f.shape
    return f.reshape(b, c, size, h // size, size, w // size).mean(axis=(3, 5))


# ---- independent numpy versions, written from the papers' equations --------------------------------

def np_at(s, t, p=2):
    def q(f):
        a = (np.abs(f) ** p).mean(axis=1).reshape(f.shape[0], -1)
        return np.stack([unit(row) for row in a])
    return np.mean((q(s) - q(t)) ** 2)


def np_sp(s, t):
    def g(f):
        f = f.reshape(f.shape[0], -1)
        gram = f @ f.T
        return gram / np.linalg.norm(gram, axis=1, keepdims=True)
    return np.sum((g(s) - g(t)) ** 2) / s.shape[0] ** 2


def np_rkd(s, t):
    b = s.shape[0]

    def dist(e):
        d = np.array([[np.linalg.norm(e[i] - e[j]) for j in range(b)] for i in range(b)])
        return d / (d.sum() / (b * (b - 1)))  # the diagonal is 0, so d.sum() is the off-diagonal sum

    def angles(e):
        out = np.zeros((b, b, b))
        for i in range(b):
            for j in range(b):
                for k in range(b):
                    if i != j and k != j:  # degenerate triples stay 0
                        out[i, j, k] = unit(e[i] - e[j]) @ unit(e[k] - e[j])
        return out

    return huber(dist(s) - dist(t)).mean(), huber(angles(s) - angles(t)).mean()


def np_pkt(s, t, eps=1e-7):
    """RepDistiller's PKT criterion (distiller_zoo/PKT.py) written from its formula: each row divided
    by (its norm + eps), cosine similarities mapped to [0, 1], rows normalised to sum to 1, then the
    mean over all B^2 entries of p_t log((p_t + eps) / (p_s + eps))."""
    def probs(e):
        e = e / (np.sqrt((e * e).sum(axis=1, keepdims=True)) + eps)
        k = (e @ e.T + 1) / 2
        return k / k.sum(axis=1, keepdims=True)
    p_s, p_t = probs(np.asarray(s, dtype=np.float64)), probs(np.asarray(t, dtype=np.float64))
    return float((p_t * np.log((p_t + eps) / (p_s + eps))).mean())


def np_nst(s, t):
    total = 0.0
    for fs, ft in zip(s, t):
        xs = [unit(v) for v in fs.reshape(fs.shape[0], -1)]
        xt = [unit(v) for v in ft.reshape(ft.shape[0], -1)]
        k = lambda xa, xb: np.mean([(a @ b) ** 2 for a in xa for b in xb])
        total += k(xs, xs) + k(xt, xt) - 2 * k(xs, xt)
    return total / s.shape[0]


def np_cka(x, y):
    x, y = x - x.mean(axis=0), y - y.mean(axis=0)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


# ---- FitNets ---------------------------------------------------------------------------------------

def test_fitnet_matches_numpy_and_rejects_shape_mismatch():
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(4, 3, 5, 5)), rng.normal(size=(4, 3, 5, 5))
    assert fitnet_loss(tensor(s), tensor(t)).item() == pytest.approx(np.mean((s - t) ** 2), rel=REL)
    with pytest.raises(ValueError, match=r"\(4, 3, 5, 5\).*\(4, 6, 5, 5\)"):
        fitnet_loss(torch.zeros(4, 3, 5, 5), torch.zeros(4, 6, 5, 5))


# ---- AT ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("p", [1.0, 2.0, 3.0])
def test_at_matches_numpy(p):
    rng = np.random.default_rng(1)
    s, t = rng.normal(size=(4, 3, 6, 6)), rng.normal(size=(4, 7, 6, 6))
    assert at_loss(tensor(s), tensor(t), p).item() == pytest.approx(np_at(s, t, p), rel=REL, abs=ABS)


@pytest.mark.parametrize("s_hw, t_hw", [(8, 4), (4, 8)])
def test_at_pools_the_larger_map(s_hw, t_hw):
    rng = np.random.default_rng(2)
    s, t = rng.normal(size=(3, 5, s_hw, s_hw)), rng.normal(size=(3, 2, t_hw, t_hw))
    expected = np_at(np_block_pool(s, 4), np_block_pool(t, 4))
    assert at_loss(tensor(s), tensor(t)).item() == pytest.approx(expected, rel=REL, abs=ABS)


def test_match_spatial_mixed_sizes_and_attention_map_shape():
    a, b = match_spatial(torch.randn(2, 3, 8, 4), torch.randn(2, 5, 4, 8))
    assert a.shape == (2, 3, 4, 4) and b.shape == (2, 5, 4, 4)
    same = torch.randn(2, 3, 4, 4)
    assert match_spatial(same, same)[0] is same
    q = attention_map(torch.randn(2, 3, 4, 5))
    assert q.shape == (2, 20)
    torch.testing.assert_close(q.norm(dim=1), torch.ones(2))


def test_at_zero_for_identical_or_scaled_maps():
    f = torch.randn(2, 4, 5, 5)
    assert at_loss(f, f.clone()).item() == 0.0
    assert at_loss(3 * f, f).item() == pytest.approx(0.0, abs=1e-12)


# ---- SP ----------------------------------------------------------------------------------------------

def test_sp_matches_numpy():
    rng = np.random.default_rng(3)
    s, t = rng.normal(size=(6, 3, 4, 4)), rng.normal(size=(6, 10))
    assert sp_loss(tensor(s), tensor(t)).item() == pytest.approx(np_sp(s, t), rel=REL)
    assert similarity_matrix(tensor(s)).shape == (6, 6)


def test_sp_zero_for_scaled_copy_and_rejects_batch_mismatch():
    f = torch.randn(5, 8)
    assert sp_loss(2.5 * f, f).item() == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError):
        sp_loss(torch.randn(4, 3), torch.randn(5, 3))


# ---- RKD ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("outlier", [False, True])
def test_rkd_matches_numpy(outlier):
    rng = np.random.default_rng(4)
    s, t = rng.normal(size=(6, 5)), rng.normal(size=(6, 2, 2, 2))
    if outlier:  # large normalised distances on one side only: exercises the linear part of Huber
        s[0] *= 20
    distance, angle = np_rkd(s, t.reshape(6, -1))
    out = rkd_loss(tensor(s), tensor(t), distance_weight=2.0, angle_weight=3.0)
    assert out["distance"].item() == pytest.approx(distance, rel=REL)
    assert out["angle"].item() == pytest.approx(angle, rel=REL)
    assert out["loss"].item() == pytest.approx(2 * distance + 3 * angle, rel=REL)


def test_rkd_zero_for_scaled_copy():
    e = torch.randn(5, 4, dtype=torch.float64)
    out = rkd_loss(3 * e, e)
    assert out["distance"].item() == pytest.approx(0.0, abs=1e-12)
    assert out["angle"].item() == pytest.approx(0.0, abs=1e-12)


# ---- PKT ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("batch", [7, 64])
def test_pkt_matches_numpy_and_is_zero_for_identical(batch):
    rng = np.random.default_rng(5)
    s, t = rng.normal(size=(batch, 5)), rng.normal(size=(batch, 9))
    assert pkt_loss(tensor(s), tensor(t)).item() == pytest.approx(np_pkt(s, t), rel=REL)
    e = torch.randn(6, 4)
    assert pkt_loss(e, e.clone()).item() == 0.0


def test_pkt_scale_is_repdistillers_mean_over_all_entries():
    # By hand, B = 2: student rows orthogonal (kernel [[1, 1/2], [1/2, 1]] -> rows (2/3, 1/3)), teacher
    # rows equal (kernel all ones -> rows (1/2, 1/2)); every row's KL is KL((1/2, 1/2) || (2/3, 1/3)),
    # and the loss is the mean over the 4 entries: that KL / 2, not the KL itself.
    s, t = tensor([[1.0, 0.0], [0.0, 1.0]]), tensor([[1.0, 0.0], [1.0, 0.0]])
    row = 0.5 * np.log(0.5 / (2 / 3)) + 0.5 * np.log(0.5 / (1 / 3))  # 0.0589
    assert pkt_loss(s, t).item() == pytest.approx(row / 2, rel=1e-5)


# ---- NST ---------------------------------------------------------------------------------------------

def test_nst_matches_numpy():
    rng = np.random.default_rng(6)
    s, t = rng.normal(size=(3, 4, 5, 5)), rng.normal(size=(3, 6, 5, 5))
    assert nst_loss(tensor(s), tensor(t)).item() == pytest.approx(np_nst(s, t), rel=REL)


def test_nst_pools_and_is_zero_for_identical():
    rng = np.random.default_rng(7)
    s, t = rng.normal(size=(2, 3, 4, 4)), rng.normal(size=(2, 5, 8, 8))
    assert nst_loss(tensor(s), tensor(t)).item() == pytest.approx(np_nst(s, np_block_pool(t, 4)), rel=REL)
    f = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    assert nst_loss(f, f.clone()).item() == pytest.approx(0.0, abs=1e-12)


# ---- CKA ---------------------------------------------------------------------------------------------

def test_linear_cka_matches_numpy_and_invariances():
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(10, 6)), rng.normal(size=(10, 15))
    assert linear_cka(tensor(x), tensor(y)).item() == pytest.approx(np_cka(x, y), rel=REL)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    x64 = torch.tensor(x)
    assert linear_cka(x64, torch.tensor(x @ q)).item() == pytest.approx(1.0, abs=1e-9)  # eps in the denominator
    assert linear_cka(x64, 4 * x64 + 2).item() == pytest.approx(1.0, abs=1e-9)  # eps in the denominator
    assert linear_cka(tensor(x), tensor(x)).item() == pytest.approx(1.0, rel=1e-6)
    assert 0.0 <= linear_cka(tensor(x), tensor(y)).item() <= 1.0


# ---- shared: dtypes and gradients --------------------------------------------------------------------

LOSSES = {
    "fitnet": (fitnet_loss, (4, 3, 4, 4), (4, 3, 4, 4)),
    "at": (at_loss, (4, 3, 4, 4), (4, 5, 8, 8)),
    "sp": (sp_loss, (4, 3, 4, 4), (4, 6)),
    "rkd": (lambda s, t: rkd_loss(s, t)["loss"], (5, 6), (5, 3)),
    "pkt": (pkt_loss, (5, 6), (5, 3)),
    "nst": (nst_loss, (3, 4, 4, 4), (3, 2, 4, 4)),
    "cka": (linear_cka, (6, 5), (6, 3)),
}


@pytest.mark.parametrize("name", LOSSES)
def test_student_gets_finite_nonzero_gradient_and_dtypes(name):
    fn, s_shape, t_shape = LOSSES[name]
    gen = torch.Generator().manual_seed(0)
    s = torch.randn(s_shape, generator=gen, requires_grad=True)
    t = torch.randn(t_shape, generator=gen)
    loss = fn(s, t)
    assert loss.shape == () and loss.dtype == torch.float32
    loss.backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    assert fn(s.detach().double(), t.double()).dtype == torch.float64
    assert fn(s.detach().bfloat16(), t.bfloat16()).dtype == torch.float32


@pytest.mark.parametrize("name", ["at", "sp", "rkd", "pkt", "nst", "cka"])
def test_gradcheck(name):
    fn, s_shape, t_shape = LOSSES[name]
    gen = torch.Generator().manual_seed(1)
    s = torch.randn(s_shape, generator=gen, dtype=torch.float64, requires_grad=True)
    t = torch.randn(t_shape, generator=gen, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda z: fn(z, t), (s,))


# ---- CRD ---------------------------------------------------------------------------------------------

def test_nce_loss_matches_numpy():
    rng = np.random.default_rng(9)
    scores, n_data = rng.uniform(1e-4, 2e-3, size=(4, 9)), 1000
    k, eps = 8, 1e-7
    pn = 1 / n_data
    expected = -np.mean([np.log(row[0] / (row[0] + k * pn + eps))
                         + sum(np.log(k * pn / (row[j] + k * pn + eps)) for j in range(1, k + 1))
                         for row in scores])
    assert nce_loss(tensor(scores), n_data).item() == pytest.approx(expected, rel=REL)


def test_sample_negatives_shape_range_and_determinism():
    index = torch.tensor([3, 0, 7])
    a = sample_negatives(index, 10, 5, torch.Generator().manual_seed(4))
    b = sample_negatives(index, 10, 5, torch.Generator().manual_seed(4))
    assert a.shape == (3, 6) and a.dtype == torch.long
    assert torch.equal(a[:, 0], index) and torch.equal(a, b)
    assert a.min() >= 0 and a.max() < 10


def test_contrast_memory_init_scores_z_and_momentum_update():
    n_data, dim, T = 12, 4, 0.5
    mem = ContrastMemory(n_data, dim, temperature=T, momentum=0.5, seed=3)
    assert {"memory_student", "memory_teacher", "z_student", "z_teacher"} <= set(mem.state_dict())
    assert mem.memory_student.abs().max() <= 1 / np.sqrt(dim / 3) and mem.z_student.item() == -1
    assert torch.equal(ContrastMemory(n_data, dim, seed=3).memory_teacher, mem.memory_teacher)
    old_s, old_t = mem.memory_student.double().numpy().copy(), mem.memory_teacher.double().numpy().copy()
    gen = torch.Generator().manual_seed(0)
    e_s = torch.nn.functional.normalize(torch.randn(3, dim, generator=gen), dim=1)
    e_t = torch.nn.functional.normalize(torch.randn(3, dim, generator=gen), dim=1)
    index = torch.tensor([5, 1, 9])
    contrast = sample_negatives(index, n_data, 6, gen)
    out_s, out_t = mem(e_s, e_t, index, contrast)
    es, et, ci = e_s.double().numpy(), e_t.double().numpy(), contrast.numpy()
    raw_s = np.array([[np.exp(old_t[c] @ es[b] / T) for c in ci[b]] for b in range(3)])  # teacher bank
    raw_t = np.array([[np.exp(old_s[c] @ et[b] / T) for c in ci[b]] for b in range(3)])  # student bank
    z_s, z_t = raw_s.mean() * n_data, raw_t.mean() * n_data
    np.testing.assert_allclose(out_s.detach().numpy(), raw_s / z_s, rtol=REL)
    np.testing.assert_allclose(out_t.detach().numpy(), raw_t / z_t, rtol=REL)
    assert mem.z_student.item() == pytest.approx(z_s, rel=REL)
    for bank, old, e in ((mem.memory_student, old_s, es), (mem.memory_teacher, old_t, et)):
        expected = old.copy()
        for b, i in enumerate(index.tolist()):
            expected[i] = unit(0.5 * old[i] + 0.5 * e[b])
        np.testing.assert_allclose(bank.numpy(), expected, rtol=REL, atol=1e-7)


def test_crd_loss_trains_heads_updates_only_index_rows_and_fixes_z():
    torch.manual_seed(0)
    n_data = 50
    crd = CRDLoss(student_dim=12, teacher_dim=2 * 3 * 3, n_data=n_data, feat_dim=8, nce_k=16, seed=1)
    before = [crd.memory.memory_student.clone(), crd.memory.memory_teacher.clone()]
    f_s, f_t = torch.randn(6, 12), torch.randn(6, 2, 3, 3)
    index = torch.tensor([0, 4, 8, 15, 23, 42])
    loss = crd(f_s, f_t, index)
    assert loss.shape == () and torch.isfinite(loss)
    loss.backward()
    for head in (crd.embed_s, crd.embed_t):
        assert torch.isfinite(head.linear.weight.grad).all() and head.linear.weight.grad.abs().sum() > 0
    others = torch.ones(n_data, dtype=torch.bool)
    others[index] = False
    for old, new in zip(before, (crd.memory.memory_student, crd.memory.memory_teacher)):
        assert torch.equal(old[others], new[others])
        assert not torch.isclose(old[index], new[index]).all(dim=1).any()
        torch.testing.assert_close(new[index].norm(dim=1), torch.ones(6))
    z = crd.memory.z_student.item(), crd.memory.z_teacher.item()
    assert z[0] > 0 and z[1] > 0
    crd(torch.randn(6, 12), torch.randn(6, 2, 3, 3), torch.tensor([1, 2, 3, 5, 8, 13]))
    assert (crd.memory.z_student.item(), crd.memory.z_teacher.item()) == z


def test_crd_tiny_dataset_caps_negatives():
    crd = CRDLoss(student_dim=4, teacher_dim=4, n_data=5, feat_dim=4)  # the default nce_k = 16384
    assert crd.nce_k == 4
    loss = crd(torch.randn(3, 4), torch.randn(3, 4), torch.tensor([0, 2, 4]))
    assert torch.isfinite(loss)
