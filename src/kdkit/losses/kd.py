"""Hinton knowledge-distillation loss.

Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network", 2015, section 2:
the student matches the teacher's temperature-softened distribution; gradients of the soft term
scale as 1/T^2, so the term is multiplied by T^2 to keep its weight comparable across temperatures.
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
