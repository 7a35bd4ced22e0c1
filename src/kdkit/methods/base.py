"""What every method shares: a trainable student, a frozen teacher kept in eval mode, feature taps.

A method names the layers it needs (`student_layers`, `teacher_layers`) and implements
`terms(s, t, y, index) -> {name: (weight, value)}`. The base forward runs the teacher (no grad)
and the student once, with taps on those layers, and returns

    dict(loss=sum(weight * value), logits=student logits, **{name: value})

so every part of a loss is logged on its own, and methods compose (`kd+fitnet`) by merging their
terms over one shared forward.

Hard labels go through `self.hard_ce` and class-dependent terms through `self.class_labels`: on a
batch that fit() mixed (mixup, cutmix) they read `self.mixing`, set before every step as `epoch` is.
"""
from dataclasses import dataclass, field

import torch
from torch import nn

from kdkit.errors import KdkitError
from kdkit.losses.balanced import class_balanced_ce
from kdkit.losses.labels import hard_ce, known_labels, mixed_ce
from kdkit.models.outputs import logits_of
from kdkit.taps import Taps
from kdkit.teachers.cache import TeacherCache


@dataclass
class Outputs:
    """One model's forward: its logits and the outputs of the tapped layers."""

    logits: torch.Tensor  # (B, K)
    feats: dict[str, torch.Tensor] = field(default_factory=dict)


class Method(nn.Module):
    """Base for distillation methods; see the module docstring.

    The teacher is stored outside the module tree (so it is not in `parameters()`, not in the
    optimizer, not in checkpoints of the trainable state, and not wrapped for DDP), frozen and in
    eval mode: torchdistill's samples leave it in train mode, which silently updates BatchNorm
    running statistics of a model that is supposed to be fixed. Adapters are submodules of the
    method, so they train with the student, but only `student` is ever saved as the result. The
    teacher still moves with the method (.to(), .cuda(), .double(): `_apply`), also when the method is
    a submodule of the user's own model (a LightningModule).
    """

    needs_teacher = True
    # Trains a second network beside the student (dml): the run builds it and passes it as `peer`.
    needs_peer = False
    # Epochs completed so far (fractional), set by fit() before every step, for methods that warm up.
    epoch: float = 0.0
    # How this step's batch was mixed (kdkit.data.mix.Mixing: partners' labels and lam), set by fit()
    # before every step; None = not mixed. Read by hard_ce and class_labels.
    mixing = None
    # Its hyper-parameters (methods/hyper.py): Hyper declarations, and the training keys it reads as
    # strings; each is also a constructor argument, whose annotation and default give its type and default.
    hyperparameters: tuple = ()
    # One line for `kdkit methods`: what it matches, and the paper.
    paper: str = ""

    @classmethod
    def unused_hyperparameters(cls, cfg) -> set[str]:
        """Keys of `hyperparameters` this method does not read with these settings (a tuner leaves them out)."""
        return set()

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None):
        super().__init__()
        self.student = student
        if self.needs_teacher and teacher is None:
            raise KdkitError(f"method {type(self).__name__} needs a teacher")
        self.__dict__["teacher"] = teacher  # bypasses nn.Module registration on purpose
        if isinstance(teacher, nn.Module):
            teacher.eval()
            teacher.requires_grad_(False)
        self.student_layers: list[str] = []
        self.teacher_layers: list[str] = []

    def train(self, mode: bool = True):
        super().train(mode)
        if isinstance(self.teacher, nn.Module):
            self.teacher.eval()
        return self

    def _apply(self, fn, *args, **kwargs):
        """.to(), .cuda(), .double() ... move the teacher with the method, also when the method sits
        inside a parent module (a LightningModule): the parent's .to() reaches it through _apply."""
        super()._apply(fn, *args, **kwargs)
        if isinstance(self.teacher, nn.Module):
            self.teacher._apply(fn, *args, **kwargs)
        return self

    @torch.no_grad()
    def teacher_logits(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        if getattr(self.teacher, "needs_index", False):  # saved outputs / scikit-learn teachers
            if index is None:
                raise KdkitError("this teacher is keyed by sample index; call the method with (x, y, index)")
            return self.teacher(x, index)
        return logits_of(self.teacher(x), "the teacher", len(x))  # (B, K), whatever form the forward returns

    def run_teacher(self, x, index=None) -> Outputs | None:
        if self.teacher is None:
            return None
        if not self.teacher_layers:
            return Outputs(self.teacher_logits(x, index))
        if isinstance(self.teacher, TeacherCache):  # pooled teacher features, stored
            return Outputs(self.teacher_logits(x, index), self.teacher.features(index, self.teacher_layers))
        with torch.no_grad(), Taps(self.teacher, self.teacher_layers) as taps:
            logits = self.teacher_logits(x, index)
        return Outputs(logits, dict(taps.outputs))

    def run_student(self, x) -> Outputs:
        if not self.student_layers:
            return Outputs(logits_of(self.student(x), "the student", len(x)))
        with Taps(self.student, self.student_layers) as taps:
            logits = logits_of(self.student(x), "the student", len(x))
        return Outputs(logits, dict(taps.outputs))

    def forward(self, x, y, index=None) -> dict:
        t = self.run_teacher(x, index)  # the same (augmented) view the student sees
        s = self.run_student(x)
        terms = self.terms(s, t, y, index)
        # A term weighted 0 (FitNets' stage 1, a warm-up at its start) stays out of the graph, so the
        # layers only it reaches get no gradient at all, and no weight decay or momentum step either.
        # A weight that is a tensor (a feature term over its first value) always counts: testing it
        # against 0 would make every step wait for the device.
        loss = sum(weight * value for weight, value in terms.values() if torch.is_tensor(weight) or weight != 0)
        return dict(loss=loss, logits=s.logits, **{name: value for name, (_, value) in terms.items()})

    def terms(self, s: Outputs, t: Outputs | None, y, index) -> dict[str, tuple[float, torch.Tensor]]:
        raise NotImplementedError

    def hard_ce(self, logits, y, label_smoothing: float = 0.0, class_weights=None) -> torch.Tensor:
        """Every hard-label term: CE over the labelled samples (losses.labels.hard_ce; class-balanced
        with `class_weights`), or on a mixed batch lam CE(y) + (1 - lam) CE(y_partner) (mixed_ce)."""
        if self.mixing is not None:
            return mixed_ce(logits, y, self.mixing.partner_labels, self.mixing.lam, label_smoothing, class_weights)
        if class_weights is not None:
            return hard_ce(logits, y, loss=lambda z, labels: class_balanced_ce(z, labels, class_weights))
        return hard_ce(logits, y, label_smoothing)

    def class_labels(self, y, teacher_logits) -> torch.Tensor:
        """One class per sample for class-dependent terms (DKD's target, BKD's weight): the label, on a
        mixed batch the label of the larger share (the sample's own at lam >= 1/2), and the
        teacher's prediction where that one is UNLABELED (losses.labels.known_labels). (B,)"""
        if self.mixing is not None:
            y = torch.where(self.mixing.lam >= 0.5, y, self.mixing.partner_labels)
        return known_labels(y, teacher_logits)
