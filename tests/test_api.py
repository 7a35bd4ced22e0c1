"""The Python API is first-class: kdkit.distill on any nn.Module and plain tensors."""
import numpy as np
import pytest
import torch
from torch import nn

import kdkit
from kdkit.errors import KdkitError


def _blobs(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(size=(n, 4)).astype(np.float32) + 2.5 * np.eye(3, 4, dtype=np.float32)[y]
    return torch.tensor(x), torch.tensor(y)


def test_distill_user_modules_on_tensors(tmp_path):
    train, val, test = _blobs(600, 0), _blobs(150, 1), _blobs(150, 2)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(4, 64), nn.ReLU(), nn.Linear(64, 3))
    opt = torch.optim.Adam(teacher.parameters(), 1e-2)
    for _ in range(200):  # a quick teacher, trained the plain way
        opt.zero_grad()
        nn.functional.cross_entropy(teacher(train[0]), train[1]).backward()
        opt.step()
    teacher.zero_grad(set_to_none=True)
    teacher_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    result = kdkit.distill(teacher, student, train, val, method="kd", test=test, epochs=5, batch_size=32,
                           lr=0.1, temperature=2.0, alpha=0.7, out=tmp_path / "api")
    assert result.student is student
    assert result.metrics["test"]["accuracy"] > 0.8 and result.metrics["val"]["n"] == 150
    assert (tmp_path / "api" / "best.safetensors").is_file()
    for k, v in teacher.state_dict().items():  # the teacher is never updated
        assert torch.equal(v, teacher_state[k])
    assert all(p.grad is None for p in teacher.parameters())


def test_distill_class_mismatch_names_both_numbers():
    train, val = _blobs(60, 0), _blobs(30, 1)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(4, 5))
    student = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    with pytest.raises(KdkitError, match="teacher predicts 5 classes, student 3, data has 3"):
        kdkit.distill(teacher, student, train, val, epochs=1)


def test_teacher_kept_in_eval_mode_during_distillation():
    from kdkit.methods import METHODS, create_method

    teacher = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    running = teacher[1].running_mean.clone()
    for name, cls in METHODS.items():
        if name not in ("ce", "kd", "dkd", "dist"):
            continue  # feature methods: the conformance suite in test_methods.py
        teacher.train()  # as a user might leave it
        method = create_method(name, nn.Linear(4, 3), teacher if cls.needs_teacher else None).train()
        out = method(torch.randn(16, 4), torch.randint(0, 3, (16,)))
        assert torch.isfinite(out["loss"]) and out["logits"].shape == (16, 3)
        out["loss"].backward()
        params = {id(p) for p in method.parameters()}
        assert not params & {id(p) for p in teacher.parameters()}  # teacher not trainable, not in state
        assert not any(k.startswith("teacher") for k in method.state_dict())
        assert not teacher.training or not cls.needs_teacher
    assert torch.equal(teacher[1].running_mean, running)  # BatchNorm statistics untouched


# ---- what kdkit.distill takes as teacher and student (issue 20): one clear error for anything else

class _Proba:  # stands in for a scikit-learn estimator: fit / predict_proba, not an nn.Module
    def fit(self, x, y):
        return self

    def predict_proba(self, x):
        return np.full((len(x), 3), 1 / 3)


@pytest.mark.parametrize("teacher,pattern", [
    ("cnn", r"^kdkit.distill takes a trained teacher model, got the architecture name 'cnn'; train it first "
            r"\(`kdkit train --model cnn --dataset D --out RUN`\), then pass kdkit.weights.load_model\('RUN'\)\[0\]$"),
    ("runs/teacher", r"^kdkit.distill takes the teacher as an nn.Module or a kdkit.teachers.HybridTeacher, got the string "
                     r"'runs/teacher'; for saved weights pass kdkit.weights.load_model\('runs/teacher'\)\[0\]"),
    (None, r"^kdkit.distill takes the teacher as an nn.Module or a kdkit.teachers.HybridTeacher, got None; "),
    (_Proba(), r"^the teacher _Proba is an estimator with predict_proba, not an nn.Module; wrap it: "
               r"kdkit.teachers.HybridTeacher\(\[kdkit.teachers.ProbaTeacher\(estimator\)\]\)"),
])
def test_teacher_that_is_not_a_model(teacher, pattern):
    train, val = _blobs(60, 0), _blobs(30, 1)
    with pytest.raises(KdkitError, match=pattern):
        kdkit.distill(teacher, nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), train, val, epochs=1)


@pytest.mark.parametrize("student,pattern", [
    (None, r"^kdkit.distill takes the student as an nn.Module or an architecture name \(`kdkit models`\), got None$"),
    (_Proba(), r"^kdkit.distill takes the student as an nn.Module or an architecture name \(`kdkit models`\), got _Proba$"),
    ("cnn-tinny", r"^unknown model 'cnn-tinny'; did you mean 'cnn-tiny'\?"),
])
def test_student_that_is_not_a_model(student, pattern):
    train, val = _blobs(60, 0), _blobs(30, 1)
    with pytest.raises(KdkitError, match=pattern):
        kdkit.distill(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), student, train, val, epochs=1)


def test_out_that_is_a_file_or_a_folder_of_user_files(tmp_path):
    """kdkit.distill(out=...) follows the run-directory rules of the CLI: one line, the user's files untouched."""
    train, val = _blobs(60, 0), _blobs(30, 1)
    teacher, student = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(KdkitError) as error:
        kdkit.distill(teacher, student, train, val, epochs=1, out=tmp_path / "notes.txt")
    assert str(error.value) == (f"--out '{tmp_path / 'notes.txt'}' is a file, not a run directory; choose a folder (new, "
                                "empty or an earlier `kdkit.distill()` run)")
    with pytest.raises(KdkitError, match="holds files kdkit did not write \\(e.g. 'notes.txt'\\)"):
        kdkit.distill(teacher, student, train, val, epochs=1, out=tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
