"""The base of the feature methods, where the student matches the teacher's intermediate features
on any nn.Module (fitnet.py, at.py, nst.py, sp.py, rkd.py, pkt.py, crd.py, vector.py).

Layers are named by `named_modules()` names (`student_layers`, `teacher_layers`, paired by
position). Left empty, each method picks from the models' stage outputs (`feature_modules`, or the
modules of timm's `feature_info`):
FitNets the middle stage, AT and NST every stage with a spatial map, SP, RKD, PKT and CRD the
last stage (the penultimate embedding, average-pooled). Shapes come from a probe of one batch when
the method is built, and size the adapters (kdkit.adapters), which train with the student and are
never saved with it. Methods that use the teacher's features only average-pooled (`pooled_teacher`)
also learn from a teacher cache holding those vectors (kdkit.teachers.cache), in place of the teacher.

Every method: loss = ce_weight * CE + w * L, L its feature loss summed over layer pairs, and w set
by feature_scale:

    first_step (default)  w = feature_weight / L_0, L_0 the value L took at the first training step
    paper                 w = feature_weight * paper_weight, the paper's (or RepDistiller's /
                          mdistiller's) CIFAR-100 weight: fitnet 100, at 1000, sp 3000, rkd 1 (times
                          25 / 50), pkt 30000, nst 50, crd 0.8, vector 1

Why first_step. How large L is says little about how much it should count: FitNets' MSE grows with
the square of the teacher's activations, AT's normalised maps give about 1 / (H W) per position, SP
and PKT shrink as 1 / B, NST moves with the channel count. The papers' weights fit CIFAR-100
ResNets at batch 64 and overshoot elsewhere (on digits with a 3.7k-parameter student, AT at 1000
and PKT at 30000 left it at chance: benchmarks/results/feature_defaults_digits.json). Dividing by a
feature dimension would remove one of these causes only (FitNets' loss is already a mean over
elements, and still hurt there); dividing by L_0 removes them all at once, so the term starts at
feature_weight (1), beside a cross-entropy that starts near log K, on any model, data and batch.
L_0 is a buffer of the method (FirstValue), saved in its checkpoints, so --resume divides by the
same number and stays bit-identical; it depends on the first batch and the adapters' initial
weights, both fixed by the seed. RKD's two parts share one L_0 (of rkd_distance * d + rkd_angle * a),
so their ratio stays the paper's.
"""
import torch
from torch import nn

from kdkit import distributed
from kdkit.adapters import default_layers, probe
from kdkit.errors import KdkitError, unknown
from kdkit.methods.base import Method
from kdkit.methods.hyper import CE_WEIGHT, FEATURE_SCALE, FEATURE_SCALES, FEATURE_WEIGHT, STUDENT_LAYERS, TEACHER_LAYERS
from kdkit.taps import check_names
from kdkit.teachers.cache import TeacherCache

COMMON = (FEATURE_WEIGHT, FEATURE_SCALE, CE_WEIGHT, STUDENT_LAYERS, TEACHER_LAYERS, "label_smoothing")


class FirstValue(nn.Module):
    """The first positive, finite value a loss took (a buffer, NaN until then), for feature_scale=first_step.

    Updated on the device, never read on the host, so a step waits for nothing: while the buffer is
    NaN the current value replaces it. Under torchrun the value is the mean over the processes, so
    all divide by the same number. A value of exactly 0 (features already equal) is skipped.
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("value", torch.full((), float("nan")))

    def forward(self, loss: torch.Tensor) -> torch.Tensor:
        """The recorded value, () on the loss's device; 1 while none is."""
        current = loss.detach().to(self.value.dtype)
        if distributed.world_size() > 1:
            current = distributed.sum_(current.clone()) / distributed.world_size()
        unset = torch.isnan(self.value) & torch.isfinite(current) & (current > 0)
        self.value.copy_(torch.where(unset, current, self.value))
        return torch.where(torch.isnan(self.value), torch.ones_like(self.value), self.value)


