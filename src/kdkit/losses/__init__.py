"""Distillation losses: pure functions of tensors, each citing its paper and equation."""
from kdkit.losses.kd import kd_loss

__all__ = ["kd_loss"]
