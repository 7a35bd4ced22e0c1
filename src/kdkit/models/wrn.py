"""Wide ResNets WRN-d-k (Zagoruyko & Komodakis 2016, "Wide Residual Networks") for CIFAR.

Layout: conv3x3 stem (16 channels), three groups of n pre-activation blocks (BN -> ReLU -> conv3x3,
twice) with widths 16k, 32k, 64k and strides 1, 2, 2, then BN -> ReLU, global average pool, FC;
depth d = 6n + 4. Layout, parameter counts and state_dict keys (including `convShortcut` and the
`blockN.layer` nesting) match HobbitLong/RepDistiller models/wrn.py, so its pretrained teachers load.
"""
from collections import OrderedDict

import torch
import torch.nn as nn

from kdkit.errors import KdkitError


class WideBasicBlock(nn.Module):
    """Pre-activation block; when the shape changes, the shortcut is a 1x1 conv of the activated input."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, dropout: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.convShortcut = None  # RepDistiller's name, kept for checkpoint compatibility
        if stride != 1 or in_channels != out_channels:
            self.convShortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(x))
        shortcut = x if self.convShortcut is None else self.convShortcut(out)  # (B, C_out, H/s, W/s)
        out = self.relu2(self.bn2(self.conv1(out)))
        out = self.conv2(self.dropout(out))
        return out + shortcut


def wide_group(in_channels: int, out_channels: int, num_blocks: int, stride: int, dropout: float) -> nn.Sequential:
    blocks = [WideBasicBlock(in_channels, out_channels, stride, dropout)]
    blocks += [WideBasicBlock(out_channels, out_channels, 1, dropout) for _ in range(num_blocks - 1)]
    # The extra `layer` level mirrors RepDistiller's NetworkBlock so state_dict keys match.
    return nn.Sequential(OrderedDict(layer=nn.Sequential(*blocks)))


class WideResNet(nn.Module):
    def __init__(self, depth: int, widen_factor: int, num_classes: int, in_channels: int = 3,
                 dropout: float = 0.0):
        super().__init__()
        if (depth - 4) % 6 != 0 or depth < 10 or widen_factor < 1:
            raise KdkitError(f"WRN depth must be 6n+4 (10, 16, 22, 28, 40, ...) and width >= 1, "
                             f"got depth {depth}, width {widen_factor}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.block1 = wide_group(widths[0], widths[1], n, 1, dropout)
        self.block2 = wide_group(widths[1], widths[2], n, 2, dropout)
        self.block3 = wide_group(widths[2], widths[3], n, 2, dropout)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3], num_classes)
        self.feature_modules = ["block1", "block2", "block3"]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)  # (B, 16, H, W)
        x = self.block1(x)  # (B, 16k, H, W)
        x = self.block2(x)  # (B, 32k, H/2, W/2)
        x = self.block3(x)  # (B, 64k, H/4, W/4)
        x = self.relu(self.bn1(x))
        x = self.avgpool(x).flatten(1)  # (B, 64k)
        return self.fc(x)  # (B, num_classes)


def wrn(num_classes: int, in_channels: int = 3, image_size: int = 32, depth: int = 16,
        widen_factor: int = 1, dropout: float = 0.0) -> WideResNet:
    """Wide ResNet WRN-depth-widen_factor for CIFAR (wrn_D_K or wrn-D-K), pre-activation blocks."""
    return WideResNet(depth, widen_factor, num_classes, in_channels, dropout)


def wrn_16_1(num_classes: int, in_channels: int = 3, image_size: int = 32) -> WideResNet:
    """Wide ResNet WRN-16-1: 3 groups of 2 pre-activation blocks, widths 16-32-64."""
    return WideResNet(16, 1, num_classes, in_channels)


def wrn_16_2(num_classes: int, in_channels: int = 3, image_size: int = 32) -> WideResNet:
    """Wide ResNet WRN-16-2: 3 groups of 2 pre-activation blocks, widths 32-64-128."""
    return WideResNet(16, 2, num_classes, in_channels)


def wrn_40_1(num_classes: int, in_channels: int = 3, image_size: int = 32) -> WideResNet:
    """Wide ResNet WRN-40-1: 3 groups of 6 pre-activation blocks, widths 16-32-64."""
    return WideResNet(40, 1, num_classes, in_channels)


def wrn_40_2(num_classes: int, in_channels: int = 3, image_size: int = 32) -> WideResNet:
    """Wide ResNet WRN-40-2: 3 groups of 6 pre-activation blocks, widths 32-64-128."""
    return WideResNet(40, 2, num_classes, in_channels)
