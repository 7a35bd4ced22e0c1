"""Hybrid teachers: sample index on splits, sources, class alignment, combiners, files, errors."""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from kdkit.data import BatchLoader, from_arrays
from kdkit.data.arrays import load_digits_raw
from kdkit.errors import KdkitError
from kdkit.teachers import (FileTeacher, HybridTeacher, ProbaTeacher, TorchTeacher,
                            looks_like_probabilities, teacher_from_spec)


def synthetic(n=60, k=3, val_fraction=0.25, classes=None, seed=0):
    """A small tabular Dataset (N, 4) with labels cycling 0..k-1, plus its source labels."""
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(n, 4)).astype(np.float32), np.arange(n) % k
    x_test, y_test = rng.normal(size=(12, 4)).astype(np.float32), np.arange(12) % k
    data = from_arrays(x, y, x_test, y_test, classes=classes, val_fraction=val_fraction, seed=seed)
    return data, x, y


def random_probs(n, k, seed, scale=1.5):
    """(n, k) float64 rows of a softmax of random logits."""
    logits = np.random.default_rng(seed).normal(scale=scale, size=(n, k))
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def save_npy(tmp_path, name, array):
    path = tmp_path / f"{name}.npy"
    np.save(path, array)
    return path


def whole_train(teacher, data):
    """forward() over the whole train split in one batch: (N, K) log-probs, (N,) source rows."""
    x = data.train.images.float()
    return teacher(x, torch.arange(len(data.train))), data.train.index.numpy()


# ---------------------------------------------------------------- Split.index


def test_split_index_partitions_the_source_and_points_at_its_rows(digits):
    raw = load_digits_raw()
    train, val, test = digits.train.index.numpy(), digits.val.index.numpy(), digits.test.index.numpy()
    assert len(set(train) | set(val) | set(test)) == len(train) + len(val) + len(test)
    # digits has no test split: train, val and the carved test together are the source's train
    assert sorted(np.concatenate([train, val, test])) == list(range(len(raw.y_train)))
    for split in (digits.train, digits.val, digits.test):
        assert split.index.dtype == torch.int64
        assert np.array_equal(split.images.numpy(), raw.x_train[split.index.numpy()])
        assert np.array_equal(split.labels.numpy(), raw.y_train[split.index.numpy()])


def test_split_index_with_a_source_test_split():
    data, x, y = synthetic(n=50)
    train, val = data.train.index.numpy(), data.val.index.numpy()
    assert not set(train) & set(val)
    assert sorted(np.concatenate([train, val])) == list(range(50))
    assert np.array_equal(data.train.images.numpy(), x[train])
    assert np.array_equal(data.val.labels.numpy(), y[val])
    assert data.test.index.tolist() == list(range(12))  # positions in the source's own test


# ---------------------------------------------------------------- sklearn + torch, mean


def test_mean_of_sklearn_and_torch_teachers_matches_numpy(digits):
    from sklearn.linear_model import LogisticRegression

    x_raw = digits.train.images.numpy().astype(np.float32).reshape(len(digits.train), -1)
    estimator = LogisticRegression(max_iter=200).fit(x_raw, digits.train.labels.numpy())
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    teacher = HybridTeacher([ProbaTeacher(estimator, name="lr"), TorchTeacher(net, name="net")])
    teacher.prepare(digits)
    loader = BatchLoader(digits.train, 32, shuffle=True, seed=1, mean=digits.mean, std=digits.std)
    x, _, idx = next(iter(loader))
    out = teacher(x, idx)  # (32, 10)
    assert out.shape == (32, 10) and torch.isfinite(out).all()
    assert torch.allclose(out.exp().sum(dim=1), torch.ones(32), atol=1e-5)
    p_lr = estimator.predict_proba(x_raw[idx.numpy()])  # (32, 10)
    with torch.no_grad():
        p_net = torch.softmax(net(x), dim=1).double().numpy()  # (32, 10)
    expected = np.log((p_lr + p_net) / 2)
    assert np.allclose(out.double().numpy(), expected, atol=1e-5)
    report = teacher.report()
    assert [t["kind"] for t in report["teachers"]] == ["proba", "torch"]
    assert report["teachers"][0]["val_accuracy"] > 0.9 and 0 <= report["val_accuracy"] <= 1
    assert not any(p.requires_grad for p in net.parameters()) and not net.training


