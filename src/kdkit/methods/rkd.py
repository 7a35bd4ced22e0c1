"""RKD: relational KD, distances and angles between the samples' embeddings."""
from kdkit.adapters import pool
from kdkit.losses.feature import rkd_loss
from kdkit.methods.features import COMMON, FeatureMethod
from kdkit.methods.hyper import WEIGHT, Hyper, around

RKD_DISTANCE = Hyper("rkd_distance", WEIGHT, "weight of the distance term (Park et al. 2019: 25)", around(), tuned=True)
RKD_ANGLE = Hyper("rkd_angle", WEIGHT, "weight of the angle term (Park et al. 2019: 50)", around(), tuned=True)


class RKD(FeatureMethod):
    """Relational KD (Park et al., CVPR 2019, eqs. 3-7): distances and angles between the pooled
    embeddings of the samples of a batch; loss = ce + w * (rkd_distance * d + rkd_angle * a), w = feature_weight
    over that sum's first value (feature_scale=first_step) or feature_weight (paper: the paper's 25 and 50)."""

    hyperparameters = COMMON + (RKD_DISTANCE, RKD_ANGLE)
    paper = "distance and angle relations between samples (Park et al., CVPR 2019)"
    pooled_teacher = True  # the teacher's features only through pool(): a teacher cache serves them

    def __init__(self, student, teacher, input_shape=None, student_layers: list[str] = (), teacher_layers: list[str] = (),
                 feature_weight: float = 1.0, ce_weight: float = 1.0, label_smoothing: float = 0.0,
                 feature_scale: str = "first_step",
                 rkd_distance: float = 25.0, rkd_angle: float = 50.0):
        super().__init__(student, teacher, input_shape, student_layers, teacher_layers, feature_weight, ce_weight, label_smoothing,
                         feature_scale)
        self.rkd_distance, self.rkd_angle = rkd_distance, rkd_angle

    def terms(self, s, t, y, index):
        parts = [rkd_loss(pool(fs), pool(ft), 1.0, 1.0) for fs, ft in self.pairs(s, t)]
        distance, angle = sum(p["distance"] for p in parts), sum(p["angle"] for p in parts)
        weight = self.feature_term_weight(self.rkd_distance * distance + self.rkd_angle * angle)  # one L_0 for both
        return {"ce": (self.ce_weight, self.ce(s, y)), "distance": (weight * self.rkd_distance, distance),
                "angle": (weight * self.rkd_angle, angle)}
