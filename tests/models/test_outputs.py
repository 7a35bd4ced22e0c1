"""One rule reads the logits out of any model's output (kdkit.models.outputs.logits_of), at every place
kdkit calls a model: a tensor, an object with .logits (Hugging Face's ModelOutput), a mapping with
"logits", a tuple/list's first element; logits that are not (B, K) fail loudly instead of broadcasting.
Run: PYTHONPATH=src python -m pytest tests/models/test_outputs.py -q
"""
import dataclasses

import pytest
import torch
from torch import nn

from kdkit.errors import KdkitError
from kdkit.models import check_input, logits_of

FORMS = ["tensor", "dataclass", "dict", "tuple", "list"]


@dataclasses.dataclass
class ClassifierOutput:
    """What Hugging Face's ImageClassifierOutput holds (logits, hidden_states), as a plain dataclass."""

    logits: torch.Tensor
    hidden_states: tuple | None = None


class FormNet(nn.Module):
    """A tiny digits classifier (1x8x8 -> 10) whose forward returns its logits in the given form."""

    def __init__(self, form: str, hidden: int = 16, num_classes: int = 10):
        super().__init__()
        self.form = form
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, num_classes)
        self.feature_modules = ["body"]

    def forward(self, x):
        h = self.body(x)  # (B, hidden)
        z = self.head(h)  # (B, K)
        return {"tensor": z, "dataclass": ClassifierOutput(z, (h,)), "dict": {"features": h, "logits": z},
                "tuple": (z, h), "list": [z, h]}[self.form]


@pytest.mark.parametrize("form", FORMS)
def test_logits_of_every_form(form):
    net = FormNet(form)
    x = torch.randn(5, 1, 8, 8)
    expected = net.head(net.body(x))
    assert torch.equal(logits_of(net(x), batch=5), expected)


def test_no_logits_and_wrong_shapes_are_one_line_errors():
    with pytest.raises(KdkitError, match=r"^the teacher returned dict, and kdkit finds no logits tensor in it; make its "
                                         r"forward return a tensor, an object with \.logits"):
        logits_of({"scores": torch.zeros(2, 3)}, "the teacher")
    with pytest.raises(KdkitError, match="returned tuple, and kdkit finds no logits"):
        logits_of((), "the model")
    with pytest.raises(KdkitError, match=r"^the student returned logits of shape \(16,\); kdkit needs \(batch, classes\) "
                                         r"= \(16, classes\): make its forward return one row of class scores per sample"):
        logits_of(torch.zeros(16), "the student", batch=16)
    with pytest.raises(KdkitError, match=r"shape \(8, 3\); kdkit needs \(batch, classes\) = \(16, 3\)"):
        logits_of(torch.zeros(8, 3), "the model", batch=16)


class LinearOnImages(nn.Module):
    """A Linear applied to the last dimension of 4-D input: (B, F, 1, D) -> (B, F, 1, K). Before the
    one rule, the class check read only the last dimension and the KD loss broadcast this silently."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, x):
        return self.fc(x)


def test_a_teacher_with_extra_dimensions_fails_loudly_in_kd():
    from kdkit.methods import create_method

    teacher = LinearOnImages(5, 2)
    student = nn.Sequential(nn.Flatten(), nn.Linear(30 * 5, 2))
    method = create_method("kd", student, teacher)
    x, y = torch.randn(64, 30, 1, 5), torch.randint(0, 2, (64,))
    with pytest.raises(KdkitError, match=r"^the teacher returned logits of shape \(64, 30, 1, 2\); kdkit needs "
                                         r"\(batch, classes\) = \(64, 2\): "):
        method(x, y)


def test_the_pair_check_of_the_python_api_reads_the_whole_shape(digits, tmp_path):
    """kdkit.distill's teacher/student check used to compare shape[-1] only: (2, 1, 8, 10) passed as 10 classes."""
    import kdkit

    teacher, student = LinearOnImages(8, 10), FormNet("tensor")
    with pytest.raises(KdkitError, match=r"^the teacher returned logits of shape \(2, 1, 8, 10\); kdkit needs "
                                         r"\(batch, classes\) = \(2, 10\)"):
        kdkit.distill(teacher, student, digits, epochs=1, out=tmp_path / "api", progress=False)
    assert not (tmp_path / "api").exists()
    with pytest.raises(KdkitError, match=r"the model returned logits of shape \(2, 1, 8, 10\)"):
        check_input(teacher, (1, 8, 8), 10)


@pytest.mark.parametrize("form", FORMS)
def test_methods_use_the_logits_of_every_form(form):
    """kd (teacher and student), fitnet (with taps), dml (student and peer) and vector (its probe) on
    models returning each form give the loss they give on the same models returning a tensor."""
    from kdkit.methods import create_method

    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    for method, kwargs in (("kd", {}), ("fitnet", {"input_shape": (1, 8, 8)}), ("dml", {}),
                           ("vector", {"input_shape": (1, 8, 8)})):
        losses = []
        for f in (form, "tensor"):
            torch.manual_seed(0)
            student, teacher = FormNet(f), FormNet(f, hidden=32)
            out = create_method(method, student, None if method == "dml" else teacher, **kwargs)(x, y)
            assert out["logits"].shape == (16, 10)
            losses.append(out["loss"])
        assert torch.allclose(losses[0], losses[1]), method


@pytest.mark.parametrize("form", ["dataclass", "dict", "tuple"])
def test_distill_evaluate_and_teachers_on_every_form(form, digits, tmp_path):
    """One epoch of kdkit.distill with a teacher and a student returning `form`; then the places that
    score or wrap a model: evaluate_model, TorchTeacher in a combination, the teacher cache."""
    import kdkit
    from kdkit.evaluate import evaluate_model
    from kdkit.teachers import HybridTeacher, TorchTeacher
    from kdkit.teachers.cache import TeacherCache

    torch.manual_seed(0)
    teacher, student = FormNet(form, hidden=32), FormNet(form)
    result = kdkit.distill(teacher, student, digits, epochs=1, batch_size=64, out=tmp_path / "api", progress=False)
    assert 0 <= result.metrics["test"]["accuracy"] <= 1
    metrics, logits = evaluate_model(teacher, digits, "cpu")
    plain = FormNet("tensor", hidden=32)
    plain.load_state_dict(teacher.state_dict())
    expected, expected_logits = evaluate_model(plain, digits, "cpu")
    assert metrics["accuracy"] == expected["accuracy"] and torch.equal(logits, expected_logits)
    hybrid = HybridTeacher([TorchTeacher(teacher, name="t")]).prepare(digits)
    assert torch.allclose(hybrid.split_log_probs("test"), expected_logits.log_softmax(1), atol=1e-5)
    cache = TeacherCache.build(teacher, digits.train, tmp_path / "cache", augment="none", views=1, seed=0,
                               mean=digits.mean, std=digits.std, dtype="float32", log=lambda m: None)
    assert cache.num_classes == 10


def test_onnx_export_of_a_model_returning_a_mapping(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from kdkit.export.onnx_file import export_onnx

    model = FormNet("dict").eval()
    path = export_onnx(model, tmp_path / "m.onnx", (1, 8, 8))
    x = torch.randn(3, 1, 8, 8)
    (logits,) = ort.InferenceSession(str(path)).run(None, {"input": x.numpy()})
    assert logits.shape == (3, 10)
    assert torch.allclose(torch.from_numpy(logits), model(x)["logits"].detach(), atol=1e-5)
