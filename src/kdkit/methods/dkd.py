"""DKD: decoupled KD, target and non-target parts weighted separately (Zhao et al. 2022).

loss = ce_weight * CE(y, s) + warmup * (dkd_alpha * TCKD + dkd_beta * NCKD)
warmup ramps linearly from 0 to 1 over kd_warmup_epochs (the paper: 20 of 240 epochs).
logit_standardize z-scores both models' logits before TCKD and NCKD (Sun et al. 2024, DKD + LS).
"""

from kdkit.losses.dkd import dkd_parts
from kdkit.losses.kd import standardize
from kdkit.methods.base import Method
from kdkit.methods.hyper import CE_WEIGHT, LOGIT_STANDARDIZE, TEMPERATURE, WEIGHT, Hyper, Search, around

DKD_ALPHA = Hyper("dkd_alpha", WEIGHT, "weight of the target-class part TCKD (Zhao et al. 2022: 1.0)", around())
DKD_BETA = Hyper("dkd_beta", WEIGHT, "weight of the non-target part NCKD (Zhao et al. 2022: 8.0 on CIFAR-100)", around(),
                 tuned=True)
KD_WARMUP_EPOCHS = Hyper("kd_warmup_epochs", "[0, inf)", "ramp the KD part linearly from 0 over this many epochs "
                         "(paper: 20 of 240)", Search(0.0, 5.0))


class DKD(Method):
    hyperparameters = (TEMPERATURE, DKD_ALPHA, DKD_BETA, CE_WEIGHT, KD_WARMUP_EPOCHS, "label_smoothing", LOGIT_STANDARDIZE)
    paper = "target and non-target KD weighted apart (Zhao et al., CVPR 2022)"

    def __init__(self, student, teacher, temperature: float = 4.0, dkd_alpha: float = 1.0, dkd_beta: float = 8.0,
                 ce_weight: float = 1.0, kd_warmup_epochs: float = 0.0, label_smoothing: float = 0.0,
                 logit_standardize: bool = False):
        super().__init__(student, teacher)
        self.temperature, self.dkd_alpha, self.dkd_beta = temperature, dkd_alpha, dkd_beta
        self.ce_weight, self.kd_warmup_epochs, self.label_smoothing = ce_weight, kd_warmup_epochs, label_smoothing
        self.logit_standardize = logit_standardize

    def terms(self, s, t, y, index):
        ce = self.hard_ce(s.logits, y, self.label_smoothing)
        student, teacher = (standardize(s.logits), standardize(t.logits)) if self.logit_standardize else (s.logits, t.logits)
        tckd, nckd = dkd_parts(student, teacher, self.class_labels(y, t.logits), self.temperature)
        warmup = min(self.epoch / self.kd_warmup_epochs, 1.0) if self.kd_warmup_epochs > 0 else 1.0
        return {"ce": (self.ce_weight, ce), "tckd": (warmup * self.dkd_alpha, tckd.mean()),
                "nckd": (warmup * self.dkd_beta, nckd.mean())}
