"""Your own DataLoader of images, and your own batch transform: a torch Dataset of 8x8 digit images
as float tensors in [0, 1] (what torchvision's ToTensor gives), batched by a DataLoader; kdkit reads
it once into memory (then trains on its fast path) and applies the transform, any callable on a float
batch (B, C, H, W) in [0, 1] as torchvision v2 and kornia transforms are, to every training batch
that teacher and student see.

    python examples/dataloader_images.py
"""
import torch
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset

import kdkit


class RandomShift:
    """A torchvision-v2-style transform on a batch: shift every image by up to `pixels` pixels."""

    def __init__(self, pixels: int = 1, seed: int = 0):
        self.pixels, self.generator = pixels, torch.Generator().manual_seed(seed)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) float in [0, 1]
        dy, dx = (int(v) for v in torch.randint(-self.pixels, self.pixels + 1, (2,), generator=self.generator))
        return torch.roll(batch, shifts=(dy, dx), dims=(2, 3))


def loaders():
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16  # (1797, 1, 8, 8) in [0, 1]
    y = torch.tensor(digits.target)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    parts = order[:1200], order[1200:1500], order[1500:]
    return [DataLoader(TensorDataset(x[p], y[p]), batch_size=100, shuffle=i == 0) for i, p in enumerate(parts)]


def main(epochs: int = 3):
    train, val, test = loaders()
    result = kdkit.distill("cnn", "cnn-tiny", train, val, test=test, epochs=epochs, teacher_epochs=epochs, batch_size=64,
                           seeds=[0], transform=RandomShift(1))
    print(result.table)
    return result


if __name__ == "__main__":
    main()
