"""FitNets: a regressor maps the student's guided layer onto the teacher's hint layer."""
from torch import nn

from kdkit.adapters import make_adapter
from kdkit.losses.feature import fitnet_loss
from kdkit.losses.kd import kd_loss
from kdkit.methods.features import COMMON, FeatureMethod
from kdkit.methods.hyper import ALPHA, TEMPERATURE, Hyper, Search

HINT_EPOCHS = Hyper("hint_epochs", "[0, inf)", "> 0 = two-stage FitNets, hint loss only for this many epochs, then KD",
                    Search(0.0, 5.0))


class FitNet(FeatureMethod):
    """FitNets (Romero et al., ICLR 2015): a regressor maps the student's guided layer to the
    teacher's hint layer, trained by the hint loss MSE(regressor(s), t) (eq. 3).

    One stage (hint_epochs = 0, as mdistiller and RepDistiller run it): ce_weight * CE + w * hint, w from
    feature_weight and feature_scale (features.py; paper: 100).
    Two stages (hint_epochs > 0, the paper's recipe): for the first hint_epochs only the hint loss
    trains the student up to the guided layer (and the regressor); then (1 - alpha) * CE +
    alpha * KD(T), the paper's stage 2 (section 2.3).
    """

    hyperparameters = (HINT_EPOCHS, TEMPERATURE, ALPHA) + COMMON
    paper = "hint layer + regressor, one or two stages (Romero et al., ICLR 2015)"
    paper_weight = 100.0
    pick = "middle"

    @classmethod
    def unused_hyperparameters(cls, cfg) -> set[str]:
        return set() if cfg.hint_epochs else {"temperature", "alpha"}  # one stage: no KD stage to read them

    def __init__(self, student, teacher, input_shape=None, student_layers: list[str] = (), teacher_layers: list[str] = (),
                 feature_weight: float = 1.0, ce_weight: float = 1.0, label_smoothing: float = 0.0,
                 feature_scale: str = "first_step",
                 hint_epochs: float = 0.0, temperature: float = 4.0, alpha: float = 0.9):
        super().__init__(student, teacher, input_shape, student_layers, teacher_layers, feature_weight, ce_weight, label_smoothing,
                         feature_scale)
        self.hint_epochs, self.temperature, self.alpha = hint_epochs, temperature, alpha
        self.regressors = nn.ModuleList(make_adapter(self.student_shapes[a], self.teacher_shapes[b])
                                        for a, b in zip(self.student_layers, self.teacher_layers))

    def terms(self, s, t, y, index):
        hint = sum(fitnet_loss(reg(fs), ft) for reg, (fs, ft) in zip(self.regressors, self.pairs(s, t)))
        if self.hint_epochs <= 0:
            return {"ce": (self.ce_weight, self.ce(s, y)), "hint": (self.feature_term_weight(hint), hint)}
        stage1 = self.epoch < self.hint_epochs
        return {"ce": (0.0 if stage1 else 1 - self.alpha, self.ce(s, y)),
                "kd": (0.0 if stage1 else self.alpha, kd_loss(s.logits, t.logits, self.temperature)),
                "hint": (self.feature_term_weight(hint) if stage1 else 0.0, hint)}
