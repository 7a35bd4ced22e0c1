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
    assert result.student[-1] is student  # the object itself, trained, behind the input step it was trained with
    assert result.metrics["test"]["accuracy"] > 0.8 and result.metrics["test"]["n"] == 150
    assert (tmp_path / "api" / "student" / "seed0" / "best.safetensors").is_file()
    rows = result.summary["rows"]
    assert set(rows) == {"teacher", "scratch", "student"} and "| student |" in result.table
    for k, v in teacher.state_dict().items():  # the teacher is never updated
        assert torch.equal(v, teacher_state[k])
    assert all(p.grad is None for p in teacher.parameters())


def test_a_users_teacher_sees_its_raw_inputs_and_the_student_takes_them_too():
    """Features on a scale of thousands: kdkit standardises what the student sees, but the teacher
    (trained on the raw features) scores on kdkit's table exactly what it scores on its own inputs,
    and the returned student takes the raw features (the step travels with it)."""
    (x, y), (xv, yv), (xt, yt) = _blobs(600, 0), _blobs(150, 1), _blobs(150, 2)
    scale = lambda a: a * 1000 + 50  # noqa: E731
    x, xv, xt = scale(x), scale(xv), scale(xt)
    teacher = nn.Sequential(nn.Linear(4, 3))
    with torch.no_grad():  # a teacher for the raw scale: the blobs' class centres, undone from the scaling
        teacher[0].weight.copy_(2.5 * torch.eye(3, 4) / 1000)
        teacher[0].bias.copy_(-2.5 * 50 / 1000 * torch.ones(3))
    own = (teacher(xt).argmax(1) == yt).float().mean().item()
    assert own > 0.8
    result = kdkit.distill(teacher, nn.Sequential(nn.Linear(4, 3)), (x, y), (xv, yv), test=(xt, yt), epochs=3,
                           batch_size=32, lr=0.1, seeds=[0])
    assert result.summary["rows"]["teacher"]["metrics"]["accuracy"]["mean"] == pytest.approx(own, abs=1e-6)
    reported = result.metrics["test"]["accuracy"]
    with torch.no_grad():
        mine = (result.student(xt).argmax(1) == yt).float().mean().item()
    assert reported > 0.8 and mine == pytest.approx(reported, abs=1e-6)


def test_api_options_match_the_command_line(tmp_path):
    train, val = _blobs(200, 0), _blobs(60, 1)
    teacher = nn.Sequential(nn.Linear(4, 3))
    with pytest.raises(KdkitError, match="unknown config key 'seed_s'.*did you mean 'seeds'"):
        kdkit.distill(teacher, nn.Sequential(nn.Linear(4, 3)), train, val, seed_s=[0, 1])
    result = kdkit.distill(teacher, nn.Sequential(nn.Linear(4, 3)), train, val, epochs=1, seeds=[0, 1], baseline=False)
    assert set(result.summary["rows"]) == {"teacher", "student"} and result.summary["seeds"] == [0, 1]
    assert len(result.summary["rows"]["student"]["per_seed"]) == 2 and result.out is None
    before = set(tmp_path.iterdir())
    assert before == set()  # out=None wrote nothing here (and nothing under ./runs)
    from sklearn.linear_model import LogisticRegression

    forest = LogisticRegression(max_iter=200).fit(train[0].numpy(), train[1].numpy())  # an estimator as the teacher
    result = kdkit.distill(forest, "mlp", train, val, epochs=1, seeds=[0], out=tmp_path / "run")
    assert result.summary["teacher"]["source"] == "python" and result.summary["teacher"]["arch"] == "HybridTeacher"
    assert result.summary["rows"]["teacher"]["metrics"]["accuracy"]["mean"] > 0.8  # the fitted estimator, used as it is
    assert (tmp_path / "run" / "summary.json").is_file()


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
    ("cnn", r"^SmallCNN needs image_size >= 4, got 1"),  # an architecture to train here, on a table: refused before training
    ("runs/teacher", r"^teacher 'runs/teacher' not found: no such run directory or weights file"),
    (None, r"^kdkit.distill takes the teacher as an nn.Module, a fitted scikit-learn estimator, a kdkit.teachers.HybridTeacher "
           r"or what --teacher takes \(a run directory, an architecture, sklearn:NAME\), got None$"),
])
def test_teacher_that_is_not_a_model(teacher, pattern):
    train, val = _blobs(60, 0), _blobs(30, 1)
    with pytest.raises(KdkitError, match=pattern):
        kdkit.distill(teacher, nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), train, val, epochs=1)


