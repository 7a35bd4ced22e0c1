"""Feature taps: capture the outputs of any submodules of any model, by `named_modules()` name.

    with Taps(model, ["layer2", "layer3"]) as taps:
        logits = model(x)
    taps.outputs["layer3"]        # (B, C, H, W), the output of model.layer3 in that forward

Works on kdkit's models, a user's nn.Module, or anything else built from nn.Modules: nothing has
to return features. Names are checked when the Taps is built (an unknown name gets the closest
valid ones), and the hooks are removed on exit, also when the forward raises.
"""
import difflib

import torch
from torch import nn

from kdkit.data.dataset import example_inputs
from kdkit.errors import KdkitError


def check_names(model: nn.Module, names) -> None:
    """KdkitError for any name that is not a submodule of `model`, with the closest valid names."""
    valid = [n for n, _ in model.named_modules() if n]
    for name in names:
        if name not in valid:
            close = difflib.get_close_matches(name, valid, n=3, cutoff=0.4)
            hint = f"closest: {', '.join(close)}" if close else "list them with `kdkit models --layers ARCH`"
            raise KdkitError(f"no layer named '{name}' in {type(model).__name__}; {hint}")


class Taps:
    """Forward hooks on named submodules; `outputs[name]` holds the latest output of each."""

    def __init__(self, model: nn.Module, names, detach: bool = False):
        names = list(names)
        check_names(model, names)
        self.model, self.names, self.detach = model, names, detach
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles = []

    def __enter__(self):
        modules = dict(self.model.named_modules())
        for name in self.names:
            self._handles.append(modules[name].register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        self._handles = []
        return False

    def _hook(self, name: str):
        def hook(module, inputs, output):
            self.outputs[name] = output.detach() if self.detach and torch.is_tensor(output) else output

        return hook


def layer_shapes(model: nn.Module, input_shape) -> list[tuple[str, str, tuple]]:
    """(name, module type, output shape without the batch) of every submodule that runs on one
    sample of `input_shape`, in the order their forward calls finish (children before parents)."""
    names = [n for n, _ in model.named_modules() if n]
    was_training = model.training
    with Taps(model, names, detach=True) as taps, torch.no_grad():
        model.eval()(example_inputs(input_shape, 1))
    model.train(was_training)
    modules = dict(model.named_modules())
    rows = []
    for name, output in taps.outputs.items():  # a dict keeps the order the hooks fired in
        shape = tuple(output.shape[1:]) if torch.is_tensor(output) else type(output).__name__
        rows.append((name, type(modules[name]).__name__, shape))
    return rows