class FeatureMethod(Method):
    """Resolves and checks the layers, probes their shapes; subclasses add adapters and terms."""

    pick = "last"  # default layers: "middle", "spatial" (every stage with a map), "last" or "all"
    paired = True  # student and teacher layers pair up by position
    pooled_teacher = False  # uses the teacher's features only through adapters.pool: a cache can serve them
    paper_weight = 1.0  # the feature weight of the paper / reference code on CIFAR-100 (feature_scale=paper)

    def __init__(self, student, teacher, input_shape, student_layers: list[str] = (), teacher_layers: list[str] = (),
                 feature_weight: float = 1.0, ce_weight: float = 1.0, label_smoothing: float = 0.0,
                 feature_scale: str = "first_step"):
        super().__init__(student, teacher)
        name = type(self).__name__.lower()
        if feature_scale not in FEATURE_SCALES:
            raise unknown("feature_scale", feature_scale, FEATURE_SCALES)
        cached = isinstance(teacher, TeacherCache)  # pooled teacher features, stored
        if cached and not self.pooled_teacher:
            raise KdkitError(f"method {name} needs the teacher's feature maps, which a teacher cache does not hold; "
                             "drop --teacher-cache, or use kd, dkd, dist, crd, rkd, pkt or vector with it")
        if cached and not teacher.layers:
            raise KdkitError(f"the teacher cache holds no teacher features, and method {name} needs them pooled; "
                             "build it with this method's layers (--teacher-cache does)")
        if not cached and (not isinstance(teacher, nn.Module) or getattr(teacher, "needs_index", False)):
            raise KdkitError(f"method {name} matches features, so it needs one torch "
                             "teacher; saved outputs and scikit-learn teachers give predictions only (use kd, dkd or dist)")
        if input_shape is None:
            raise KdkitError(f"method {name} needs input_shape to size its adapters")
        self.feature_weight, self.ce_weight, self.label_smoothing = feature_weight, ce_weight, label_smoothing
        self.feature_scale = feature_scale
        self.first_value = FirstValue()
        s_layers = self._layers(student, student_layers, "student")
        s_shapes = probe(student, s_layers, input_shape)
        if cached:  # built with the layers of `teacher_layers_of`, in the teacher's order; (D,) shapes
            t_layers, t_shapes = list(teacher_layers) or list(teacher.layers), teacher.shapes
            teacher.check_layers(t_layers)
        else:
            t_layers = self._layers(teacher, teacher_layers, "teacher")
            t_shapes = probe(teacher, t_layers, input_shape)
        if not (student_layers or teacher_layers):
            s_layers, t_layers = self._pick(s_layers, s_shapes), self._pick(t_layers, t_shapes)
        if self.paired and len(s_layers) != len(t_layers):
            raise KdkitError(f"{len(s_layers)} student layers {s_layers} but {len(t_layers)} teacher layers {t_layers}; "
                             "set student_layers and teacher_layers to lists of the same length (pairs by position)")
        self.student_layers, self.teacher_layers = s_layers, t_layers
        self.student_shapes = {n: s_shapes[n] for n in s_layers}
        self.teacher_shapes = {n: t_shapes[n] for n in t_layers}

    @classmethod
    def teacher_layers_of(cls, teacher, teacher_layers, input_shape, student_layers=()) -> list[str]:
        """The teacher layers this method taps (as __init__ resolves them), for building a cache."""
        layers = cls._layers(teacher, teacher_layers, "teacher")
        if student_layers or teacher_layers:  # __init__ picks only when neither side is given
            return layers
        return cls._pick(layers, probe(teacher, layers, input_shape))

    @staticmethod
    def _layers(model, given, role) -> list[str]:
        layers = list(given) or default_layers(model, role)
        check_names(model, layers)
        return layers

    @classmethod
    def _pick(cls, layers, shapes) -> list[str]:
        if cls.pick == "middle":
            return [layers[(len(layers) - 1) // 2]]
        if cls.pick == "spatial":
            maps = [n for n in layers if len(shapes[n]) == 3]
            if not maps:
                raise KdkitError(f"method {cls.__name__.lower()} needs layers that output (C, H, W) maps; "
                                 f"the stage outputs {layers} are vectors; set student_layers / teacher_layers")
            return maps
        return layers if cls.pick == "all" else layers[-1:]

    def pairs(self, s, t):
        """(student feature, teacher feature) for each layer pair of this step."""
        return [(s.feats[a], t.feats[b]) for a, b in zip(self.student_layers, self.teacher_layers)]

    def ce(self, s, y):
        return self.hard_ce(s.logits, y, self.label_smoothing)

    def feature_term_weight(self, loss: torch.Tensor):
        """The weight of this step's feature loss `loss` (raw, summed over layer pairs), as feature_scale
        says: feature_weight / L_0 (a tensor: it stays on the device) or feature_weight * paper_weight."""
        if self.feature_scale == "paper":
            return self.feature_weight * self.paper_weight
        return self.feature_weight / self.first_value(loss)
