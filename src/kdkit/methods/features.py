"""Feature methods: the student matches the teacher's intermediate features, on any nn.Module.

Layers are named by `named_modules()` names (`student_layers`, `teacher_layers`, paired by
position). Left empty, each method picks from the models' stage outputs (`feature_modules`):
FitNets the middle stage, AT and NST every stage with a spatial map, SP, RKD, PKT and CRD the
last stage (the penultimate embedding, average-pooled). Shapes come from a probe of one batch when
the method is built, and size the adapters (kdkit.adapters), which train with the student and are
never saved with it.

Every method: loss = ce_weight * CE + feature_weight * (its feature term, summed over layer pairs).
The default feature_weight of each is the one its paper or the reference implementations
(RepDistiller, mdistiller) use on CIFAR-100.
"""
import torch.nn.functional as F
from torch import nn

from kdkit.adapters import default_layers, make_adapter, pool, pooled_size, probe
from kdkit.errors import KdkitError
from kdkit.losses.feature import at_loss, fitnet_loss, nst_loss, pkt_loss, rkd_loss, sp_loss
from kdkit.losses.kd import kd_loss
from kdkit.methods.base import Method
from kdkit.taps import check_names

COMMON = ("feature_weight", "ce_weight", "student_layers", "teacher_layers", "label_smoothing")


