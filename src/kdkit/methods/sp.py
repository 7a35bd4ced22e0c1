"""SP: similarity-preserving KD, the batch's sample-similarity matrices."""
from kdkit.losses.feature import sp_loss
from kdkit.methods.features import COMMON, FeatureMethod


class SP(FeatureMethod):
    """Similarity-preserving KD (Tung & Mori, ICCV 2019, eq. 4): the student's B x B matrix of
    sample similarities matches the teacher's; no adapter (any widths)."""

    hyperparameters = COMMON
    paper = "batch similarity matrices (Tung & Mori, ICCV 2019)"
    paper_weight = 3000.0

    def __init__(self, student, teacher, input_shape=None, student_layers: list[str] = (), teacher_layers: list[str] = (),
                 feature_weight: float = 1.0, ce_weight: float = 1.0, label_smoothing: float = 0.0,
                 feature_scale: str = "first_step"):
        super().__init__(student, teacher, input_shape, student_layers, teacher_layers, feature_weight, ce_weight, label_smoothing,
                         feature_scale)

    def terms(self, s, t, y, index):
        sp = sum(sp_loss(fs, ft) for fs, ft in self.pairs(s, t))
        return {"ce": (self.ce_weight, self.ce(s, y)), "sp": (self.feature_term_weight(sp), sp)}
