"""Models from other libraries through `module:function` (issue 23): a factory gets only the sizes its
signature names plus model_kwargs / teacher_kwargs / student_kwargs; timm's feature_info gives the
default feature taps; a teacher trained elsewhere is loaded from a plain safetensors state dict
(teacher_state_dict) and used without training. torchvision and timm are not needed: the fakes
below have their signatures. Run: PYTHONPATH=src python -m pytest tests/models/test_factories.py -q
"""
import sys

import numpy as np
import pytest
import safetensors.torch
import torch

from kdkit.config import DistillConfig, TrainConfig, apply_overrides, resolve
from kdkit.errors import KdkitError

# torchvision.models.resnet18's signature: the sizes can only arrive through **kwargs, which it passes
# on to ResNet (num_classes is ResNet's; in_channels or image_size would be a TypeError there).
FAKE_TORCHVISION = '''
import torch.nn as nn


class ResNet(nn.Module):
    def __init__(self, num_classes=1000, width=8):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1)  # RGB only, as torchvision's
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.fc(self.avgpool(self.conv1(x).relu()).flatten(1))


def resnet18(*, weights=None, progress=True, **kwargs):
    if weights is not None:
        raise RuntimeError("no downloads in tests")
    return ResNet(**kwargs)
'''

# timm.create_model's signature; its models list their stages in feature_info (dicts of num_chs,
# reduction, module), and its forward_features/forward_head are not needed here.
FAKE_TIMM = '''
import torch.nn as nn


class TinyResNet(nn.Module):
    def __init__(self, num_classes=1000, in_chans=3, width=8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_chans, width, 3, padding=1), nn.ReLU())
        self.stages = nn.Sequential(
            nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1), nn.ReLU()))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, num_classes))
        self.feature_info = [dict(num_chs=width, reduction=1, module="stem"),
                             dict(num_chs=2 * width, reduction=2, module="stages.0"),
                             dict(num_chs=4 * width, reduction=4, module="stages.1")]

    def forward(self, x):
        return self.head(self.stages(self.stem(x)))


def create_model(model_name, pretrained=False, **kwargs):
    if pretrained:
        raise RuntimeError("no downloads in tests")
    return {"tiny_resnet": TinyResNet}[model_name](**kwargs)
'''

TIMM = "kdkit_fake_timm:create_model"
VISION = "kdkit_fake_torchvision.models:resnet18"
TIMM_DIGITS = {"model_name": "tiny_resnet", "num_classes": 10, "in_chans": 1}


