"""Tests for kdkit.models: every registered model builds, runs forward/backward and exposes its
feature taps; parameter counts match the reference architectures; names, hooks and input checks
fail with clear KdkitErrors.  Run: PYTHONPATH=src python -m pytest tests/models/test_models.py -q
"""
import sys

import pytest
import torch

from kdkit.errors import KdkitError
from kdkit.models import MODELS, check_input, count_parameters, create_model, describe_model, list_models
from kdkit.models.registry import TEXT_MODELS

CIFAR_ZOO = ["resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet8x4",
             "resnet32x4", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2", "vgg8", "vgg11", "vgg13",
             "mobilenetv2", "shufflenetv2"]

# Parameter counts for 100 classes at 3x32x32. Each was obtained by instantiating the corresponding
# HobbitLong/RepDistiller model (models/resnet.py, wrn.py, vgg.py `*_bn`, mobilenetv2.py `mobile_half`,
# ShuffleNetv2.py `ShuffleV2`; commit eedab9d) with num_classes=100, and agrees with the rounded
# figures of the CRD paper (Tian et al. 2020), e.g. resnet56 0.86M, wrn_40_2 2.26M, vgg13 9.46M,
# resnet32x4 7.43M, MobileNetV2 0.81M, ShuffleV2 1.35M. resnet20 was also checked by hand.
CRD_ZOO_PARAMETERS_100 = {
    "resnet8": 83_892,
    "resnet14": 181_108,
    "resnet20": 278_324,
    "resnet32": 472_756,
    "resnet44": 667_188,
    "resnet56": 861_620,
    "resnet110": 1_736_564,
    "resnet8x4": 1_233_540,
    "resnet32x4": 7_433_860,
    "wrn_16_1": 180_916,
    "wrn_16_2": 703_284,
    "wrn_40_1": 569_780,
    "wrn_40_2": 2_255_156,
    "wrn_16_4": 2_772_020,
    "vgg8": 3_965_028,
    "vgg11": 9_277_284,
    "vgg13": 9_462_180,
    "mobilenetv2": 812_836,
    "shufflenetv2": 1_355_528,
}


@pytest.mark.parametrize("num_classes", [10, 100])
@pytest.mark.parametrize("name", [name for name in list_models() if name not in TEXT_MODELS])  # text: test_text_models.py
def test_model_forward_backward_and_feature_taps(name, num_classes):
    torch.manual_seed(0)
    model = create_model(name, num_classes)
    modules = dict(model.named_modules())
    assert model.feature_modules and all(n in modules for n in model.feature_modules)
    seen = []
    hooks = [modules[n].register_forward_hook(lambda m, i, o, n=n: seen.append(n)) for n in model.feature_modules]
    logits = model(torch.randn(2, 3, 32, 32))  # (B, C, H, W) -> (B, num_classes)
    for hook in hooks:
        hook.remove()
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, num_classes)
    assert seen == model.feature_modules  # every tap fires once, in forward order
    logits.logsumexp(1).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", ["mlp", "cnn", "cnn-tiny", "resnet8x4", "resnet20", "wrn_16_2", "vgg8", "mobilenetv2",
                                  "shufflenetv2"])
def test_models_compile_as_one_graph(name):
    # `--compile` compiles the student and teacher modules (those no method taps); a graph break
    # would split a model and, with reduce-overhead, its CUDA graph.
    torch._dynamo.reset()
    explained = torch._dynamo.explain(create_model(name, 10))(torch.randn(2, 3, 32, 32))
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1


def test_small_cnn_parameter_counts():
    # The Fashion-MNIST teacher/student pair of shared/ANCHORS.md.
    assert count_parameters(create_model("cnn", 10, in_channels=1, image_size=28)) == 824_650
    assert count_parameters(create_model("cnn-tiny", 10, in_channels=1, image_size=28)) == 26_746


@pytest.mark.parametrize("name", sorted(CRD_ZOO_PARAMETERS_100))
def test_crd_zoo_parameter_counts(name):
    assert count_parameters(create_model(name, 100)) == CRD_ZOO_PARAMETERS_100[name]


def test_state_dict_keys_follow_repdistiller():
    # A few keys from RepDistiller checkpoints, so its pretrained teachers load with strict=True.
    assert "layer2.0.downsample.0.weight" in create_model("resnet8x4", 100).state_dict()
    assert "block2.layer.0.convShortcut.weight" in create_model("wrn_16_1", 100).state_dict()
    assert "block1.3.weight" in create_model("vgg13", 100).state_dict()
    assert "blocks.6.0.conv.7.running_var" in create_model("mobilenetv2", 100).state_dict()
    assert "layer3.0.conv5.weight" in create_model("shufflenetv2", 100).state_dict()


