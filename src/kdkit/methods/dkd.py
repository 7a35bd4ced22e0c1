"""DKD: decoupled KD, target and non-target parts weighted separately (Zhao et al. 2022).

loss = ce_weight * CE(y, s) + warmup * (dkd_alpha * TCKD + dkd_beta * NCKD)
warmup ramps linearly from 0 to 1 over kd_warmup_epochs (the paper: 20 of 240 epochs).
"""
import torch.nn.functional as F

from kdkit.losses.dkd import dkd_parts
from kdkit.methods.base import Method


class DKD(Method):
    hyperparameters = ("temperature", "dkd_alpha", "dkd_beta", "ce_weight", "kd_warmup_epochs", "label_smoothing")
    paper = "target and non-target KD weighted apart (Zhao et al., CVPR 2022)"

    def __init__(self, student, teacher, temperature: float = 4.0, dkd_alpha: float = 1.0, dkd_beta: float = 8.0,
                 ce_weight: float = 1.0, kd_warmup_epochs: float = 0.0, label_smoothing: float = 0.0):
        super().__init__(student, teacher)
        self.temperature, self.dkd_alpha, self.dkd_beta = temperature, dkd_alpha, dkd_beta
        self.ce_weight, self.kd_warmup_epochs, self.label_smoothing = ce_weight, kd_warmup_epochs, label_smoothing

    def terms(self, s, t, y, index):
        ce = F.cross_entropy(s.logits.float(), y, label_smoothing=self.label_smoothing)
        tckd, nckd = dkd_parts(s.logits, t.logits, y, self.temperature)
        warmup = min(self.epoch / self.kd_warmup_epochs, 1.0) if self.kd_warmup_epochs > 0 else 1.0
        return {"ce": (self.ce_weight, ce), "tckd": (warmup * self.dkd_alpha, tckd.mean()),
                "nckd": (warmup * self.dkd_beta, nckd.mean())}
