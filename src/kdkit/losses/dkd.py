"""Decoupled knowledge distillation (DKD) loss.

Zhao, Cui, Song, Qiu, Liang, "Decoupled Knowledge Distillation", CVPR 2022, section 3.
The KD loss splits per sample into a target-class part and a non-target part (their Eq. 4):
    KL(p_t || p_s) = TCKD + (1 - p_t[gt]) * NCKD
TCKD is the KL between the binary distributions (p[gt], 1 - p[gt]); NCKD is the KL between the
distributions over the non-target classes, renormalised. DKD weights the two freely (Eq. 5):
    DKD = alpha * TCKD + beta * NCKD,  both at temperature T and scaled by T^2.
"""
import torch
import torch.nn.functional as F


def dkd_parts(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor,
              temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(TCKD, NCKD) per sample, each (B,), already multiplied by T^2.

    student_logits, teacher_logits: (B, K); target: (B,) class indices. Float32 throughout;
    log(1 - p[gt]) is computed as logsumexp(non-target) - logsumexp(all) so it stays finite
    when p[gt] -> 1.
    """
    gt = F.one_hot(target, student_logits.shape[1]).bool()  # (B, K)
    parts = {}
    for side, logits in (("s", student_logits), ("t", teacher_logits)):
        z = logits.float() / temperature  # (B, K)
        log_all = torch.logsumexp(z, dim=1)  # (B,)
        z_nontarget = z.masked_fill(gt, -1e4)  # (B, K); exp(-1e4) == 0 in float32
        log_rest = torch.logsumexp(z_nontarget, dim=1)  # (B,)
        log_binary = torch.stack([z[gt] - log_all, log_rest - log_all], dim=1)  # (B, 2): log p[gt], log(1 - p[gt])
        log_nontarget = z_nontarget - log_rest[:, None]  # (B, K): log of the renormalised non-target probs
        parts[side] = (log_binary, log_nontarget)
    (bin_s, nt_s), (bin_t, nt_t) = parts["s"], parts["t"]
    tckd = (bin_t.exp() * (bin_t - bin_s)).sum(dim=1)  # (B,)
    nckd = (nt_t.exp() * (nt_t - nt_s)).masked_fill(gt, 0.0).sum(dim=1)  # (B,)
    return tckd * temperature**2, nckd * temperature**2


def dkd_loss(student_logits, teacher_logits, target, temperature: float = 4.0, alpha: float = 1.0,
             beta: float = 8.0) -> torch.Tensor:
    """alpha * TCKD + beta * NCKD, averaged over the batch (the paper's CIFAR-100 defaults)."""
    tckd, nckd = dkd_parts(student_logits, teacher_logits, target, temperature)
    return (alpha * tckd + beta * nckd).mean()
