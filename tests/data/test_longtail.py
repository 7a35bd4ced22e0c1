"""Long-tailed datasets (kdkit.data.longtail) and the BatchLoader's class-aware samplers."""
import dataclasses
import math

import numpy as np
import pytest
import torch

from kdkit.data import BatchLoader, Split, from_arrays
from kdkit.data.loader import SAMPLERS
from kdkit.data.longtail import (PROFILES, class_counts, describe_counts, long_tailed, parse_imbalance,
                                 scaled_thresholds, shot_groups)
from kdkit.errors import KdkitError

K, PER_CLASS = 10, 200


def synthetic(val_fraction=0.1, seed=0):
    """10 classes x 200 train samples of 4x4 uint8 images, each row unique; 10 x 30 test samples."""
    rng = np.random.default_rng(123)
    y_train = np.repeat(np.arange(K), PER_CLASS)
    rng.shuffle(y_train)
    x_train = rng.integers(0, 256, size=(len(y_train), 1, 4, 4), dtype=np.uint8)
    x_train[:, 0, 0, :2] = np.stack([np.arange(len(y_train)) // 256, np.arange(len(y_train)) % 256], 1)
    y_test = np.repeat(np.arange(K), 30)
    x_test = rng.integers(0, 256, size=(len(y_test), 1, 4, 4), dtype=np.uint8)
    return from_arrays(x_train, y_train, x_test, y_test, classes=[f"c{k}" for k in range(K)],
                       val_fraction=val_fraction, seed=seed, name="toy")


def per_class(split):
    return torch.bincount(split.labels, minlength=K).tolist()


def expected_exp(n_max, factor):
    # Cui et al. / LDAM: n_k = n_max * factor^(-k / (K - 1)), truncated.
    return [max(1, int(n_max * factor ** (-k / (K - 1)))) for k in range(K)]


def expected_step(n_max, factor):
    return [n_max] * (K - K // 2) + [max(1, int(n_max / factor))] * (K // 2)


@pytest.fixture(scope="module")
def toy():
    return synthetic()


def test_parse_imbalance_and_errors():
    assert parse_imbalance("exp:100") == ("exp", 100.0)
    assert parse_imbalance(" step:10 ") == ("step", 10.0)
    assert parse_imbalance("exp:2.5") == ("exp", 2.5)
    assert all(parse_imbalance(f"{profile}:10") == (profile, 10.0) for profile in PROFILES)  # each one it lists parses
    with pytest.raises(KdkitError, match="exp:100 or step:10"):
        parse_imbalance("exp100")
    with pytest.raises(KdkitError, match="exp:100 or step:10"):
        parse_imbalance("exp:1:2")
    with pytest.raises(KdkitError, match="did you mean 'exp'"):
        parse_imbalance("expo:100")
    for bad in ("exp:0.5", "exp:abc", "step:nan", "exp:inf"):
        with pytest.raises(KdkitError, match=">= 1"):
            parse_imbalance(bad)


def test_class_counts_formulas():
    assert class_counts(5000, 10, "exp", 100) == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert class_counts(5000, 10, "step", 10) == [5000] * 5 + [500] * 5
    assert class_counts(100, 5, "step", 10) == [100] * 3 + [10] * 2  # odd K: the larger half is head
    assert class_counts(10, 4, "exp", 1000) == [10, 1, 1, 1]  # never below 1
    assert class_counts(7, 1, "exp", 100) == [7]
    assert class_counts(50, 3, "exp", 1) == [50, 50, 50]
    with pytest.raises(KdkitError):
        class_counts(0, 10, "exp", 10)
    with pytest.raises(KdkitError, match="unknown imbalance profile"):
        class_counts(10, 10, "linear", 10)


@pytest.mark.parametrize("spec, expected", [("exp:100", expected_exp), ("step:10", expected_step)])
def test_long_tailed_exact_counts_train_and_val(toy, spec, expected):
    factor = float(spec.split(":")[1])
    lt = long_tailed(toy, spec, seed=0)
    n_train = min(per_class(toy.train))
    n_val = min(per_class(toy.val))
    assert per_class(lt.train) == expected(n_train, factor)
    assert per_class(lt.val) == expected(n_val, factor)  # val mirrors train's profile
    assert lt.train.images.shape[1:] == toy.train.images.shape[1:]
    assert (lt.mean, lt.std, lt.classes, lt.augment) == (toy.mean, toy.std, toy.classes, toy.augment)


def test_name_records_the_profile(toy):
    assert long_tailed(toy, "exp:100", 0).name == "toy-lt100"
    assert long_tailed(toy, "exp:2.5", 0).name == "toy-lt2.5"
    assert long_tailed(toy, "step:10", 0).name == "toy-lt10-step"


def test_test_split_untouched_and_source_unchanged(toy):
    before = (toy.train.labels.clone(), toy.val.labels.clone(), toy.name)
    lt = long_tailed(toy, "exp:100", seed=0)
    assert lt.test is toy.test
    assert per_class(lt.test) == [30] * K
    assert torch.equal(toy.train.labels, before[0]) and torch.equal(toy.val.labels, before[1])
    assert toy.name == before[2]


def test_seeded_subsets(toy):
    a, b, c = (long_tailed(toy, "exp:10", seed=s) for s in (0, 0, 1))
    assert torch.equal(a.train.index, b.train.index) and torch.equal(a.val.index, b.val.index)
    assert not torch.equal(a.train.index, c.train.index)
    assert per_class(a.train) == per_class(c.train)


def test_rows_kept_in_order_with_index_consistent(toy):
    lt = long_tailed(toy, "exp:100", seed=3)
    for part, source in ((lt.train, toy.train), (lt.val, toy.val)):
        assert bool((part.index[1:] > part.index[:-1]).all())  # original order kept
        rows = torch.searchsorted(source.index, part.index)  # source.index is sorted too
        assert torch.equal(source.index[rows], part.index)
        assert torch.equal(source.images[rows], part.images)
        assert torch.equal(source.labels[rows], part.labels)
    assert not set(lt.train.index.tolist()) & set(lt.val.index.tolist())


def test_hand_built_split_without_index_and_empty_val():
    images = torch.zeros(40, 1, 2, 2, dtype=torch.uint8)
    labels = torch.arange(40) % 4
    data = dataclasses.replace(synthetic(), train=Split(images, labels), val=Split(images[:0], labels[:0]),
                               classes=["a", "b", "c", "d"])
    lt = long_tailed(data, "step:5", seed=0)
    assert lt.train.index is None
    assert torch.bincount(lt.train.labels, minlength=4).tolist() == [10, 10, 2, 2]
    assert len(lt.val) == 0


def test_class_missing_from_a_split_is_an_error():
    data = synthetic()
    keep = data.train.labels != 7
    data.train = Split(data.train.images[keep], data.train.labels[keep], data.train.index[keep])
    with pytest.raises(KdkitError, match="class 'c7' has no samples in the train split"):
        long_tailed(data, "exp:10", seed=0)


def test_describe_counts():
    labels = torch.tensor([0] * 50 + [1] * 20 + [2] * 5)
    assert describe_counts(labels, ["cat", "dog", "owl"]) == \
        "class counts (train): cat 50, dog 20, owl 5 (imbalance 10.0)"
    many = torch.repeat_interleave(torch.arange(20), torch.arange(20, 0, -1))
    line = describe_counts(many, [f"k{i}" for i in range(20)], split="val")
    assert line.startswith("class counts (val): k0 20, k1 19") and ", ..., " in line
    assert line.endswith("k19 1 (imbalance 20.0)")


def test_shot_groups_and_thresholds():
    counts = [500, 101, 100, 20, 19, 1]
    assert shot_groups(counts) == {"many": [0, 1], "medium": [2, 3], "few": [4, 5]}
    assert shot_groups([30, 10, 3], many=10, few=4) == {"many": [0], "medium": [1], "few": [2]}
    assert scaled_thresholds(1000) == (100, 20)
    assert scaled_thresholds(5400) == (540, 108)
    assert scaled_thresholds(500) == (50, 10)
    assert scaled_thresholds(180) == (18, 4)
    assert scaled_thresholds(10) == (1, 1)
    with pytest.raises(KdkitError):
        shot_groups(counts, many=10, few=20)


def test_shot_group_boundaries_are_liu_et_al_s():
    # "Many-shot (more than 100 images), Medium-shot (20-100 images) and Few-shot (less than 20 images)":
    # 100 and 20 themselves are medium
    assert shot_groups([101, 100, 20, 19]) == {"many": [0], "medium": [1, 2], "few": [3]}
    # the same cut, scaled: CIFAR-10 after a 10% validation split has heads of 4,500, so 450 and 90
    many, few = scaled_thresholds(4500)
    assert (many, few) == (450, 90)
    assert shot_groups([4500, 451, 450, 90, 89], many, few) == {"many": [0, 1], "medium": [2, 3], "few": [4]}
    # step:10's tail is n_max / 10, exactly the many-shot cut, so medium (as 100 images are on ImageNet-LT);
    # a step profile has few-shot classes from a factor above 50 on (step:100: a tail of 45)
    assert class_counts(4500, 10, "step", 10) == [4500] * 5 + [450] * 5
    assert shot_groups(class_counts(4500, 10, "step", 10), many, few)["few"] == []
    assert shot_groups(class_counts(4500, 10, "step", 100), many, few) == {"many": [0, 1, 2, 3, 4], "medium": [],
                                                                         "few": [5, 6, 7, 8, 9]}
    assert shot_groups(class_counts(4500, 10, "step", 50), many, few)["medium"] == [5, 6, 7, 8, 9]  # a tail of 90


# ---------------------------------------------------------------- samplers


def imbalanced_split():
    """Classes 0..4 with 100, 50, 25, 10, 10 samples (10:1), shuffled."""
    sizes = [100, 50, 25, 10, 10]
    labels = torch.repeat_interleave(torch.arange(5), torch.tensor(sizes))
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]
    images = torch.arange(len(labels), dtype=torch.float32).view(-1, 1, 1, 1)
    return Split(images, labels), sizes


def class_frequencies(loader, epochs):
    seen = torch.zeros(5)
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for _, y, _ in loader:
            seen += torch.bincount(y, minlength=5)
    return seen / seen.sum()


@pytest.mark.parametrize("sampler, power", [("class_balanced", 0.0), ("sqrt", 0.5), ("none", 1.0)])
def test_sampler_class_frequencies(sampler, power):
    split, sizes = imbalanced_split()
    loader = BatchLoader(split, 64, shuffle=True, seed=0, sampler=sampler)
    assert len(loader) == math.ceil(len(split) / 64)  # batches per epoch unchanged
    got = class_frequencies(loader, epochs=200)  # 39,000 draws
    target = torch.tensor(sizes, dtype=torch.float32) ** power
    torch.testing.assert_close(got, target / target.sum(), atol=0.01, rtol=0)


def test_samplers_draw_with_replacement_and_from_own_class():
    split, _ = imbalanced_split()
    loader = BatchLoader(split, 500, shuffle=True, seed=0, sampler="class_balanced")
    x, y, idx = next(iter(loader))
    assert len(idx) == len(split) and len(set(idx.tolist())) < len(split)
    assert torch.equal(split.labels[idx], y) and torch.equal(x.view(-1).long(), idx)
    for sampler in SAMPLERS:  # each sampler it lists draws a whole epoch of the split's own labels
        _, y, idx = next(iter(BatchLoader(split, 500, shuffle=True, seed=0, sampler=sampler)))
        assert len(idx) == len(split) and torch.equal(split.labels[idx], y)


@pytest.mark.parametrize("sampler", ["class_balanced", "sqrt"])
def test_sampler_resume_reproduces_the_tail(sampler):
    split, _ = imbalanced_split()
    loader = BatchLoader(split, 16, shuffle=True, seed=5, augment="none", sampler=sampler)
    loader.set_epoch(3)
    full = [idx for _, _, idx in loader]
    tail = [idx for _, _, idx in loader.iter_from(4)]
    assert len(tail) == len(full) - 4
    assert all(torch.equal(a, b) for a, b in zip(full[4:], tail))
    loader.set_epoch(4)
    assert not torch.equal(torch.cat(full), torch.cat([idx for _, _, idx in loader]))
    again = BatchLoader(split, 16, shuffle=True, seed=5, sampler=sampler)
    again.set_epoch(3)
    assert torch.equal(torch.cat(full), torch.cat([idx for _, _, idx in again]))


def test_sampler_errors():
    split, _ = imbalanced_split()
    with pytest.raises(KdkitError, match="unknown sampler 'class-balanced'; did you mean 'class_balanced'"):
        BatchLoader(split, 8, shuffle=True, sampler="class-balanced")
    with pytest.raises(KdkitError, match="needs shuffle=True"):
        BatchLoader(split, 8, shuffle=False, sampler="sqrt")


def test_sampler_none_is_the_plain_permutation():
    split, _ = imbalanced_split()
    a = BatchLoader(split, 16, shuffle=True, seed=2)
    b = BatchLoader(split, 16, shuffle=True, seed=2, sampler="none")
    assert torch.equal(torch.cat([i for _, _, i in a]), torch.cat([i for _, _, i in b]))
    assert sorted(torch.cat([i for _, _, i in b]).tolist()) == list(range(len(split)))
