"""BatchLoader(transform=...): a user's batch transform applied after kdkit's augmentation and the
[0, 1] scaling, before normalisation; fit(transform=...) shows its output to student and teacher."""
import numpy as np
import pytest
import torch
from torch import nn

from kdkit.config import TrainConfig, apply_overrides
from kdkit.data import BatchLoader, from_arrays
from kdkit.errors import KdkitError
from kdkit.methods import create_method
from kdkit.train import fit

MEAN, STD = (0.2, 0.5, 0.7), (0.3, 0.2, 0.1)


def images(n: int = 24):
    return from_arrays(np.random.default_rng(0).integers(0, 256, (n, 3, 5, 5), dtype=np.uint8), np.arange(n) % 2,
                       val_fraction=0.25)


def batch(split, **options) -> torch.Tensor:
    return next(iter(BatchLoader(split, 64, shuffle=False, mean=MEAN, std=STD, **options)))[0]


def test_transform_gets_0_1_floats_and_its_output_is_normalised():
    data = images()
    seen = []
    x = batch(data.train, transform=lambda b: seen.append(b.clone()) or b.flip(-1))
    as_floats = data.train.images.float() * (1 / 255)  # (N, C, H, W) in [0, 1]
    assert torch.equal(seen[0], as_floats)
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    assert torch.allclose(x, (as_floats.flip(-1) - mean) / std, atol=1e-6)  # hand-computed


def test_transform_comes_after_kdkit_augmentation():
    data = images()
    options = dict(augment="crop_flip", seed=3)
    plain = batch(data.train, **options)
    shifted = batch(data.train, transform=lambda b: b.roll(1, dims=-2), **options)
    assert torch.allclose(shifted, plain.roll(1, dims=-2), atol=1e-6)  # the crop and flip drawn first, then the transform


def test_table_rows_reach_the_transform_in_their_own_units():
    rows = torch.arange(40, dtype=torch.float32).view(10, 4)
    data = from_arrays(rows, np.arange(10) % 2, val_fraction=0.0)
    seen = []
    next(iter(BatchLoader(data.train, 64, shuffle=False, mean=data.mean, std=data.std,
                          transform=lambda b: seen.append(b.clone()) or b)))
    assert torch.equal(seen[0], data.train.images)


def test_bad_transforms_are_one_line_errors():
    data = images()
    with pytest.raises(KdkitError, match="^transform must be a callable taking a batch tensor, got str$"):
        BatchLoader(data.train, 8, shuffle=True, transform="flip")
    views = torch.zeros(1, len(data.train), 3, dtype=torch.int8)
    with pytest.raises(KdkitError, match="^a batch transform cannot be replayed from the teacher-output cache .*; use "
                                         "teacher_cache=false, or drop transform$"):
        BatchLoader(data.train, 8, shuffle=True, views=views, transform=lambda b: b)
    n = len(data.train)
    with pytest.raises(KdkitError, match=rf"^the batch transform returned shape \(5, 5\) for a batch of shape \({n}, 3, 5, 5\); "
                                         f"return a tensor of the {n} samples$"):
        batch(data.train, transform=lambda b: b[0, 0])


def test_fit_shows_the_transformed_batch_to_student_and_teacher(tmp_path):
    data = images(32)
    torch.manual_seed(0)
    student = nn.Sequential(nn.Flatten(), nn.Linear(75, 2))
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(75, 2))
    method = create_method("kd", student, teacher)
    seen = {"student": [], "teacher": []}
    for name, model in (("student", student), ("teacher", teacher)):
        model.register_forward_pre_hook(lambda m, args, name=name: seen[name].append((m.training, args[0].detach().clone())))
    cfg = apply_overrides(TrainConfig(), {"epochs": 1, "batch_size": 8, "progress": False, "amp": "off", "device": "cpu",
                                          "channels_last": "off", "out": str(tmp_path)})
    fit(method, data, cfg, tmp_path, transform=lambda b: torch.full_like(b, 0.5))
    expected = ((0.5 - torch.tensor(data.mean)) / torch.tensor(data.std)).view(1, 3, 1, 1).expand(8, 3, 5, 5)
    training = [x for is_training, x in seen["student"] if is_training]
    steps = len(data.train) // 8
    assert len(training) == steps and all(torch.allclose(x, expected) for x in training)
    assert len(seen["teacher"]) == steps and all(torch.allclose(x, expected) for _, x in seen["teacher"])
    validation = [x for is_training, x in seen["student"] if not is_training]
    assert validation and not torch.allclose(validation[0][0], expected[0])  # validation batches are not transformed