class FeatureMethod(Method):
    """Resolves and checks the layers, probes their shapes; subclasses add adapters and terms."""

    pick = "last"  # default layers: "middle", "spatial" (every stage with a map), "last" or "all"
    paired = True  # student and teacher layers pair up by position

    def __init__(self, student, teacher, input_shape, student_layers=(), teacher_layers=(),
                 feature_weight: float = 1.0, ce_weight: float = 1.0, label_smoothing: float = 0.0):
        super().__init__(student, teacher)
        if not isinstance(teacher, nn.Module) or getattr(teacher, "needs_index", False):
            raise KdkitError(f"method {type(self).__name__.lower()} matches features, so it needs one torch "
                             "teacher; saved outputs and scikit-learn teachers give predictions only (use kd, dkd or dist)")
        if input_shape is None:
            raise KdkitError(f"method {type(self).__name__.lower()} needs input_shape to size its adapters")
        self.feature_weight, self.ce_weight, self.label_smoothing = feature_weight, ce_weight, label_smoothing
        s_layers, t_layers = self._layers(student, student_layers, "student"), self._layers(teacher, teacher_layers, "teacher")
        s_shapes, t_shapes = probe(student, s_layers, input_shape), probe(teacher, t_layers, input_shape)
        if not (student_layers or teacher_layers):
            s_layers, t_layers = self._pick(s_layers, s_shapes), self._pick(t_layers, t_shapes)
        if self.paired and len(s_layers) != len(t_layers):
            raise KdkitError(f"{len(s_layers)} student layers {s_layers} but {len(t_layers)} teacher layers {t_layers}; "
                             "set student_layers and teacher_layers to lists of the same length (pairs by position)")
        self.student_layers, self.teacher_layers = s_layers, t_layers
        self.student_shapes = {n: s_shapes[n] for n in s_layers}
        self.teacher_shapes = {n: t_shapes[n] for n in t_layers}

    @staticmethod
    def _layers(model, given, role) -> list[str]:
        layers = list(given) or default_layers(model, role)
        check_names(model, layers)
        return layers

    def _pick(self, layers, shapes) -> list[str]:
        if self.pick == "middle":
            return [layers[(len(layers) - 1) // 2]]
        if self.pick == "spatial":
            maps = [n for n in layers if len(shapes[n]) == 3]
            if not maps:
                raise KdkitError(f"method {type(self).__name__.lower()} needs layers that output (C, H, W) maps; "
                                 f"the stage outputs {layers} are vectors; set student_layers / teacher_layers")
            return maps
        return layers if self.pick == "all" else layers[-1:]

    def pairs(self, s, t):
        """(student feature, teacher feature) for each layer pair of this step."""
        return [(s.feats[a], t.feats[b]) for a, b in zip(self.student_layers, self.teacher_layers)]

    def ce(self, s, y):
        return F.cross_entropy(s.logits.float(), y, label_smoothing=self.label_smoothing)


class FitNet(FeatureMethod):
    """FitNets (Romero et al., ICLR 2015): a regressor maps the student's guided layer to the
    teacher's hint layer, trained by the hint loss MSE(regressor(s), t) (eq. 3).

    One stage (hint_epochs = 0, as mdistiller and RepDistiller run it): ce_weight * CE + feature_weight * hint.
    Two stages (hint_epochs > 0, the paper's recipe): for the first hint_epochs only the hint loss
    trains the student up to the guided layer (and the regressor); then (1 - alpha) * CE +
    alpha * KD(T), the paper's stage 2 (section 2.3).
    """

    hyperparameters = COMMON + ("hint_epochs", "temperature", "alpha")
    paper = "hint layer + regressor, one or two stages (Romero et al., ICLR 2015)"
    pick = "middle"

    def __init__(self, student, teacher, input_shape=None, student_layers=(), teacher_layers=(),
                 feature_weight: float = 100.0, ce_weight: float = 1.0, label_smoothing: float = 0.0,
                 hint_epochs: float = 0.0, temperature: float = 4.0, alpha: float = 0.9):
        super().__init__(student, teacher, input_shape, student_layers, teacher_layers, feature_weight, ce_weight, label_smoothing)
        self.hint_epochs, self.temperature, self.alpha = hint_epochs, temperature, alpha
        self.regressors = nn.ModuleList(make_adapter(self.student_shapes[a], self.teacher_shapes[b])
                                        for a, b in zip(self.student_layers, self.teacher_layers))

    def terms(self, s, t, y, index):
        hint = sum(fitnet_loss(reg(fs), ft) for reg, (fs, ft) in zip(self.regressors, self.pairs(s, t)))
        if self.hint_epochs <= 0:
            return {"ce": (self.ce_weight, self.ce(s, y)), "hint": (self.feature_weight, hint)}
        stage1 = self.epoch < self.hint_epochs
        return {"ce": (0.0 if stage1 else 1 - self.alpha, self.ce(s, y)),
                "kd": (0.0 if stage1 else self.alpha, kd_loss(s.logits, t.logits, self.temperature)),
                "hint": (self.feature_weight if stage1 else 0.0, hint)}


class AT(FeatureMethod):
    """Attention transfer (Zagoruyko & Komodakis, ICLR 2017, eq. 2): match the normalised spatial
    attention maps mean_c |f|^p of every stage; no adapter (channels may differ, maps are pooled
    to the smaller size)."""

    hyperparameters = COMMON
    paper = "spatial attention maps of each stage (Zagoruyko & Komodakis, ICLR 2017)"
    pick = "spatial"

    def __init__(self, student, teacher, input_shape=None, student_layers=(), teacher_layers=(),
                 feature_weight: float = 1000.0, ce_weight: float = 1.0, label_smoothing: float = 0.0):
        super().__init__(student, teacher, input_shape, student_layers, teacher_layers, feature_weight, ce_weight, label_smoothing)

    def terms(self, s, t, y, index):
        at = sum(at_loss(fs, ft) for fs, ft in self.pairs(s, t))
        return {"ce": (self.ce_weight, self.ce(s, y)), "at": (self.feature_weight, at)}


class NST(FeatureMethod):
    """Neuron selectivity transfer (Huang & Wang 2017, eq. 4): MMD with a polynomial kernel between
    the distributions of the channels' (normalised) activation patterns, every stage; no adapter."""

    hyperparameters = COMMON
    paper = "MMD between neuron activation patterns (Huang & Wang 2017)"
    pick = "spatial"

    def __init__(self, student, teacher, input_shape=None, student_layers=(), teacher_layers=(),
                 feature_weight: float = 50.0, ce_weight: float = 1.0, label_smoothing: float = 0.0):
        super().__init__(student, teacher, input_shape, student_layers, teacher_layers, feature_weight, ce_weight, label_smoothing)

    def terms(self, s, t, y, index):
        nst = sum(nst_loss(fs, ft) for fs, ft in self.pairs(s, t))
        return {"ce": (self.ce_weight, self.ce(s, y)), "nst": (self.feature_weight, nst)}


class SP(FeatureMethod):
    """Similarity-preserving KD (Tung & Mori, ICCV 2019, eq. 4): the student's B x B matrix of
    sample similarities matches the teacher's; no adapter (any widths)."""

    hyperparameters = COMMON
    paper = "batch similarity matrices (Tung & Mori, ICCV 2019)"

    def __init__(self, student, teacher, input_shape=None, student_layers=(), teacher_layers=(),
                 feature_weight: float = 3000.0, ce_weight: float = 1.0, label_smoothing: float = 0.0):
        super().__init__(student, teacher, input_shape, student_layers, teacher_layers, feature_weight, ce_weight, label_smoothing)

    def terms(self, s, t, y, index):
        sp = sum(sp_loss(fs, ft) for fs, ft in self.pairs(s, t))
        return {"ce": (self.ce_weight, self.ce(s, y)), "sp": (self.feature_weight, sp)}


class RKD(FeatureMethod):
    """Relational KD (Park et al., CVPR 2019, eqs. 3-7): distances and angles between the pooled
    embeddings of the samples of a batch; loss = ce + feature_weight * (rkd_distance * d + rkd_angle * a)."""

    hyperparameters = COMMON + ("rkd_distance", "rkd_angle")
    paper = "distance and angle relations between samples (Park et al., CVPR 2019)"

    def __init__(self, student, teacher, input_shape=None, student_layers=(), teacher_layers=(),
                 feature_weight: float = 1.0, ce_weight: float = 1.0, label_smoothing: float = 0.0,
                 rkd_distance: float = 25.0, rkd_angle: float = 50.0):
        super().__init__(student, teacher, input_shape, student_layers, teacher_layers, feature_weight, ce_weight, label_smoothing)
        self.rkd_distance, self.rkd_angle = rkd_distance, rkd_angle

    def terms(self, s, t, y, index):
        parts = [rkd_loss(pool(fs), pool(ft), 1.0, 1.0) for fs, ft in self.pairs(s, t)]
        distance, angle = sum(p["distance"] for p in parts), sum(p["angle"] for p in parts)
        return {"ce": (self.ce_weight, self.ce(s, y)), "distance": (self.feature_weight * self.rkd_distance, distance),
                "angle": (self.feature_weight * self.rkd_angle, angle)}


class PKT(FeatureMethod):
    """Probabilistic knowledge transfer (Passalis & Tefas, ECCV 2018, eqs. 7-10): KL between the
    teacher's and the student's conditional distributions of cosine similarity between samples."""

    hyperparameters = COMMON
    paper = "distributions of cosine similarity between samples (Passalis & Tefas, ECCV 2018)"

    def __init__(self, student, teacher, input_shape=None, student_layers=(), teacher_layers=(),
                 feature_weight: float = 30000.0, ce_weight: float = 1.0, label_smoothing: float = 0.0):
        super().__init__(student, teacher, input_shape, student_layers, teacher_layers, feature_weight, ce_weight, label_smoothing)

    def terms(self, s, t, y, index):
        pkt = sum(pkt_loss(pool(fs), pool(ft)) for fs, ft in self.pairs(s, t))
        return {"ce": (self.ce_weight, self.ce(s, y)), "pkt": (self.feature_weight, pkt)}


class CRD(FeatureMethod):
    """Contrastive representation distillation (Tian, Krishnan, Isola, ICLR 2020, eqs. 18-19):
    embed both pooled representations in crd_dim, contrast each sample against nce_k negatives
    drawn from momentum memory banks of the whole training set (which need each sample's index)."""

    hyperparameters = COMMON + ("crd_dim", "nce_k", "nce_t")
    paper = "contrastive objective with a memory bank of negatives (Tian et al., ICLR 2020)"

    def __init__(self, student, teacher, input_shape=None, student_layers=(), teacher_layers=(),
                 feature_weight: float = 0.8, ce_weight: float = 1.0, label_smoothing: float = 0.0,
                 crd_dim: int = 128, nce_k: int = 16384, nce_t: float = 0.07, num_train: int | None = None):
        super().__init__(student, teacher, input_shape, student_layers, teacher_layers, feature_weight, ce_weight, label_smoothing)
        from kdkit.losses.crd import CRDLoss

        if not num_train:
            raise KdkitError("method crd needs num_train (the training set size) for its memory bank")
        self.crd = nn.ModuleList(CRDLoss(pooled_size(self.student_shapes[a]), pooled_size(self.teacher_shapes[b]), num_train,
                                         feat_dim=crd_dim, nce_k=nce_k, nce_t=nce_t)
                                 for a, b in zip(self.student_layers, self.teacher_layers))

    def terms(self, s, t, y, index):
        if index is None:
            raise KdkitError("method crd needs each sample's index in the training set: call it with (x, y, index)")
        crd = sum(head(pool(fs), pool(ft).float(), index) for head, (fs, ft) in zip(self.crd, self.pairs(s, t)))
        return {"ce": (self.ce_weight, self.ce(s, y)), "crd": (self.feature_weight, crd)}