@pytest.fixture
def fakes(tmp_path, monkeypatch):
    """The fake timm and torchvision importable (as with PYTHONPATH=DIR), forgotten afterwards."""
    root = tmp_path / "site"
    (root / "kdkit_fake_torchvision").mkdir(parents=True)
    (root / "kdkit_fake_torchvision" / "__init__.py").write_text("")
    (root / "kdkit_fake_torchvision" / "models.py").write_text(FAKE_TORCHVISION)
    (root / "kdkit_fake_timm.py").write_text(FAKE_TIMM)
    monkeypatch.syspath_prepend(str(root))
    for name in ("kdkit_fake_timm", "kdkit_fake_torchvision", "kdkit_fake_torchvision.models"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    return root


def config(cls, tmp_path, **overrides):
    base = {"dataset": "digits", "epochs": 1, "batch_size": 64, "progress": False, "amp": "off", "out": str(tmp_path / "run")}
    if cls is DistillConfig:
        base |= {"report": False, "baseline": False}
    return apply_overrides(cls(), base | overrides)


@pytest.fixture(scope="module")
def rgb_digits():
    """digits as 3-channel images (torchvision's resnet18 takes RGB), 3 classes to tell 1000 apart."""
    from kdkit.data import from_arrays
    from kdkit.data.arrays import load_digits_raw

    raw = load_digits_raw()
    keep = raw.y_train < 3
    x, y = np.repeat(raw.x_train[keep], 3, axis=1), raw.y_train[keep]
    return from_arrays(x[:400], y[:400], x[400:], y[400:], classes=["0", "1", "2"])


# ---- factories get only what they name, plus model_kwargs ------------------------------------------------

def test_model_kwargs_from_set_and_yaml(tmp_path):
    cfg = resolve(DistillConfig, sets=['model_kwargs={"model_name": "resnet18", "pretrained": false}',
                                       "teacher_kwargs={model_name: tiny_resnet, widths: [1, 2]}"])
    assert cfg.model_kwargs == {"model_name": "resnet18", "pretrained": False}
    assert cfg.teacher_kwargs == {"model_name": "tiny_resnet", "widths": [1, 2]} and cfg.student_kwargs == {}
    (tmp_path / "c.yaml").write_text("student_kwargs:\n  model_name: tiny_resnet\n  num_classes: 10\n")
    assert resolve(DistillConfig, tmp_path / "c.yaml").student_kwargs == {"model_name": "tiny_resnet", "num_classes": 10}
    assert apply_overrides(TrainConfig(), {"model_kwargs": {"widths": (8, 8)}}).model_kwargs == {"widths": [8, 8]}
    for value, message in [("resnet18", "config key 'model_kwargs' expects a mapping of keyword arguments, got 'resnet18'; "
                                        "e.g. --set model_kwargs='{model_name: resnet18}'"),
                           ("{1: x}", "config key 'model_kwargs' names the argument 1, which is not a Python parameter name"),
                           ("{day: 2024-01-01}", "config key 'model_kwargs' holds datetime.date(2024, 1, 1); give numbers")]:
        with pytest.raises(KdkitError, match="^" + message.replace("(", r"\(").replace(")", r"\)")
                           .replace("{", r"\{").replace("}", r"\}")):
            resolve(TrainConfig, sets=[f"model_kwargs={value}"])


def test_factory_kwargs_per_side():
    from kdkit.weights import factory_kwargs

    cfg = apply_overrides(DistillConfig(), {"model_kwargs": {"pretrained": False, "width": 8},
                                            "teacher_kwargs": {"width": 32}, "student_kwargs": {"model_name": "s"}})
    assert factory_kwargs(cfg, "teacher") == {"pretrained": False, "width": 32}
    assert factory_kwargs(cfg, "student") == {"pretrained": False, "width": 8, "model_name": "s"}
    assert factory_kwargs(cfg, "model") == {"pretrained": False, "width": 8}


def test_torchvision_style_factory_gets_no_sizes_through_kwargs(fakes, rgb_digits, tmp_path):
    """resnet18(*, weights, progress, **kwargs) -> ResNet(**kwargs): kdkit used to pass in_channels and
    image_size there (a TypeError). Now it passes nothing it was not asked to; num_classes comes from
    model_kwargs, and without it the class check names both numbers."""
    from kdkit.recipes import run_train
    from kdkit.weights import build_model

    with pytest.raises(KdkitError, match=r"^model 'kdkit_fake_torchvision.models:resnet18' outputs 1000 classes but the "
                                         r"data has 3; build it with num_classes=3 .*--set model_kwargs='\{num_classes: 3\}'"):
        build_model(VISION, rgb_digits, 0)
    assert build_model(VISION, rgb_digits, 0, {"num_classes": 3}).fc.out_features == 3
    summary = run_train(config(TrainConfig, tmp_path, model=VISION, model_kwargs={"num_classes": 3}), rgb_digits)
    assert 0 <= summary["metrics"]["accuracy"] <= 1


def test_timm_style_factory_with_model_kwargs(fakes, digits, tmp_path):
    """timm's create_model(model_name, pretrained=False, **kwargs): model_name (its first positional)
    and num_classes / in_chans from model_kwargs; the weights' sidecar keeps them, so kdkit rebuilds the
    model from the run (a teacher for a later distill) with the hook trusted."""
    from kdkit.recipes import run_train
    from kdkit.weights import load_model

    with pytest.raises(KdkitError, match=r"^model hook 'kdkit_fake_timm:create_model' cannot be called as create_model\(\): "
                                         r"missing a required argument: 'model_name'; give the argument in student_kwargs"):
        from kdkit.weights import build_model

        build_model(TIMM, digits, 0, {}, "student")
    run_train(config(TrainConfig, tmp_path, model=TIMM, model_kwargs=TIMM_DIGITS), digits)
    model, meta = load_model(tmp_path / "run", trusted_hooks=[TIMM])
    assert meta["model_kwargs"] == TIMM_DIGITS and type(model).__name__ == "TinyResNet"
    assert model.head[2].out_features == 10
    from kdkit.checkpoint import save_weights

    save_weights(tmp_path / "bad.safetensors", model.state_dict(), meta | {"model_kwargs": ["tiny_resnet"]})
    with pytest.raises(KdkitError, match=r"^sidecar '.*bad.json' has model_kwargs \"\['tiny_resnet'\]\", not a mapping of "
                                         r"argument names; restore the sidecar kdkit wrote"):
        load_model(tmp_path / "bad.safetensors", trusted_hooks=[TIMM])


# ---- timm's feature_info: default feature taps ---------------------------------------------------------------

def test_feature_info_gives_the_default_taps(fakes, digits):
    from kdkit.adapters import default_layers
    from kdkit.methods import create_method
    from kdkit.weights import build_model

    teacher = build_model(TIMM, digits, 0, TIMM_DIGITS | {"width": 16})
    assert default_layers(teacher, "teacher") == ["stem", "stages.0", "stages.1"]
    student = build_model("cnn-tiny", digits, 0)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    fitnet = create_method("fitnet", student, teacher, input_shape=(1, 8, 8))
    assert fitnet.teacher_layers == ["stages.0"] and fitnet.teacher_shapes == {"stages.0": (32, 4, 4)}
    assert torch.isfinite(fitnet(x, y)["loss"])
    at = create_method("at", build_model(TIMM, digits, 1, TIMM_DIGITS), teacher, input_shape=(1, 8, 8))
    assert at.student_layers == at.teacher_layers == ["stem", "stages.0", "stages.1"]

    class FeatureInfo:  # timm's features_only models: an object whose .info is the list of dicts
        def __init__(self, info):
            self.info = info

    teacher.feature_info = FeatureInfo(teacher.feature_info)
    assert default_layers(teacher, "teacher") == ["stem", "stages.0", "stages.1"]
    del teacher.feature_info
    with pytest.raises(KdkitError, match=r"^teacher TinyResNet does not list its stage outputs \(feature_modules or timm's "
                                         r"feature_info\); set teacher_layers"):
        default_layers(teacher, "teacher")


# ---- a teacher trained elsewhere --------------------------------------------------------------------------

def train_elsewhere(digits, steps: int = 60):
    """A fake-timm teacher trained with a plain loop (as another codebase would), on the images in
    [0, 1] (torchvision's ToTensor convention), not on kdkit's standardised inputs."""
    import kdkit_fake_timm

    torch.manual_seed(0)
    model = kdkit_fake_timm.create_model("tiny_resnet", num_classes=10, in_chans=1)
    x = digits.train.images.float() / 255  # (N, 1, 8, 8) in [0, 1]
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for step in range(steps):
        rows = torch.randint(0, len(x), (64,), generator=torch.Generator().manual_seed(step))
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x[rows]), digits.train.labels[rows]).backward()
        opt.step()
    return model.eval()


