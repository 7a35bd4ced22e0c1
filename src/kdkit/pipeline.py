"""Whole runs: `kdkit train` and `kdkit distill`, from a config to a run directory with the evidence.

A distill run directory:
  config.yaml                      the resolved config
  teacher/                         the teacher's own training run (when trained here)
  scratch/seed{S}/, student/seed{S}/   one fit() run each (weights, metrics.jsonl, tb/)
  summary.json, summary.md         teacher vs scratch vs student, mean +- std over seeds, gap_closed
"""
import dataclasses
import json
import math
import platform
import time
from pathlib import Path

import torch

from kdkit import checkpoint as ckpt
from kdkit import distributed
from kdkit.config import DistillConfig, TrainConfig, apply_overrides, dump_yaml, load_yaml
from kdkit.data import BatchLoader, Dataset, Split, load_dataset
from kdkit.errors import KdkitError, shown, unknown
from kdkit.evaluate import agreement, classification_metrics, model_facts, predict_logits
from kdkit.methods import CrossEntropy, create_method
from kdkit.models import check_input, create_model
from kdkit.rundir import check_run_dir, claim_run_dir, short_path
from kdkit.summary import summarise, write_summary
from kdkit.teachers import HybridTeacher
from kdkit.train import (autocast_dtype, check_resume_settings, complete_checkpoints, fit, select_device,
                         uses_channels_last)


def model_meta(arch: str, data: Dataset) -> dict:
    """What the sidecar must hold to rebuild and use the model without the dataset."""
    c, h, _ = data.input_shape
    return {"arch": arch, "num_classes": data.num_classes, "in_channels": c, "image_size": h,
            "classes": list(data.classes), "mean": list(data.mean), "std": list(data.std), "dataset": data.name}


def prepare_data(cfg, data: Dataset | None, seed: int) -> Dataset:
    """The run's dataset: loaded (unless given), then made long-tailed when `imbalance` is set."""
    data = data or load_dataset(cfg.dataset, cfg.data_dir, cfg.val_fraction, seed=seed, download=cfg.download)
    if cfg.imbalance:
        from kdkit.data.longtail import describe_counts, long_tailed

        data = long_tailed(data, cfg.imbalance, seed)
        if cfg.progress:
            print(describe_counts(data.train.labels, list(data.classes)))
    return data


def transfer_set(data: Dataset, exclude) -> Dataset:
    """The distilled student's data: `data` without the classes in `exclude` in train and val (the
    transfer set of Hinton et al. 2015, section 3: MNIST without 3s); test, classes and the
    normalisation statistics stay those of the whole dataset."""
    if not exclude:
        return data
    drop = torch.tensor(sorted(set(exclude)))

    def keep(split: Split) -> Split:
        mask = ~torch.isin(split.labels, drop)  # (N,)
        return dataclasses.replace(split, images=split.images[mask], labels=split.labels[mask],
                                   index=None if split.index is None else split.index[mask])

    return dataclasses.replace(data, train=keep(data.train), val=keep(data.val))


def class_counts(data: Dataset) -> list[int]:
    """Training samples per class (the prior that long-tail losses and post-hoc adjustment use)."""
    return torch.bincount(data.train.labels, minlength=data.num_classes).tolist()


def cross_entropy(model, cfg, data: Dataset) -> CrossEntropy:
    """The hard-label training of teachers and scratch students (balanced when `balance` says so)."""
    return CrossEntropy(model, label_smoothing=cfg.label_smoothing, balance=cfg.balance, tau=cfg.tau,
                        cb_beta=cfg.cb_beta, class_counts=class_counts(data))


def build_model(arch: str, data: Dataset, seed: int) -> torch.nn.Module:
    """A fresh model for this dataset; the seed fixes its initialisation (scratch and student share it)."""
    c, h, _ = data.input_shape
    torch.manual_seed(seed)
    model = create_model(arch, num_classes=data.num_classes, in_channels=c, image_size=h)
    check_input(model, data.input_shape, data.num_classes)
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
        raise KdkitError(f"'{path}' has no sidecar '{side.name}' naming its architecture; "
                         "save weights with kdkit, or build the model in Python and pass it to kdkit.distill()")
    sizes = check_model_meta(meta, side)
    model = create_model_from_file(meta["arch"], side, trusted_hooks, **sizes)
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
    classes = meta.get("classes")
    if classes is not None and (not isinstance(classes, list) or len(classes) != sizes["num_classes"]
                                or not all(isinstance(c, (str, int)) for c in classes)):
        raise KdkitError(f"sidecar '{side}' has classes {str(classes)[:40]!r}; it must list {sizes['num_classes']} "
                         "class names (num_classes): restore the sidecar kdkit wrote")
    for key in ("mean", "std"):
        value = meta.get(key)
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


