"""PKT: probabilistic knowledge transfer, distributions of similarity between samples."""
from kdkit.adapters import pool
from kdkit.losses.feature import pkt_loss
from kdkit.methods.features import COMMON, FeatureMethod


class PKT(FeatureMethod):
    """Probabilistic knowledge transfer (Passalis & Tefas, ECCV 2018, eqs. 7-10): KL between the
    teacher's and the student's conditional distributions of cosine similarity between samples;
    pkt_loss is at RepDistiller's scale, so feature_scale=paper gives its loss times its 30000."""

    hyperparameters = COMMON
    paper = "distributions of cosine similarity between samples (Passalis & Tefas, ECCV 2018)"
    paper_weight = 30000.0
    pooled_teacher = True  # the teacher's features only through pool(): a teacher cache serves them

    def __init__(self, student, teacher, input_shape=None, student_layers: list[str] = (), teacher_layers: list[str] = (),
                 feature_weight: float = 1.0, ce_weight: float = 1.0, label_smoothing: float = 0.0,
                 feature_scale: str = "first_step"):
        super().__init__(student, teacher, input_shape, student_layers, teacher_layers, feature_weight, ce_weight, label_smoothing,
                         feature_scale)

    def terms(self, s, t, y, index):
        pkt = sum(pkt_loss(pool(fs), pool(ft)) for fs, ft in self.pairs(s, t))
        return {"ce": (self.ce_weight, self.ce(s, y)), "pkt": (self.feature_term_weight(pkt), pkt)}
