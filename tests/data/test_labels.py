"""kdkit.data.labels: labels_per_class (stratified, seeded, after validation), UNLABELED, labelled_only,
and the places that count classes (class_counts, the class-balanced sampler) with unlabelled samples."""
import dataclasses
import re

import numpy as np
import pytest
import torch

from kdkit.config import DistillConfig, TrainConfig, apply_overrides
from kdkit.data import UNLABELED, BatchLoader, from_arrays, labelled_only
from kdkit.data.labels import hide_labels, labels_kept, sample_counts
from kdkit.data.longtail import long_tailed
from kdkit.data.prepare import class_counts
from kdkit.errors import KdkitError


def toy(per_class=(30, 30, 30, 30), val_fraction=0.0, seed=0):
    """Images whose pixel value is their position in the source, so a row can be traced back."""
    labels = np.concatenate([np.full(n, k) for k, n in enumerate(per_class)])
    rng = np.random.default_rng(seed)
    labels = labels[rng.permutation(len(labels))]
    x = np.broadcast_to(np.arange(len(labels), dtype=np.float32)[:, None, None, None], (len(labels), 1, 2, 2)).copy()
    return from_arrays(x, labels, x[:4], labels[:4], classes=[f"c{k}" for k in range(len(per_class))],
                       val_fraction=val_fraction, seed=0)


def kept_per_class(split, num_classes):
    labels = split.labels
    return torch.bincount(labels[labels != UNLABELED], minlength=num_classes).tolist()


def test_whole_number_keeps_exactly_n_per_class_and_hides_the_rest():
    data = toy((30, 25, 40, 12))
    out = hide_labels(data, 10, seed=0)
    assert kept_per_class(out.train, 4) == [10, 10, 10, 10]
    assert sample_counts(out.train) == {"labelled": 40, "unlabeled": 107 - 40}
    labelled = out.train.labels != UNLABELED
    # every row stays where it was, a kept label is the true one, the hidden ones are exactly -100
    assert torch.equal(out.train.images, data.train.images) and torch.equal(out.train.index, data.train.index)
    assert torch.equal(out.train.labels[labelled], data.train.labels[labelled])
    assert set(out.train.labels[~labelled].tolist()) == {-100} and UNLABELED == -100


def test_fraction_keeps_each_class_share():
    data = toy((30, 25, 40, 3))
    out = hide_labels(data, 0.1, seed=0)
    # round(0.1 * n) labels per class, half to even, at least one: 3, round(2.5) = 2, 4, max(1, 0) = 1
    assert kept_per_class(out.train, 4) == [3, 2, 4, 1]
    assert labels_kept([30, 25, 40, 3], 0.1, list("abcd")) == [3, 2, 4, 1]
    assert labels_kept([7, 0], 0.5, ["a", "b"]) == [4, 0]  # an empty class stays empty
    assert hide_labels(data, 0, seed=0) is data  # 0 = every label


def test_same_seed_same_draw_other_seed_other_draw():
    data = toy((40, 40, 40))
    first, again, other = (hide_labels(data, 5, seed=s) for s in (3, 3, 4))
    assert torch.equal(first.train.labels, again.train.labels)
    assert not torch.equal(first.train.labels, other.train.labels)
    assert kept_per_class(other.train, 3) == [5, 5, 5]


def test_validation_and_test_keep_their_labels_and_the_statistics_stay():
    data = toy((50, 50, 50), val_fraction=0.2)
    out = hide_labels(data, 4, seed=1)
    for name in ("val", "test"):
        before, after = getattr(data, name), getattr(out, name)
        assert torch.equal(before.labels, after.labels) and torch.equal(before.images, after.images)
        assert torch.equal(before.index, after.index)
    assert (out.val.labels >= 0).all() and len(out.val) == 30
    assert out.mean == data.mean and out.std == data.std  # measured on the whole training split, labels or not
    # the labelled rows come from the training split only: no validation position among them
    kept = out.train.index[out.train.labels != UNLABELED]
    assert not set(kept.tolist()) & set(out.val.index.tolist())


def test_a_class_with_fewer_samples_than_n_is_named():
    data = toy((30, 7, 30))
    with pytest.raises(KdkitError, match="class 'c1' has 7 training samples, fewer than labels_per_class=10") as error:
        hide_labels(data, 10, seed=0)
    assert "\n" not in str(error.value) and "0.1" in str(error.value)  # one line, and the fraction as the fix
    with pytest.raises(KdkitError, match="whole number of labels per class, got 2.5"):
        hide_labels(data, 2.5, seed=0)


def test_with_imbalance_a_fraction_keeps_the_long_tail_and_n_needs_the_tail():
    data = long_tailed(toy((60, 60, 60, 60)), "exp:10", seed=0)
    counts = class_counts(data)
    assert counts == [60, 27, 12, 6]  # int(60 * 10^(-k/3))
    out = hide_labels(data, 0.5, seed=0)
    assert kept_per_class(out.train, 4) == [30, 14, 6, 3]  # round(0.5 * n): 13.5 -> 14 (half to even)
    with pytest.raises(KdkitError, match="class 'c3' has 6 training samples"):
        hide_labels(data, 10, seed=0)


