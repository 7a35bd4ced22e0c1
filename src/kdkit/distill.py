"""The Python API: `kdkit.distill`, the very run of `kdkit distill` (recipes.run_distill): the teacher
row, then per seed the same student trained alone (scratch) and distilled, and the evidence table.

    import kdkit
    result = kdkit.distill(teacher, student, (x_train, y_train), (x_val, y_val), test=(x_test, y_test),
                           method="kd", epochs=5, temperature=4.0, seeds=[0, 1, 2])
    print(result.table)            # the table `kdkit distill` writes to summary.md
    result.student(x)              # the distilled student (first seed, best by validation) on your raw inputs
    result.summary["rows"]["student"]["metrics"]["accuracy"]["mean"]

teacher: a trained nn.Module (used as it is: it sees your inputs exactly as you give them), a
    kdkit.teachers.HybridTeacher, or anything --teacher takes (a run directory, an architecture to train
    here, saved outputs, sklearn:NAME).
student: an nn.Module (every row starts from its weights as handed over: kdkit.given) or an architecture.
train / val / test: (x, y) arrays or tensors, a torch Dataset or DataLoader, an iterable of (x, y) or
    of dicts (a Hugging Face dataset), a pandas DataFrame (label_column), or a kdkit Dataset
    (kdkit.data.as_dataset, docs/data.md; kind="tokens" or "table" for 2-D integers); or no train and
    dataset=NAME as on the command line. transform: a callable on float training batches in [0, 1]
    units (torchvision v2, kornia), applied after kdkit's augmentation, seen by teacher and student.
Every config key (`kdkit docs config`) is a keyword with the command line's name and meaning; an
unknown one is refused with the closest valid name. The defaults differ in two: progress=False and
report=False (a report needs out=DIR). out=None runs in a temporary folder, removed at the end:
nothing is written that you did not ask for; out=DIR keeps the run directory for `kdkit evaluate`,
`kdkit report` and `kdkit export` (a student given as a module is saved as python.ClassName: load the
weights into your own model, kdkit cannot rebuild a class from a name).
"""
import dataclasses
import shutil
import tempfile
from pathlib import Path

from torch import nn

from kdkit.checkpoint import load_weights
from kdkit.config import DistillConfig, apply_overrides
from kdkit.data import Dataset, as_dataset, load_dataset
from kdkit.data.normalize import normalized, with_input_step
from kdkit.data.text import TextOptions, is_sentences, text_dataset
from kdkit.errors import KdkitError
from kdkit.given import Given
from kdkit.recipes import run_distill
from kdkit.summary import to_markdown
from kdkit.weights import student_model


@dataclasses.dataclass
class DistillResult:
    student: nn.Module  # the first seed's distilled student, best by validation, behind its input step: takes your raw inputs
    summary: dict  # summary.json: rows teacher / scratch / student (mean +- std over seeds, per seed), gap_closed, facts
    table: str  # summary.md: the table `kdkit distill` writes
    out: Path | None  # the run directory (None: out=None, nothing kept)

    @property
    def metrics(self) -> dict:
        """{"test": the first seed's distilled student's test metrics}."""
        return {"test": self.summary["rows"]["student"]["per_seed"][0]}


def distill(teacher, student, train=None, val=None, test=None, *, method: str = "kd", out=None, classes=None,
            kind: str = "auto", transform=None, **config) -> DistillResult:
    """Distill `teacher` into `student` and compare with the student trained alone. See the module docstring."""
    teacher = _as_teacher(teacher)
    _check_types(teacher, student)
    names = {"teacher": teacher} if isinstance(teacher, str) else {}
    names |= {"student": student} if isinstance(student, str) else {}
    # method, out and the names too go through the one type and range check of every config key
    cfg = apply_overrides(DistillConfig(progress=False, report=False), {**config, **names, "method": method})
    if cfg.report and out is None:
        raise KdkitError("report=True writes report.html into the run directory, but out=None keeps none; give out=DIR")
    if is_sentences(train):  # (sentences, labels): tokenised as the config says
        data = text_dataset(train, val, test, options=TextOptions.of(cfg), classes=classes, val_fraction=cfg.val_fraction,
                            seed=cfg.seeds[0])
    elif train is not None:
        data = as_dataset(train, val, test, classes=classes, kind=kind, label_column=cfg.label_column,
                          val_fraction=cfg.val_fraction, seed=cfg.seeds[0])
    else:
        data = load_dataset(cfg.dataset, cfg.data_dir, cfg.val_fraction, seed=cfg.seeds[0], download=cfg.download,
                            label_column=cfg.label_column, image_size=cfg.image_size, text=TextOptions.of(cfg))
    data = normalized(data, cfg.normalize)
    given = Given(teacher if not isinstance(teacher, str) else None, student if isinstance(student, nn.Module) else None,
                  transform)
    # config.yaml and every sidecar say what ran: this data, and a given student's class
    cfg = dataclasses.replace(cfg, dataset=data.name, student=given.student_arch(cfg.student))
    if given.teacher is not None:  # (prepares a combination on the data)
        _check_pair(given.teacher, given.student if given.student is not None else student_model(cfg, data, cfg.seeds[0]), data)
    folder = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="kdkit-"))
    try:
        summary = run_distill(dataclasses.replace(cfg, out=str(folder)), data, given, kind="api")
        if summary.get("stopped_early"):
            keep = f"continue it with resume=True, out='{folder}'" if out is not None else \
                "give out=DIR to keep a run that resume=True continues"
            raise KdkitError(f"max_steps stopped the run before its end; {keep}")
        trained = given.student
        if trained is None:  # built by name: the first seed's distilled student, best by validation
            trained = student_model(cfg, data, cfg.seeds[0])
            trained.load_state_dict(load_weights(folder / "student" / f"seed{cfg.seeds[0]}" / "best.safetensors")[0])
        return DistillResult(with_input_step(trained.cpu().eval(), data), summary, to_markdown(summary),
                             folder if out is not None else None)
    finally:
        if out is None:
            shutil.rmtree(folder, ignore_errors=True)


def _check_types(teacher, student):
    """The teacher: a model, a combination, or a --teacher spec; the student: a model or an architecture name."""
    if not isinstance(teacher, (nn.Module, str)) and not _is_hybrid(teacher):
        got = "None" if teacher is None else type(teacher).__name__
        raise KdkitError(f"kdkit.distill takes the teacher as an nn.Module, a fitted scikit-learn estimator, a "
                         f"kdkit.teachers.HybridTeacher or what --teacher takes (a run directory, an architecture, "
                         f"sklearn:NAME), got {got}")
    if not isinstance(student, (nn.Module, str)):
        got = "None" if student is None else type(student).__name__
        raise KdkitError(f"kdkit.distill takes the student as an nn.Module or an architecture name (`kdkit models`), got {got}")


def _is_hybrid(teacher) -> bool:
    from kdkit.teachers import HybridTeacher

    return isinstance(teacher, HybridTeacher)


def _as_teacher(teacher):
    """A fitted scikit-learn estimator (predict_proba) becomes a one-member combination."""
    if hasattr(teacher, "predict_proba") and not isinstance(teacher, (nn.Module, str)) and not _is_hybrid(teacher):
        from kdkit.teachers import HybridTeacher, ProbaTeacher

        return HybridTeacher([ProbaTeacher(teacher)])
    return teacher


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