def test_teacher_trained_elsewhere_is_loaded_not_trained(fakes, digits, tmp_path):
    from kdkit.recipes import run_distill

    teacher = train_elsewhere(digits)
    path = tmp_path / "teacher.safetensors"
    safetensors.torch.save_file(teacher.state_dict(), str(path))
    with torch.no_grad():  # its accuracy on its own inputs: kdkit must show exactly this (it sees them as given)
        expected = (teacher(digits.test.images.float() / 255).argmax(1) == digits.test.labels).float().mean().item()
    assert expected > 0.5  # it learnt something: the row below is this model, not a fresh one
    cfg = resolve(DistillConfig, sets=[f"teacher={TIMM}", "teacher_kwargs={model_name: tiny_resnet, num_classes: 10, in_chans: 1}",
                                       f"teacher_state_dict={path}", "dataset=digits", "epochs=1", "batch_size=64",
                                       "progress=false", "amp=off", "report=false", "baseline=false",
                                       f"out={tmp_path / 'run'}"])
    summary = run_distill(cfg)
    out = tmp_path / "run"
    assert not (out / "teacher").exists()  # no teacher phase, no teacher fit
    assert summary["teacher"] == {"source": str(path), "arch": TIMM}
    assert summary["rows"]["teacher"]["per_seed"][0]["accuracy"] == pytest.approx(expected, abs=1e-6)
    assert (out / "student" / "seed0" / "best.safetensors").is_file()