def evaluate_model(model, data: Dataset, device, teacher_logits=None, posthoc_tau: float = 0.0) -> tuple[dict, torch.Tensor]:
    """Test-set metrics (and agreement with the teacher when its test logits are given).
    posthoc_tau > 0: the logits are first adjusted by - posthoc_tau * log(train prior)."""
    test = BatchLoader(data.test, 512, shuffle=False, mean=data.mean, std=data.std, device=device)
    logits, labels = predict_logits(model.to(device), test, device)
    return test_metrics(logits, labels, data, teacher_logits, posthoc_tau), logits


def test_metrics(logits, labels, data: Dataset, teacher_logits=None, posthoc_tau: float = 0.0) -> dict:
    """classification_metrics, plus many/medium/few-shot accuracy when train is long-tailed."""
    from kdkit.data.longtail import scaled_thresholds, shot_groups
    from kdkit.losses.balanced import posthoc_adjust

    counts = class_counts(data)
    if posthoc_tau > 0:
        logits = posthoc_adjust(torch.as_tensor(logits), torch.tensor(counts, dtype=torch.float64), posthoc_tau)
    metrics = classification_metrics(logits, labels, list(data.classes))
    if teacher_logits is not None:
        metrics |= agreement(teacher_logits, logits)
    if max(counts) > min(counts):  # an imbalanced train split: accuracy by how many samples a class had
        many, few = scaled_thresholds(max(counts))
        recalls = [metrics["per_class"][name]["recall"] for name in data.classes]
        for group, members in shot_groups(counts, many, few).items():
            metrics[f"{group}_shot_accuracy"] = sum(recalls[k] for k in members) / len(members) if members else None
        metrics["shot_thresholds"] = {"many": many, "few": few}
    return metrics


def _fit_or_skip(method, data, cfg, run_dir: Path, meta: dict, desc: str):
    """fit(), unless --resume finds this phase already finished (no work is ever redone or lost;
    a finished phase must have been made with the same settings)."""
    done = run_dir / "fit.json"  # written last: the weights before it are complete
    if cfg.resume and done.is_file() and (run_dir / "last.safetensors").is_file():
        saved = ckpt.load_meta(run_dir / "last.safetensors").get("config", {})
        check_resume_settings(saved, dataclasses.asdict(cfg), f"'{run_dir}'", finished=True)
        return json.loads(done.read_text())
    has_state = bool(complete_checkpoints(run_dir))
    result = fit(method, data, dataclasses.replace(cfg, resume=cfg.resume and has_state), run_dir, meta=meta, desc=desc)
    info = {k: v for k, v in dataclasses.asdict(result).items() if k != "run_dir"}
    if not result.stopped_early:
        ckpt.write_json(done, info)
    return info


def _load(model, run_dir: Path, which: str = "best"):
    tensors, _ = ckpt.load_weights(run_dir / f"{which}.safetensors")
    model.load_state_dict(tensors)
    return model


def test_both(model, run_dir: Path, data: Dataset, device, teacher_logits=None, posthoc_tau: float = 0.0) -> dict:
    """Full test metrics of the best-by-validation weights, plus the last weights' accuracy; both are
    also written into the weights' sidecars."""
    last, _ = evaluate_model(_load(model, run_dir, "last"), data, device, posthoc_tau=posthoc_tau)
    metrics, _ = evaluate_model(_load(model, run_dir, "best"), data, device, teacher_logits, posthoc_tau)
    metrics["accuracy_last"] = last["accuracy"]
    for which, m in (("best", metrics), ("last", last)):
        keep = {k: m[k] for k in ("accuracy", "balanced_accuracy", "f1_macro", "nll", "ece") if k in m}
        ckpt.update_meta(run_dir / f"{which}.safetensors", test_metrics=keep)
    return metrics


