"""Feature taps by module name: captured outputs, name checks, hooks always removed."""
import pytest
import torch
from torch import nn

from kdkit.errors import KdkitError
from kdkit.models import create_model
from kdkit.taps import Taps, layer_shapes


def test_taps_capture_stage_outputs_of_a_zoo_model():
    model = create_model("resnet8x4", num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    with Taps(model, model.feature_modules) as taps:
        logits = model(x)
    shapes = {name: tuple(out.shape) for name, out in taps.outputs.items()}
    assert shapes == {"layer1": (2, 64, 32, 32), "layer2": (2, 128, 16, 16), "layer3": (2, 256, 8, 8)}
    # the last stage, pooled, is exactly what the classifier sees
    pooled = taps.outputs["layer3"].mean(dim=(2, 3))
    torch.testing.assert_close(model.fc(pooled), logits)


def test_taps_on_a_user_module_and_gradients_flow_unless_detached():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with Taps(model, ["0", "1"]) as taps:
        model(torch.randn(3, 4)).sum().backward()
    assert taps.outputs["0"].shape == (3, 8) and taps.outputs["1"].requires_grad
    with Taps(model, ["1"], detach=True) as taps:
        model(torch.randn(3, 4))
    assert not taps.outputs["1"].requires_grad


def test_unknown_name_suggests_closest():
    model = create_model("resnet20", num_classes=10)
    with pytest.raises(KdkitError, match=r"no layer named 'layr2' in ResNet; closest: layer2"):
        Taps(model, ["layr2"])


def test_hooks_removed_on_exit_and_on_error():
    model = nn.Sequential(nn.Linear(4, 2))
    with Taps(model, ["0"]):
        assert len(model[0]._forward_hooks) == 1
    assert len(model[0]._forward_hooks) == 0
    with pytest.raises(RuntimeError):
        with Taps(model, ["0"]):
            model(torch.randn(3, 5))  # wrong input size
    assert len(model[0]._forward_hooks) == 0


def test_layer_shapes_lists_every_layer_in_call_order():
    model = create_model("cnn-tiny", num_classes=10, in_channels=1, image_size=28)
    rows = layer_shapes(model, (1, 28, 28))
    names = [r[0] for r in rows]
    assert names.index("stage1") < names.index("stage2") < names.index("fc")
    assert dict((n, s) for n, _, s in rows)["stage2"] == (16, 7, 7)
    assert model.training  # mode restored
