"""Learned adapters (the design's "distiller" mapping) and the shape probe that sizes them.

    shapes = probe(model, ["layer2", "layer3"], input_shape=(3, 32, 32))  # {"layer2": (32, 16, 16), ...}
    adapter = make_adapter(shapes_s["layer2"], shapes_t["layer2"])        # student map -> teacher's shape

An adapter maps one model's feature (one sample's shape, without the batch) to another shape:
conv maps (C, H, W) -> (C', H', W') with a 1x1 conv + BatchNorm, then adaptive average pooling
when the spatial sizes differ; vectors (D,) -> (D',) with a Linear; a conv map -> a vector by global
average pooling + Linear; a vector -> a conv map by Linear + reshape. Adapters are submodules of
the method, so they train with the student and are checkpointed with it, but they are never part
of the saved student.
"""
import math

import torch
from torch import nn

from kdkit.data.dataset import example_inputs
from kdkit.errors import KdkitError
from kdkit.taps import Taps


def default_layers(model: nn.Module, role: str) -> list[str]:
    """The model's stage outputs: its `feature_modules` (kdkit's models), else the module names of its
    `feature_info` (timm's models); or an error saying how to name layers."""
    layers = getattr(model, "feature_modules", None) or feature_info_modules(model)
    if not layers:
        raise KdkitError(f"{role} {type(model).__name__} does not list its stage outputs (feature_modules or timm's "
                         f"feature_info); set {role}_layers to layer names (see `kdkit models --layers ARCH`)")
    return list(layers)


def feature_info_modules(model: nn.Module) -> list[str]:
    """The `module` names of timm's `feature_info`, in order: a list of dicts (num_chs, reduction, module)
    on every timm model, or a FeatureInfo object (features_only models) whose `.info` holds that list."""
    info = getattr(model, "feature_info", None)
    info = getattr(info, "info", info)
    if not isinstance(info, (list, tuple)):
        return []
    return [entry["module"] for entry in info if isinstance(entry, dict) and isinstance(entry.get("module"), str)]


@torch.no_grad()
def probe(model: nn.Module, layers, input_shape) -> dict[str, tuple[int, ...]]:
    """Output shape (without the batch) of each named layer, from one forward of two zero samples
    in eval mode (BatchNorm statistics untouched), on the model's own device."""
    param = next(model.parameters(), None)
    x = example_inputs(input_shape, 2, device=param.device if param is not None else "cpu")
    was_training = model.training
    try:
        with Taps(model, layers, detach=True) as taps:
            model.eval()(x)
    finally:
        model.train(was_training)
    shapes = {}
    for name in layers:
        out = taps.outputs.get(name)
        if not torch.is_tensor(out):
            raise KdkitError(f"layer '{name}' of {type(model).__name__} does not return a tensor "
                             f"({type(out).__name__}); tap one of its submodules instead")
        shapes[name] = tuple(out.shape[1:])
    return shapes


def make_adapter(source: tuple[int, ...], target: tuple[int, ...]) -> nn.Module:
    """A trainable map from features of shape `source` to shape `target` (both without the batch)."""
    if len(source) == 3 and len(target) == 3:
        layers = [nn.Conv2d(source[0], target[0], 1, bias=False), nn.BatchNorm2d(target[0])]
        if source[1:] != target[1:]:
            layers.append(nn.AdaptiveAvgPool2d(target[1:]))
        return nn.Sequential(*layers)
    if len(target) == 1:
        return nn.Sequential(nn.Flatten(), nn.Linear(pooled_size(source), target[0]))
    if len(source) == 1 and len(target) == 3:
        return nn.Sequential(nn.Linear(source[0], math.prod(target)), nn.Unflatten(1, target))
    raise KdkitError(f"no adapter from features of shape {source} to {target}; "
                     "tap layers that output (C, H, W) maps or (D,) vectors")


def pool(f: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C) by global average pooling; (B, T, D) tokens -> (B, D) by the mean over
    tokens; (B, D) unchanged."""
    if f.ndim == 4:
        return f.mean(dim=(2, 3))
    if f.ndim == 3:
        return f.mean(dim=1)
    return f.flatten(1)


def pooled_size(shape: tuple[int, ...]) -> int:
    """Length of `pool` of a feature of this shape (without the batch)."""
    return shape[0] if len(shape) == 3 else shape[-1]
