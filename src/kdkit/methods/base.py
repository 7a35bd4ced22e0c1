"""What every method shares: a trainable student, a frozen teacher kept in eval mode."""
import torch
from torch import nn


class Method(nn.Module):
    """Base for distillation methods. Subclasses implement forward(x, y) -> dict(loss, logits, ...).

    The teacher is stored outside the module tree (so it is not in `parameters()`, not in the
    optimizer, not in checkpoints of the trainable state, and not wrapped for DDP), frozen and in
    eval mode: torchdistill's samples leave it in train mode, which silently updates BatchNorm
    running statistics of a model that is supposed to be fixed.
    """

    needs_teacher = True
    # Epochs completed so far (fractional), set by fit() before every step, for methods that warm up.
    epoch: float = 0.0
    # Hyper-parameters a user can set (config key -> constructor argument), shown by `kdkit methods`.
    hyperparameters: tuple[str, ...] = ()

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None):
        super().__init__()
        self.student = student
        if self.needs_teacher and teacher is None:
            raise ValueError(f"method {type(self).__name__} needs a teacher")
        self.__dict__["teacher"] = teacher  # bypasses nn.Module registration on purpose
        if teacher is not None:
            teacher.eval()
            teacher.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def to(self, *args, **kwargs):
        super().to(*args, **kwargs)
        if self.teacher is not None:
            self.teacher.to(*args, **kwargs)
        return self

    @torch.no_grad()
    def teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.teacher(x)
