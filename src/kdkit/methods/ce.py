"""Plain cross-entropy training: the teacher's own training and the scratch student baseline."""
import torch.nn.functional as F

from kdkit.methods.base import Method


class CrossEntropy(Method):
    """loss = CE(y, student(x)), with optional label smoothing. No teacher."""

    needs_teacher = False
    hyperparameters = ("label_smoothing",)
    paper = "cross-entropy on the labels only (the scratch baseline)"

    def __init__(self, student, teacher=None, label_smoothing: float = 0.0):
        super().__init__(student, None)
        self.label_smoothing = label_smoothing

    def terms(self, s, t, y, index):
        return {"ce": (1.0, F.cross_entropy(s.logits.float(), y, label_smoothing=self.label_smoothing))}
