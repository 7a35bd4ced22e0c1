"""Hinton knowledge-distillation loss.

Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network", 2015, section 2:
the student matches the teacher's temperature-softened distribution; gradients of the soft term
scale as 1/T^2, so the term is multiplied by T^2 to keep its weight comparable across temperatures.

Logit standardisation (Sun, Ren, Li, Wang, Cao, "Logit Standardization in Knowledge Distillation",
CVPR 2024, eq. 9 / Algorithm 1): each sample's logits are z-scored over the classes before the
temperature, Z(z) = (z - mean(z)) / std(z), for teacher and student alike, so the student matches
the teacher's logit relations rather than their range. std is the sample standard deviation
(ddof = 1) plus 1e-7, as in the authors' released code.
"""
import torch
import torch.nn.functional as F


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(t / T) || softmax(s / T)), averaged over the batch.

    student_logits, teacher_logits: (B, K). Returns a scalar. Computed in float32 whatever the
    autocast dtype, since the log-softmax of small differences loses precision in bf16.
    """
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=1)  # (B, K)
    log_p_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=1)  # (B, K)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


def standardize(logits: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """(z - mean(z)) / (std(z) + eps) over the classes, per sample (Sun et al. 2024), in float32. (B, K) -> (B, K)."""
    z = logits.float()
    return (z - z.mean(dim=1, keepdim=True)) / (z.std(dim=1, keepdim=True) + eps)
