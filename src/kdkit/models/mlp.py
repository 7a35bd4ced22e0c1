"""Multi-layer perceptron on the flattened image.

Layout: flatten -> input dropout -> [Linear -> ReLU -> Dropout] per hidden width -> Linear.
The MNIST nets of Hinton, Vinyals, Dean 2015, "Distilling the Knowledge in a Neural Network",
section 3, are registered by name: `hinton-teacher` (1200-1200, dropout 0.2 on the input and 0.5 on
the hidden units, as in Hinton et al. 2012) and `hinton-student` (800-800, no dropout; the same net
as `mlp-800-800`). The teacher's max-norm constraint and 2-pixel jitter are training settings
(`max_norm`, `augment: crop`), not part of the architecture.
"""
import torch
import torch.nn as nn

from kdkit.errors import KdkitError


class MLP(nn.Module):
    def __init__(self, in_features: int, num_classes: int, widths=(256,), dropout: float = 0.0,
                 input_dropout: float = 0.0):
        super().__init__()
        widths = tuple(widths)
        if any(not isinstance(w, int) or w < 1 for w in widths):
            raise KdkitError(f"MLP widths must be positive integers, got {widths}")
        self.input_dropout = nn.Dropout(input_dropout)
        blocks, width_in = [], in_features
        for width in widths:
            blocks.append(nn.Sequential(nn.Linear(width_in, width), nn.ReLU(), nn.Dropout(dropout)))
            width_in = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(width_in, num_classes)
        self.feature_modules = [f"blocks.{i}" for i in range(len(widths))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_dropout(x.flatten(1))  # (B, C*H*W)
        x = self.blocks(x)  # (B, widths[-1])
        return self.fc(x)  # (B, num_classes)


def mlp(num_classes: int, in_channels: int = 3, image_size: int = 32, widths=(256,),
        dropout: float = 0.0, input_dropout: float = 0.0) -> MLP:
    """MLP on the flattened image: hidden Linear-ReLU-Dropout blocks of the given widths (default 256)."""
    return MLP(in_channels * image_size * image_size, num_classes, widths, dropout, input_dropout)


def hinton_teacher(num_classes: int, in_channels: int = 3, image_size: int = 32) -> MLP:
    """Hinton et al. 2015 MNIST teacher: MLP 1200-1200, dropout 0.2 on the input, 0.5 on hidden units."""
    return mlp(num_classes, in_channels, image_size, widths=(1200, 1200), dropout=0.5, input_dropout=0.2)


def hinton_student(num_classes: int, in_channels: int = 3, image_size: int = 32) -> MLP:
    """Hinton et al. 2015 MNIST student: MLP 800-800, no dropout (the same net as mlp-800-800)."""
    return mlp(num_classes, in_channels, image_size, widths=(800, 800))
