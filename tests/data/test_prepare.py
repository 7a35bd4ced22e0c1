"""kdkit.data.prepare: train_per_class (a quick trial on fewer training samples: stratified, seeded,
after validation is carved, before imbalance; validation and test untouched), in prepare_data and
through kdkit train, kdkit distill, kdkit tune and kdkit.distill()."""
import dataclasses

import numpy as np
import pytest
import torch

from kdkit.config import DistillConfig, TrainConfig, apply_overrides
from kdkit.data.prepare import prepare_data, subsample_train
from kdkit.errors import KdkitError
from test_labels import toy


def per_class(split, k):
    return torch.bincount(split.labels, minlength=k).tolist()


def test_whole_number_keeps_n_samples_per_class_and_drops_the_rest():
    data = toy((30, 25, 40, 12), val_fraction=0.2)
    out = subsample_train(data, 10, seed=0)
    assert per_class(out.train, 4) == [10, 10, 10, 10]
    # every kept sample is a training sample with its own image, label and index, in the order they had
    position = {int(i): row for row, i in enumerate(data.train.index)}
    rows = [position[int(i)] for i in out.train.index]
    assert rows == sorted(rows)
    assert torch.equal(out.train.images, data.train.images[rows]) and torch.equal(out.train.labels, data.train.labels[rows])
    # validation, test and the normalisation statistics are those of the whole dataset
    assert out.val is data.val and out.test is data.test and (out.mean, out.std) == (data.mean, data.std)


def test_fraction_keeps_each_class_share_and_the_draw_is_seeded():
    data = toy((30, 25, 40, 3))
    # round(0.1 * n) per class, half to even, at least one: 3, round(2.5) = 2, 4, max(1, 0) = 1
    assert per_class(subsample_train(data, 0.1, seed=0).train, 4) == [3, 2, 4, 1]
    first, again, other = (subsample_train(data, 0.5, seed=s).train.index for s in (3, 3, 4))
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_too_many_per_class_names_the_key():
    with pytest.raises(KdkitError) as error:
        subsample_train(toy((30, 7)), 10, seed=0)
    assert str(error.value) == ("class 'c1' has 7 training samples, fewer than train_per_class=10; lower train_per_class, "
                                "or give a fraction (e.g. 0.1) to keep that share of each class")
    with pytest.raises(KdkitError) as error:
        apply_overrides(TrainConfig(), {"train_per_class": 2.5})
    assert str(error.value) == ("train_per_class must be a fraction in (0, 1) or a whole number of samples per class, "
                                "got 2.5; e.g. 100 or 0.1")


def test_before_imbalance_n_is_the_head_and_the_profile_is_kept(digits):
    cfg = apply_overrides(TrainConfig(), {"train_per_class": 40, "imbalance": "exp:10", "progress": False})
    out = prepare_data(cfg, digits, seed=0)
    # exp:10 over 10 classes from a head of 40: int(40 * 10 ** (-k / 9)), by hand
    assert per_class(out.train, 10) == [40, 30, 23, 18, 14, 11, 8, 6, 5, 4]
    whole = prepare_data(dataclasses.replace(cfg, train_per_class=0), digits, seed=0)
    assert torch.equal(out.val.index, whole.val.index) and out.test is whole.test  # the same long-tailed validation


def test_applied_before_labels_per_class(digits):
    cfg = apply_overrides(DistillConfig(), {"train_per_class": 50, "labels_per_class": 0.1, "progress": False})
    out = prepare_data(cfg, digits, seed=0)
    labels = out.train.labels
    assert len(labels) == 500 and per_class(dataclasses.replace(out.train, labels=labels[labels >= 0]), 10) == [5] * 10


def test_train_distill_and_tune_use_it(tmp_path, digits, tiny):
    import kdkit
    from kdkit.recipes import run_distill, run_train
    from kdkit.tune import prepare

    run = run_train(apply_overrides(TrainConfig(), tiny | {"model": "mlp", "epochs": 1, "train_per_class": 20}), digits)
    assert run["train_samples"] == {"labelled": 200, "unlabeled": 0}
    cfg = apply_overrides(DistillConfig(), tiny | {"teacher": "mlp", "student": "mlp", "epochs": 1, "report": False,
                                                   "train_per_class": 0.1, "out": str(tmp_path / "distill")})
    summary = run_distill(cfg, digits)
    # round(0.1 * n) of digits' per-class counts (128, 131, 128, 131, 131, 131, 131, 129, 125, 130): 12.5 rounds to 12
    assert list(summary["train_class_counts"].values()) == [13] * 8 + [12, 13]
    assert {summary["rows"][name]["train_samples"]["labelled"] for name in ("teacher", "scratch", "student")} == {129}
    assert summary["rows"]["student"]["per_seed"][0]["n"] == len(digits.test)  # scored on the whole test split
    ctx = prepare(dataclasses.replace(cfg, out=str(tmp_path / "tune")), "accuracy", fixed=())
    assert len(ctx.data.train) == 129 and len(ctx.data.val) == len(digits.val)
    x, y = digits.train.images.float().numpy(), digits.train.labels.numpy()
    result = kdkit.distill(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)), "mlp", (x, y),
                         (x[:50], y[:50]), epochs=1, train_per_class=5, batch_size=16, progress=False,
                         out=str(tmp_path / "api"))
    assert result.summary["rows"]["student"]["train_samples"]["labelled"] == 50  # 5 samples of each of the 10 classes
    assert np.isfinite(result.metrics["test"]["accuracy"])
