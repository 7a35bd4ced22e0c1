"""DIST loss: match the teacher's prediction relations, not its exact probabilities.

Huang, You, Wang, Qian, Xu, "Knowledge Distillation from A Stronger Teacher", NeurIPS 2022,
section 3 (eqs. 5-8). With p = softmax(z / T), the distance between two vectors is
1 - Pearson correlation, which ignores shifts and positive scalings of the student's predictions,
so a student need only rank and relate classes like a (much stronger) teacher, not copy its
confidence. Inter-class relation (eq. 6): per sample, across its K classes. Intra-class relation
(eq. 7): per class, across the B samples of the batch.
"""
import torch

# Added to the product of the two norms: a constant row (or column) has zero norm after centring,
# and its correlation is then taken as 0 rather than NaN. The official code uses the same 1e-8.
PEARSON_EPS = 1e-8


def pearson(a: torch.Tensor, b: torch.Tensor, dim: int) -> torch.Tensor:
    """Pearson correlation of a and b along `dim`, with PEARSON_EPS in the denominator."""
    a = a - a.mean(dim, keepdim=True)
    b = b - b.mean(dim, keepdim=True)
    return (a * b).sum(dim) / (a.norm(dim=dim) * b.norm(dim=dim) + PEARSON_EPS)


def dist_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0,
              beta: float = 1.0, gamma: float = 1.0) -> dict[str, torch.Tensor]:
    """T^2 * (beta * inter + gamma * intra), eq. 8; the paper's defaults are T = beta = gamma = 1.

    inter = mean_i (1 - pearson(p_s[i, :], p_t[i, :]))   (eq. 6, across classes of one sample)
    intra = mean_k (1 - pearson(p_s[:, k], p_t[:, k]))   (eq. 7, across samples of one class)

    student_logits, teacher_logits: (B, K). Returns dict(loss, inter, intra) of scalars; inter and
    intra are the unweighted relation losses (each in [0, 2]), loss carries T^2, beta and gamma.
    Computed in at least float32 whatever the autocast dtype (float64 stays float64).
    """
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    p_student = torch.softmax(student_logits.to(dtype) / temperature, dim=1)  # (B, K)
    p_teacher = torch.softmax(teacher_logits.to(dtype) / temperature, dim=1)  # (B, K)
    inter = (1 - pearson(p_student, p_teacher, dim=1)).mean()  # (B,) -> ()
    intra = (1 - pearson(p_student, p_teacher, dim=0)).mean()  # (K,) -> ()
    loss = temperature**2 * (beta * inter + gamma * intra)
    return dict(loss=loss, inter=inter, intra=intra)
