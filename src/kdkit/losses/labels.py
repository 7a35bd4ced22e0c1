"""Hard-label terms on batches where some samples have no label (unlabelled transfer data).

Unlabelled training samples carry the label UNLABELED (-100, torch's default ignore_index; kdkit.data.labels). Every
hard-label term of a method goes through `hard_ce`: the mean over the batch's labelled samples, and
0 on a batch that has none (with 1,000 labels among 60,000 images, about one batch of 128 in nine).
Terms that need a class for every sample (DKD's target mask, BKD's class weights) use
`known_labels`: the label where there is one, else the teacher's prediction. On fully labelled
batches both return exactly what they did without unlabelled data.

On a mixed batch (mixup, cutmix: kdkit.data.mix) each sample is lam of its own image and 1 - lam of
a partner's, and its hard-label term is `mixed_ce`: lam CE(y) + (1 - lam) CE(y_partner), where an
unlabelled side drops out (see there). Methods reach both through `Method.hard_ce`.
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


def mixed_ce(logits: torch.Tensor, y: torch.Tensor, partner_y: torch.Tensor, lam: torch.Tensor,
             label_smoothing: float = 0.0, class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Hard-label CE on a mixed batch: sample i, made of lam_i of its own image and 1 - lam_i of its
    partner's, scores lam_i CE(z_i, y_i) + (1 - lam_i) CE(z_i, y'_i) (Zhang et al., mixup, ICLR 2018,
    eq. 1; Yun et al., CutMix, ICCV 2019, eq. 1, lam = the kept area). An UNLABELED side drops out,
    and the sum is divided by the shares that remain, so it is a share-weighted mean over labelled sides:

        sum_i [s_i w_{y_i} CE(z_i, y_i) + s'_i w_{y'_i} CE(z_i, y'_i)] / sum_i (s_i + s'_i),
        s_i = lam_i [y_i labelled],  s'_i = (1 - lam_i) [y'_i labelled]

    A fully labelled batch gives mean_i [lam_i CE_i + (1 - lam_i) CE'_i] (the papers' loss); with every
    lam 1 it is `hard_ce`; a batch with no labelled side gives 0 with a zero gradient. `class_weights`
    (K,): w, the class-balanced CE's per-class weights (Cui et al. 2019; divided by the shares, as
    class_balanced_ce divides by B); 1 without. logits (B, K); y, partner_y (B,); lam (B,). A scalar.
    """
    z = logits.float()
    total = torch.zeros((), device=z.device)
    shares = torch.zeros((), device=z.device)
    for labels, share in ((y, lam), (partner_y, 1 - lam)):
        share = share.to(z) * (labels != UNLABELED)  # (B,)
        ce = F.cross_entropy(z, labels, reduction="none", label_smoothing=label_smoothing)  # (B,) 0 where unlabelled
        weight = share if class_weights is None else share * class_weights.to(z)[labels.clamp_min(0)]
        total = total + (weight * ce).sum()
        shares = shares + share.sum()
    return total / torch.where(shares > 0, shares, torch.ones_like(shares))
