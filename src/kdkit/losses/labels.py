"""Hard-label terms on batches where some samples have no label (unlabelled transfer data).

Unlabelled training samples carry the label UNLABELED (-100, torch's default ignore_index; kdkit.data.labels). Every
hard-label term of a method goes through `hard_ce`: the mean over the batch's labelled samples, and
0 on a batch that has none (with 1,000 labels among 60,000 images, about one batch of 128 in nine).
Terms that need a class for every sample (DKD's target mask, BKD's class weights) use
`known_labels`: the label where there is one, else the teacher's prediction. On fully labelled
batches both return exactly what they did without unlabelled data.
"""
import torch
import torch.nn.functional as F

from kdkit.data.labels import UNLABELED


def hard_ce(logits: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0, loss=None) -> torch.Tensor:
    """CE(y, logits) averaged over the samples with a label; 0 (with a zero gradient) when none has one.

    `loss`: another hard-label loss of (logits, y) that skips UNLABELED targets (any built on
    F.cross_entropy's mean), in place of plain CE. A NaN in the logits still gives a NaN loss.
    """
    value = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing) if loss is None else loss(logits, y)
    return torch.where((y != UNLABELED).any(), value, torch.zeros_like(value))


def known_labels(y: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """y, with each UNLABELED entry replaced by the teacher's predicted class. (B,) -> (B,)."""
    return torch.where(y == UNLABELED, teacher_logits.argmax(dim=1), y)
