"""Small CNN for MNIST-sized images, with a width multiplier.

Layout: [conv3x3 -> BN -> ReLU -> maxpool2] x 2, flatten, Linear -> ReLU, Linear.
`cnn` (conv 32, 64; hidden 256) has 824,650 parameters and `cnn-tiny` (conv 8, 16; hidden 32) has
26,746 for 1x28x28 input and 10 classes: the Fashion-MNIST teacher/student pair in
shared/ANCHORS.md.
"""
import torch
import torch.nn as nn

from kdkit.errors import KdkitError


def conv_stage(in_channels: int, out_channels: int) -> nn.Sequential:
    """conv3x3 -> BN -> ReLU -> 2x2 max-pool: halves the spatial size."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )


class SmallCNN(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3, image_size: int = 32,
                 channels=(32, 64), hidden: int = 256):
        super().__init__()
        side = image_size // 4  # two 2x2 max-pools, each rounding down
        if side < 1:
            raise KdkitError(f"SmallCNN needs image_size >= 4, got {image_size}")
        self.stage1 = conv_stage(in_channels, channels[0])
        self.stage2 = conv_stage(channels[0], channels[1])
        self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(channels[1] * side * side, hidden), nn.ReLU())
        self.fc = nn.Linear(hidden, num_classes)
        self.feature_modules = ["stage1", "stage2", "hidden"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage1(x)  # (B, c1, H/2, W/2)
        x = self.stage2(x)  # (B, c2, H/4, W/4)
        x = self.hidden(x)  # (B, hidden)
        return self.fc(x)  # (B, num_classes)


def scaled(n: int, width: float) -> int:
    return max(1, round(n * width))


def cnn(num_classes: int, in_channels: int = 3, image_size: int = 32, width: float = 1.0) -> SmallCNN:
    """Small CNN: conv 32, 64 -> FC 256, all scaled by `width` (cnn-x0.5 halves them)."""
    if width <= 0:
        raise KdkitError(f"cnn width must be > 0, got {width}")
    channels = (scaled(32, width), scaled(64, width))
    return SmallCNN(num_classes, in_channels, image_size, channels, scaled(256, width))


def cnn_x0_5(num_classes: int, in_channels: int = 3, image_size: int = 32) -> SmallCNN:
    """Small CNN at half width: conv 16, 32 -> FC 128."""
    return cnn(num_classes, in_channels, image_size, width=0.5)


def cnn_x0_25(num_classes: int, in_channels: int = 3, image_size: int = 32) -> SmallCNN:
    """Small CNN at quarter width: conv 8, 16 -> FC 64."""
    return cnn(num_classes, in_channels, image_size, width=0.25)


def cnn_tiny(num_classes: int, in_channels: int = 3, image_size: int = 32) -> SmallCNN:
    """Tiny CNN student: conv 8, 16 -> FC 32 (26,746 parameters for 1x28x28, 10 classes)."""
    return SmallCNN(num_classes, in_channels, image_size, channels=(8, 16), hidden=32)
