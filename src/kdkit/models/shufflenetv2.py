"""ShuffleNetV2 (Ma et al. 2018, "ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture
Design") for CIFAR, as in the CRD zoo (RepDistiller models/ShuffleNetv2.py, `ShuffleV2`, net size 1).

Layout: 1x1 stem conv to 24 channels (no stride, no max-pool at 32x32), three stages (116, 232, 464
channels) of one stride-2 down block then 3, 7, 3 basic blocks, a 1x1 conv to 1024, global average
pool, FC. Parameter counts and state_dict keys match RepDistiller.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


def channel_shuffle(x: torch.Tensor, groups: int = 2) -> torch.Tensor:
    """Interleave the channels of `groups` groups so information crosses the two branches."""
    B, C, H, W = x.shape
    return x.view(B, groups, C // groups, H, W).transpose(1, 2).reshape(B, C, H, W)


class BasicBlock(nn.Module):
    """Keep half the channels; 1x1 -> 3x3 depthwise -> 1x1 on the other half; concatenate, shuffle."""

    def __init__(self, channels: int):
        super().__init__()
        half = channels // 2
        self.conv1 = nn.Conv2d(half, half, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(half)
        self.conv2 = nn.Conv2d(half, half, 3, padding=1, groups=half, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = nn.Conv2d(half, half, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = x.shape[1] // 2
        kept, x = x[:, :half], x[:, half:]  # (B, C/2, H, W) each
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = F.relu(self.bn3(self.conv3(out)))
        return channel_shuffle(torch.cat([kept, out], 1))  # (B, C, H, W)


class DownBlock(nn.Module):
    """Two stride-2 branches on the full input, each giving half the output channels."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        half = out_channels // 2
        # left: 3x3 depthwise (stride 2) -> 1x1
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, stride=2, padding=1, groups=in_channels, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = nn.Conv2d(in_channels, half, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        # right: 1x1 -> 3x3 depthwise (stride 2) -> 1x1
        self.conv3 = nn.Conv2d(in_channels, half, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(half)
        self.conv4 = nn.Conv2d(half, half, 3, stride=2, padding=1, groups=half, bias=False)
        self.bn4 = nn.BatchNorm2d(half)
        self.conv5 = nn.Conv2d(half, half, 1, bias=False)
        self.bn5 = nn.BatchNorm2d(half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = self.bn1(self.conv1(x))
        left = F.relu(self.bn2(self.conv2(left)))  # (B, C_out/2, H/2, W/2)
        right = F.relu(self.bn3(self.conv3(x)))
        right = self.bn4(self.conv4(right))
        right = F.relu(self.bn5(self.conv5(right)))  # (B, C_out/2, H/2, W/2)
        return channel_shuffle(torch.cat([left, right], 1))  # (B, C_out, H/2, W/2)


class ShuffleNetV2(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3, stage_channels=(116, 232, 464),
                 stage_blocks=(3, 7, 3), last_channels: int = 1024):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        stage_in = [24] + list(stage_channels[:-1])
        self.layer1 = make_stage(stage_in[0], stage_channels[0], stage_blocks[0])
        self.layer2 = make_stage(stage_in[1], stage_channels[1], stage_blocks[1])
        self.layer3 = make_stage(stage_in[2], stage_channels[2], stage_blocks[2])
        self.conv2 = nn.Conv2d(stage_channels[2], last_channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(last_channels)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(last_channels, num_classes)
        self.feature_modules = ["layer1", "layer2", "layer3"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))  # (B, 24, H, W)
        x = self.layer1(x)  # (B, 116, H/2, W/2)
        x = self.layer2(x)  # (B, 232, H/4, W/4)
        x = self.layer3(x)  # (B, 464, H/8, W/8)
        x = F.relu(self.bn2(self.conv2(x)))  # (B, 1024, H/8, W/8)
        x = self.avgpool(x).flatten(1)  # (B, 1024)
        return self.linear(x)  # (B, num_classes)


def make_stage(in_channels: int, out_channels: int, num_blocks: int) -> nn.Sequential:
    blocks = [DownBlock(in_channels, out_channels)]
    blocks += [BasicBlock(out_channels) for _ in range(num_blocks)]
    return nn.Sequential(*blocks)


def shufflenetv2(num_classes: int, in_channels: int = 3, image_size: int = 32) -> ShuffleNetV2:
    """ShuffleNetV2 (net size 1) for CIFAR: stages 116-232-464 of 3-7-3 blocks, 1x1 stem."""
    return ShuffleNetV2(num_classes, in_channels)
