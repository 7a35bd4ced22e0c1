"""Mixing (kdkit.data.mix): mixup and CutMix against per-sample references, the Beta draws, and the
BatchLoader's mixed batches (partners, exact replay from any batch, the same with workers)."""
import numpy as np
import pytest
import torch

from kdkit.data import BatchLoader, from_arrays
from kdkit.data.mix import apply_mix, draw_mix
from kdkit.errors import KdkitError


def _data(n=40, classes=4):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 8, 6), dtype=torch.uint8, generator=g).numpy()
    y = (torch.arange(n) % classes).numpy()
    return from_arrays(x, y, x[:8], y[:8], val_fraction=0.0, augment="crop_flip")


def test_mixup_is_lam_of_the_first_and_the_rest_of_the_second():
    a, b = torch.randn(6, 3, 5, 4), torch.randn(6, 3, 5, 4)
    lam, box = draw_mix(6, np.random.default_rng(0), "mixup", 0.2, 5, 4)
    got = apply_mix(a, b, lam, box, "mixup")
    for i in range(6):  # one sample at a time, in float64
        expected = float(lam[i]) * a[i].double() + (1 - float(lam[i])) * b[i].double()
        torch.testing.assert_close(got[i].double(), expected, rtol=0, atol=1e-6)
    assert torch.equal(apply_mix(a, b, lam, box, "none"), a)


def test_cutmix_pastes_one_box_of_the_second_and_lam_is_the_area_kept():
    height, width = 9, 7
    lam, box = draw_mix(200, np.random.default_rng(1), "cutmix", 1.0, height, width)
    zeros, ones = torch.zeros(200, 2, height, width), torch.ones(200, 2, height, width)
    got = apply_mix(zeros, ones, lam, box, "cutmix")
    for i in range(200):
        y0, y1, x0, x1 = box[i].tolist()
        expected = torch.zeros(2, height, width)
        expected[:, y0:y1, x0:x1] = 1  # the textbook slice
        assert torch.equal(got[i], expected)
        assert float(lam[i]) == pytest.approx(1 - float(expected[0].mean()), abs=1e-6)  # kept share, counted
        assert 0 <= y0 <= y1 <= height and 0 <= x0 <= x1 <= width
    # lam0 ~ Beta(1, 1) has mean 1/2; boxes clipped at the border (and even sides) keep more of the first
    assert 0.5 < float(lam.mean()) < 0.85 and float(lam.min()) < 0.3 and float(lam.max()) == 1.0


@pytest.mark.parametrize("alpha", [0.2, 1.0])
def test_mixup_lam_is_beta_alpha_alpha(alpha):
    lam, _ = draw_mix(40000, np.random.default_rng(2), "mixup", alpha, 8, 8)
    # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1))
    assert float(lam.mean()) == pytest.approx(0.5, abs=0.01)
    assert float(lam.double().var()) == pytest.approx(1 / (4 * (2 * alpha + 1)), rel=0.03)


@pytest.mark.parametrize("mix", ["mixup", "cutmix"])
def test_loader_mixes_each_sample_with_a_partner_of_its_batch(mix):
    data = _data()
    plain = list(BatchLoader(data.train, 16, shuffle=True, seed=3, augment="crop_flip", mean=data.mean, std=data.std))
    mixed = list(BatchLoader(data.train, 16, shuffle=True, seed=3, augment="crop_flip", mean=data.mean, std=data.std,
                             mix=mix, mix_alpha=1.0))
    assert len(plain) == len(mixed) == 3
    for (x, y, idx), (xm, ym, idxm, mixing) in zip(plain, mixed):
        assert torch.equal(idx, idxm) and torch.equal(y, ym)  # same order and augmentation as without mix
        assert sorted(mixing.partner.tolist()) == sorted(idx.tolist())  # a permutation of the batch
        assert torch.equal(mixing.partner_labels, data.train.labels[mixing.partner])
        where = [idx.tolist().index(p) for p in mixing.partner.tolist()]
        for i, j in enumerate(where):
            lam = float(mixing.lam[i])
            if mix == "mixup":
                torch.testing.assert_close(xm[i], lam * x[i] + (1 - lam) * x[j], rtol=0, atol=1e-6)
            else:  # every pixel is the sample's own or its partner's, the partner's on 1 - lam of them
                own, other = xm[i] == x[i], xm[i] == x[j]
                assert bool((own | other).all())
                assert float((other & ~own)[0].float().mean()) <= 1 - lam + 1e-6
    assert any(bool((m[3].lam < 1).any()) for m in mixed)


@pytest.mark.parametrize("workers", [0, 2])
def test_mixed_batches_replay_exactly_from_any_batch(workers):
    data = _data()
    loader = BatchLoader(data.train, 16, shuffle=True, seed=1, augment="crop_flip", mix="cutmix", workers=workers)
    reference = BatchLoader(data.train, 16, shuffle=True, seed=1, augment="crop_flip", mix="cutmix")
    for epoch in (0, 3):
        loader.set_epoch(epoch)
        reference.set_epoch(epoch)
        full = list(reference)
        for start in (0, 2):
            for a, b in zip(loader.iter_from(start), full[start:]):
                assert torch.equal(a[0], b[0]) and torch.equal(a[3].partner, b[3].partner) and torch.equal(a[3].lam, b[3].lam)
    loader.set_epoch(1)
    assert not torch.equal(next(iter(loader))[3].lam, full[0][3].lam)  # another epoch, other draws


def test_mix_errors_are_one_line():
    data = _data()
    with pytest.raises(KdkitError, match="unknown mix 'mixupp'.*did you mean 'mixup'"):
        BatchLoader(data.train, 8, shuffle=True, mix="mixupp")
    with pytest.raises(KdkitError, match="mix_alpha must be above 0"):
        BatchLoader(data.train, 8, shuffle=True, mix="mixup", mix_alpha=0.0)
    vectors = from_arrays(np.zeros((20, 5), np.float32), np.arange(20) % 2, np.zeros((4, 5), np.float32), np.arange(4) % 2,
                          val_fraction=0.0)
    with pytest.raises(KdkitError, match="mix=cutmix pastes a box of pixels, but these inputs have shape"):
        BatchLoader(vectors.train, 8, shuffle=True, mix="cutmix")
    x, _, _, mixing = next(iter(BatchLoader(vectors.train, 8, shuffle=True, mix="mixup")))  # mixup takes any shape
    assert x.shape == (8, 5) and mixing.lam.shape == (8,)
