"""NST: neuron selectivity transfer, MMD between the two models' activation patterns."""
from kdkit.losses.feature import nst_loss
from kdkit.methods.features import COMMON, FeatureMethod


class NST(FeatureMethod):
    """Neuron selectivity transfer (Huang & Wang 2017, eq. 4): MMD with a polynomial kernel between
    the distributions of the channels' (normalised) activation patterns, every stage; no adapter."""

    hyperparameters = COMMON
    paper = "MMD between neuron activation patterns (Huang & Wang 2017)"
    paper_weight = 50.0
    pick = "spatial"

    def __init__(self, student, teacher, input_shape=None, student_layers: list[str] = (), teacher_layers: list[str] = (),
                 feature_weight: float = 1.0, ce_weight: float = 1.0, label_smoothing: float = 0.0,
                 feature_scale: str = "first_step"):
        super().__init__(student, teacher, input_shape, student_layers, teacher_layers, feature_weight, ce_weight, label_smoothing,
                         feature_scale)

    def terms(self, s, t, y, index):
        nst = sum(nst_loss(fs, ft) for fs, ft in self.pairs(s, t))
        return {"ce": (self.ce_weight, self.ce(s, y)), "nst": (self.feature_term_weight(nst), nst)}
