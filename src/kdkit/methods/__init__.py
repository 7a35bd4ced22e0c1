"""Distillation methods, registered by name in METHODS; `a+b` composes them (methods/compose.py).

A method is an nn.Module that holds the student (trainable), the teacher (frozen, always in eval
mode, never receiving gradients) and any adapters, and whose forward(x, y, index) returns
dict(loss=..., logits=..., **parts). Every part is logged. Add a method by writing its class
(see methods/base.py) and one line here.
"""
import inspect

from kdkit.errors import KdkitError, did_you_mean, unknown
from kdkit.methods.balanced import BKD, LAKD
from kdkit.methods.base import Method, Outputs
from kdkit.methods.ce import CrossEntropy
from kdkit.methods.compose import Composite
from kdkit.methods.dist import DIST
from kdkit.methods.dkd import DKD
from kdkit.methods.dml import DML
from kdkit.methods.at import AT
from kdkit.methods.crd import CRD
from kdkit.methods.fitnet import FitNet
from kdkit.methods.nst import NST
from kdkit.methods.pkt import PKT
from kdkit.methods.rkd import RKD
from kdkit.methods.sp import SP
from kdkit.methods.kd import KD
from kdkit.methods.vector import DistillationVector

METHODS: dict[str, type[Method]] = {
    "ce": CrossEntropy,
    "kd": KD,
    "dkd": DKD,
    "dist": DIST,
    "fitnet": FitNet,
    "at": AT,
    "sp": SP,
    "rkd": RKD,
    "pkt": PKT,
    "nst": NST,
    "crd": CRD,
    "vector": DistillationVector,
    "dml": DML,
    "bkd": BKD,
    "lakd": LAKD,
}

# What the caller knows about the run rather than a hyper-parameter: passed to the methods that take it.
CONTEXT = ("input_shape", "num_train", "peer", "class_counts")


def method_parts(name: str) -> list[str]:
    """'kd+fitnet' -> ['kd', 'fitnet'], each checked against METHODS."""
    parts = [p.strip() for p in name.split("+")]
    for part in parts:
        if part not in METHODS:
            raise unknown("method", part, METHODS)
    if len(set(parts)) != len(parts):
        raise KdkitError(f"method '{name}' names a part twice; name each method once")
    return parts


def hyperparameters_of(name: str) -> tuple[str, ...]:
    """The config keys a method (or every part of a composite) reads, in order, without repeats."""
    return tuple(dict.fromkeys(k for part in method_parts(name) for k in METHODS[part].hyperparameters))


def needs_peer(name: str) -> bool:
    """Whether method `name` (or a part of it) trains a peer network beside the student."""
    return any(METHODS[part].needs_peer for part in method_parts(name))


def used_hyperparameters(name: str, cfg) -> tuple[str, ...]:
    """hyperparameters_of(name), less the keys no part reads with cfg's settings."""
    unused = set.intersection(*(METHODS[part].unused_hyperparameters(cfg) | (set(hyperparameters_of(name)) -
                                set(METHODS[part].hyperparameters)) for part in method_parts(name)))
    return tuple(k for k in hyperparameters_of(name) if k not in unused)


def defaults_of(name: str) -> dict:
    """Each hyper-parameter's default (the first part's, for a key several parts share)."""
    out = {}
    for part in method_parts(name):
        params = inspect.signature(METHODS[part].__init__).parameters
        for key in METHODS[part].hyperparameters:
            if key in params and params[key].default is not inspect.Parameter.empty:
                out.setdefault(key, params[key].default)
    return out


def create_method(name: str, student, teacher=None, **kwargs) -> Method:
    """Build method `name` (or the composite `a+b`). kwargs: its hyper-parameters, plus any of
    CONTEXT (input_shape for the adapters' shape probe, num_train for memory banks, peer for dml,
    class_counts for the long-tail methods),
    each passed only to the methods that take it."""
    parts = method_parts(name)
    known = set(hyperparameters_of(name)) | set(CONTEXT)
    for key in kwargs:
        if key not in known:
            raise KdkitError(f"method {name} has no hyper-parameter '{key}'; {did_you_mean(key, known)}")
    built = {}
    for part in parts:
        params = inspect.signature(METHODS[part].__init__).parameters
        accepted = {k: v for k, v in kwargs.items() if k in params and (k in CONTEXT or k in METHODS[part].hyperparameters)}
        built[part] = METHODS[part](student, teacher, **accepted)
    return built[parts[0]] if len(parts) == 1 else Composite(built)


__all__ = ["METHODS", "Method", "Outputs", "create_method", "hyperparameters_of", "defaults_of", "method_parts",
           "needs_peer", "used_hyperparameters",
           "AT", "BKD", "LAKD", "CRD", "Composite", "CrossEntropy", "DIST", "DKD", "DML", "DistillationVector", "FitNet", "KD",
           "NST", "PKT", "RKD", "SP"]
