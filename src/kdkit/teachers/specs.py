"""`--teacher a,b,c`: what each part names (saved weights or an architecture, saved outputs,
sklearn:NAME), the scikit-learn teachers the CLI trains itself, and each member scored on its own.
"""
from pathlib import Path

import torch

from kdkit.data import Dataset
from kdkit.errors import KdkitError, unknown
from kdkit.evaluate import classification_metrics, evaluate_model, test_metrics


def user_hooks(cfg) -> set[str]:
    """The module:function model hooks the user named (flags, --set, a config file they passed):
    the only ones a weights sidecar may name (trust_hooks adds others)."""
    named = [getattr(cfg, key, None) for key in ("model", "student", "peer")] + teacher_specs(getattr(cfg, "teacher", ""))
    return {name for name in named if name and ":" in name} | set(cfg.trust_hooks)


def teacher_specs(teacher: str) -> list[str]:
    return [spec.strip() for spec in str(teacher).split(",") if spec.strip()]


def teacher_kind(spec: str) -> str:
    """'torch' (weights or an architecture), 'sklearn' (sklearn:NAME) or 'file' (saved outputs)."""
    from kdkit.teachers import teacher_from_spec
    from kdkit.teachers.sources import TEXT_SUFFIXES

    if spec.startswith("sklearn:"):
        return "sklearn"
    if Path(spec).suffix.lower() in (".npy", ".parquet", *TEXT_SUFFIXES) or (spec.endswith(".safetensors") and teacher_from_spec(spec) is not None):
        return "file"
    return "torch"


# scikit-learn teachers the CLI can train itself (the Python API takes any object with predict_proba).
SKLEARN = ("logistic", "forest", "hgb")


def other_teacher(spec: str, name: str, data: Dataset, seed: int):
    from kdkit.teachers import FileTeacher, ProbaTeacher, flatten_raw

    if spec.startswith("sklearn:"):
        estimator = sklearn_estimator(spec.split(":", 1)[1], seed)
        estimator.fit(flatten_raw(data.train.images.numpy()), data.train.labels.numpy())
        return ProbaTeacher(estimator, name=name)
    return FileTeacher(spec, name=name)


def sklearn_estimator(kind: str, seed: int):
    """An untrained scikit-learn classifier, fitted by the caller on the raw flattened train split."""
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "logistic":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=300))
    if kind == "forest":
        return RandomForestClassifier(n_estimators=200, random_state=seed, n_jobs=-1)
    if kind == "hgb":
        return HistGradientBoostingClassifier(max_iter=100, random_state=seed)
    raise unknown("scikit-learn teacher", f"sklearn:{kind}", [f"sklearn:{k}" for k in SKLEARN])


def teacher_metrics(teacher, data: Dataset, device) -> tuple[dict, torch.Tensor | None]:
    """Test metrics of the teacher (and its test logits, for agreement). A combination that
    includes saved outputs (training data only) is measured on the validation split instead."""
    from kdkit.teachers import HybridTeacher

    if not isinstance(teacher, HybridTeacher):
        return evaluate_model(teacher, data, device)
    try:
        log_probs = teacher.split_log_probs("test")
    except KdkitError:
        metrics = classification_metrics(teacher.split_log_probs("val"), data.val.labels, list(data.classes))
        return dict(metrics, measured_on="val"), None
    return test_metrics(log_probs, data.test.labels, data), log_probs


def member_rows(teacher, data: Dataset) -> dict:
    """Each member of a combination, measured alone on test (on validation for saved outputs)."""
    from kdkit.teachers import FileTeacher, HybridTeacher

    if not isinstance(teacher, HybridTeacher) or len(teacher.sources) < 2:
        return {}
    rows = {}
    for i, source in enumerate(teacher.sources):
        split = "val" if isinstance(source, FileTeacher) else "test"
        labels = getattr(data, split).labels
        metrics = classification_metrics(teacher.source_log_probs(i, split), labels, list(data.classes))
        rows[source.name] = [dict(metrics, measured_on=split)]
    return rows


def hybrid_facts(teacher, data: Dataset) -> dict:
    """Size of a combination: the parameters of its torch members (estimators and files: not counted)."""
    return {"parameters": sum(p.numel() for p in teacher.parameters()),
            "note": "torch members only; latency and FLOPs are per member"}

