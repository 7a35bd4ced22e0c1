"""Out-of-fold soft targets of the sklearn:NAME teachers trained here (teacher_folds): what they are
for the training rows, that sklearn computes the same, and that the rest of the teacher is unchanged."""
import numpy as np
import pytest
import torch
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from kdkit.config import DistillConfig, apply_overrides
from kdkit.data import BatchLoader, from_arrays
from kdkit.errors import KdkitError
from kdkit.teachers import HybridTeacher, ProbaTeacher, flatten_raw
from kdkit.teachers.specs import OutOfFoldTeacher, other_teacher, out_of_fold_probabilities


def train_probs(spec, data, seed, folds):
    """(N_train, K) probabilities the teacher gives the train split (in split order), and the teacher."""
    teacher = HybridTeacher([other_teacher(spec, "t", data, seed, folds)]).prepare(data)
    return teacher.split_log_probs("train").exp().double().numpy(), teacher


def raw(split):
    return flatten_raw(split.images.numpy()), split.labels.numpy()


def test_forest_in_sample_targets_are_near_one_hot_out_of_fold_ones_are_not(digits):
    in_sample, teacher_in = train_probs("sklearn:forest", digits, 0, 0)
    oof, teacher_oof = train_probs("sklearn:forest", digits, 0, 5)
    _, y = raw(digits.train)
    assert in_sample.max(axis=1).mean() > 0.9 and (in_sample.argmax(axis=1) == y).mean() == 1.0  # it saw these rows
    assert oof.max(axis=1).mean() < 0.85 and 0.9 < (oof.argmax(axis=1) == y).mean() < 1.0  # as on unseen rows
    assert np.abs(oof - in_sample).max(axis=1).mean() > 0.1
    # validation and test come from the model fit on all of train, with or without folds
    for split in ("val", "test"):
        assert torch.equal(teacher_in.split_log_probs(split), teacher_oof.split_log_probs(split))
    assert teacher_in.report() == teacher_oof.report()


def test_out_of_fold_rows_are_what_sklearn_cross_val_predict_gives(digits):
    seed = 3
    x, y = raw(digits.train)
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    reference = cross_val_predict(RandomForestClassifier(n_estimators=200, random_state=seed, n_jobs=-1), x, y,
                                  cv=folds, method="predict_proba")  # (N, 10)
    teacher = HybridTeacher([other_teacher("sklearn:forest", "t", digits, seed, 5)]).prepare(digits)
    assert isinstance(teacher.sources[0], OutOfFoldTeacher)
    loader = BatchLoader(digits.train, 64, shuffle=True, seed=1, mean=digits.mean, std=digits.std)
    seen = 0
    for images, labels, idx in loader:  # what a method receives: batches keyed by train-split position
        out = teacher(images, idx).exp().double().numpy()  # (B, 10)
        assert np.allclose(out, np.maximum(reference[idx.numpy()], 1e-8), atol=1e-6)
        assert np.array_equal(labels.numpy(), y[idx.numpy()])
        seen += len(idx)
    assert seen == len(y)


class Recorder:
    """A stand-in estimator: remembers the rows it was fit on, predicts the id of its fit as class 0's
    probability, so each held-out row says which fit labelled it."""

    fits = []

    def fit(self, x, y):
        self.rows, self.id = x[:, 0].astype(int), len(Recorder.fits)
        Recorder.fits.append(self)
        return self

    def predict_proba(self, x):
        return np.tile([self.id, 0.0, 0.0], (len(x), 1))  # (n, 3): three classes below


def test_folds_are_stratified_disjoint_and_each_row_is_labelled_by_the_fit_that_left_it_out():
    y = np.repeat([0, 1, 2], [50, 30, 20])  # (100,) unbalanced
    x = np.arange(100)[:, None].astype(float)  # row ids
    Recorder.fits = []
    probs = out_of_fold_probabilities(Recorder, x, y, 5, seed=0)
    assert len(Recorder.fits) == 5
    labelled_by = probs[:, 0].astype(int)  # (100,)
    for fit in Recorder.fits:
        held_out = np.flatnonzero(labelled_by == fit.id)
        assert sorted(np.concatenate([fit.rows, held_out])) == list(range(100))  # the fit never saw its rows
        assert np.bincount(y[held_out]).tolist() == [10, 6, 4]  # every fold holds a fifth of every class


def test_same_seed_gives_identical_targets_another_seed_other_folds(digits):
    # logistic regression is deterministic: only the folds depend on the seed
    a, teacher_a = train_probs("sklearn:logistic", digits, 0, 5)
    b, _ = train_probs("sklearn:logistic", digits, 0, 5)
    c, teacher_c = train_probs("sklearn:logistic", digits, 1, 5)
    assert np.array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3
    assert torch.equal(teacher_a.split_log_probs("val"), teacher_c.split_log_probs("val"))


