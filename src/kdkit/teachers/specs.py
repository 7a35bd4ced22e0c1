"""`--teacher a,b,c`: what each part names (saved weights or an architecture, saved outputs,
sklearn:NAME), the scikit-learn teachers the CLI trains itself, and each member scored on its own.

A scikit-learn teacher trained here labels the training rows out of fold (teacher_folds = K >= 2):
a forest or boosted model scoring the rows it was fit on gives near one-hot probabilities, so the
student would learn little beyond the hard labels. Each of K stratified folds (shuffled with the
teacher's seed) is labelled by a clone fit on the other K - 1; validation and test rows, and the
teacher's own metrics, come from the model fit on the whole train split.
"""
from pathlib import Path

import numpy as np
import torch

from kdkit.data import Dataset
from kdkit.errors import KdkitError, unknown
from kdkit.evaluate import classification_metrics, evaluate_model, model_facts, test_metrics
from kdkit.teachers.sources import ProbaTeacher, probabilities_to_log


def user_hooks(cfg) -> set[str]:
    """The module:function model hooks the user named (flags, --set, a config file they passed):
    the only ones a weights sidecar may name (trust_hooks adds others)."""
    named = [getattr(cfg, key, None) for key in ("model", "student", "peer")] + teacher_specs(getattr(cfg, "teacher", ""))
    return {name for name in named if name and ":" in name} | set(cfg.trust_hooks)


def teacher_specs(teacher: str) -> list[str]:
    return [spec.strip() for spec in str(teacher).split(",") if spec.strip()]


def teacher_kind(spec: str) -> str:
    """'torch' (weights or an architecture; an hf:DIR image classifier too), 'sklearn' (sklearn:NAME),
    'file' (saved outputs) or 'hf' (hf:DIR, a Hugging Face text model reading its own tokenisation
    of the sentences)."""
    from kdkit.teachers import teacher_from_spec
    from kdkit.teachers.sources import TEXT_SUFFIXES

    if spec.startswith("sklearn:"):
        return "sklearn"
    folder = spec if spec.startswith("hf:") else hf_weights(spec)
    if folder:  # a Hugging Face model: a text one reads its own tokenisation, an image one the images
        from kdkit.models.hf import reads_images

        return "torch" if reads_images(folder) else "hf"
    if Path(spec).suffix.lower() in (".npy", ".parquet", *TEXT_SUFFIXES) or (spec.endswith(".safetensors") and teacher_from_spec(spec) is not None):
        return "file"
    return "torch"


def hf_weights(spec: str) -> str:
    """The hf:DIR whose model saved weights at `spec` hold (a run's fine-tuned transformer teacher), or
    '' when `spec` is not such weights. Read from the sidecar: loading them needs the user to name the
    same folder (--trust-hook hf:DIR), as for any name a file gives."""
    from kdkit.checkpoint import load_meta
    from kdkit.weights import is_weights, weights_path

    if spec.startswith("hf:") or not is_weights(spec) or not Path(spec).exists():
        return ""
    try:
        arch = load_meta(weights_path(spec)).get("arch")
    except KdkitError:
        return ""  # loading them says what is wrong
    return arch if isinstance(arch, str) and arch.startswith("hf:") else ""


def hf_teacher_folder(spec: str, cfg) -> str:
    """The hf:DIR of an hf teacher: `spec` itself, or the folder its weights' sidecar names, which the
    user must name too (a name read from a file never selects a model on its own)."""
    folder = spec if spec.startswith("hf:") else hf_weights(spec)
    if folder != spec and folder not in user_hooks(cfg):
        raise KdkitError(f"'{spec}' holds weights of the Hugging Face model {folder}, named by its sidecar; kdkit loads "
                         f"a model a file names only when you name it too: --trust-hook {folder}")
    return folder


# scikit-learn teachers the CLI can train itself (the Python API takes any object with predict_proba).
SKLEARN = ("logistic", "forest", "hgb")


def other_teacher(spec: str, name: str, data: Dataset, seed: int, folds: int):
    """A FileTeacher, or an sklearn:NAME estimator fit here on the raw train split's labelled samples;
    with folds >= 2 those rows are labelled out of fold (module docstring), else in-sample. Unlabelled
    train rows (labels_per_class, unlabeled) are predicted by the estimator, which never saw them."""
    from kdkit.data import is_labelled
    from kdkit.teachers import FileTeacher, flatten_raw

    if not spec.startswith("sklearn:"):
        return FileTeacher(spec, name=name)
    kind = spec.split(":", 1)[1]
    x, y = flatten_raw(data.train.images.numpy()), data.train.labels.numpy()  # (N, F), (N,)
    labelled = is_labelled(data.train.labels).numpy()  # (N,)
    estimator = sklearn_estimator(kind, seed).fit(x[labelled], y[labelled])
    if folds < 2:
        return ProbaTeacher(estimator, name=name)
    probs = np.zeros((len(y), len(estimator.classes_)))  # (N, K)
    probs[labelled] = out_of_fold_probabilities(lambda: sklearn_estimator(kind, seed), x[labelled], y[labelled], folds, seed)
    if not labelled.all():
        probs[~labelled] = estimator.predict_proba(x[~labelled])
    return OutOfFoldTeacher(estimator, probs, name=name)


