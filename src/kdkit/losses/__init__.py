"""Distillation losses: pure functions of tensors, each citing its paper and equation."""
from kdkit.losses.dist import dist_loss
from kdkit.losses.dkd import dkd_loss
from kdkit.losses.kd import kd_loss

__all__ = ["dist_loss", "dkd_loss", "kd_loss"]