def test_registry_lists_and_describes_models():
    assert list_models() == sorted(MODELS)
    for name in list_models() + ["mlp-1200-1200", "wrn-16-4"]:
        description = describe_model(name)
        assert description and "\n" not in description
    assert "widths=(1200, 1200)" in describe_model("mlp-1200-1200")


@pytest.mark.parametrize("name", CIFAR_ZOO)
def test_cifar_zoo_takes_other_input_sizes(name):
    check_input(create_model(name, 10, in_channels=1, image_size=28), (1, 28, 28), 10)
    check_input(create_model(name, 10, image_size=8), (3, 8, 8), 10)


def test_parametrised_names():
    model = create_model("mlp-1200-1200", 10, in_channels=1, image_size=28, kwargs={"dropout": 0.5, "input_dropout": 0.2})
    assert [b[0].out_features for b in model.blocks] == [1200, 1200]
    assert count_parameters(model) == 784 * 1200 + 1200 + 1200 * 1200 + 1200 + 1200 * 10 + 10
    half = create_model("cnn-x0.5", 10, in_channels=1, image_size=28)
    assert (half.stage1[0].out_channels, half.stage2[0].out_channels, half.fc.in_features) == (16, 32, 128)
    assert count_parameters(create_model("cnn-x0.3", 10)) > 0
    assert count_parameters(create_model("wrn_16_4", 100)) == CRD_ZOO_PARAMETERS_100["wrn_16_4"]
    assert count_parameters(create_model("wrn-16-4", 100)) == CRD_ZOO_PARAMETERS_100["wrn_16_4"]


def test_unknown_names_and_options_are_clear_errors():
    with pytest.raises(KdkitError, match="did you mean 'resnet8x4'"):
        create_model("resnet8x5", 10)
    with pytest.raises(KdkitError, match="depth must be 6n\\+4"):
        create_model("wrn_15_2", 10)
    with pytest.raises(KdkitError, match="did you mean 'widths'"):
        create_model("mlp", 10, kwargs={"widht": (8,)})
    with pytest.raises(KdkitError, match="takes no options"):
        create_model("resnet8", 10, kwargs={"depth": 20})
    with pytest.raises(KdkitError, match="already set by the model name"):
        create_model("mlp-64", 10, kwargs={"widths": (8,)})
    with pytest.raises(KdkitError, match="num_classes of model 'mlp' comes from the data; drop it from student_kwargs"):
        create_model("mlp", 10, kwargs={"num_classes": 3}, kwargs_key="student_kwargs")


USER_MODULE = '''
import torch.nn as nn

def make_net(num_classes, in_channels=3):  # takes no image_size: the hook must not pass it
    return nn.Sequential(nn.Conv2d(in_channels, num_classes, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())

def make_sized(num_classes, image_size, **kwargs):  # kdkit passes only what the signature names
    assert not kwargs, kwargs
    return nn.Sequential(nn.Flatten(), nn.Linear(image_size ** 2, num_classes))

def not_a_model(num_classes):
    return "model"
'''


def test_user_hook(tmp_path, monkeypatch):
    (tmp_path / "kdkit_test_user_nets.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "kdkit_test_user_nets", raising=False)
    model = create_model("kdkit_test_user_nets:make_net", 7, in_channels=1, image_size=28)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 7)
    sized = create_model("kdkit_test_user_nets:make_sized", 5, in_channels=1, image_size=8)
    check_input(sized, (1, 8, 8), 5)
    with pytest.raises(KdkitError, match="outputs 3 classes but the data has 5"):  # model_kwargs win over the sizes
        check_input(create_model("kdkit_test_user_nets:make_sized", 5, 1, 8, kwargs={"num_classes": 3}), (1, 8, 8), 5)
    with pytest.raises(KdkitError, match="cannot find module 'kdkit_no_such_module'"):
        create_model("kdkit_no_such_module:make_net", 10)
    with pytest.raises(KdkitError, match="has no function 'make_nett'.*did you mean 'make_net'"):
        create_model("kdkit_test_user_nets:make_nett", 10)
    with pytest.raises(KdkitError, match="returned str, not a torch.nn.Module"):
        create_model("kdkit_test_user_nets:not_a_model", 10)
    with pytest.raises(KdkitError, match="must look like"):
        create_model("kdkit_test_user_nets:", 10)


def test_check_input_wrong_shape_and_class_count():
    model = create_model("mlp", 10, in_channels=1, image_size=28)
    model.train()
    check_input(model, (1, 28, 28), 10)
    assert model.training and all(m.training for m in model.modules())  # modes restored
    with pytest.raises(KdkitError, match=r"cannot take input of shape \(1, 32, 32\): .*use a model built"):
        check_input(model, (1, 32, 32), 10)
    assert model.training
    with pytest.raises(KdkitError, match="outputs 10 classes but the data has 100"):
        check_input(model, (1, 28, 28), 100)
