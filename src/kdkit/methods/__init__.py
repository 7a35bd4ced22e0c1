"""Distillation methods: one file each, registered by name in METHODS.

A method is an nn.Module that holds the student (trainable), the teacher (frozen, always in eval
mode, never receiving gradients) and any adapters, and whose forward(x, y) returns
dict(loss=..., logits=..., **parts). Every part is logged. Add a method by writing one file and
one line here.
"""
from kdkit.errors import unknown
from kdkit.methods.base import Method
from kdkit.methods.ce import CrossEntropy
from kdkit.methods.dist import DIST
from kdkit.methods.dkd import DKD
from kdkit.methods.kd import KD

METHODS: dict[str, type[Method]] = {
    "ce": CrossEntropy,
    "kd": KD,
    "dkd": DKD,
    "dist": DIST,
}


def create_method(name: str, student, teacher=None, **kwargs) -> Method:
    if name not in METHODS:
        raise unknown("method", name, METHODS)
    return METHODS[name](student, teacher, **kwargs)


__all__ = ["METHODS", "Method", "create_method", "CrossEntropy", "DIST", "DKD", "KD"]
