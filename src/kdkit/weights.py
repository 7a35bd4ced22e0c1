"""Models and their weights: a fresh model built for a dataset (with the keyword arguments the
config gives its factory: model_kwargs, teacher_kwargs, student_kwargs), a plain state dict loaded
into it (teacher_state_dict, student_state_dict: a model trained elsewhere), and a model rebuilt from
the weights and sidecar kdkit saved (safetensors only, both checksums verified, every sidecar field
checked; a sidecar's architecture can only select a registered one, or a hook the user trusts).
Used by `kdkit evaluate`, `export`, `report`, `predict` and by every run that loads a teacher.
"""
import math
from pathlib import Path

import torch

from kdkit import checkpoint as ckpt
from kdkit.data import Dataset
from kdkit.errors import KdkitError
from kdkit.models import check_input, create_model
from kdkit.rundir import short_path


def input_sizes(data: Dataset) -> tuple[int, int]:
    """(in_channels, image_size) the model factories take: an image's C and H; a table's F features
    and 1 (so an MLP's input is F); token ids' length L and 1."""
    shape = data.input_shape
    return (shape[0], shape[1]) if len(shape) == 3 else (shape[0], 1)


def model_meta(arch: str, data: Dataset, kwargs: dict | None = None) -> dict:
    """What the sidecar must hold to rebuild and use the model without the dataset (and the keyword
    arguments its factory was given, when there were any)."""
    c, h = input_sizes(data)
    meta = {"arch": arch, "num_classes": data.num_classes, "in_channels": c, "image_size": h, "input_kind": data.kind,
            "classes": list(data.classes), "mean": list(data.mean), "std": list(data.std), "dataset": data.name}
    meta |= {"vocab_size": data.vocab_size} if data.kind == "tokens" else {}
    return meta | ({"model_kwargs": dict(kwargs)} if kwargs else {})


def factory_kwargs(cfg, role: str) -> dict:
    """The keyword arguments the config gives `role`'s factory: model_kwargs for kdkit train's model;
    for a distill run's teacher or student, model_kwargs with teacher_kwargs or student_kwargs over it."""
    if role == "model":
        return dict(cfg.model_kwargs)
    return cfg.model_kwargs | (cfg.teacher_kwargs if role == "teacher" else cfg.student_kwargs)


def build_model(arch: str, data: Dataset, seed: int, kwargs: dict | None = None, role: str = "model") -> torch.nn.Module:
    """A fresh model for this dataset; the seed fixes its initialisation (scratch and student share it).
    kwargs: for its factory (factory_kwargs); role (model, teacher, student) names it and its key in messages."""
    c, h = input_sizes(data)
    torch.manual_seed(seed)
    key = f"{role}_kwargs"
    model = create_model(arch, num_classes=data.num_classes, in_channels=c, image_size=h, kwargs=kwargs, kwargs_key=key,
                         vocab_size=data.vocab_size)
    check_input(model, data.input_shape, data.num_classes, f"{role} '{arch}'", key)
    return model


def student_model(cfg, data: Dataset, seed: int) -> torch.nn.Module:
    """A distill run's student: cfg.student built with its keyword arguments, started from
    student_state_dict when one is given (else from the seed's random initialisation)."""
    model = build_model(cfg.student, data, seed, factory_kwargs(cfg, "student"), "student")
    return load_state_dict(model, cfg.student_state_dict, "student_state_dict") if cfg.student_state_dict else model


def teacher_model(spec: str, cfg, data: Dataset, seed: int) -> torch.nn.Module:
    """A teacher architecture (a name or module:function) built with its keyword arguments, holding the
    weights of teacher_state_dict when one is given (a teacher trained elsewhere, used as it is)."""
    model = build_model(spec, data, seed, factory_kwargs(cfg, "teacher"), "teacher")
    return load_state_dict(model, cfg.teacher_state_dict, "teacher_state_dict") if cfg.teacher_state_dict else model


def load_state_dict(model: torch.nn.Module, path, key: str) -> torch.nn.Module:
    """`model` with the plain safetensors state dict `path` loaded (the config key `key` names it):
    its keys must be the model's state_dict() keys, with the same shapes."""
    tensors, _ = ckpt.load_weights(path)  # safetensors only: never a pickle
    mismatch = state_dict_mismatch(model, tensors)
    if mismatch:
        raise KdkitError(f"{key} '{short_path(path)}' does not fit the {type(model).__name__} built here ({mismatch}); save "
                         "model.state_dict() of the same architecture, built with the same arguments")
    model.load_state_dict(tensors)
    return model


def is_weights(teacher: str) -> bool:
    """--teacher names saved weights (a run directory or a file), not an architecture to train."""
    return Path(teacher).exists() or teacher.endswith(".safetensors")


def weights_path(path) -> Path:
    """A run directory (its best weights) or a .safetensors file."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.safetensors", "last.safetensors", "teacher/best.safetensors"):
            if (path / name).is_file():
                return path / name
        raise KdkitError(f"no weights in run directory '{path}' (expected best.safetensors); point at a `kdkit train` run or a .safetensors file")
    return path


def check_not_checkpoint(path: Path):
    """A training checkpoint (RUN/checkpoints/state-NNNNNN.safetensors) holds the model, optimizer
    and position for --resume, and its sidecar names no architecture: say so, and name the run's weights."""
    meta = ckpt.load_meta(path)
    resumable = "optimizer" in meta and "step" in meta
    named_like_one = path.parent.name == "checkpoints" and path.stem.startswith("state-") and path.stem[6:].isdigit()
    if "arch" not in meta and (resumable or named_like_one):
        run = path.parent.parent
        raise KdkitError(f"'{short_path(path)}' is a training checkpoint (the state --resume continues from), not "
                         f"model weights; use best.safetensors or last.safetensors of the run '{short_path(run, 100)}'")


