"""The hand-written peer loops of benchmarks/throughput_peers.py: they run, their KD loss is the formula,
their augmentation only shifts (<= 4 px, zero fill) and flips. Tiny models, CPU, a few seconds."""
import math
import os
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
sys.path.insert(0, os.path.join(ROOT, "src"))

from kdkit.models.registry import create_model  # noqa: E402
from throughput_peers import crop_flip, kd_loss, plain_kd, student_only, torchdistill_kd  # noqa: E402

FAST = dict(batch_size=16, steps=2, warmup=1, device="cpu", amp=False, channels_last=False)


@pytest.fixture
def data():
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=gen)  # (N, 3, 32, 32)
    labels = torch.randint(0, 10, (64,), generator=gen)  # (N,)
    return images, labels


def tiny_conv():
    """A 2-layer conv net with BatchNorm, so train/eval mode and channels_last matter."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


def check_result(result, steps=2, batch_size=16):
    assert math.isfinite(result["final_loss"])
    assert result["images_per_s"] > 0 and result["seconds"] > 0
    assert result["steps"] == steps and result["batch_size"] == batch_size
    assert result["memory_kind"] == "cpu_max_rss" and result["peak_memory_mb"] > 0
    assert isinstance(result["notes"], str) and result["notes"]


def test_student_only_runs(data):
    check_result(student_only(create_model("mlp-32", 10), *data, **FAST))


def test_plain_kd_runs(data):
    check_result(plain_kd(create_model("mlp-32", 10), create_model("mlp-32", 10), *data, **FAST))


def test_plain_kd_channels_last_and_bf16_autocast(data):
    """The options the GPU runs use also work on CPU; N=64 < batch * (steps + warmup) cycles the data."""
    result = plain_kd(tiny_conv(), tiny_conv(), *data, **{**FAST, "amp": True, "channels_last": True,
                                                         "batch_size": 32, "steps": 3})
    check_result(result, steps=3, batch_size=32)
    assert "bf16 autocast" in result["notes"] and "channels_last" in result["notes"]


def test_kd_loss_matches_float64_formula():
    gen = torch.Generator().manual_seed(1)
    s, t = torch.randn(8, 10, generator=gen) * 3, torch.randn(8, 10, generator=gen) * 3  # (B, K)
    y = torch.randint(0, 10, (8,), generator=gen)
    temperature, alpha = 4.0, 0.9

    def log_softmax(z):
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    s64, t64 = s.double().numpy(), t.double().numpy()
    ce = -log_softmax(s64)[np.arange(8), y.numpy()].mean()
    log_ps, log_pt = log_softmax(s64 / temperature), log_softmax(t64 / temperature)
    kl = (np.exp(log_pt) * (log_pt - log_ps)).sum() / 8
    expected = (1 - alpha) * ce + alpha * temperature**2 * kl
    got = kd_loss(s, t, y, temperature, alpha)
    assert got.dtype == torch.float32
    assert abs(got.item() - expected) < 1e-5
    assert abs(kd_loss(s.bfloat16(), t.bfloat16(), y, temperature, 0.0).item() - ce) < 0.1  # bf16 in, fp32 math


def test_crop_flip_shifts_at_most_4px_and_flips():
    x = torch.zeros(512, 3, 32, 32, dtype=torch.uint8)
    x[:, :, 16, 10] = 255  # one bright pixel at row 16, column 10
    out = crop_flip(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 0], out[:, 2])
    bright = out[:, 0].nonzero()  # (512, 3): sample, row, column; exactly one per sample
    assert torch.equal(bright[:, 0], torch.arange(512))
    assert out.sum(dtype=torch.int64) == 512 * 3 * 255
    dy, col = bright[:, 1] - 16, bright[:, 2]
    flipped = (col - (31 - 10)).abs() <= 4
    kept = (col - 10).abs() <= 4
    assert dy.abs().max() == 4 and (kept | flipped).all()
    assert 150 < flipped.sum() < 362  # about half flipped
    dx = torch.where(flipped, col - 21, col - 10)
    assert set(dx.tolist()) == set(range(-4, 5)) and set(dy.tolist()) == set(range(-4, 5))


def test_crop_flip_fills_with_zeros():
    x = torch.full((256, 3, 32, 32), 200, dtype=torch.uint8)
    out = crop_flip(x, torch.Generator().manual_seed(0))
    assert set(out.unique().tolist()) <= {0, 200}
    lit = (out[:, 0] > 0).sum(dim=(1, 2))  # (B,) pixels kept: (32 - |dy|) * (32 - |dx|)
    assert lit.min() == 28 * 28 and lit.max() == 32 * 32
    same = crop_flip(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, same)


def test_torchdistill_kd_runs_in_both_teacher_modes(data):
    """4 batches an epoch, 1 + 4 steps: crosses an epoch boundary; the eval case uses a worker process."""
    pytest.importorskip("torchdistill")
    for teacher_train_mode, workers in ((True, 0), (False, 1)):
        teacher = tiny_conv()
        result = torchdistill_kd(teacher, tiny_conv(), *data, batch_size=16, steps=4, warmup=1, device="cpu",
                                 teacher_train_mode=teacher_train_mode, num_workers=workers)
        check_result(result, steps=4)
        assert teacher.training is teacher_train_mode
        assert f"{workers} DataLoader workers" in result["notes"]


def test_torchdistill_kd_loss_is_the_same_formula():
    pytest.importorskip("torchdistill")
    from torchdistill.losses.mid_level import KDLoss

    gen = torch.Generator().manual_seed(2)
    s, t = torch.randn(8, 10, generator=gen), torch.randn(8, 10, generator=gen)
    y = torch.randint(0, 10, (8,), generator=gen)
    theirs = KDLoss(".", "output", ".", "output", temperature=4.0, alpha=1 - 0.9, beta=0.9)
    expected = theirs({".": {"output": s}}, {".": {"output": t}}, y)
    assert abs(kd_loss(s, t, y, 4.0, 0.9).item() - expected.item()) < 1e-5