def test_proba_teacher_string_classes_are_realigned():
    from sklearn.linear_model import LogisticRegression

    names = ["zero", "one", "two"]
    data, x, y = synthetic(n=90, classes=names)
    estimator = LogisticRegression(max_iter=200).fit(x, np.array(names)[y])  # classes_ sorted by name
    assert list(estimator.classes_) == ["one", "two", "zero"]
    teacher = HybridTeacher([ProbaTeacher(estimator)]).prepare(data)
    out, rows = whole_train(teacher, data)
    expected = estimator.predict_proba(x[rows])[:, [2, 0, 1]]  # columns back to zero, one, two
    assert np.allclose(out.exp().numpy(), expected, atol=1e-5)


def test_proba_teacher_transform_builds_the_estimator_input():
    from sklearn.linear_model import LogisticRegression

    data, x, y = synthetic(n=90)
    estimator = LogisticRegression(max_iter=200).fit(x[:, :2] * 10, y)
    transform = lambda images: images.reshape(len(images), -1)[:, :2] * 10  # noqa: E731
    teacher = HybridTeacher([ProbaTeacher(estimator, transform=transform)]).prepare(data)
    out, rows = whole_train(teacher, data)
    assert np.allclose(out.exp().numpy(), estimator.predict_proba(x[rows, :2] * 10), atol=1e-5)


def test_proba_teacher_with_integer_classes_missing_one_is_an_error():
    from sklearn.linear_model import LogisticRegression

    data, x, y = synthetic(n=60, classes=["a", "b", "c"])
    keep = y < 2
    estimator = LogisticRegression(max_iter=200).fit(x[keep], y[keep])
    with pytest.raises(KdkitError, match="missing 'c'"):
        HybridTeacher([ProbaTeacher(estimator, name="gbm")]).prepare(data)


# ---------------------------------------------------------------- weights and entropy


def test_weights_combiner_matches_numpy(tmp_path):
    data, _, _ = synthetic()
    p1, p2 = random_probs(60, 3, seed=1), random_probs(60, 3, seed=2)
    files = [FileTeacher(save_npy(tmp_path, "one", p1)), FileTeacher(save_npy(tmp_path, "two", p2))]
    teacher = HybridTeacher(files, combine="weights", weights=[3, 1]).prepare(data)
    out, rows = whole_train(teacher, data)
    expected = np.log(0.75 * p1[rows] + 0.25 * p2[rows])
    assert np.allclose(out.double().numpy(), expected, atol=1e-5)
    assert teacher.report()["weights"] == [0.75, 0.25]


def test_entropy_combiner_matches_numpy(tmp_path):
    data, _, _ = synthetic()
    p1, p2 = random_probs(60, 3, seed=3, scale=3), random_probs(60, 3, seed=4)
    p1[:5] = p2[:5] = 1 / 3  # both maximally uncertain: uniform weights, no NaN
    files = [FileTeacher(save_npy(tmp_path, "one", p1)), FileTeacher(save_npy(tmp_path, "two", p2))]
    teacher = HybridTeacher(files, combine="entropy").prepare(data)
    out, rows = whole_train(teacher, data)
    probs = np.stack([p1[rows], p2[rows]])  # (2, N, 3)
    confidence = np.log(3) + (probs * np.log(probs)).sum(axis=2)  # (2, N): log K - H
    total = confidence.sum(axis=0)
    weights = np.where(total > 1e-12, confidence / np.maximum(total, 1e-300), 0.5)  # (2, N)
    expected = np.log((weights[:, :, None] * probs).sum(axis=0))  # (N, 3)
    assert torch.isfinite(out).all()
    assert np.allclose(out.double().numpy(), expected, atol=1e-5)


