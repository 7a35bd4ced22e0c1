"""Batch augmentation as pure tensor functions: each sample gets its own random draw, and the
whole batch is transformed by a few tensor ops (no Python loop over samples).

    "crop"       random translation by up to 2 pixels, zero fill (pad 2 + random 28x28 crop, MNIST)
    "crop_flip"  pad 4 + random crop, then horizontal flip with probability 1/2 (CIFAR)
    "flip"       horizontal flip with probability 1/2 only
    "none"       images returned unchanged

Random draws come from a CPU `torch.Generator`, so the same generator state gives the same
augmentation on every device. Works on uint8 or float images; padding is value 0. An augmentation
is a row of parameters (`draw`: shift dy, dx, flip) and its application (`apply`), so a view can
be recorded and replayed exactly (the teacher-output cache labels recorded views).
"""
import torch
import torch.nn.functional as F

from kdkit.errors import unknown

AUGMENTS = ("none", "flip", "crop", "crop_flip")
PADDING = {"crop": 2, "crop_flip": 4}


def crop(images: torch.Tensor, shifts: torch.Tensor, pad: int) -> torch.Tensor:
    """Each image moved by its own (dy, dx) in [-pad, pad], zero filled; (0, 0) is the identity.

    out[b, c, i, j] = images[b, c, i + dy[b], j + dx[b]], or 0 outside the image: the same as
    padding by `pad` and cropping the window at offset (pad + dy, pad + dx).
    """
    batch, _, height, width = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))  # (B, C, H + 2p, W + 2p)
    windows = padded.unfold(2, height, 1).unfold(3, width, 1)  # (B, C, 2p+1, 2p+1, H, W), a view
    offsets = shifts.to(images.device, torch.int64) + pad  # (B, 2) window corner in padded coords
    rows = torch.arange(batch, device=images.device)
    return windows[rows, :, offsets[:, 0], offsets[:, 1]]  # (B, C, H, W)


def random_crop(images: torch.Tensor, generator: torch.Generator, pad: int) -> torch.Tensor:
    """`crop` with shifts drawn uniformly from [-pad, pad] per sample and axis."""
    shifts = torch.randint(-pad, pad + 1, (len(images), 2), generator=generator)  # (B, 2)
    return crop(images, shifts, pad)


def flip(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Images whose mask entry is True (or 1) mirrored left-right; the others unchanged."""
    mask = mask.to(images.device, torch.bool).view(-1, 1, 1, 1)  # (B, 1, 1, 1)
    return torch.where(mask, images.flip(3), images)


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """`flip` with probability 1/2 per sample."""
    return flip(images, torch.rand(len(images), generator=generator) < 0.5)


def draw(count: int, generator: torch.Generator, augment: str) -> torch.Tensor:
    """(count, 3) int8 augmentation parameters, one row per image: shift dy, shift dx, flip (0/1).
    Drawn from the CPU `generator` (shifts first, then flips), so a recorded row replays exactly."""
    if augment not in AUGMENTS:
        raise unknown("augment", augment, AUGMENTS)
    params = torch.zeros(count, 3, dtype=torch.int8)  # (B, 3): dy, dx, flip
    if augment in PADDING:
        pad = PADDING[augment]
        params[:, :2] = torch.randint(-pad, pad + 1, (count, 2), generator=generator).to(torch.int8)
    if augment in ("flip", "crop_flip"):
        params[:, 2] = (torch.rand(count, generator=generator) < 0.5).to(torch.int8)
    return params


def apply(images: torch.Tensor, params: torch.Tensor, augment: str) -> torch.Tensor:
    """The augmentation `params` (from `draw`, on any device) describe, applied to a (B, C, H, W) batch."""
    if augment == "none":
        return images
    if augment in PADDING:
        images = crop(images, params[:, :2], PADDING[augment])
    if augment in ("flip", "crop_flip"):
        images = flip(images, params[:, 2])
    return images


def augment_batch(images: torch.Tensor, generator: torch.Generator, augment: str) -> torch.Tensor:
    """Apply the named augmentation (see AUGMENTS) to a (B, C, H, W) batch, drawn from `generator`."""
    return apply(images, draw(len(images), generator, augment), augment)