@pytest.mark.parametrize("folds", [0, 1])
def test_zero_or_one_fold_is_in_sample(digits, folds):
    source = other_teacher("sklearn:logistic", "t", digits, 0, folds)
    assert type(source) is ProbaTeacher
    probs, _ = train_probs("sklearn:logistic", digits, 0, folds)
    x, _ = raw(digits.train)
    assert np.allclose(probs, np.maximum(source.estimator.predict_proba(x), 1e-8), atol=1e-6)


def test_teacher_folds_range_and_a_class_too_small_for_the_folds(tmp_path):
    from kdkit.recipes import run_distill

    with pytest.raises(KdkitError) as error:
        apply_overrides(DistillConfig(), {"teacher_folds": -1})
    assert str(error.value) == "config key 'teacher_folds' must be in [0, 2147483647], got -1; e.g. --set teacher_folds=5"
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], [40, 40, 4])  # class 'c': about 3 of its 4 samples land in train
    data = from_arrays(rng.normal(size=(84, 4)), y, rng.normal(size=(9, 4)), np.arange(9) % 3,
                       classes=["a", "b", "c"], val_fraction=0.25, seed=0)
    count = int((data.train.labels == 2).sum())
    cfg = apply_overrides(DistillConfig(), {"teacher": "mlp-16,sklearn:forest", "student": "mlp-16", "epochs": 1,
                                            "progress": False, "out": str(tmp_path / "run")})
    with pytest.raises(KdkitError) as error:
        run_distill(cfg, data)
    assert str(error.value) == (f"teacher_folds=5 needs at least 5 train samples of every class, class 'c' has {count}; "
                                f"use --set teacher_folds={count}, or 0 for in-sample soft targets")
    assert not (tmp_path / "run" / "teacher1").exists()  # refused before the torch member trained


def test_a_forest_and_a_torch_teacher_together(tmp_path, digits):
    """--teacher sklearn:forest,cnn-tiny: the combination's training targets use the forest's
    out-of-fold probabilities, and the run records the folds."""
    from kdkit.recipes import build_teacher

    cfg = apply_overrides(DistillConfig(), {"dataset": "digits", "teacher": "sklearn:forest,cnn-tiny", "epochs": 1,
                                            "batch_size": 64, "progress": False, "amp": "off",
                                            "out": str(tmp_path / "run")})
    teacher, info = build_teacher(cfg, digits, tmp_path / "run")
    assert info["member_info"]["teacher1"]["teacher_folds"] == 5
    assert "teacher_folds" not in info["member_info"]["teacher2"]
    forest, net = teacher.sources
    x, y = raw(digits.train)
    reference = cross_val_predict(RandomForestClassifier(n_estimators=200, random_state=0, n_jobs=-1), x, y,
                                  cv=StratifiedKFold(5, shuffle=True, random_state=0), method="predict_proba")
    loader = BatchLoader(digits.train, 128, shuffle=True, seed=2, mean=digits.mean, std=digits.std)
    images, _, idx = next(iter(loader))
    with torch.no_grad():
        p_net = torch.softmax(net.model(images), dim=1).double().numpy()  # (B, 10)
    expected = np.log((np.maximum(reference[idx.numpy()], 1e-8) + p_net) / 2)
    assert np.allclose(teacher(images, idx).double().numpy(), expected, atol=1e-5)


def test_out_of_fold_with_unlabelled_rows(digits):
    """labels_per_class: the estimator and its folds see the labelled rows only; the unlabelled rows get
    the predictions of the model fit on every labelled row (which never saw them)."""
    from kdkit.data.labels import hide_labels
    from kdkit.teachers.specs import other_teacher, out_of_fold_probabilities, sklearn_estimator

    data = hide_labels(digits, 20, seed=0)
    labelled = (data.train.labels >= 0).numpy()
    teacher = other_teacher("sklearn:logistic", "t", data, seed=0, folds=3)
    x = data.train.images.reshape(len(data.train), -1).numpy().astype(np.float32)
    y = data.train.labels.numpy()
    assert np.allclose(teacher.train_probabilities[labelled],
                       out_of_fold_probabilities(lambda: sklearn_estimator("logistic", 0), x[labelled], y[labelled], 3, 0))
    full = sklearn_estimator("logistic", 0).fit(x[labelled], y[labelled])
    assert np.allclose(teacher.train_probabilities[~labelled], full.predict_proba(x[~labelled]))
