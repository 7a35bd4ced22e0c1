"""The base of the feature methods, where the student matches the teacher's intermediate features
on any nn.Module (fitnet.py, at.py, nst.py, sp.py, rkd.py, pkt.py, crd.py, vector.py).

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

from kdkit.adapters import default_layers, probe
from kdkit.errors import KdkitError
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
