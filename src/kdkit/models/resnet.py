"""CIFAR ResNets (He et al. 2016, "Deep Residual Learning", section 4.2) as in the CRD model zoo.

Layout: conv3x3 stem -> BN -> ReLU, three stages of `n` basic blocks (strides 1, 2, 2), global
average pool, FC; depth = 6n + 2. resnet8..resnet110 use channels 16 (stem), 16, 32, 64;
resnet8x4 and resnet32x4 use 32, 64, 128, 256. Layouts, parameter counts and state_dict keys match
HobbitLong/RepDistiller models/resnet.py, so its pretrained CIFAR-100 teachers load directly.
Unlike the original, the pool is adaptive (any image_size >= 8 works) and forward returns logits only.
"""
import torch
import torch.nn as nn

# ReLUs are not in-place anywhere in kdkit models: feature taps keep references to module outputs,
# and an in-place ReLU would silently overwrite what a tap on a BN layer saw.


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual; a 1x1 conv projects the shortcut when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.conv2 = conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)  # (B, C_out, H/s, W/s)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class ResNet(nn.Module):
    def __init__(self, depth: int, channels, num_classes: int, in_channels: int = 3):
        super().__init__()
        assert (depth - 2) % 6 == 0, f"CIFAR ResNet depth must be 6n+2, got {depth}"
        n = (depth - 2) // 6
        self.conv1 = conv3x3(in_channels, channels[0])
        self.bn1 = nn.BatchNorm2d(channels[0])
        self.relu = nn.ReLU()
        self.layer1 = make_stage(channels[0], channels[1], n, stride=1)
        self.layer2 = make_stage(channels[1], channels[2], n, stride=2)
        self.layer3 = make_stage(channels[2], channels[3], n, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels[3], num_classes)
        self.feature_modules = ["layer1", "layer2", "layer3"]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))  # (B, c0, H, W)
        x = self.layer1(x)  # (B, c1, H, W)
        x = self.layer2(x)  # (B, c2, H/2, W/2)
        x = self.layer3(x)  # (B, c3, H/4, W/4)
        x = self.avgpool(x).flatten(1)  # (B, c3)
        return self.fc(x)  # (B, num_classes)


def make_stage(in_channels: int, out_channels: int, num_blocks: int, stride: int) -> nn.Sequential:
    blocks = [BasicBlock(in_channels, out_channels, stride)]
    blocks += [BasicBlock(out_channels, out_channels) for _ in range(num_blocks - 1)]
    return nn.Sequential(*blocks)


CIFAR_CHANNELS = (16, 16, 32, 64)
WIDE_CHANNELS = (32, 64, 128, 256)  # the "x4" variants


def resnet8(num_classes: int, in_channels: int = 3, image_size: int = 32) -> ResNet:
    """CIFAR ResNet-8: 3 stages of 1 basic block, channels 16-32-64."""
    return ResNet(8, CIFAR_CHANNELS, num_classes, in_channels)


def resnet14(num_classes: int, in_channels: int = 3, image_size: int = 32) -> ResNet:
    """CIFAR ResNet-14: 3 stages of 2 basic blocks, channels 16-32-64."""
    return ResNet(14, CIFAR_CHANNELS, num_classes, in_channels)


def resnet20(num_classes: int, in_channels: int = 3, image_size: int = 32) -> ResNet:
    """CIFAR ResNet-20: 3 stages of 3 basic blocks, channels 16-32-64."""
    return ResNet(20, CIFAR_CHANNELS, num_classes, in_channels)


def resnet32(num_classes: int, in_channels: int = 3, image_size: int = 32) -> ResNet:
    """CIFAR ResNet-32: 3 stages of 5 basic blocks, channels 16-32-64."""
    return ResNet(32, CIFAR_CHANNELS, num_classes, in_channels)


def resnet44(num_classes: int, in_channels: int = 3, image_size: int = 32) -> ResNet:
    """CIFAR ResNet-44: 3 stages of 7 basic blocks, channels 16-32-64."""
    return ResNet(44, CIFAR_CHANNELS, num_classes, in_channels)


def resnet56(num_classes: int, in_channels: int = 3, image_size: int = 32) -> ResNet:
    """CIFAR ResNet-56: 3 stages of 9 basic blocks, channels 16-32-64."""
    return ResNet(56, CIFAR_CHANNELS, num_classes, in_channels)


def resnet110(num_classes: int, in_channels: int = 3, image_size: int = 32) -> ResNet:
    """CIFAR ResNet-110: 3 stages of 18 basic blocks, channels 16-32-64."""
    return ResNet(110, CIFAR_CHANNELS, num_classes, in_channels)


def resnet8x4(num_classes: int, in_channels: int = 3, image_size: int = 32) -> ResNet:
    """CIFAR ResNet-8 at 4x width: 3 stages of 1 basic block, channels 64-128-256."""
    return ResNet(8, WIDE_CHANNELS, num_classes, in_channels)


def resnet32x4(num_classes: int, in_channels: int = 3, image_size: int = 32) -> ResNet:
    """CIFAR ResNet-32 at 4x width: 3 stages of 5 basic blocks, channels 64-128-256."""
    return ResNet(32, WIDE_CHANNELS, num_classes, in_channels)
