"""Hinton KD (Hinton, Vinyals, Dean 2015).

loss = (1 - alpha) * CE(y, s) + alpha * T^2 * KL(softmax(t / T) || softmax(s / T))

alpha weights the distillation (soft) term; (1 - alpha) weights the hard-label term. (mdistiller
and torchdistill write separate weights for the two terms; RepDistiller's -r/-b put no tie between
them. Here the two always sum to one.)

rebalance_tau > 0 re-balances the teacher's soft targets for long-tailed data: its logits become
t - rebalance_tau * log(prior) (the teacher's probabilities divided by prior^tau and renormalised,
kdkit.losses.balanced.rebalance_soft_targets at T = 1), so the student is taught a balanced target.

logit_standardize z-scores the student's and the (re-balanced) teacher's logits before the temperature
(kdkit.losses.kd.standardize, Sun et al. 2024); the CE term keeps the raw logits.
"""
import torch

from kdkit.errors import KdkitError
from kdkit.losses import kd_loss, posthoc_adjust, standardize
from kdkit.methods.base import Method
from kdkit.methods.hyper import ALPHA, LOGIT_STANDARDIZE, TEMPERATURE, Hyper, Search

REBALANCE_TAU = Hyper("rebalance_tau", "[0, inf)", "> 0 re-balances the teacher's soft targets (logits - tau * log prior) "
                      "for long tails", Search(0.0, 2.0))


class KD(Method):
    hyperparameters = (TEMPERATURE, ALPHA, "label_smoothing", REBALANCE_TAU, LOGIT_STANDARDIZE)
    paper = "softened teacher probabilities (Hinton, Vinyals, Dean 2015)"

    def __init__(self, student, teacher, temperature: float = 4.0, alpha: float = 0.9, label_smoothing: float = 0.0,
                 rebalance_tau: float = 0.0, logit_standardize: bool = False, class_counts=None):
        super().__init__(student, teacher)
        self.temperature = temperature
        self.alpha = alpha
        self.label_smoothing = label_smoothing
        self.rebalance_tau = rebalance_tau
        self.logit_standardize = logit_standardize
        if rebalance_tau and class_counts is None:
            raise KdkitError("rebalance_tau needs class_counts (the training split's samples per class)")
        counts = torch.as_tensor(list(class_counts or [1]), dtype=torch.float32)
        self.register_buffer("class_counts", counts, persistent=False)

    def terms(self, s, t, y, index):
        ce = self.hard_ce(s.logits, y, self.label_smoothing)
        target = posthoc_adjust(t.logits, self.class_counts, self.rebalance_tau) if self.rebalance_tau else t.logits
        student = s.logits
        if self.logit_standardize:
            student, target = standardize(student), standardize(target)
        return {"ce": (1 - self.alpha, ce), "kd": (self.alpha, kd_loss(student, target, self.temperature))}