def environment() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
            "cpu_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def start_run(cfg, kind: str):
    """Claim cfg.out for this run (kdkit's own folder, locked: docs/reliability.md), check that
    --resume continues what is there, then write config.yaml: it always describes the weights
    beside it. Returns the lock; hold it for the whole run."""
    lock = claim_run_dir(cfg.out, kind, cfg.overwrite)
    try:
        out = Path(cfg.out)
        if cfg.resume and (out / "config.yaml").is_file():
            saved = dataclasses.asdict(apply_overrides(type(cfg)(), load_yaml(out / "config.yaml")))
            finished = any(out.rglob("fit.json"))
            check_resume_settings(saved, dataclasses.asdict(cfg), f"the run in '{out}'", finished, warn=False)
        if distributed.is_main():
            ckpt.atomic_write(out / "config.yaml", dump_yaml(cfg).encode())
    except BaseException:
        lock.release()
        raise
    return lock


def parse_device(name: str) -> torch.device:
    """select_device, with a one-line error for a string that names no device (e.g. 'gpu')."""
    try:
        return select_device(name)
    except RuntimeError:
        raise KdkitError(f"unknown device {shown(name)}; use auto, cpu, cuda, cuda:N or mps, e.g. --device cpu") from None


def check_classes(data: Dataset):
    """A classifier needs two classes; one would train, then fail when its metrics are computed."""
    if data.num_classes < 2:
        raise KdkitError(f"dataset '{data.name}' has {data.num_classes} class ({', '.join(map(str, data.classes))}); "
                         "a classifier needs at least 2: add a train/<class>/ and test/<class>/ folder per class")


def run_train(cfg: TrainConfig, data: Dataset | None = None) -> dict:
    """`kdkit train`: one model with cross-entropy; writes weights and a summary of test metrics."""
    distributed.setup()  # torchrun: join the process group (a no-op for one process)
    check_run_dir(cfg.out, "train", cfg.overwrite)
    parse_device(cfg.device)
    data = prepare_data(cfg, data, cfg.seed)
    check_classes(data)
    build_model(cfg.model, data, cfg.seed)
    with start_run(cfg, "train"):
        return _train(cfg, data, Path(cfg.out))


def _train(cfg: TrainConfig, data: Dataset, out: Path) -> dict:
    model = build_model(cfg.model, data, cfg.seed)
    method = cross_entropy(model, cfg, data)
    info = _fit_or_skip(method, data, cfg, out, model_meta(cfg.model, data), desc=f"train {cfg.model}")
    if info.get("stopped_early"):
        return {"stopped_early": True, "run_dir": str(out)}
    device = select_device(cfg.device)
    metrics = test_both(model, out, data, device, posthoc_tau=cfg.posthoc_tau)
    summary = {"model": cfg.model, "dataset": data.name, "metrics": metrics, "fit": info,
               "facts": model_facts(model, data.input_shape), "environment": environment()}
    ckpt.write_json(out / "summary.json", summary)
    return summary


def _teacher(cfg: DistillConfig, data: Dataset, out: Path):
    """The teacher: one torch model (loaded, or trained here), or several teachers of any kind
    (`--teacher a,b,c`: weights, architectures, saved outputs, sklearn:NAME) combined by `combine`."""
    specs = teacher_specs(cfg.teacher)
    if len(specs) == 1 and _kind(specs[0]) == "torch":
        return _torch_teacher(specs[0], cfg, data, out / "teacher", cfg.seeds[0])
    from kdkit.teachers import HybridTeacher, TorchTeacher

    sources, members = [], []
    for i, spec in enumerate(specs):
        name = f"teacher{i + 1}"
        if _kind(spec) == "torch":
            model, info = _torch_teacher(spec, cfg, data, out / name, cfg.seeds[0] + i, bootstrap=cfg.bootstrap)
            sources.append(TorchTeacher(model, classes=list(data.classes), name=name))
            members.append((name, model, info))
        else:
            sources.append(_other_teacher(spec, name, data, cfg.seeds[0] + i))
            members.append((name, None, {"source": spec, "arch": spec}))
    teacher = HybridTeacher(sources, cfg.combine, cfg.teacher_weights or None).prepare(data)
    info = {"source": "hybrid", "arch": f"{cfg.combine}({', '.join(specs)})", "members": teacher.report(),
            "member_info": {name: info for name, _, info in members}}
    return teacher, info


