"""Models handed over in Python (`kdkit.distill(teacher, student, ...)`), in place of the names a
config gives: the same run, rows and files as `kdkit distill` (recipes.run_distill), with

  teacher  an nn.Module the user trained (or a kdkit.teachers.HybridTeacher): used as it is, never
           trained; it sees the inputs exactly as the user gave them, whatever `normalize` makes of
           them for the student (kdkit.data.normalize.raw_view)
  student  an nn.Module to train: every row starts from its weights as handed over (the scratch rows
           and later seeds from a copy taken before any training; seeds vary the data order, the
           augmentation and dropout); the first seed's distilled student is the object itself
  transform  a callable on float batches that fit() applies after kdkit's augmentation (the data side)

Weights saved for a given student name its class (`python.ClassName`): kdkit cannot rebuild a class
from a name (it never imports what a file names), so `kdkit evaluate` and `export` say to load the
weights into the user's own model.
"""
import copy
import dataclasses
from typing import Callable

from torch import nn

PYTHON_ARCH = "python."  # the sidecar architecture of a model built in Python: python.ClassName


@dataclasses.dataclass
class Given:
    teacher: object = None  # nn.Module or HybridTeacher; None: the config's teacher
    student: nn.Module | None = None  # None: the config's student architecture
    transform: Callable | None = None

    def __post_init__(self):
        self._pristine = None if self.student is None else copy.deepcopy(self.student)

    def student_arch(self, arch: str) -> str:
        """The architecture a sidecar records for the student."""
        return arch if self.student is None else PYTHON_ARCH + type(self.student).__name__

    def new_student(self, build, first: bool) -> nn.Module:
        """A student to train: build() (from the config) when none was given; else the given object
        itself for the first seed's distilled student (`first`), a fresh copy of it otherwise."""
        if self.student is None:
            return build()
        return self.student if first else copy.deepcopy(self._pristine)

    def prepared_teacher(self, data):
        """The given teacher; a combination (HybridTeacher) prepared on the run's final data (its
        index-keyed tables must cover every training row, unlabelled ones included)."""
        if hasattr(self.teacher, "prepare") and getattr(self.teacher, "data", None) is not data:
            self.teacher.prepare(data)
        return self.teacher

    def teacher_info(self) -> dict:
        info = {"source": "python", "arch": type(self.teacher).__name__}
        report = getattr(self.teacher, "report", None)
        return info | ({"members": report()} if callable(report) else {})