def test_stacker_ignores_a_noise_teacher(tmp_path):
    k, n = 5, 1500
    data, _, y = synthetic(n=n, k=k, val_fraction=0.3)
    rng = np.random.default_rng(0)
    guess = np.where(rng.random(n) < 0.8, y, rng.integers(0, k, n))  # right 80% of the time
    good = np.full((n, k), 0.1)
    good[np.arange(n), guess] = 0.6
    noise = random_probs(n, k, seed=5, scale=4)
    files = [FileTeacher(save_npy(tmp_path, "good", good)),
             FileTeacher(save_npy(tmp_path, "noise", noise))]
    mean = HybridTeacher(files, combine="mean").prepare(data).report()
    first = HybridTeacher(files, combine="stacker").prepare(data)
    stacked = first.report()
    good_accuracy = stacked["teachers"][0]["val_accuracy"]
    assert good_accuracy > 0.7 and stacked["teachers"][1]["val_accuracy"] < 0.4
    assert stacked["val_accuracy"] >= good_accuracy - 0.02
    assert stacked["val_accuracy"] > mean["val_accuracy"] + 0.05
    assert "note" in stacked  # says the stacker is fit on validation
    first = first.split_log_probs("val")
    second = HybridTeacher(files, combine="stacker").prepare(data).split_log_probs("val")
    assert torch.equal(first, second)  # deterministic
    assert torch.allclose(first.exp().sum(dim=1), torch.ones(len(first)), atol=1e-5)


# ---------------------------------------------------------------- files


def test_npy_probabilities_and_logits_are_detected(tmp_path):
    data, _, _ = synthetic()
    probs = random_probs(60, 3, seed=6)
    logits = np.random.default_rng(7).uniform(0, 1, size=(60, 3))  # in [0, 1], rows not summing to 1
    assert looks_like_probabilities(probs) and not looks_like_probabilities(logits)
    for array, expected in ((probs, probs), (logits, np.exp(logits) / np.exp(logits).sum(1, keepdims=True))):
        teacher = HybridTeacher([FileTeacher(save_npy(tmp_path, "t", array))]).prepare(data)
        out, rows = whole_train(teacher, data)
        assert np.allclose(out.exp().numpy(), expected[rows], atol=1e-6)
        assert np.allclose(teacher.split_log_probs("val").exp().numpy(),
                           expected[data.val.index.numpy()], atol=1e-6)


def test_safetensors_classes_metadata_realigns_columns(tmp_path):
    data, _, _ = synthetic(classes=["a", "b", "c"])
    file_probs = random_probs(60, 3, seed=8)  # columns c, a, b
    path = tmp_path / "outputs.safetensors"
    save_file({"probs": torch.from_numpy(file_probs)}, path, metadata={"classes": json.dumps(["c", "a", "b"])})
    source = teacher_from_spec(str(path), data)
    assert isinstance(source, FileTeacher) and source.classes == ["c", "a", "b"]
    teacher = HybridTeacher([source]).prepare(data)
    out, rows = whole_train(teacher, data)
    row = rows[0]
    assert out[0, 0].exp().item() == pytest.approx(file_probs[row, 1], abs=1e-6)  # class "a"
    assert np.allclose(out.exp().numpy(), file_probs[rows][:, [1, 2, 0]], atol=1e-6)


