"""AT: attention transfer, the student matches each stage's spatial attention map."""
from kdkit.losses.feature import at_loss
from kdkit.methods.features import COMMON, FeatureMethod


class AT(FeatureMethod):
    """Attention transfer (Zagoruyko & Komodakis, ICLR 2017, eq. 2): match the normalised spatial
    attention maps mean_c |f|^p of every stage; no adapter (channels may differ, maps are pooled
    to the smaller size)."""

    hyperparameters = COMMON
    paper = "spatial attention maps of each stage (Zagoruyko & Komodakis, ICLR 2017)"
    paper_weight = 1000.0
    pick = "spatial"

    def __init__(self, student, teacher, input_shape=None, student_layers: list[str] = (), teacher_layers: list[str] = (),
                 feature_weight: float = 1.0, ce_weight: float = 1.0, label_smoothing: float = 0.0,
                 feature_scale: str = "first_step"):
        super().__init__(student, teacher, input_shape, student_layers, teacher_layers, feature_weight, ce_weight, label_smoothing,
                         feature_scale)

    def terms(self, s, t, y, index):
        at = sum(at_loss(fs, ft) for fs, ft in self.pairs(s, t))
        return {"ce": (self.ce_weight, self.ce(s, y)), "at": (self.feature_term_weight(at), at)}