def test_labelled_only_drops_the_unlabelled_rows():
    data = toy((20, 20))
    out = hide_labels(data, 3, seed=0)
    labelled = labelled_only(out)
    assert len(labelled.train) == 6 and (labelled.train.labels >= 0).all()
    mask = out.train.labels != UNLABELED
    assert torch.equal(labelled.train.images, out.train.images[mask])
    assert torch.equal(labelled.train.index, out.train.index[mask])
    assert labelled.val is out.val and labelled.test is out.test
    assert labelled_only(data) is data  # nothing to drop


def test_class_counts_and_the_sampler_with_unlabelled_samples():
    out = hide_labels(toy((20, 10)), 4, seed=0)
    assert class_counts(out) == [4, 4]  # the prior of the labelled samples
    BatchLoader(out.train, 8, shuffle=True)  # the plain permutation takes any label
    with pytest.raises(KdkitError, match="sampler 'class_balanced' draws by class, but 22 samples have no label"):
        BatchLoader(out.train, 8, shuffle=True, sampler="class_balanced")
    BatchLoader(labelled_only(out).train, 8, shuffle=True, sampler="class_balanced")


def test_config_keys_and_what_they_cannot_go_with(tmp_path):
    cfg = apply_overrides(DistillConfig(), {"labels_per_class": "100", "unlabeled": "mnist:train"})
    assert cfg.labels_per_class == 100.0 and cfg.unlabeled == "mnist:train"
    assert apply_overrides(TrainConfig(), {"labels_per_class": 0.25}).labels_per_class == 0.25
    cases = [({"labels_per_class": 2.5}, "fraction in (0, 1) or a whole number"),
             ({"labels_per_class": -1}, "must be in [0,"),
             ({"labels_per_class": 10, "sampler": "class_balanced"}, "use sampler=none"),
             ({"unlabeled": "x.npy", "transfer_exclude": [3]}, "transfer_exclude drops classes by label")]
    for overrides, message in cases:
        with pytest.raises(KdkitError, match=re.escape(message)):
            apply_overrides(DistillConfig(), overrides)
    assert apply_overrides(DistillConfig(), {"unlabeled": ""}).unlabeled is None  # empty: none, like every optional key
    with pytest.raises(KdkitError, match="kdkit train fits hard labels only"):
        apply_overrides(TrainConfig(), {"unlabeled": "x.npy"})
    # a teacher trained here may still be class-balanced: teacher_sampler is not the student's sampler
    apply_overrides(DistillConfig(), {"labels_per_class": 10, "teacher_sampler": "class_balanced"})


def test_unlabelled_samples_count_in_no_class_of_the_training_accuracy():
    from kdkit.train.meters import _Sums

    sums = _Sums(torch.device("cpu"))
    logits = torch.eye(4)  # predicts 0, 1, 2, 3
    y = torch.tensor([0, 1, UNLABELED, 2])  # right, right, no label, wrong
    out = {"loss": torch.tensor(1.0), "logits": logits, "grad_norm": torch.tensor(0.5)}
    sums.add(out, y, step=0)
    state = dataclasses.make_dataclass("S", [("path", object, None)])()
    assert sums.flush(state)["accuracy"] == pytest.approx(2 / 3)
    sums.add(out, torch.full((4,), UNLABELED), step=1)  # a window without any label: 0, not a division by zero
    assert sums.flush(state)["accuracy"] == 0.0


def test_the_labelled_count_survives_a_checkpoint_and_older_ones_count_every_sample():
    from kdkit.train.meters import _Sums

    sums = _Sums(torch.device("cpu"))
    out = {"loss": torch.tensor(1.0), "logits": torch.eye(4), "grad_norm": torch.tensor(0.5)}
    sums.add(out, torch.tensor([0, UNLABELED, UNLABELED, 3]), step=0)  # 2 right of 2 labelled
    tensors, meta = sums.state()
    state = dataclasses.make_dataclass("S", [("path", object, None)])()
    assert _Sums(torch.device("cpu"), (tensors, meta)).flush(state)["accuracy"] == 1.0
    older = {k: v for k, v in tensors.items() if k != "sums.labelled"}  # written before UNLABELED existed
    assert _Sums(torch.device("cpu"), (older, meta)).flush(state)["accuracy"] == 0.5  # 2 of the 4 samples seen


def test_same_steps_repeats_the_labelled_samples_to_the_splits_size():
    import torch

    from kdkit.data import Dataset, Split, UNLABELED, labelled_only

    labels = torch.tensor([0, UNLABELED, 1, UNLABELED, UNLABELED, 2, UNLABELED])
    split = Split(images=torch.arange(7).view(7, 1, 1, 1).to(torch.uint8), labels=labels, index=torch.arange(7))
    data = Dataset("toy", split, split, split, classes=["a", "b", "c"], mean=(0.0,), std=(1.0,), augment="none")
    plain, repeated = labelled_only(data), labelled_only(data, same_steps=True)
    assert plain.train.index.tolist() == [0, 2, 5]
    assert repeated.train.index.tolist() == [0, 2, 5, 0, 2, 5, 0]  # whole copies, then the first ones again
    assert repeated.train.labels.tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert repeated.train.images.flatten().tolist() == [0, 2, 5, 0, 2, 5, 0]