def teacher_source(teacher, cfg: DistillConfig, data: Dataset, out: Path, device) -> tuple:
    """What a distilled student learns from: the teacher itself (online KD), or with teacher_cache
    its stored outputs on recorded views (kdkit.teachers.cache), built once per teacher, data and
    settings under out/teacher_cache and reused by every later run that matches."""
    if not cfg.teacher_cache:
        return teacher, {}
    from kdkit.teachers.cache import TeacherCache

    t0 = time.perf_counter()
    cache = TeacherCache.build(teacher, data.train, out / "teacher_cache", augment=data.augment if cfg.augment == "auto" else cfg.augment,
                               views=cfg.cache_views, seed=cfg.seed, mean=data.mean, std=data.std, device=device,
                               dtype=cfg.cache_dtype, topk=cfg.cache_topk, autocast=autocast_dtype(cfg.amp, device),
                               layers=cached_layers(cfg, teacher, data.input_shape), log=console_log,
                               workers=cfg.workers, channels_last=uses_channels_last(cfg.channels_last, device))
    return cache, {"teacher_cache": str(cache.path), "teacher_cache_seconds": time.perf_counter() - t0}


def cached_layers(cfg: DistillConfig, teacher, input_shape) -> list[str]:
    """The teacher layers whose pooled outputs the cache must hold for cfg.method (crd, rkd, pkt,
    vector and their compositions), in the teacher's module order; none for logit methods."""
    from kdkit.methods import METHODS, method_parts
    from kdkit.methods.features import FeatureMethod

    wanted = {name for part in method_parts(cfg.method) if issubclass(METHODS[part], FeatureMethod)
              for name in METHODS[part].teacher_layers_of(teacher, cfg.teacher_layers, input_shape, cfg.student_layers)}
    return [name for name, _ in teacher.named_modules() if name in wanted]


def console_log(message: str):
    if distributed.is_main():
        print(message)


def user_hooks(cfg) -> set[str]:
    """The module:function model hooks the user named (flags, --set, a config file they passed):
    the only ones a weights sidecar may name (trust_hooks adds others)."""
    named = [getattr(cfg, key, None) for key in ("model", "student", "peer")] + teacher_specs(getattr(cfg, "teacher", ""))
    return {name for name in named if name and ":" in name} | set(cfg.trust_hooks)


def teacher_specs(teacher: str) -> list[str]:
    return [spec.strip() for spec in str(teacher).split(",") if spec.strip()]


def _kind(spec: str) -> str:
    """'torch' (weights or an architecture), 'sklearn' (sklearn:NAME) or 'file' (saved outputs)."""
    from kdkit.teachers import teacher_from_spec
    from kdkit.teachers.sources import TEXT_SUFFIXES

    if spec.startswith("sklearn:"):
        return "sklearn"
    if Path(spec).suffix.lower() in (".npy", ".parquet", *TEXT_SUFFIXES) or (spec.endswith(".safetensors") and teacher_from_spec(spec) is not None):
        return "file"
    return "torch"


def _torch_teacher(spec: str, cfg: DistillConfig, data: Dataset, run_dir: Path, seed: int, bootstrap: bool = False):
    """Load the teacher from a run/weights path, or train the named architecture first."""
    if is_weights(spec):
        teacher, meta = load_model(spec, user_hooks(cfg))
        check_teacher(meta, data)
        check_input(teacher, data.input_shape, data.num_classes)
        return teacher, {"source": str(spec), "arch": meta["arch"]}
    teacher_cfg = dataclasses.replace(cfg, epochs=cfg.teacher_epochs or cfg.epochs, seed=seed,
                                      sampler=cfg.teacher_sampler or cfg.sampler)
    teacher = build_model(spec, data, seed)
    train_data = bootstrap_sample(data, seed) if bootstrap else data
    info = _fit_or_skip(cross_entropy(teacher, cfg, data), train_data, teacher_cfg,
                        run_dir, model_meta(spec, data), desc=f"{run_dir.name} {spec}")
    if info.get("stopped_early"):
        raise _Stopped()
    return _load(teacher, run_dir).eval(), {"source": "trained", "arch": spec, "fit": info, "bootstrap": bootstrap}


