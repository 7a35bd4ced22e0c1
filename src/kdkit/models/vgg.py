"""VGG with batch norm for CIFAR (Simonyan & Zisserman 2015), as in the CRD model zoo.

Layout: five blocks of [conv3x3 -> BN -> ReLU] (64, 128, 256, 512, 512 channels), a 2x2 max-pool
after each of the first three (and after the fourth for inputs >= 64 pixels), global average pool,
one FC layer (no big FC head). Layers per block: vgg8 1-1-1-1-1, vgg11 1-1-2-2-2, vgg13 2-2-2-2-2.
Parameter counts and state_dict keys match HobbitLong/RepDistiller models/vgg.py (`vgg8_bn` etc.).
"""
import torch
import torch.nn as nn

VGG_BLOCKS = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
}


def conv_block(in_channels: int, widths) -> nn.Sequential:
    """[conv3x3 (with bias) -> BN -> ReLU] per width; indices 0, 1, 3, 4 ... as in RepDistiller."""
    layers = []
    for width in widths:
        layers += [nn.Conv2d(in_channels, width, kernel_size=3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
        in_channels = width
    return nn.Sequential(*layers)


class VGG(nn.Module):
    def __init__(self, blocks, num_classes: int, in_channels: int = 3, image_size: int = 32):
        super().__init__()
        self.block0 = conv_block(in_channels, blocks[0])
        self.pool0 = nn.MaxPool2d(2)
        self.block1 = conv_block(blocks[0][-1], blocks[1])
        self.pool1 = nn.MaxPool2d(2)
        self.block2 = conv_block(blocks[1][-1], blocks[2])
        self.pool2 = nn.MaxPool2d(2)
        self.block3 = conv_block(blocks[2][-1], blocks[3])
        # At 32x32 the last two blocks both run at 4x4; larger inputs (e.g. 64x64) get a fourth pool.
        self.pool3 = nn.MaxPool2d(2) if image_size >= 64 else nn.Identity()
        self.block4 = conv_block(blocks[3][-1], blocks[4])
        self.pool4 = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(blocks[4][-1], num_classes)
        self.feature_modules = ["block0", "block1", "block2", "block3", "block4"]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool0(self.block0(x))  # (B, 64, H/2, W/2)
        x = self.pool1(self.block1(x))  # (B, 128, H/4, W/4)
        x = self.pool2(self.block2(x))  # (B, 256, H/8, W/8)
        x = self.pool3(self.block3(x))  # (B, 512, H/8, W/8), or H/16 for image_size >= 64
        x = self.block4(x)  # (B, 512, ., .)
        x = self.pool4(x).flatten(1)  # (B, 512)
        return self.classifier(x)  # (B, num_classes)


def vgg8(num_classes: int, in_channels: int = 3, image_size: int = 32) -> VGG:
    """VGG-8 with BN for CIFAR: one conv per block, 64-128-256-512-512, one FC."""
    return VGG(VGG_BLOCKS["vgg8"], num_classes, in_channels, image_size)


def vgg11(num_classes: int, in_channels: int = 3, image_size: int = 32) -> VGG:
    """VGG-11 with BN for CIFAR: convs per block 1-1-2-2-2, 64-128-256-512-512, one FC."""
    return VGG(VGG_BLOCKS["vgg11"], num_classes, in_channels, image_size)


def vgg13(num_classes: int, in_channels: int = 3, image_size: int = 32) -> VGG:
    """VGG-13 with BN for CIFAR: two convs per block, 64-128-256-512-512, one FC."""
    return VGG(VGG_BLOCKS["vgg13"], num_classes, in_channels, image_size)