def test_teacher_state_dict_that_does_not_fit(fakes, digits, tmp_path):
    """Checked before any training: the first missing / unexpected keys, or the first shape that differs."""
    from kdkit.recipes import run_distill

    state = train_elsewhere(digits, steps=0).state_dict()
    renamed = {("fc.bias" if k == "head.2.bias" else k): v for k, v in state.items()}
    safetensors.torch.save_file(renamed, str(tmp_path / "renamed.safetensors"))
    wider = {k: torch.zeros(16, *v.shape[1:]) if k == "stem.0.weight" else v for k, v in state.items()}
    safetensors.torch.save_file(wider, str(tmp_path / "wider.safetensors"))
    base = dict(teacher=TIMM, teacher_kwargs=TIMM_DIGITS)
    with pytest.raises(KdkitError, match=r"^teacher_state_dict '.*renamed.safetensors' does not fit the TinyResNet built here "
                                         r"\(1 tensors missing, e.g. 'head.2.bias'; 1 unexpected, e.g. 'fc.bias'\); save "
                                         r"model.state_dict\(\) of the same architecture"):
        run_distill(config(DistillConfig, tmp_path, **base, teacher_state_dict=str(tmp_path / "renamed.safetensors")))
    with pytest.raises(KdkitError, match=r"1 of another shape, e.g. 'stem.0.weight' is \(16, 1, 3, 3\) in the file, "
                                         r"\(8, 1, 3, 3\) in the model"):
        run_distill(config(DistillConfig, tmp_path, **base, teacher_state_dict=str(tmp_path / "wider.safetensors")))
    with pytest.raises(KdkitError, match="^teacher_state_dict loads one teacher that --teacher builds .* but --teacher is "
                                         "'cnn,cnn-tiny'; name one architecture, or drop teacher_state_dict"):
        run_distill(config(DistillConfig, tmp_path, teacher="cnn,cnn-tiny", teacher_state_dict=str(tmp_path / "wider.safetensors")))
    assert not (tmp_path / "run").exists()


def test_student_state_dict_is_where_the_student_starts(digits, tmp_path):
    from kdkit.weights import build_model, student_model

    start = build_model("cnn-tiny", digits, 123).state_dict()
    safetensors.torch.save_file(start, str(tmp_path / "s.safetensors"))
    cfg = config(DistillConfig, tmp_path, student="cnn-tiny", student_state_dict=str(tmp_path / "s.safetensors"))
    student = student_model(cfg, digits, 0)
    assert all(torch.equal(v, start[k]) for k, v in student.state_dict().items())
    fresh = student_model(config(DistillConfig, tmp_path, student="cnn-tiny"), digits, 0)
    assert not torch.equal(fresh.state_dict()["fc.weight"], start["fc.weight"])