def bootstrap_sample(data: Dataset, seed: int) -> Dataset:
    """The same dataset with its train split resampled with replacement (seeded): bagging."""
    g = torch.Generator().manual_seed(10_000 + seed)
    pick = torch.randint(0, len(data.train), (len(data.train),), generator=g)
    train = dataclasses.replace(data.train, images=data.train.images[pick], labels=data.train.labels[pick],
                                index=None if data.train.index is None else data.train.index[pick])
    return dataclasses.replace(data, train=train)


# scikit-learn teachers the CLI can train itself (the Python API takes any object with predict_proba).
SKLEARN = ("logistic", "forest", "hgb")


def _other_teacher(spec: str, name: str, data: Dataset, seed: int):
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


def _preflight(cfg: DistillConfig, data: Dataset):
    """Catch bad names before any training starts, so a typo never costs a trained teacher."""
    from kdkit.methods import method_parts

    parts = method_parts(cfg.method)
    build_model(cfg.student, data, 0)
    if cfg.peer:
        build_model(cfg.peer, data, 0)
    specs = teacher_specs(cfg.teacher)
    if not specs:
        raise KdkitError("no teacher given; --teacher names weights, an architecture, saved outputs or sklearn:NAME")
    for spec in specs:
        kind = _kind(spec)
        if kind == "torch" and not is_weights(spec) and ":" not in spec and ("/" in spec or "\\" in spec):
            raise KdkitError(f"teacher '{spec}' not found: no such run directory or weights file; check the path, "
                             "or name an architecture (`kdkit models`)")
        if kind == "torch" and not is_weights(spec):
            build_model(spec, data, 0)
        elif kind == "sklearn":
            sklearn_estimator(spec.split(":", 1)[1], 0)
        elif kind == "file":  # read and checked now: classes by name, a row for every train and val sample
            from kdkit.teachers import teacher_from_spec

            teacher_from_spec(spec, data)
    from kdkit.methods import METHODS
    from kdkit.methods.features import FeatureMethod

    hybrid = len(specs) > 1 or _kind(specs[0]) != "torch"
    feature = [p for p in parts if issubclass(METHODS[p], FeatureMethod)]
    if hybrid and feature:
        raise KdkitError(f"method {feature[0]} matches features of one torch teacher, but --teacher names "
                         f"{len(specs)} teacher(s) of other kinds; use kd, dkd or dist with several teachers")
    _check_transfer_exclude(cfg, data, hybrid)
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


def _check_transfer_exclude(cfg: DistillConfig, data: Dataset, hybrid: bool):
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


class _Stopped(Exception):
    """max_steps reached inside a phase; --resume continues."""


def prepare_distill(cfg: DistillConfig, data: Dataset | None = None, kind: str = "distill") -> tuple[DistillConfig, Dataset]:
    """The data and every check that needs no training (a typo never costs a teacher); the config
    with the method's defaults filled in. kind: the command whose run directory cfg.out is."""
    check_run_dir(cfg.out, kind, cfg.overwrite)
    parse_device(cfg.device)
    data = prepare_data(cfg, data, cfg.seeds[0])
    check_classes(data)
    _preflight(cfg, data)
    return with_method_defaults(cfg), data


def run_distill(cfg: DistillConfig, data: Dataset | None = None) -> dict:
    """`kdkit distill`: teacher, then per seed the scratch student and the distilled student; summary."""
    distributed.setup()  # torchrun: join the process group (a no-op for one process)
    cfg, data = prepare_distill(cfg, data)
    with start_run(cfg, "distill"):
        return _distill(cfg, data, Path(cfg.out))


