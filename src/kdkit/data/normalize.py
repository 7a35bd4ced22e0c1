"""What the models see of the inputs: `normalize`, the student's input step that travels with it,
and the raw view a teacher trained elsewhere gets.

    normalize = auto         images and table rows standardised per channel / feature with the
                             training split's mean and std (uint8 images first scaled to [0, 1]);
                             token ids as they are
    normalize = per-feature  the same, said explicitly (token ids refuse it: they are ids, not values)
    normalize = none         every model sees the values as given, as float32 (uint8 images scaled
                             to [0, 1], torchvision's ToTensor convention)

The student trains on what `normalize` says, and that step goes with it: `with_input_step(student,
data)` is the module that takes the user's raw inputs (the one kdkit.distill returns), and the
saved sidecar holds the mean and std. A teacher the user trained elsewhere (an nn.Module given to
kdkit.distill, a factory with teacher_state_dict) sees the inputs as the user gave them whatever
`normalize` is (`raw_view`; uint8 images in [0, 1]): kdkit never standardises the inputs of a model
it did not train.
"""
import contextlib

import torch
from torch import nn

from kdkit.errors import KdkitError

NORMALIZE = ("auto", "none", "per-feature")


def normalized(data, mode: str):
    """`data` whose mean/std make the loader produce what `mode` says (see the module docstring)."""
    import dataclasses

    if mode == "per-feature" and data.kind == "tokens":
        raise KdkitError("normalize=per-feature standardises values, but these inputs are token ids; "
                         "use normalize=auto (ids stay as they are)")
    if mode != "none" or data.kind == "tokens":
        return data
    channels = data.input_shape[0]
    return dataclasses.replace(data, mean=(0.0,) * channels, std=(1.0,) * channels)


def _shaped(values, kind: str) -> torch.Tensor:
    """(1, C, 1, 1) for images, (1, F) for table rows."""
    t = torch.tensor([float(v) for v in values], dtype=torch.float32)
    return t.view(1, -1, 1, 1) if kind == "image" else t.view(1, -1)


class InputStep(nn.Module):
    """The user's raw inputs to what the student was trained on: x * scale, minus mean, over std
    (uint8 images: scale 1/255)."""

    def __init__(self, mean, std, scale: float, kind: str):
        super().__init__()
        self.scale = float(scale)
        self.register_buffer("mean", _shaped(mean, kind))
        self.register_buffer("std", _shaped(std, kind))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() * self.scale - self.mean) / self.std

    def undo(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised inputs back to the values the user gave (uint8 images: in [0, 1], not 0..255)."""
        return x * self.std + self.mean


def input_step(data) -> InputStep | None:
    """The data's input step, or None when the model sees the stored values (token ids)."""
    if data.kind == "tokens":
        return None
    scale = 1 / 255 if data.train.images.dtype == torch.uint8 else 1.0
    return InputStep(data.mean, data.std, scale, data.kind)


def with_input_step(model: nn.Module, data) -> nn.Module:
    """`model` behind the data's input step: nn.Sequential(InputStep, model), which takes the user's
    raw inputs; `model` itself when there is none (token ids)."""
    step = input_step(data)
    if step is None:
        return model
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    return nn.Sequential(step.to(device), model)


@contextlib.contextmanager
def raw_view(model: nn.Module, data):
    """While inside, `model` gets kdkit's normalised batches turned back into the user's values
    (a forward pre-hook, removed on exit): for a teacher trained elsewhere on the raw inputs."""
    step = input_step(data)
    if step is None:
        yield model
        return
    steps = {}

    def undo(module, args):
        x = args[0]
        if not x.is_floating_point():
            return None
        if x.device not in steps:
            steps[x.device] = step.to(x.device)
        return (steps[x.device].undo(x).to(x.dtype), *args[1:])

    handle = model.register_forward_pre_hook(undo)
    try:
        yield model
    finally:
        handle.remove()
