"""MobileNetV2 (Sandler et al. 2018, "MobileNetV2: Inverted Residuals and Linear Bottlenecks") for CIFAR.

The CRD zoo's student "MobileNetV2" (RepDistiller models/mobilenetv2.py, `mobile_half`): width 0.5,
expansion 6, a stride-2 3x3 stem, seven stages of inverted residual blocks, a 1x1 conv to 1280
channels, global average pool, FC. Unlike torchvision, the first stage (expansion 1) keeps its 1x1
expansion conv. Parameter counts and state_dict keys match RepDistiller.
"""
import torch
import torch.nn as nn

# (expansion, output channels before width scaling, blocks, stride of the first block) per stage;
# expansion None means "use the model's expand_ratio".
STAGES = [
    (1, 16, 1, 1),
    (None, 24, 2, 1),
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
]


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


class InvertedResidual(nn.Module):
    """1x1 expand -> 3x3 depthwise -> 1x1 linear projection; residual when the shape is kept."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = in_channels * expand_ratio
        self.use_residual = stride == 1 and in_channels == out_channels
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, stride, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)  # (B, C_out, H/s, W/s)
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3, width_mult: float = 0.5,
                 expand_ratio: int = 6):
        super().__init__()
        channels = int(32 * width_mult)
        self.conv1 = conv_bn_relu(in_channels, channels, 3, stride=2)
        self.blocks = nn.ModuleList()
        for expansion, out_channels, num_blocks, stride in STAGES:
            out_channels = int(out_channels * width_mult)
            stage = []
            for i in range(num_blocks):
                stage.append(InvertedResidual(channels, out_channels, stride if i == 0 else 1,
                                              expansion or expand_ratio))
                channels = out_channels
            self.blocks.append(nn.Sequential(*stage))
        last_channels = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = conv_bn_relu(channels, last_channels, 1, stride=1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(last_channels, num_classes))
        # The last stage at each resolution, as RepDistiller taps them.
        self.feature_modules = ["blocks.1", "blocks.2", "blocks.4", "blocks.6"]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)  # (B, 16, H/2, W/2) at width 0.5
        for stage in self.blocks:
            x = stage(x)  # ends (B, 160, H/16, W/16) at width 0.5
        x = self.conv2(x)  # (B, 1280, H/16, W/16)
        x = self.avgpool(x).flatten(1)  # (B, 1280)
        return self.classifier(x)  # (B, num_classes)


def mobilenetv2(num_classes: int, in_channels: int = 3, image_size: int = 32) -> MobileNetV2:
    """MobileNetV2 for CIFAR at width 0.5, expansion 6 (the CRD zoo's student)."""
    return MobileNetV2(num_classes, in_channels, width_mult=0.5, expand_ratio=6)