def _distill(cfg: DistillConfig, data: Dataset, out: Path) -> dict:
    device = select_device(cfg.device)
    t0 = time.perf_counter()
    try:
        teacher, teacher_info = _teacher(cfg, data, out)
        teacher_row, teacher_logits = teacher_metrics(teacher, data, device)
        # Born-again networks: generation g's student teaches generation g + 1; the last is "student".
        generations = [f"gen{g}" for g in range(1, cfg.generations)] + ["student"]
        members = member_rows(teacher, data)  # an ensemble: each member next to the combination
        rows = members | {"teacher": [teacher_row], "scratch": []} | {name: [] for name in generations}
        fits = {name: [teacher_info.get("member_info", {}).get(name, {}).get("fit", {})] for name in members}
        fits |= {"teacher": [teacher_info.get("fit", {})], "scratch": []} | {name: [] for name in generations}
        transfer = transfer_set(data, cfg.transfer_exclude)  # the distilled students' train/val
        for seed in cfg.seeds:
            seed_cfg = dataclasses.replace(cfg, seed=seed)
            phases = (["scratch"] if cfg.baseline else []) + generations
            current_teacher = teacher
            for phase in phases:
                student = build_model(cfg.student, data, seed)
                fit_data = data if phase == "scratch" else transfer
                cache_info = {}  # teacher_cache: where the cache is and how long it took
                if phase == "scratch":
                    method = cross_entropy(student, cfg, data)
                else:
                    kwargs = method_kwargs(cfg, fit_data)
                    if "dml" in cfg.method.split("+"):
                        kwargs["peer"] = build_model(cfg.peer or cfg.student, data, seed + 1000)
                    source, cache_info = teacher_source(current_teacher, seed_cfg, fit_data, out, device)
                    method = create_method(cfg.method, student, source, **kwargs)
                run_dir = out / phase / f"seed{seed}"
                info = _fit_or_skip(method, fit_data, seed_cfg, run_dir, model_meta(cfg.student, data), desc=f"{phase} seed {seed}")
                if cache_info:
                    info |= cache_info
                    ckpt.write_json(run_dir / "fit.json", info)
                if info.get("stopped_early"):
                    raise _Stopped()
                metrics = test_both(student, run_dir, data, device, teacher_logits, cfg.posthoc_tau)
                rows[phase].append(dict(metrics, seed=seed, last_val_accuracy=info["last_val_accuracy"]))
                fits[phase].append(info)
                if phase != "scratch":
                    current_teacher = student.eval()  # best-by-validation weights, loaded by test_both
    except _Stopped:
        return {"stopped_early": True, "run_dir": str(out)}
    facts = {"teacher": hybrid_facts(teacher, data) if isinstance(teacher, HybridTeacher) else model_facts(teacher, data.input_shape),
             "student": model_facts(build_model(cfg.student, data, 0), data.input_shape)}
    for source in getattr(teacher, "sources", []):  # members of a combination
        model = getattr(source, "model", None)
        facts[source.name] = model_facts(model, data.input_shape) if model is not None else {}
    summary = summarise(cfg, data, rows, fits, facts, teacher_info)
    summary["train_class_counts"] = dict(zip(data.classes, class_counts(data)))
    summary["environment"] = environment()
    summary["wall_seconds"] = time.perf_counter() - t0
    write_summary(summary, out)
    if cfg.report and distributed.is_main():
        summary["report"] = _write_report(out, data, device, user_hooks(cfg))
    return summary


def _write_report(out: Path, data: Dataset, device, trusted_hooks=()) -> str | None:
    """report.html for the run; a report that cannot be built never costs the run's results."""
    from kdkit.report import write_report

    try:
        return str(write_report(out, data=data, device=str(device), n_samples=500, trusted_hooks=trusted_hooks))
    except Exception as e:  # noqa: BLE001 -- the summary is written; say why the report is missing
        print(f"report not written ({type(e).__name__}: {str(e)[:120]}); retry with `kdkit report {out}`")
        return None


def hybrid_facts(teacher, data: Dataset) -> dict:
    """Size of a combination: the parameters of its torch members (estimators and files: not counted)."""
    return {"parameters": sum(p.numel() for p in teacher.parameters()),
            "note": "torch members only; latency and FLOPs are per member"}


def with_method_defaults(cfg: DistillConfig) -> DistillConfig:
    """Fill unset (None) hyper-parameters with the method's own defaults, so config.yaml says what ran."""
    from kdkit.methods import defaults_of

    unset = {k: v for k, v in defaults_of(cfg.method).items() if getattr(cfg, k, 0) is None}
    return dataclasses.replace(cfg, **unset)


def method_kwargs(cfg, data: Dataset | None = None) -> dict:
    """The config values a method declares as its hyper-parameters (unset ones keep the method's
    default), plus what it may need to know about the data (input shape, training-set size)."""
    from kdkit.methods import hyperparameters_of

    kwargs = {k: getattr(cfg, k) for k in hyperparameters_of(cfg.method) if getattr(cfg, k, None) is not None}
    if data is not None:
        kwargs |= {"input_shape": data.input_shape, "num_train": len(data.train), "class_counts": class_counts(data)}
    return kwargs