def test_parquet_with_shuffled_index_column(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    data, _, _ = synthetic(classes=["a", "b", "c"])
    probs = random_probs(60, 3, seed=9)
    order = np.random.default_rng(0).permutation(60)
    columns = {"index": order, "b": probs[order, 1], "c": probs[order, 2], "a": probs[order, 0]}
    path = tmp_path / "outputs.parquet"
    pq.write_table(pa.table(columns), path)
    teacher = HybridTeacher([teacher_from_spec(str(path))]).prepare(data)
    out, rows = whole_train(teacher, data)
    assert np.allclose(out.exp().numpy(), probs[rows], atol=1e-6)


def test_teacher_from_spec_leaves_weights_to_the_caller(tmp_path):
    weights = tmp_path / "model.safetensors"
    save_file({"fc.weight": torch.zeros(3, 4)}, weights)
    assert teacher_from_spec(str(weights)) is None
    assert teacher_from_spec("resnet8x4") is None
    assert isinstance(teacher_from_spec(str(save_npy(tmp_path, "t", random_probs(5, 3, 0)))), FileTeacher)


# ---------------------------------------------------------------- errors


def test_class_name_mismatch_names_the_missing_class(tmp_path):
    data, _, _ = synthetic(classes=["cat", "dog", "bird"])
    path = tmp_path / "gbm.safetensors"
    save_file({"logits": torch.randn(60, 2)}, path, metadata={"classes": json.dumps(["cat", "dog"])})
    teacher = HybridTeacher([FileTeacher(path)])
    with pytest.raises(KdkitError, match="teacher 'gbm' has classes .* missing 'bird'"):
        teacher.prepare(data)
    with pytest.raises(KdkitError, match="not prepared"):  # a failed prepare leaves it unprepared
        teacher.split_log_probs("val")


def test_wrong_number_of_columns_says_both_numbers(tmp_path):
    data, _, _ = synthetic()
    path = save_npy(tmp_path, "wide", np.random.default_rng(0).normal(size=(60, 4)))
    with pytest.raises(KdkitError, match="4 columns but the dataset has 3 classes"):
        HybridTeacher([FileTeacher(path)]).prepare(data)
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 5))
    with pytest.raises(KdkitError, match="5 columns but the dataset has 3 classes"):
        HybridTeacher([TorchTeacher(net)]).prepare(data)


def test_missing_rows_say_how_many_and_which_file(tmp_path):
    data, _, _ = synthetic()
    path = save_npy(tmp_path, "short", random_probs(50, 3, seed=0))
    missing = int((data.train.index >= 50).sum())
    assert missing > 0
    with pytest.raises(KdkitError, match=f"short.npy' lacks {missing} of the {len(data.train)} samples"):
        HybridTeacher([FileTeacher(path)]).prepare(data)


def test_constructor_errors(tmp_path):
    path = save_npy(tmp_path, "t", random_probs(60, 3, seed=0))
    with pytest.raises(KdkitError, match="did you mean 'mean'"):
        HybridTeacher([FileTeacher(path)], combine="men")
    with pytest.raises(KdkitError, match="got 3 weights for 2 teachers"):
        HybridTeacher([FileTeacher(path), FileTeacher(path, name="u")], combine="weights", weights=[1, 2, 3])
    with pytest.raises(KdkitError, match="needs weights"):
        HybridTeacher([FileTeacher(path)], combine="weights")
    with pytest.raises(KdkitError, match="distinct name"):
        HybridTeacher([FileTeacher(path), FileTeacher(path)])
    with pytest.raises(KdkitError, match="not found"):
        FileTeacher(tmp_path / "absent.npy")
    bad = tmp_path / "probs.safetensors"
    save_file({"probs": torch.randn(60, 3)}, bad)
    with pytest.raises(KdkitError, match="is not probabilities"):
        FileTeacher(bad)


def test_forward_before_prepare_and_without_index(tmp_path):
    data, _, _ = synthetic()
    teacher = HybridTeacher([FileTeacher(save_npy(tmp_path, "t", random_probs(60, 3, seed=0)))])
    x = torch.zeros(4, 4, 1, 1)
    with pytest.raises(KdkitError, match="prepare"):
        teacher(x, torch.arange(4))
    teacher.prepare(data)
    with pytest.raises(KdkitError, match="idx"):
        teacher(x)
    with pytest.raises(KdkitError, match="positions 0..44"):
        teacher(x, torch.tensor([0, 1, 2, 45]))
