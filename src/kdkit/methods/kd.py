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

    def __init__(self, student, teacher, temperature: float = 4.0, alpha: float = 0.9, label_smoothing: float = 0.0):
        super().__init__(student, teacher)
        self.temperature = temperature
        self.alpha = alpha
        self.label_smoothing = label_smoothing

    def forward(self, x, y):
        teacher_logits = self.teacher_logits(x)  # the same (augmented) view the student sees
        logits = self.student(x)
        ce = F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)
        kd = kd_loss(logits, teacher_logits, self.temperature)
        loss = (1 - self.alpha) * ce + self.alpha * kd
        return dict(loss=loss, logits=logits, ce=ce, kd=kd)
