"""The distillation vector (the design's tiny-model distillation and its "distiller" mapping).

Several layers of each model are tapped, each output is average-pooled to a vector and
L2-normalised (so no layer dominates by its scale), and the layers are concatenated: one vector
per sample and model. Learned adapters project both into one space of `vector_dim`:

    z_t = A_t(v_t)   the distiller: trained only by its own cross-entropy head, CE(H(z_t), y), so it
                     keeps what the teacher's layers know about the classes
    z_s = A_s(v_s)   trained with the student to come close to z_t (which is detached)

    loss = ce_weight * CE(y, s) + w * match(z_s, z_t) + CE(y, H(z_t))

w is feature_weight over match's first value (feature_scale=first_step, methods/features.py) or
feature_weight itself (paper: kdkit's own weight, 1).

match is "mse", "cosine" (1 - cosine similarity, the default: free of the vectors' scale) or "cka"
(1 - linear CKA over the batch, Kornblith et al., ICML 2019). The teacher side is learned but
never pulled towards the student: a target map trained on the matching loss itself would shrink
to zero. Default layers: every stage output of both models (their counts may differ).
`segments` records which slice of each vector came from which layer (for importance analysis).
"""
import torch
import torch.nn.functional as F
from torch import nn

from kdkit.adapters import pool, pooled_size
from kdkit.data.dataset import example_inputs
from kdkit.errors import unknown
from kdkit.losses.feature import linear_cka
from kdkit.methods.features import COMMON, FeatureMethod
from kdkit.methods.hyper import COUNT, Hyper, Search
from kdkit.models import output_classes
from kdkit.teachers.cache import TeacherCache

MATCHES = ("mse", "cosine", "cka")
VECTOR_DIM = Hyper("vector_dim", COUNT, "size of the shared distillation-vector space", Search(choices=(64, 128, 256)),
                   tuned=True)
VECTOR_LOSS = Hyper("vector_loss", MATCHES, "how z_s matches z_t: mse, cosine or cka", Search(choices=MATCHES))


class DistillationVector(FeatureMethod):
    hyperparameters = COMMON + (VECTOR_DIM, VECTOR_LOSS)
    paper = "multi-layer pooled features matched through learned adapters (kdkit; the design's tiny-model KD)"
    pick = "all"
    paired = False
    pooled_teacher = True  # the teacher's features only through pool(): a teacher cache serves them

    def __init__(self, student, teacher, input_shape=None, student_layers: list[str] = (), teacher_layers: list[str] = (),
                 feature_weight: float = 1.0, ce_weight: float = 1.0, label_smoothing: float = 0.0,
                 feature_scale: str = "first_step",
                 vector_dim: int = 128, vector_loss: str = "cosine"):
        super().__init__(student, teacher, input_shape, student_layers, teacher_layers, feature_weight, ce_weight, label_smoothing,
                         feature_scale)
        if vector_loss not in MATCHES:
            raise unknown("vector_loss", vector_loss, MATCHES)
        self.vector_loss = vector_loss
        self.segments = {"student": _segments(self.student_shapes), "teacher": _segments(self.teacher_shapes)}
        if isinstance(teacher, TeacherCache):
            num_classes = teacher.num_classes
        else:
            num_classes = output_classes(teacher, input_shape, "teacher")
        self.student_adapter = nn.Linear(self.segments["student"][-1][2], vector_dim)
        self.teacher_adapter = nn.Linear(self.segments["teacher"][-1][2], vector_dim)
        self.teacher_head = nn.Linear(vector_dim, num_classes)

    def vectors(self, s, t) -> tuple[torch.Tensor, torch.Tensor]:
        """(v_s, v_t): the concatenated, per-layer normalised pooled features (B, D_s), (B, D_t)."""
        v_s = torch.cat([F.normalize(pool(s.feats[n]).float(), dim=1) for n in self.student_layers], dim=1)
        v_t = torch.cat([F.normalize(pool(t.feats[n]).float(), dim=1) for n in self.teacher_layers], dim=1)
        return v_s, v_t

    def terms(self, s, t, y, index):
        v_s, v_t = self.vectors(s, t)
        z_s, z_t = self.student_adapter(v_s), self.teacher_adapter(v_t)  # (B, vector_dim) each
        distiller = self.hard_ce(self.teacher_head(z_t), y)
        target = z_t.detach().float()
        if self.vector_loss == "mse":
            match = F.mse_loss(z_s.float(), target)
        elif self.vector_loss == "cosine":
            match = (1 - F.cosine_similarity(z_s.float(), target, dim=1)).mean()
        else:
            match = 1 - linear_cka(z_s.float(), target)
        return {"ce": (self.ce_weight, self.ce(s, y)), "vector": (self.feature_term_weight(match), match),
                "distiller": (1.0, distiller)}


def _segments(shapes: dict) -> list[tuple[str, int, int]]:
    """(layer, start, end) of each layer's slice in the concatenated vector."""
    out, start = [], 0
    for name, shape in shapes.items():
        out.append((name, start, start + pooled_size(shape)))
        start += pooled_size(shape)
    return out
