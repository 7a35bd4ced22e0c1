"""Hinton KD (Hinton, Vinyals, Dean 2015).

loss = (1 - alpha) * CE(y, s) + alpha * T^2 * KL(softmax(t / T) || softmax(s / T))

alpha weights the distillation (soft) term; (1 - alpha) weights the hard-label term. (mdistiller
and torchdistill write separate weights for the two terms; RepDistiller's -r/-b put no tie between
them. Here the two always sum to one.)
"""
import torch.nn.functional as F

from kdkit.losses import kd_loss
from kdkit.methods.base import Method


class KD(Method):
    hyperparameters = ("temperature", "alpha", "label_smoothing")
    paper = "softened teacher probabilities (Hinton, Vinyals, Dean 2015)"

    def __init__(self, student, teacher, temperature: float = 4.0, alpha: float = 0.9, label_smoothing: float = 0.0):
        super().__init__(student, teacher)
        self.temperature = temperature
        self.alpha = alpha
        self.label_smoothing = label_smoothing

    def terms(self, s, t, y, index):
        ce = F.cross_entropy(s.logits.float(), y, label_smoothing=self.label_smoothing)
        return {"ce": (1 - self.alpha, ce), "kd": (self.alpha, kd_loss(s.logits, t.logits, self.temperature))}
