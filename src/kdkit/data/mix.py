"""Mixing two training images into one (mixup, CutMix) as pure tensor functions, drawn per sample
so that a mixed view can be recorded and replayed exactly (the teacher-output cache records them).

    mixup   x = lam * x_a + (1 - lam) * x_b, lam ~ Beta(alpha, alpha)
            (Zhang, Cisse, Dauphin, Lopez-Paz, "mixup: Beyond Empirical Risk Minimization", ICLR 2018, eq. 1)
    cutmix  x = x_a with a box of x_b pasted in; the box covers 1 - lam0 of the image, lam0 ~ Beta(alpha, alpha),
            centred uniformly at random and clipped to the image, and lam is the area of x_a that is kept
            (Yun, Han, Oh, Chun, Choe, Yoo, "CutMix: Regularization Strategy to Train Strong Classifiers with
            Localizable Features", ICCV 2019, eq. 1 and section 3.1)
    none    images unchanged

Why in a distillation toolkit: "function matching" (Beyer, Zhai, Royer, Markeeva, Anil, Kolesnikov,
"Knowledge distillation: A good teacher is patient and consistent", CVPR 2022): the teacher labels
the very image the student trains on (consistent), so mixed images, which are far from the training
images, widen the support on which the student matches the teacher's function. The teacher runs on
the mixed batch itself (online), or the cache stores its outputs on recorded mixed views.

A mix is a row per sample (`draw_mix`): lam, the share of the sample's own image, and for cutmix the
box (y0, y1, x0, x1) of the partner's pixels; `apply_mix` mixes two batches by those rows. Each sample
has its own lam (timm's "elem" mode; the papers draw one per batch): a recorded view must be a
property of one sample, since the cache replays a sample's view in whatever batch it lands in.
Draws come from a numpy Generator (Beta has no torch.Generator sampler), so they are the same on
every device. The hard-label term on a mixed batch is kdkit.losses.labels.mixed_ce.
"""
import dataclasses

import numpy as np
import torch

from kdkit.errors import unknown

MIXES = ("none", "mixup", "cutmix")


@dataclasses.dataclass
class Mixing:
    """How each sample of a batch was mixed: the method's hard-label terms read it (Method.mixing)."""

    partner: torch.Tensor  # (B,) int64 train-split position of the second image
    partner_labels: torch.Tensor  # (B,) its label (UNLABELED for an unlabelled one)
    lam: torch.Tensor  # (B,) float32 share of the sample's own image (cutmix: its kept area)

    def map(self, fn) -> "Mixing":
        """The same mixing with `fn` applied to every tensor (e.g. distributed.shard)."""
        return Mixing(*(fn(getattr(self, f.name)) for f in dataclasses.fields(self)))


def draw_mix(count: int, rng: np.random.Generator, mix: str, alpha: float, height: int, width: int):
    """(lam (count,) float32, box (count, 4) int16 y0, y1, x0, x1) for `count` samples of an
    height x width image. mixup: lam ~ Beta(alpha, alpha), empty boxes. cutmix: Yun et al.'s box
    (side sqrt(1 - lam0) of the image's, centre uniform, clipped), lam = 1 - its area fraction."""
    if mix not in MIXES:
        raise unknown("mix", mix, MIXES)
    lam = rng.beta(alpha, alpha, size=count) if mix != "none" else np.ones(count)  # (count,) float64
    box = np.zeros((count, 4), dtype=np.int64)
    if mix == "cutmix":
        cut = np.sqrt(1.0 - lam)
        half_h, half_w = (height * cut).astype(np.int64) // 2, (width * cut).astype(np.int64) // 2
        cy, cx = rng.integers(0, height, size=count), rng.integers(0, width, size=count)
        box = np.stack([np.clip(cy - half_h, 0, height), np.clip(cy + half_h, 0, height),
                        np.clip(cx - half_w, 0, width), np.clip(cx + half_w, 0, width)], axis=1)  # (count, 4)
        lam = 1.0 - (box[:, 1] - box[:, 0]) * (box[:, 3] - box[:, 2]) / (height * width)
    return torch.from_numpy(lam.astype(np.float32)), torch.from_numpy(box.astype(np.int16))


def apply_mix(first: torch.Tensor, second: torch.Tensor, lam: torch.Tensor, box: torch.Tensor, mix: str) -> torch.Tensor:
    """(B, C, H, W) float batches `first` and `second` (mixup: any (B, ...)) mixed sample by sample as `draw_mix`'s rows say."""
    if mix == "none":
        return first
    if mix == "mixup":
        share = lam.to(first.device, first.dtype).view(-1, *[1] * (first.dim() - 1))  # (B, 1, 1, 1)
        return first * share + second * (1 - share)
    box = box.to(first.device, torch.int64)
    rows = torch.arange(first.shape[2], device=first.device)  # (H,)
    cols = torch.arange(first.shape[3], device=first.device)  # (W,)
    in_rows = (rows >= box[:, :1]) & (rows < box[:, 1:2])  # (B, H)
    in_cols = (cols >= box[:, 2:3]) & (cols < box[:, 3:])  # (B, W)
    inside = in_rows[:, None, :, None] & in_cols[:, None, None, :]  # (B, 1, H, W)
    return torch.where(inside, second, first)
