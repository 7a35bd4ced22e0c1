"""Model factories as other libraries write them, for the examples: `module:function` names them.

resnet18 has torchvision's signature (keyword-only weights and progress, num_classes through
**kwargs); make_teacher is a plain factory whose weights were trained outside kdkit."""
from torch import nn


def resnet18(*, weights=None, progress: bool = True, **kwargs) -> nn.Module:
    """A tiny stand-in with torchvision.models.resnet18's signature (8x8 grey digits here)."""
    if weights is not None:
        raise ValueError("no pretrained weights in this stand-in")
    num_classes = kwargs.get("num_classes", 1000)
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten(), nn.Linear(64, num_classes))


def make_teacher(num_classes: int = 10) -> nn.Module:
    """An MLP on 8x8 digits (the factory names num_classes, so kdkit passes it)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, num_classes))
