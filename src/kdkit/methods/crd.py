"""CRD: contrastive representation distillation, with memory banks of the whole training set."""
from torch import nn

from kdkit.adapters import pool, pooled_size
from kdkit.errors import KdkitError
from kdkit.losses.crd import CRDLoss
from kdkit.methods.features import COMMON, FeatureMethod
from kdkit.methods.hyper import COUNT, Hyper, Search

CRD_DIM = Hyper("crd_dim", COUNT, "embedding size (Tian et al. 2020: 128)", Search(choices=(64, 128, 256)), tuned=True)
NCE_K = Hyper("nce_k", COUNT, "negatives per sample from the memory bank (capped at the training set size - 1)",
              Search(choices=(4096, 16384)))
NCE_T = Hyper("nce_t", "(0, inf)", "temperature of the contrastive scores", Search(0.03, 0.3, log=True))


class CRD(FeatureMethod):
    """Contrastive representation distillation (Tian, Krishnan, Isola, ICLR 2020, section 3, NCE form):
    embed both pooled representations in crd_dim, contrast each sample against nce_k negatives
    drawn from momentum memory banks of the whole training set (which need each sample's index)."""

    hyperparameters = COMMON + (CRD_DIM, NCE_K, NCE_T)
    paper = "contrastive objective with a memory bank of negatives (Tian et al., ICLR 2020)"
    paper_weight = 0.8
    pooled_teacher = True  # the teacher's features only through pool(): a teacher cache serves them

    def __init__(self, student, teacher, input_shape=None, student_layers: list[str] = (), teacher_layers: list[str] = (),
                 feature_weight: float = 1.0, ce_weight: float = 1.0, label_smoothing: float = 0.0,
                 feature_scale: str = "first_step",
                 crd_dim: int = 128, nce_k: int = 16384, nce_t: float = 0.07, num_train: int | None = None):
        super().__init__(student, teacher, input_shape, student_layers, teacher_layers, feature_weight, ce_weight, label_smoothing,
                         feature_scale)
        if not num_train:
            raise KdkitError("method crd needs num_train (the training set size) for its memory bank")
        self.crd = nn.ModuleList(CRDLoss(pooled_size(self.student_shapes[a]), pooled_size(self.teacher_shapes[b]), num_train,
                                         feat_dim=crd_dim, nce_k=nce_k, nce_t=nce_t)
                                 for a, b in zip(self.student_layers, self.teacher_layers))

    def terms(self, s, t, y, index):
        if index is None:
            raise KdkitError("method crd needs each sample's index in the training set: call it with (x, y, index)")
        crd = sum(head(pool(fs), pool(ft).float(), index) for head, (fs, ft) in zip(self.crd, self.pairs(s, t)))
        return {"ce": (self.ce_weight, self.ce(s, y)), "crd": (self.feature_term_weight(crd), crd)}