def test_teachers_by_name_and_estimators_are_used():
    """What --teacher takes works here too: an architecture is trained in the run (on the labelled
    samples), an estimator with predict_proba is the teacher as it is."""
    train, val = _blobs(120, 0), _blobs(30, 1)
    result = kdkit.distill("mlp", nn.Sequential(nn.Linear(4, 3)), train, val, epochs=1, seeds=[0], baseline=False)
    assert result.summary["teacher"]["source"] == "trained" and result.summary["teacher"]["arch"] == "mlp"
    result = kdkit.distill(_Proba(), nn.Sequential(nn.Linear(4, 3)), train, val, epochs=1, seeds=[0], baseline=False)
    assert result.summary["rows"]["teacher"]["metrics"]["accuracy"]["mean"] < 0.6  # the uniform teacher, used as it is


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


def test_weights_of_a_python_student_say_how_to_load_them(tmp_path):
    from kdkit.checkpoint import load_weights
    from kdkit.weights import load_model

    train, val = _blobs(120, 0), _blobs(30, 1)
    kdkit.distill(nn.Sequential(nn.Linear(4, 3)), nn.Sequential(nn.Linear(4, 3)), train, val, epochs=1, seeds=[0],
                  baseline=False, out=tmp_path / "run")
    with pytest.raises(KdkitError, match=r"holds a Sequential built in Python \(kdkit.distill\); kdkit rebuilds only "
                                         r"architectures it can name: load the weights into your own model"):
        load_model(tmp_path / "run" / "student" / "seed0")
    result = kdkit.distill(nn.Sequential(nn.Linear(4, 3)), "mlp", train, val, epochs=1, seeds=[0], baseline=False,
                           out=tmp_path / "named")
    model, meta = load_model(tmp_path / "named" / "student" / "seed0")  # a named architecture: rebuilt from its sidecar
    assert meta["arch"] == "mlp" and meta["input_kind"] == "table" and len(meta["mean"]) == 4
    assert meta["config"]["dataset"] == "arrays" and meta["config"]["student"] == "mlp"  # what ran, not the defaults
    saved = load_weights(tmp_path / "run" / "student" / "seed0" / "best.safetensors")[1]["config"]
    assert saved["student"] == "python.Sequential"
    x = val[0]
    step = result.student[0]
    torch.testing.assert_close(model(step(x)), result.student(x))  # the sidecar's mean/std are the returned step's


def test_a_method_inside_a_parent_module_moves_its_teacher_along():
    """A kdkit method as a submodule of the user's own module (a LightningModule does the same):
    the parent's .to() reaches the teacher, which is outside the module tree (not in parameters(),
    not in state_dict()), and the parent's .train() leaves it in eval mode."""
    from kdkit.methods import create_method

    class Parent(nn.Module):  # stands in for a LightningModule
        def __init__(self):
            super().__init__()
            self.distiller = create_method("kd", nn.Linear(4, 3), nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3)))

    parent = Parent()
    teacher = parent.distiller.teacher
    parent.to(torch.float64)
    assert all(p.dtype == torch.float64 for p in teacher.parameters()) and teacher[1].running_mean.dtype == torch.float64
    assert all(p.dtype == torch.float64 for p in parent.distiller.student.parameters())
    parent.train()
    assert parent.distiller.student.training and not teacher.training
    assert not any(k.startswith("distiller.teacher") for k in parent.state_dict())
    loss = parent.distiller(torch.randn(8, 4, dtype=torch.float64), torch.randint(0, 3, (8,)))["loss"]
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())


def test_max_steps_in_the_api_says_how_to_continue(tmp_path):
    train, val = _blobs(100, 0), _blobs(20, 1)
    with pytest.raises(KdkitError, match=r"^max_steps stopped the run before its end; give out=DIR to keep a run"):
        kdkit.distill(nn.Linear(4, 3), nn.Linear(4, 3), train, val, epochs=2, max_steps=1)
    with pytest.raises(KdkitError, match=r"continue it with resume=True, out='.*run'$"):
        kdkit.distill(nn.Linear(4, 3), nn.Linear(4, 3), train, val, epochs=2, max_steps=1, out=tmp_path / "run")
    result = kdkit.distill(nn.Linear(4, 3), nn.Linear(4, 3), train, val, epochs=2, resume=True, out=tmp_path / "run")
    assert len(result.summary["rows"]["student"]["per_seed"]) == 1