class OutOfFoldTeacher(ProbaTeacher):
    """A ProbaTeacher whose train-split rows are given out-of-fold probabilities (N_train, K), in
    train-split order and the estimator's column order; other splits are predicted as usual."""

    def __init__(self, estimator, train_probabilities: np.ndarray, name: str):
        super().__init__(estimator, name=name)
        self.train_probabilities = train_probabilities

    def split_table(self, split, split_name: str) -> torch.Tensor:
        if split_name != "train":
            return super().split_table(split, split_name)
        if len(self.train_probabilities) != len(split):
            raise KdkitError(f"teacher '{self.name}' holds out-of-fold probabilities for {len(self.train_probabilities)} "
                             f"train samples, the train split has {len(split)}; build the teacher for this dataset")
        return probabilities_to_log(self.train_probabilities, f"teacher '{self.name}'")


def out_of_fold_probabilities(make_estimator, x: np.ndarray, y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """(N, K) float64 predict_proba of each row of x by a fresh `make_estimator()` fit on the other
    folds of StratifiedKFold(folds, shuffle=True, random_state=seed); columns in np.unique(y) order."""
    from sklearn.model_selection import StratifiedKFold

    check_folds(y, folds)
    probs = np.zeros((len(y), len(np.unique(y))))
    for fit_rows, held_out in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        probs[held_out] = make_estimator().fit(x[fit_rows], y[fit_rows]).predict_proba(x[held_out])
    return probs


def check_folds(labels: np.ndarray, folds: int, classes=None) -> None:
    """Every class at least `folds` times in train, so each fold holds its share of every class (a class
    seen once would be missing from the model fit for its own fold; sklearn only warns)."""
    if folds < 2:
        return
    values, counts = np.unique(labels, return_counts=True)
    fewest = int(counts.min())
    if fewest < folds:
        rare = values[counts.argmin()]
        fix = f"--set teacher_folds={fewest}, or 0 for" if fewest >= 2 else "--set teacher_folds=0 for"
        raise KdkitError(f"teacher_folds={folds} needs at least {folds} train samples of every class, class "
                         f"'{classes[rare] if classes else rare}' has {fewest}; use {fix} in-sample soft targets")


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


FACT_ROWS = 256  # token ids: the test sentences the models are timed on (model_facts' sample)


def fact_sample(data: Dataset):
    """The inputs model_facts times token models on: real test sentences (None for other data)."""
    return data.test.images[:FACT_ROWS] if data.kind == "tokens" else None


def run_facts(teacher, student, data: Dataset) -> dict:
    """Size and speed of a run's models: "teacher", "student" and each member of a combination; a text
    teacher (hf:DIR) on its own ids of the same test sentences, and its row the model's when alone."""
    from kdkit.teachers import HybridTeacher

    sample = fact_sample(data)
    facts = {"teacher": hybrid_facts(teacher, data) if isinstance(teacher, HybridTeacher) else model_facts(teacher, data.input_shape, sample=sample),
             "student": model_facts(student, data.input_shape, sample=sample)}
    for source in getattr(teacher, "sources", []):  # members of a combination
        model = getattr(source, "model", None)
        ids = getattr(source, "ids", None)  # a text teacher's own ids of every sentence (teachers/text.py)
        own = ids.index_select(0, data.test.index[:FACT_ROWS]) if ids is not None else sample
        facts[source.name] = model_facts(model, tuple(own.shape[1:]) if ids is not None else data.input_shape, sample=own) if model is not None else {}
    if isinstance(teacher, HybridTeacher) and len(teacher.sources) == 1 and getattr(teacher.sources[0], "ids", None) is not None:
        facts["teacher"] = facts[teacher.sources[0].name]  # one hf teacher: its row is the model's
    return facts


def hybrid_facts(teacher, data: Dataset) -> dict:
    """Size of a combination: the parameters of its torch members (estimators and files: not counted)."""
    return {"parameters": sum(p.numel() for p in teacher.parameters()),
            "note": "torch members only; latency and FLOPs are per member"}

