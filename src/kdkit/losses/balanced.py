"""Losses for long-tailed (class-imbalanced) training and distillation: pure functions of tensors.

Notation: K classes, n_k training samples of class k (`counts`), prior pi_k = n_k / sum_j n_j,
logits z (B, K), labels y (B,).

Class-balanced weights (Cui, Jia, Lin, Song, Belongie, "Class-Balanced Loss Based on Effective
    Number of Samples", CVPR 2019): the effective number of n samples is
    E_n = (1 - beta^n) / (1 - beta) (Proposition 1, section 3); the class-balanced loss weights a
    sample of class y by 1 / E_{n_y} (section 4), normalised so the K weights sum to K.
Balanced softmax (Ren, Yu, Sheng, Ma, Zhao, Yi, Li, "Balanced Meta-Softmax for Long-Tailed Visual
    Recognition", NeurIPS 2020, eq. 4): the training likelihood is softmax(z + log pi), so that
    softmax(z) estimates the class-balanced posterior.
Logit adjustment (Menon, Jayasumana, Rawat, Jain, Veit, Kumar, "Long-tail learning via logit
    adjustment", ICLR 2021): post-hoc, predict argmax_y z_y - tau log pi_y (eq. 9); or train with
    CE on z + tau log pi (the logit-adjusted loss, eq. 10), whose raw logits then estimate the
    balanced posterior (tau = 1 gives exactly the balanced softmax).
Balanced KD (Zhang, Chen, Hu, Peng, "Balanced Knowledge Distillation for Long-tailed Learning",
    arXiv 2104.10510, 2021, section 3): instance-balanced CE plus a class-balanced KD term, whose
    target is the teacher's softened distribution reweighted by the class weights and renormalised.

Every loss is computed in at least float32 whatever the autocast dtype (float64 stays float64);
counts and weights are taken in float64 and cast to that dtype, on the logits' device.
"""
import torch
import torch.nn.functional as F

from kdkit.errors import KdkitError


def _dtype(x: torch.Tensor) -> torch.dtype:
    """The compute dtype for `x`: float32 at least, float64 kept."""
    return torch.promote_types(x.dtype, torch.float32)


def _counts(counts) -> torch.Tensor:
    """(K,) float64 class counts from a list, array or tensor; each must be positive."""
    counts = torch.as_tensor(counts).detach().to("cpu", torch.float64)
    if counts.ndim != 1 or len(counts) == 0:
        raise KdkitError(f"class counts must be one number per class, got shape {tuple(counts.shape)}; "
                         "pass the training split's samples per class")
    if not bool(torch.isfinite(counts).all()) or bool((counts <= 0).any()):
        k = int(torch.nonzero(~(counts > 0) | ~torch.isfinite(counts))[0])
        raise KdkitError(f"class {k} has count {counts[k].item():g}; every class needs at least one "
                         "training sample (drop empty classes or use a milder imbalance)")
    return counts


def _log_prior(counts, like: torch.Tensor) -> torch.Tensor:
    """(1, K) log pi in the compute dtype of `like`, on its device."""
    counts = _counts(counts)
    log_pi = torch.log(counts / counts.sum())  # (K,) float64
    return log_pi.to(like.device, _dtype(like)).unsqueeze(0)


