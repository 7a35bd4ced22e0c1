"""Distillation methods, registered by name in METHODS; `a+b` composes them (methods/compose.py).

A method is an nn.Module that holds the student (trainable), the teacher (frozen, always in eval
mode, never receiving gradients) and any adapters, and whose forward(x, y, index) returns
dict(loss=..., logits=..., **parts). Every part is logged. Its hyper-parameters are declared once,
in its own file (methods/hyper.py says how); `declared_keys()` turns them into config keys. Add a
method by writing its class (see methods/base.py) and one line here.
"""
import inspect
import typing
from dataclasses import dataclass

from kdkit.errors import KdkitError, did_you_mean, unknown
from kdkit.methods.at import AT
from kdkit.methods.balanced import BKD, LAKD
from kdkit.methods.base import Method, Outputs
from kdkit.methods.ce import CrossEntropy
from kdkit.methods.compose import Composite
from kdkit.methods.crd import CRD
from kdkit.methods.dist import DIST
from kdkit.methods.dkd import DKD
from kdkit.methods.dml import DML
from kdkit.methods.fitnet import FitNet
from kdkit.methods.hyper import Hyper
from kdkit.methods.kd import KD
from kdkit.methods.nst import NST
from kdkit.methods.pkt import PKT
from kdkit.methods.rkd import RKD
from kdkit.methods.sp import SP
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


@dataclass(frozen=True)
class Key:
    """A declared hyper-parameter as a config key: its declaration, type and default (None where the
    methods that read it differ: each then uses its own, listed in `defaults`), and who reads it."""

    hyper: Hyper
    type: type
    default: object
    defaults: dict  # method name -> its default
    methods: tuple[str, ...]


def names(cls: type[Method]) -> tuple[str, ...]:
    """The config keys method class `cls` reads: its declared hyper-parameters and the training keys it names."""
    return tuple(h if isinstance(h, str) else h.name for h in cls.hyperparameters)


def declared_keys() -> dict[str, Key]:
    """Every hyper-parameter the methods declare (not the training keys they read), in METHODS order."""
    found: dict[str, list] = {}
    for method, cls in METHODS.items():
        params, hints = inspect.signature(cls.__init__).parameters, typing.get_type_hints(cls.__init__)
        for hyper in cls.hyperparameters:
            if isinstance(hyper, Hyper):
                found.setdefault(hyper.name, []).append((method, hyper, hints.get(hyper.name), params[hyper.name].default))
    keys = {}
    for name, uses in found.items():
        defaults = {method: default for method, _, _, default in uses}
        same = len({repr(d) for d in defaults.values()}) == 1
        keys[name] = Key(uses[0][1], uses[0][2], next(iter(defaults.values())) if same else None, defaults,
                         tuple(defaults))
    return keys


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
    return tuple(dict.fromkeys(k for part in method_parts(name) for k in names(METHODS[part])))


def needs_peer(name: str) -> bool:
    """Whether method `name` (or a part of it) trains a peer network beside the student."""
    return any(METHODS[part].needs_peer for part in method_parts(name))


def used_hyperparameters(name: str, cfg) -> tuple[str, ...]:
    """hyperparameters_of(name), less the keys no part reads with cfg's settings."""
    unused = set.intersection(*(METHODS[part].unused_hyperparameters(cfg) | (set(hyperparameters_of(name)) -
                                set(names(METHODS[part]))) for part in method_parts(name)))
    return tuple(k for k in hyperparameters_of(name) if k not in unused)


def defaults_of(name: str) -> dict:
    """Each hyper-parameter's default (the first part's, for a key several parts share)."""
    out = {}
    for part in method_parts(name):
        params = inspect.signature(METHODS[part].__init__).parameters
        for key in names(METHODS[part]):
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
        accepted = {k: v for k, v in kwargs.items() if k in params and (k in CONTEXT or k in names(METHODS[part]))}
        built[part] = METHODS[part](student, teacher, **accepted)
    return built[parts[0]] if len(parts) == 1 else Composite(built)


__all__ = ["METHODS", "Hyper", "Key", "Method", "Outputs", "create_method", "declared_keys", "hyperparameters_of",
           "defaults_of", "method_parts", "names", "needs_peer", "used_hyperparameters",
           "AT", "BKD", "LAKD", "CRD", "Composite", "CrossEntropy", "DIST", "DKD", "DML", "DistillationVector", "FitNet", "KD",
           "NST", "PKT", "RKD", "SP"]