def load_model(path, trusted_hooks=()) -> tuple[torch.nn.Module, dict]:
    """Rebuild a model from weights + sidecar written by kdkit (safetensors only, checksum verified).
    The sidecar's architecture must be a registered one, or a module:function hook in `trusted_hooks`."""
    from kdkit.models.registry import create_model_from_file

    path = weights_path(path)
    check_not_checkpoint(path)
    tensors, meta = ckpt.load_weights(path)
    side = ckpt.sidecar(path)
    if not meta:
        raise KdkitError(f"'{path}' has no sidecar '{side.name}' naming its architecture; save weights with kdkit, or, "
                         f"for a teacher, name its architecture: --teacher ARCH --set teacher_state_dict={short_path(path)}")
    sizes = check_model_meta(meta, side)
    if str(meta["arch"]).startswith("python."):  # kdkit.given.PYTHON_ARCH: a class built in Python
        raise KdkitError(f"'{short_path(path)}' holds a {meta['arch'][7:]} built in Python (kdkit.distill); kdkit rebuilds only "
                         f"architectures it can name: load the weights into your own model with "
                         f"model.load_state_dict(kdkit.checkpoint.load_weights(PATH)[0]), or give the student as a name "
                         f"(`kdkit models`, or my_pkg.nets:make_net)")
    kwargs = meta.get("model_kwargs", {})
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) and k.isidentifier() for k in kwargs):
        raise KdkitError(f"sidecar '{side}' has model_kwargs {str(kwargs)[:40]!r}, not a mapping of argument names; "
                         "restore the sidecar kdkit wrote")
    model = create_model_from_file(meta["arch"], side, trusted_hooks, kwargs, **sizes)
    mismatch = state_dict_mismatch(model, tensors)
    if mismatch:
        raise KdkitError(f"weights '{path}' do not fit architecture '{meta['arch']}' that its sidecar "
                         f"'{side.name}' names ({mismatch}); they belong to another model: point at the "
                         "weights the sidecar describes")
    model.load_state_dict(tensors)
    return model.eval(), meta


# What a weights sidecar must hold to rebuild its model, with the values it may take.
MODEL_META = {"num_classes": (2, 1_000_000), "in_channels": (1, 1024), "image_size": (1, 65_536)}


def check_model_meta(meta: dict, side: Path) -> dict:
    """The sizes a weights sidecar gives, checked (a hand-edited or foreign sidecar is refused with the field)."""
    if "arch" not in meta:
        raise KdkitError(f"sidecar '{side}' has no 'arch' naming the architecture; restore the sidecar kdkit wrote")
    sizes = {}
    for key, (low, high) in MODEL_META.items():
        value = meta.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            got = "missing" if key not in meta else f"{str(value)[:40]!r}"
            raise KdkitError(f"sidecar '{side}' has {key} {got}; it must be an integer in [{low}, {high}]: restore "
                             "the sidecar kdkit wrote")
        sizes[key] = value
    vocab = meta.get("vocab_size", 0)
    if isinstance(vocab, bool) or not isinstance(vocab, int) or not 0 <= vocab <= 100_000_000:
        raise KdkitError(f"sidecar '{side}' has vocab_size {str(vocab)[:40]!r}; it must be an integer in [0, 100000000]: "
                         "restore the sidecar kdkit wrote")
    sizes["vocab_size"] = vocab
    classes = meta.get("classes")
    if classes is not None and (not isinstance(classes, list) or len(classes) != sizes["num_classes"]
                                or not all(isinstance(c, (str, int)) for c in classes)):
        raise KdkitError(f"sidecar '{side}' has classes {str(classes)[:40]!r}; it must list {sizes['num_classes']} "
                         "class names (num_classes): restore the sidecar kdkit wrote")
    for key in ("mean", "std"):
        value = meta.get(key)
        if meta.get("input_kind") == "tokens" and value == []:  # token ids are never normalised
            continue
        if value is not None and (not isinstance(value, list) or len(value) != sizes["in_channels"]
                                  or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in value)
                                  or (key == "std" and not all(v > 0 for v in value))):
            raise KdkitError(f"sidecar '{side}' has {key} {str(value)[:40]!r}; it must list {sizes['in_channels']} finite "
                             f"numbers (one per channel{', > 0' if key == 'std' else ''}): restore the sidecar kdkit wrote")
    return sizes


def state_dict_mismatch(model: torch.nn.Module, tensors: dict) -> str:
    """'' when `tensors` load into `model`; else what does not fit: missing, unexpected, other shapes."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    shapes = [k for k in expected if k in tensors and tuple(tensors[k].shape) != tuple(expected[k].shape)]
    parts = [f"{len(missing)} tensors missing, e.g. '{missing[0]}'"] if missing else []
    parts += [f"{len(unexpected)} unexpected, e.g. '{unexpected[0]}'"] if unexpected else []
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} of another shape, e.g. '{k}' is {tuple(tensors[k].shape)} in the file, "
                     f"{tuple(expected[k].shape)} in the model")
    return "; ".join(parts)


def check_teacher(meta: dict, data: Dataset):
    """The teacher must predict the dataset's classes, in the same order."""
    if meta["num_classes"] != data.num_classes:
        raise KdkitError(f"teacher predicts {meta['num_classes']} classes but dataset '{data.name}' has {data.num_classes}; "
                         "use a teacher trained on this dataset")
    classes = meta.get("classes")
    if classes and list(classes) != list(data.classes):
        i = next(i for i, (a, b) in enumerate(zip(classes, data.classes)) if a != b)
        raise KdkitError(f"teacher class {i} is '{classes[i]}' but the dataset's is '{data.classes[i]}'; "
                         "the teacher was trained with another class order or dataset")