def _per_sample(weights, y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) w_{y_i} in the compute dtype of `like`."""
    weights = torch.as_tensor(weights).to(like.device, _dtype(like))  # (K,)
    return weights.index_select(0, y.to(like.device))


def effective_number_weights(counts, beta: float = 0.9999) -> torch.Tensor:
    """(K,) float64 w_k = (1 - beta) / (1 - beta^{n_k}), scaled so that sum_k w_k = K (Cui et al.).

    beta = 0 gives all ones; beta -> 1 approaches inverse class frequency. 0.9999 is the value the
    paper uses for CIFAR-LT.
    """
    if not 0.0 <= beta < 1.0:
        raise KdkitError(f"beta must be in [0, 1), got {beta}; e.g. 0.9999 (Cui et al.'s CIFAR-LT value)")
    counts = _counts(counts)
    weights = (1.0 - beta) / (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), counts))  # (K,)
    return weights * (len(counts) / weights.sum())


def class_prior(counts) -> torch.Tensor:
    """(K,) float64 pi_k = n_k / sum_j n_j."""
    counts = _counts(counts)
    return counts / counts.sum()


def logit_adjusted_loss(logits: torch.Tensor, y: torch.Tensor, counts, tau: float = 1.0) -> torch.Tensor:
    """Menon et al. eq. 10: mean_i CE(z_i + tau log pi, y_i). logits (B, K), y (B,); a scalar.

    The raw logits z learn the balanced posterior (at tau = 1), so they are used at test time as
    they are, with no post-hoc step.
    """
    return F.cross_entropy(with_log_prior(logits, counts, tau), y)


def with_log_prior(logits: torch.Tensor, counts, tau: float = 1.0) -> torch.Tensor:
    """z + tau log pi, (B, K) -> (B, K), in at least float32: the logits whose CE is the
    logit-adjusted loss (Menon et al. eq. 10), and at tau = 1 the balanced softmax (Ren et al. eq. 4)."""
    return logits.to(_dtype(logits)) + tau * _log_prior(counts, logits)


def balanced_softmax_loss(logits: torch.Tensor, y: torch.Tensor, counts) -> torch.Tensor:
    """Ren et al. eq. 4: mean_i CE(z_i + log pi, y_i), i.e. the logit-adjusted loss at tau = 1.

    logits (B, K), y (B,); returns a scalar.
    """
    return logit_adjusted_loss(logits, y, counts, 1.0)


def posthoc_adjust(logits: torch.Tensor, counts, tau: float = 1.0) -> torch.Tensor:
    """Menon et al. eq. 9: z - tau log pi, (B, K) -> (B, K), in at least float32.

    For a model trained with plain CE on long-tailed data; its argmax is the balanced prediction.
    A constant shift per class: it changes the ranking of classes, never the logits' spread.
    """
    logits = torch.as_tensor(logits)
    return logits.to(_dtype(logits)) - tau * _log_prior(counts, logits)


def class_balanced_ce(logits: torch.Tensor, y: torch.Tensor, weights) -> torch.Tensor:
    """Cui et al.'s class-balanced softmax CE: mean_i w_{y_i} CE(z_i, y_i). logits (B, K), y (B,).

    `weights` (K,) are usually effective_number_weights(counts, beta). The batch mean divides by B,
    as the paper's loss does, not by sum_i w_{y_i} as F.cross_entropy(weight=...) would: with that
    normalisation a batch of only tail samples would weigh as much as one of only head samples.
    """
    ce = F.cross_entropy(logits.to(_dtype(logits)), y, reduction="none")  # (B,)
    return (_per_sample(weights, y, logits) * ce).mean()


def balanced_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, weights,
                     temperature: float) -> torch.Tensor:
    """Zhang et al.'s class-balanced KD term: T^2 * mean_i KL(q_i || p_s^T(x_i)), p^T = softmax(z / T),
    with the teacher's softened distribution reweighted per class and renormalised,

        q_i = w ⊙ p_t^T(x_i) / sum_k w_k p_t^T(x_i)_k,   i.e.  q_i = softmax(t_i / T + log w),

    as the authors' released loss computes it (Balanced KD, section 3; the instance-balanced CE that
    BKD adds is plain CE, applied by the method). The tail classes get more of every sample's target
    mass, whatever the sample's label, so no label is needed (unlabelled samples distil too). The
    target has the shape of rebalance_soft_targets with w in place of pi^-tau. With all weights 1
    this is kd_loss.

    student_logits, teacher_logits: (B, K); weights: (K,), positive (effective_number_weights).
    Returns a scalar.
    """
    dtype = _dtype(student_logits)
    log_weights = torch.log(torch.as_tensor(weights).to(student_logits.device, dtype))  # (K,)
    log_target = F.log_softmax(teacher_logits.to(dtype) / temperature + log_weights, dim=1)  # (B, K) log q
    log_p_student = F.log_softmax(student_logits.to(dtype) / temperature, dim=1)  # (B, K)
    kl = (log_target.exp() * (log_target - log_p_student)).sum(dim=1)  # (B,)
    return temperature**2 * kl.mean()


def per_sample_balanced_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, y: torch.Tensor,
                                weights, temperature: float) -> torch.Tensor:
    """T^2 * mean_i w_{y_i} KL(p_t^T(x_i) || p_s^T(x_i)): each sample's KL weighted by its label's weight.

    kdkit's first reading of Balanced KD (bkd_form=per_sample), kept because the long-tail numbers
    in docs/longtail.md were measured with it. It differs from the authors' balanced_kd_loss: the
    target stays the teacher's own p_t^T, and only how much each sample counts changes, so a
    head-class sample's soft target still favours the head classes. With all weights 1 this is kd_loss.

    student_logits, teacher_logits: (B, K); y: (B,); weights: (K,). Returns a scalar.
    """
    dtype = _dtype(student_logits)
    log_p_student = F.log_softmax(student_logits.to(dtype) / temperature, dim=1)  # (B, K)
    log_p_teacher = F.log_softmax(teacher_logits.to(dtype) / temperature, dim=1)  # (B, K)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=1)  # (B,)
    return temperature**2 * (_per_sample(weights, y, student_logits) * kl).mean()


def logit_adjusted_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, counts,
                           temperature: float, tau: float = 1.0) -> torch.Tensor:
    """KD from a balanced teacher: T^2 * mean_i KL(softmax((t_i - tau log pi) / T) || softmax(s_i / T)).

    The teacher, trained with plain CE on the long-tailed data, estimates the training posterior
    p(y|x) ∝ p_bal(y|x) pi_y; Menon et al.'s post-hoc adjustment (eq. 9), t - tau log pi, makes it
    the balanced one. The student's raw logits are matched to it directly, so their minimiser is
    s = t - tau log pi + const: the same balanced posterior that the logit-adjusted CE (eq. 10)
    teaches the raw logits. The two terms therefore agree, and the student is evaluated on its
    raw logits with no post-hoc step.

    Why the student's logits are not also shifted by + tau log pi here: the shift belongs to a
    target drawn from the training distribution (the one-hot labels of eq. 10, or the unadjusted
    teacher: KL(softmax(t / T) || softmax((s + tau log pi) / T)) has the same minimiser). Against
    the already balanced target it would count the prior twice (minimiser s = t - 2 tau log pi)
    and pull the raw logits past the balanced posterior, against the logit-adjusted CE.

    tau = 0 gives kd_loss; use it when the teacher is already balanced (class-balanced sampling or
    a balanced loss). student_logits, teacher_logits: (B, K); returns a scalar.
    """
    dtype = _dtype(student_logits)
    target = teacher_logits.to(dtype) - tau * _log_prior(counts, student_logits)  # (B, K) balanced
    log_p_student = F.log_softmax(student_logits.to(dtype) / temperature, dim=1)  # (B, K)
    log_p_teacher = F.log_softmax(target / temperature, dim=1)  # (B, K)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


def rebalance_soft_targets(teacher_probs: torch.Tensor, counts, tau: float = 1.0) -> torch.Tensor:
    """(B, K) q ∝ p_t / pi^tau, each row renormalised to sum to 1: re-balanced soft targets.

    The probability form of Menon et al.'s post-hoc adjustment (eq. 9):
    rebalance_soft_targets(softmax(t), counts, tau) == softmax(posthoc_adjust(t, counts, tau)).
    """
    probs = teacher_probs.to(_dtype(teacher_probs))  # (B, K)
    scaled = probs * torch.exp(-tau * _log_prior(counts, teacher_probs))  # (B, K)
    return scaled / scaled.sum(dim=1, keepdim=True)
