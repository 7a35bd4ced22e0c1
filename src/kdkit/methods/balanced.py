"""Distillation for long-tailed data: the student must not inherit the head classes' dominance.

Both methods need the training split's class counts (`class_counts`, passed by the pipeline).

bkd   Balanced KD (Zhang, Chen, Hu, Peng, "Balanced Knowledge Distillation for Long-tailed
      Learning", 2021, arXiv 2104.10510): instance-balanced CE (plain CE: the head classes keep
      shaping the features) plus a class-balanced KD term. bkd_form=authors (the default) is the
      authors' released loss: the teacher's softened probabilities reweighted by the effective-number
      class weights (Cui et al. 2019) and renormalised, so every sample's target leans to the tail:
          loss = ce_weight * CE + kd_weight * T^2 mean_i KL(q_i || p_s^T),  q_i ∝ w ⊙ p_t^T(x_i)
      bkd_form=per_sample keeps the teacher's target and weights each sample's KL by its label's
      class weight instead, T^2 mean_i w_{y_i} KL(p_t^T || p_s^T): kdkit's first reading of the
      paper, with which docs/longtail.md's numbers were measured.
lakd  Logit-adjusted KD: the teacher's logits are made balanced (t - tau log pi, the post-hoc
      adjustment of Menon et al., ICLR 2021) and the student is trained with the logit-adjusted
      loss (CE on s + tau log pi), so its raw logits learn the balanced posterior and need no
      adjustment at test time. The KD term matches the raw student to the balanced teacher (both
      terms have their optimum at s = t - tau log pi; shifting the student too would count the
      prior twice).
          loss = (1 - alpha) * CE(s + tau log pi, y) + alpha * T^2 KL(softmax((t - tau log pi)/T) || softmax(s/T))
      With a teacher that is already balanced (teacher_sampler=class_balanced), use kd instead.
Both take logit_standardize: the KD term's logits z-scored (for lakd, after the teacher's adjustment;
Sun et al. 2024); the CE term keeps the raw logits.
"""
import torch

from kdkit.errors import KdkitError, unknown
from kdkit.losses.balanced import (balanced_kd_loss, effective_number_weights, logit_adjusted_kd_loss,
                                   per_sample_balanced_kd_loss, posthoc_adjust, with_log_prior)
from kdkit.losses.kd import kd_loss, standardize
from kdkit.methods.base import Method
from kdkit.methods.hyper import ALPHA, CE_WEIGHT, LOGIT_STANDARDIZE, TEMPERATURE, WEIGHT, Hyper, Search, around

KD_WEIGHT = Hyper("kd_weight", WEIGHT, "weight of the class-balanced KD term", around())
BKD_FORMS = ("authors", "per_sample")
BKD_FORM = Hyper("bkd_form", BKD_FORMS, "authors: distil from the teacher's probabilities reweighted by the class weights "
                 "and renormalised (Zhang et al.'s code); per_sample: weight each sample's KL by its label's class weight",
                 Search(choices=BKD_FORMS))


def _counts(class_counts, name):
    if class_counts is None:
        raise KdkitError(f"method {name} needs class_counts (the training split's samples per class)")
    return torch.as_tensor(list(class_counts), dtype=torch.float64)


class BKD(Method):
    hyperparameters = (TEMPERATURE, CE_WEIGHT, KD_WEIGHT, BKD_FORM, "cb_beta", "label_smoothing", LOGIT_STANDARDIZE)
    paper = "instance-balanced CE + class-balanced KD for long tails (Zhang, Chen, Hu, Peng 2021)"

    def __init__(self, student, teacher, temperature: float = 4.0, ce_weight: float = 1.0, kd_weight: float = 1.0,
                 bkd_form: str = "authors", cb_beta: float = 0.9999, label_smoothing: float = 0.0,
                 logit_standardize: bool = False, class_counts=None):
        super().__init__(student, teacher)
        if bkd_form not in BKD_FORMS:
            raise unknown("bkd_form", bkd_form, BKD_FORMS)
        self.temperature, self.ce_weight, self.kd_weight, self.label_smoothing = temperature, ce_weight, kd_weight, label_smoothing
        self.bkd_form, self.logit_standardize = bkd_form, logit_standardize
        self.register_buffer("class_weights", effective_number_weights(_counts(class_counts, "bkd"), cb_beta).float())

    def terms(self, s, t, y, index):
        ce = self.hard_ce(s.logits, y, self.label_smoothing)
        student, teacher = (standardize(s.logits), standardize(t.logits)) if self.logit_standardize else (s.logits, t.logits)
        if self.bkd_form == "authors":
            kd = balanced_kd_loss(student, teacher, self.class_weights, self.temperature)
        else:
            kd = per_sample_balanced_kd_loss(student, teacher, self.class_labels(y, t.logits), self.class_weights,
                                             self.temperature)
        return {"ce": (self.ce_weight, ce), "kd": (self.kd_weight, kd)}


class LAKD(Method):
    hyperparameters = (TEMPERATURE, ALPHA, "tau", LOGIT_STANDARDIZE)
    paper = "KD from a logit-adjusted (balanced) teacher to a logit-adjusted student (after Menon et al., ICLR 2021)"

    def __init__(self, student, teacher, temperature: float = 4.0, alpha: float = 0.9, tau: float = 1.0,
                 logit_standardize: bool = False, class_counts=None):
        super().__init__(student, teacher)
        self.temperature, self.alpha, self.tau, self.logit_standardize = temperature, alpha, tau, logit_standardize
        self.register_buffer("class_counts", _counts(class_counts, "lakd").float())

    def terms(self, s, t, y, index):
        ce = self.hard_ce(with_log_prior(s.logits, self.class_counts, self.tau), y)  # the logit-adjusted loss
        if self.logit_standardize:  # the balanced teacher, then both z-scored
            balanced = posthoc_adjust(t.logits, self.class_counts, self.tau)
            kd = kd_loss(standardize(s.logits), standardize(balanced), self.temperature)
        else:
            kd = logit_adjusted_kd_loss(s.logits, t.logits, self.class_counts, self.temperature, self.tau)
        return {"ce": (1 - self.alpha, ce), "kd": (self.alpha, kd)}
