"""Pre-flight checks of a distill run: every name (method, student, peer, teachers) and every setting
that needs the data or several keys at once, checked before any training, so a typo never costs a
trained teacher. Called by recipes.prepare_distill (kdkit distill, kdkit tune)."""
from kdkit.config import DistillConfig
from kdkit.data import Dataset, is_labelled
from kdkit.errors import KdkitError
from kdkit.teachers.specs import check_folds, hf_teacher_folder, sklearn_estimator, teacher_kind, teacher_specs
from kdkit.weights import build_model, is_weights, student_model, teacher_model


def check_distill(cfg: DistillConfig, data: Dataset, given=None):
    """Catch bad names and settings before any training starts, so a typo never costs a trained teacher.
    given (kdkit.given.Given): models handed over in Python, checked by kdkit.distill instead."""
    from kdkit.methods import method_parts

    parts = method_parts(cfg.method)
    if given is None or given.student is None:
        student_model(cfg, data, 0)  # (student_state_dict loaded: its keys checked now)
    if cfg.peer:
        build_model(cfg.peer, data, 0, dict(cfg.model_kwargs))
    if given is not None and given.teacher is not None:
        return
    specs = teacher_specs(cfg.teacher)
    if not specs:
        raise KdkitError("no teacher given; --teacher names weights, an architecture, saved outputs or sklearn:NAME")
    if cfg.teacher_state_dict and (len(specs) > 1 or teacher_kind(specs[0]) != "torch" or is_weights(specs[0])):
        raise KdkitError(f"teacher_state_dict loads one teacher that --teacher builds (an architecture or module:function), "
                         f"but --teacher is '{cfg.teacher}'; name one architecture, or drop teacher_state_dict")
    for spec in specs:
        kind = teacher_kind(spec)
        if kind == "torch" and not is_weights(spec) and ":" not in spec and ("/" in spec or "\\" in spec):
            raise KdkitError(f"teacher '{spec}' not found: no such run directory or weights file; check the path, "
                             "or name an architecture (`kdkit models`)")
        if kind == "torch" and not is_weights(spec):
            teacher_model(spec, cfg, data, 0)  # (teacher_state_dict loaded: its keys checked now)
        elif kind == "hf":  # its tokenizer reads the sentences; the model loads
            from kdkit.data.text import HfTokenizer, text_view

            text_view(data, HfTokenizer(hf_teacher_folder(spec, cfg), cfg.max_length))
            if not is_weights(spec):  # (saved weights load when the run starts)
                teacher_model(spec, cfg, data, 0)
        elif kind == "sklearn":
            sklearn_estimator(spec.split(":", 1)[1], 0)
            labels = data.train.labels
            check_folds(labels[is_labelled(labels)].numpy(), cfg.teacher_folds, list(data.classes))
        elif kind == "file":  # read and checked now: classes by name, a row for every train and val sample
            from kdkit.teachers import teacher_from_spec

            if cfg.unlabeled or cfg.text_augment:
                added = "unlabeled inputs" if cfg.unlabeled else "augmented sentences (text_augment)"
                raise KdkitError(f"saved teacher outputs ('{spec}') hold rows for the dataset's own training samples only, so "
                                 f"they cannot teach the {added}; use a torch or sklearn teacher, or labels_per_class alone")
            teacher_from_spec(spec, data)
    from kdkit.methods import METHODS
    from kdkit.methods.features import FeatureMethod

    hybrid = len(specs) > 1 or teacher_kind(specs[0]) != "torch"
    per_sample = [spec for spec in specs if teacher_kind(spec) in ("file", "sklearn")]
    if cfg.mix != "none" and per_sample:  # (fit says it too, after a torch member was trained)
        raise KdkitError(f"mix={cfg.mix} trains on mixed images, but teacher '{per_sample[0]}' holds one output per unmixed "
                         "sample (saved outputs, scikit-learn); use torch teachers, or mix=none")
    feature = [p for p in parts if issubclass(METHODS[p], FeatureMethod)]
    if hybrid and feature:
        raise KdkitError(f"method {feature[0]} matches features of one torch teacher, but --teacher names "
                         f"{len(specs)} teacher(s) of other kinds; use kd, dkd or dist with several teachers")
    check_transfer_exclude(cfg, data, hybrid)
    if cfg.teacher_cache:
        feature = [p for p in parts if (issubclass(METHODS[p], FeatureMethod) and not METHODS[p].pooled_teacher)
                   or not METHODS[p].needs_teacher]
        if hybrid or feature:
            what = f"method {feature[0]} needs more than the teacher's logits and pooled features" if feature \
                else f"--teacher {cfg.teacher} is not one torch model"
            raise KdkitError(f"--teacher-cache stores one torch teacher's logits and pooled features, but {what}; "
                             "use it with kd, dkd, dist, bkd, lakd, crd, rkd, pkt or vector and one teacher, or drop --teacher-cache")
    if cfg.combine == "weights" and len(cfg.teacher_weights) != len(specs):
        raise KdkitError(f"combine=weights needs one weight per teacher: {len(specs)} teachers, "
                         f"{len(cfg.teacher_weights)} weights; e.g. --set teacher_weights=0.5,0.5")


def check_transfer_exclude(cfg: DistillConfig, data: Dataset, hybrid: bool):
    exclude = set(cfg.transfer_exclude)
    if not exclude:
        return
    bad = sorted(k for k in exclude if not 0 <= k < data.num_classes)
    if bad:
        raise KdkitError(f"transfer_exclude names class {bad[0]}, but dataset '{data.name}' has classes "
                         f"0..{data.num_classes - 1}; give class indices, e.g. --set transfer_exclude=3")
    if len(exclude) >= data.num_classes:
        raise KdkitError("transfer_exclude leaves no class to distill on; exclude fewer classes")
    if hybrid:  # saved outputs and estimators are keyed by position in the full train split
        raise KdkitError("transfer_exclude needs one torch teacher (weights or an architecture), not "
                         f"--teacher {cfg.teacher}")
