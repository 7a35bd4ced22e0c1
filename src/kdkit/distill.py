"""The Python API: `kdkit.distill(teacher, student, train, val, method="kd", ...)`.

    import kdkit
    result = kdkit.distill(teacher, student, (x_train, y_train), (x_val, y_val), method="kd",
                           epochs=5, temperature=4.0, alpha=0.9, test=(x_test, y_test))
    result.student        # the distilled student (best-by-validation weights), any nn.Module

The teacher may also be a kdkit.teachers.HybridTeacher: torch models, scikit-learn estimators and
saved outputs combined into one target (prepared on the data here).
    result.metrics        # validation (and test, when given) metrics

Same loop, losses and files as `kdkit distill`; the teacher is a trained nn.Module (or a
HybridTeacher), the student any nn.Module or an architecture name. To distill from an architecture
name, train the teacher first (`kdkit train --model cnn ... --out RUN`) and pass
kdkit.weights.load_model("RUN")[0]. Any config key (`kdkit.config.DistillConfig`) can be passed
as a keyword.
"""
import dataclasses
from pathlib import Path

from torch import nn

from kdkit.checkpoint import load_weights
from kdkit.config import DistillConfig, apply_overrides
from kdkit.data import Dataset, from_arrays
from kdkit.data.prepare import label_scarce, subsample_train
from kdkit.errors import KdkitError
from kdkit.evaluate import evaluate_model
from kdkit.recipes import distillation
from kdkit.weights import student_model
from kdkit.rundir import check_run_dir, claim_run_dir
from kdkit.train import FitResult, fit, select_device


@dataclasses.dataclass
class DistillResult:
    student: nn.Module
    fit: FitResult
    metrics: dict  # {"val": {...}, "test": {...}} (test only when given)


def as_dataset(train, val=None, test=None, classes=None, augment: str = "none") -> Dataset:
    """A Dataset from a Dataset, or from (x, y) pairs of arrays/tensors (val carved when not given)."""
    if isinstance(train, Dataset):
        return train
    if not (isinstance(train, (tuple, list)) and len(train) == 2):
        raise KdkitError("train must be a kdkit Dataset or an (x, y) pair of arrays/tensors")
    holdout = val if val is not None else test
    if holdout is None:
        raise KdkitError("give val=(x, y) (or test=(x, y)) so the student can be selected on held-out data")
    data = from_arrays(*train, *holdout, classes=classes, val_fraction=0.0 if val is not None else 0.1, augment=augment)
    if val is not None:
        # the user's val array is not part of the training array: no position there to key saved outputs by
        data.val = dataclasses.replace(data.test, index=None)
        if test is not None:
            data.test = from_arrays(*train, *test, classes=data.classes, val_fraction=0.0).test
    return data


def distill(teacher: nn.Module, student, train, val=None, method: str = "kd", *, test=None, classes=None,
            out: str = "runs/api", **config) -> DistillResult:
    """Distill `teacher` into `student` (an nn.Module or an architecture name). See module docstring."""
    _check_types(teacher, student)
    augment = config.pop("augment", "none")
    # method and out too go through the one type and range check of every config key
    cfg = apply_overrides(DistillConfig(progress=False), {**config, "method": method, "out": str(out)})
    check_run_dir(cfg.out, "api", cfg.overwrite)
    data = as_dataset(train, val, test, classes, augment)
    if cfg.train_per_class:  # a quick trial on fewer training samples (validation and test whole)
        data = subsample_train(data, cfg.train_per_class, cfg.seed)
    data = label_scarce(cfg, data, cfg.seed)  # labels_per_class, unlabeled
    if isinstance(student, str):
        student = student_model(dataclasses.replace(cfg, student=student), data, cfg.seed)
    _check_pair(teacher, student, data)
    distiller = distillation(cfg, data, teacher, student)
    with claim_run_dir(cfg.out, "api", cfg.overwrite):  # kdkit's own folder, one writer at a time
        result = fit(distiller, data, cfg, Path(cfg.out), meta={"arch": "python-api", "classes": list(data.classes)},
                     steps=cfg.step_budget or None)  # one phase: the whole budget
    student.load_state_dict(load_weights(Path(cfg.out) / "best.safetensors")[0])
    device = select_device(cfg.device)
    metrics = {"val": evaluate_model(student, dataclasses.replace(data, test=data.val), device)[0]}
    if test is not None or data.test is not data.val:
        metrics["test"] = evaluate_model(student, data, device)[0]
    return DistillResult(student.cpu().eval(), result, metrics)


def _check_types(teacher, student):
    """The teacher must be a model (trained, so never a name); the student a model or a name."""
    from kdkit.models import list_models

    if isinstance(teacher, str) and teacher in list_models():
        raise KdkitError(f"kdkit.distill takes a trained teacher model, got the architecture name '{teacher}'; train it first "
                         f"(`kdkit train --model {teacher} --dataset D --out RUN`), then pass kdkit.weights.load_model('RUN')[0]")
    if hasattr(teacher, "predict_proba") and not isinstance(teacher, nn.Module):
        raise KdkitError(f"the teacher {type(teacher).__name__} is an estimator with predict_proba, not an nn.Module; wrap it: "
                         "kdkit.teachers.HybridTeacher([kdkit.teachers.ProbaTeacher(estimator)])")
    if not isinstance(teacher, nn.Module):
        got = f"the string '{teacher}'" if isinstance(teacher, str) else "None" if teacher is None else type(teacher).__name__
        where = f"'{teacher}'" if isinstance(teacher, str) else "PATH"
        raise KdkitError(f"kdkit.distill takes the teacher as an nn.Module or a kdkit.teachers.HybridTeacher, got {got}; for saved "
                         f"weights pass kdkit.weights.load_model({where})[0], other teachers (TorchTeacher, ProbaTeacher, "
                         "FileTeacher) go inside a HybridTeacher([...])")
    if not isinstance(student, (nn.Module, str)):
        got = "None" if student is None else type(student).__name__
        raise KdkitError(f"kdkit.distill takes the student as an nn.Module or an architecture name (`kdkit models`), got {got}")


def _check_pair(teacher: nn.Module, student: nn.Module, data: Dataset):
    """Teacher and student must both take the data and return (B, K) logits for the same K classes."""
    from kdkit.models import output_classes
    from kdkit.teachers import HybridTeacher

    if isinstance(teacher, HybridTeacher):  # predicts the dataset's classes by construction
        if teacher.data is not data:
            teacher.prepare(data)
        teacher_classes = data.num_classes
    else:
        teacher_classes = output_classes(teacher, data.input_shape, "teacher")
    student_classes = output_classes(student, data.input_shape, "student")
    if teacher_classes != student_classes or student_classes != data.num_classes:
        raise KdkitError(f"teacher predicts {teacher_classes} classes, student {student_classes}, "
                         f"data has {data.num_classes}; build both models for {data.num_classes} classes")
