"""The run recipes: `kdkit train` (one model, hard labels) and `kdkit distill` (a teacher, then per
seed the scratch student and the distilled one; the evidence table), from a config to a run
directory. `kdkit train`, `kdkit distill`, `kdkit tune` (tune.py) and `kdkit.distill()` (distill.py)
are peers over two public steps: `distillation` (a student and the method that distils it) and
`summarise_run` (the evidence table, summary.json/.md and report.html).

A distill run directory:
  config.yaml                      the resolved config
  teacher/                         the teacher's own training run (when trained here)
  scratch/seed{S}/, student/seed{S}/   one fit() run each (weights, metrics.jsonl, tb/)
  summary.json, summary.md         teacher vs scratch vs student, mean +- std over seeds, gap_closed,
                                   the seed-noise caution, the step budget's shares (step_budget: budget.py)

Label-scarce runs (labels_per_class, unlabeled; kdkit.data.labels): the distilled students train on
the labelled and the unlabelled samples, the scratch student and a teacher trained here on the
labelled ones only (labelled_only); each row of summary.json records them as train_samples.
"""
import dataclasses
import json
import time
from contextlib import ExitStack
from pathlib import Path

from torch import nn

from kdkit import checkpoint as ckpt
from kdkit import distributed
from kdkit.budget import phase_steps
from kdkit.config import DistillConfig, TrainConfig, apply_overrides, dump_yaml, load_yaml
from kdkit.data import Dataset, labelled_only
from kdkit.data.labels import sample_counts
from kdkit.data.normalize import raw_view
from kdkit.data.prepare import bootstrap_sample, check_classes, class_counts, prepare_data, transfer_set
from kdkit.errors import KdkitError
from kdkit.evaluate import environment, evaluate_model, model_facts
from kdkit.given import Given
from kdkit.methods import CrossEntropy, create_method, needs_peer
from kdkit.models import check_input
from kdkit.preflight import check_distill
from kdkit.rundir import check_run_dir, claim_run_dir
from kdkit.summary import summarise, write_summary
from kdkit.teachers.specs import (fact_sample, hf_teacher_folder, member_rows, other_teacher, run_facts, teacher_kind,
                                  teacher_metrics, teacher_specs, user_hooks)
from kdkit.train import (autocast_dtype, check_resume_settings, complete_checkpoints, fit, parse_device,
                         select_device, uses_channels_last)
from kdkit.weights import (build_model, check_teacher, factory_kwargs, is_weights, load_model, model_meta, student_model,
                           teacher_model)


def cross_entropy(model, cfg, data: Dataset) -> CrossEntropy:
    """The hard-label training of teachers and scratch students (balanced when `balance` says so)."""
    return CrossEntropy(model, label_smoothing=cfg.label_smoothing, balance=cfg.balance, tau=cfg.tau,
                        cb_beta=cfg.cb_beta, class_counts=class_counts(data))


def _fit_or_skip(method, data, cfg, run_dir: Path, meta: dict, desc: str, steps: int | None = None, transform=None):
    """fit() (on `steps`: the phase's share of step_budget, budget.py; `transform`: a given batch transform),
    unless --resume finds this phase already finished (no work is ever redone or lost; a finished phase must
    have been made with the same settings)."""
    done = run_dir / "fit.json"  # written last: the weights before it are complete
    if cfg.resume and done.is_file() and (run_dir / "last.safetensors").is_file():
        saved = ckpt.load_meta(run_dir / "last.safetensors").get("config", {})
        check_resume_settings(saved, dataclasses.asdict(cfg), f"'{run_dir}'", finished=True)
        return json.loads(done.read_text())
    has_state = bool(complete_checkpoints(run_dir))
    extra = {} if transform is None else {"transform": transform}
    result = fit(method, data, dataclasses.replace(cfg, resume=cfg.resume and has_state), run_dir, meta=meta, desc=desc,
                 steps=steps, **extra)
    info = {k: v for k, v in dataclasses.asdict(result).items() if k != "run_dir"}
    if not result.stopped_early:
        ckpt.write_json(done, info)
    return info


def load_weights_into(model, run_dir: Path, which: str = "best"):
    tensors, _ = ckpt.load_weights(run_dir / f"{which}.safetensors")
    model.load_state_dict(tensors)
    return model


def test_both(model, run_dir: Path, data: Dataset, device, teacher_logits=None, posthoc_tau: float = 0.0) -> dict:
    """Full test metrics of the best-by-validation weights, plus the last weights' accuracy; both are
    also written into the weights' sidecars."""
    last, _ = evaluate_model(load_weights_into(model, run_dir, "last"), data, device, posthoc_tau=posthoc_tau)
    metrics, _ = evaluate_model(load_weights_into(model, run_dir, "best"), data, device, teacher_logits, posthoc_tau)
    metrics["accuracy_last"] = last["accuracy"]
    for which, m in (("best", metrics), ("last", last)):
        keep = {k: m[k] for k in ("accuracy", "balanced_accuracy", "f1_macro", "nll", "ece") if k in m}
        ckpt.update_meta(run_dir / f"{which}.safetensors", test_metrics=keep)
    return metrics


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


def run_train(cfg: TrainConfig, data: Dataset | None = None) -> dict:
    """`kdkit train`: one model with cross-entropy; writes weights and a summary of test metrics."""
    distributed.setup()  # torchrun: join the process group (a no-op for one process)
    check_run_dir(cfg.out, "train", cfg.overwrite)
    parse_device(cfg.device)
    data = prepare_data(cfg, data, cfg.seed)
    check_classes(data)
    build_model(cfg.model, data, cfg.seed, factory_kwargs(cfg, "model"))
    with start_run(cfg, "train"):
        return _train(cfg, data, Path(cfg.out))


def _train(cfg: TrainConfig, data: Dataset, out: Path) -> dict:
    data = labelled_only(data)  # labels_per_class: hard labels only
    kwargs = factory_kwargs(cfg, "model")
    model = build_model(cfg.model, data, cfg.seed, kwargs)
    method = cross_entropy(model, cfg, data)
    info = _fit_or_skip(method, data, cfg, out, model_meta(cfg.model, data, kwargs), desc=f"train {cfg.model}",
                        steps=phase_steps(cfg, cfg.epochs))
    if info.get("stopped_early"):
        return {"stopped_early": True, "run_dir": str(out)}
    device = select_device(cfg.device)
    metrics = test_both(model, out, data, device, posthoc_tau=cfg.posthoc_tau)
    summary = {"model": cfg.model, "dataset": data.name, "metrics": metrics, "fit": info, "train_samples": sample_counts(data.train),
               "facts": model_facts(model, data.input_shape, sample=fact_sample(data)),
               "environment": environment()}
    ckpt.write_json(out / "summary.json", summary)
    return summary


def build_teacher(cfg: DistillConfig, data: Dataset, out: Path):
    """The teacher: one torch model (loaded, or trained here), or several teachers of any kind
    (`--teacher a,b,c`: weights, architectures, saved outputs, sklearn:NAME) combined by `combine`."""
    specs = teacher_specs(cfg.teacher)
    if len(specs) == 1 and teacher_kind(specs[0]) == "torch":
        return torch_teacher(specs[0], cfg, data, out / "teacher", cfg.seeds[0])
    from kdkit.teachers import HybridTeacher, TorchTeacher

    sources, members = [], []
    for i, spec in enumerate(specs):
        name = f"teacher{i + 1}"
        if teacher_kind(spec) == "hf":  # reads its own tokenisation of the sentences
            source, model, info = text_teacher(spec, cfg, data, out / ("teacher" if len(specs) == 1 else name), cfg.seeds[0] + i, name)
            sources.append(source)
            members.append((name, model, info))
        elif teacher_kind(spec) == "torch":
            model, info = torch_teacher(spec, cfg, data, out / name, cfg.seeds[0] + i, bootstrap=cfg.bootstrap)
            if getattr(model, "reads_raw_inputs", False):
                raise KdkitError(f"teacher '{spec}' is a Hugging Face image classifier, which reads the images as given; "
                                 "in a combination it would get kdkit's standardised images: use it as the only teacher")
            sources.append(TorchTeacher(model, classes=list(data.classes), name=name))
            members.append((name, model, info))
        else:  # an estimator is fitted on the labelled samples; saved outputs were made elsewhere
            sources.append(other_teacher(spec, name, data, cfg.seeds[0] + i, cfg.teacher_folds))
            sklearn = teacher_kind(spec) == "sklearn"
            seen = sample_counts(labelled_only(data).train) if sklearn else None
            members.append((name, None, {"source": spec, "arch": spec, "train_samples": seen,
                                         **({"teacher_folds": cfg.teacher_folds} if sklearn else {})}))
    t0 = time.perf_counter()
    teacher = HybridTeacher(sources, cfg.combine, cfg.teacher_weights or None).prepare(data)
    prepared = {"outputs_seconds": time.perf_counter() - t0}  # saved outputs read, estimators' and text teachers' outputs made
    if len(specs) == 1 and teacher_kind(specs[0]) == "hf":
        return teacher, members[0][2] | prepared
    seen = [info.get("train_samples") for _, _, info in members]  # the combination's: its members', when all alike
    info = {"source": "hybrid", "arch": f"{cfg.combine}({', '.join(specs)})", "members": teacher.report(), **prepared,
            "member_info": {name: info for name, _, info in members}, "train_samples": seen[0] if seen.count(seen[0]) == len(seen) else None}
    return teacher, info


def text_teacher(spec: str, cfg: DistillConfig, data: Dataset, run_dir: Path, seed: int, name: str):
    """(TextTeacher, model, info) of hf:DIR on its own tokenisation of the sentences (teachers/text.py),
    trained here on that view when it is an encoder without a classification head; or of saved weights
    of such a model (a run's teacher), read as it is."""
    from kdkit.data.text import HfTokenizer, text_view
    from kdkit.teachers.text import TextTeacher

    tokenizer = HfTokenizer(hf_teacher_folder(spec, cfg), cfg.max_length)  # hf:DIR's, or that of the model saved at spec
    model, info = torch_teacher(spec, cfg, text_view(data, tokenizer), run_dir, seed)
    return TextTeacher(model, tokenizer, data.text.sentences, classes=list(data.classes), name=name), model, info


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
                               workers=cfg.workers, channels_last=uses_channels_last(cfg.channels_last, device),
                               mix=cfg.mix, mix_alpha=cfg.mix_alpha)
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


def torch_teacher(spec: str, cfg: DistillConfig, data: Dataset, run_dir: Path, seed: int, bootstrap: bool = False):
    """Load the teacher from a run/weights path, or build the named architecture and load
    teacher_state_dict into it (a teacher trained elsewhere), or train it here first."""
    if is_weights(spec):
        teacher, meta = load_model(spec, user_hooks(cfg))
        check_teacher(meta, data)
        check_input(teacher, data.input_shape, data.num_classes, "teacher")
        return teacher, {"source": str(spec), "arch": meta["arch"]}
    teacher = teacher_model(spec, cfg, data, seed)
    if cfg.teacher_state_dict:  # trained elsewhere: used as it is
        return teacher.eval(), {"source": cfg.teacher_state_dict, "arch": spec}
    if not getattr(teacher, "trained_here", True):  # a Hugging Face classifier: used as it is
        return teacher.eval(), {"source": spec, "arch": spec}
    teacher_cfg = dataclasses.replace(cfg, epochs=cfg.teacher_epochs or cfg.epochs, lr=cfg.teacher_lr or cfg.lr, seed=seed,
                                      sampler=cfg.teacher_sampler or cfg.sampler)
    labelled = labelled_only(data, same_steps=True)  # a teacher trained here learns from the labels only
    train_data = bootstrap_sample(labelled, seed) if bootstrap else labelled
    meta = model_meta(spec, data, factory_kwargs(cfg, "teacher"))
    info = _fit_or_skip(cross_entropy(teacher, cfg, labelled), train_data, teacher_cfg, run_dir, meta, desc=f"{run_dir.name} {spec}",
                        steps=phase_steps(cfg, teacher_cfg.epochs))
    if info.get("stopped_early"):
        raise _Stopped()
    return load_weights_into(teacher, run_dir).eval(), {"source": "trained", "arch": spec, "fit": info, "bootstrap": bootstrap,
                                                        "train_samples": sample_counts(labelled_only(data).train)}


class _Stopped(Exception):
    """max_steps reached inside a phase; --resume continues."""


def prepare_distill(cfg: DistillConfig, data: Dataset | None = None, kind: str = "distill",
                    given: Given | None = None) -> tuple[DistillConfig, Dataset]:
    """The data and every check that needs no training (a typo never costs a teacher); the config
    with the method's defaults filled in. kind: the command whose run directory cfg.out is."""
    check_run_dir(cfg.out, kind, cfg.overwrite)
    parse_device(cfg.device)
    data = prepare_data(cfg, data, cfg.seeds[0])
    check_classes(data)
    check_distill(cfg, data, given)
    return with_method_defaults(cfg), data


def run_distill(cfg: DistillConfig, data: Dataset | None = None, given: Given | None = None, kind: str = "distill") -> dict:
    """`kdkit distill`: teacher, then per seed the scratch student and the distilled student; summary.
    given: models handed over in Python (kdkit.distill, kind "api"; kdkit.given)."""
    distributed.setup()  # torchrun: join the process group (a no-op for one process)
    given = given or Given()
    cfg, data = prepare_distill(cfg, data, kind, given)
    with start_run(cfg, kind), ExitStack() as stack:
        return _distill(cfg, data, Path(cfg.out), given, stack)


def _distill(cfg: DistillConfig, data: Dataset, out: Path, given: Given, stack: ExitStack) -> dict:
    device = select_device(cfg.device)
    t0 = time.perf_counter()
    try:
        teacher, teacher_info = (given.prepared_teacher(data), given.teacher_info()) if given.teacher is not None \
            else build_teacher(cfg, data, out)
        if isinstance(given.teacher, nn.Module) or cfg.teacher_state_dict or getattr(teacher, "reads_raw_inputs", False):
            # trained elsewhere (an hf image classifier too): it sees the inputs as given
            stack.enter_context(raw_view(teacher, data))
        teacher_row, teacher_logits = teacher_metrics(teacher, data, device)
        # Born-again networks: generation g's student teaches generation g + 1; the last is "student".
        generations = [f"gen{g}" for g in range(1, cfg.generations)] + ["student"]
        members = member_rows(teacher, data)  # an ensemble: each member next to the combination
        rows = members | {"teacher": [teacher_row], "scratch": []} | {name: [] for name in generations}
        fits = {name: [teacher_info.get("member_info", {}).get(name, {}).get("fit", {})] for name in members}
        fits |= {"teacher": [teacher_info.get("fit", {})], "scratch": []} | {name: [] for name in generations}
        transfer = transfer_set(data, cfg.transfer_exclude)  # the distilled students' train/val
        labelled = labelled_only(data, same_steps=True)  # the scratch student's: the labelled samples, as many steps
        samples = {"teacher": teacher_info.get("train_samples"), "scratch": sample_counts(labelled_only(data).train)}
        samples |= {name: info.get("train_samples") for name, info in teacher_info.get("member_info", {}).items()}
        samples |= {name: sample_counts(transfer.train) for name in generations}
        for seed in cfg.seeds:
            seed_cfg = dataclasses.replace(cfg, seed=seed)
            phases = (["scratch"] if cfg.baseline else []) + generations
            current_teacher = teacher
            for phase in phases:
                fit_data = labelled if phase == "scratch" else transfer
                cache_info = {}  # teacher_cache: where the cache is and how long it took
                if phase == "scratch":
                    student = given.new_student(lambda: student_model(cfg, data, seed), first=False)
                    method = cross_entropy(student, cfg, labelled)
                else:
                    source, cache_info = teacher_source(current_teacher, seed_cfg, fit_data, out, device)
                    first = phase == "student" and seed == cfg.seeds[0]  # a given student: this row trains the object itself
                    method = distillation(seed_cfg, fit_data, source, given.new_student(lambda: None, first))
                    student = method.student
                run_dir = out / phase / f"seed{seed}"
                meta = model_meta(given.student_arch(cfg.student), data, factory_kwargs(cfg, "student") if given.student is None else None)
                info = _fit_or_skip(method, fit_data, seed_cfg, run_dir, meta, desc=f"{phase} seed {seed}",
                                    steps=phase_steps(cfg, cfg.epochs), transform=given.transform)
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
    return summarise_run(cfg, data, teacher, teacher_info, rows, fits, samples, out, device,
                         {"wall_seconds": time.perf_counter() - t0}, given)


def distillation(cfg: DistillConfig, data: Dataset, teacher, student=None):
    """cfg.method around `student` (built from cfg.student with cfg.seed when not given) and `teacher`
    (a model, a combination, or its output cache), with a peer network when the method trains one
    (cfg.peer, else the student's architecture; a given student and no cfg.peer: the method copies it)."""
    built = student is None
    student = student_model(cfg, data, cfg.seed) if built else student
    kwargs = method_kwargs(cfg, data)
    if needs_peer(cfg.method) and (built or cfg.peer):
        peer_kwargs = dict(cfg.model_kwargs) if cfg.peer else factory_kwargs(cfg, "student")
        kwargs["peer"] = build_model(cfg.peer or cfg.student, data, cfg.seed + 1000, peer_kwargs)
    return create_method(cfg.method, student, teacher, **kwargs)


def summarise_run(cfg: DistillConfig, data: Dataset, teacher, teacher_info: dict, rows: dict, fits: dict, samples: dict,
                  out: Path, device, extra: dict | None = None, given: Given | None = None) -> dict:
    """The evidence table of a run's rows (teacher, members, scratch, students; summary.summarise) with the
    models' size and speed and each row's labelled/unlabelled training samples (`samples`), written to
    summary.json/.md, then report.html (when cfg.report)."""
    student = (given.new_student(None, first=False) if given and given.student is not None
               else build_model(cfg.student, data, 0, factory_kwargs(cfg, "student")))
    facts = run_facts(teacher, student, data)
    summary = summarise(cfg, data, rows, fits, facts, teacher_info, samples)
    summary["train_class_counts"] = dict(zip(data.classes, class_counts(data)))
    summary["environment"] = environment()
    summary |= extra or {}
    write_summary(summary, out)
    if cfg.report and distributed.is_main():
        summary["report"] = write_run_report(out, data, device, user_hooks(cfg))
    return summary


def write_run_report(out: Path, data: Dataset, device, trusted_hooks=()) -> str | None:
    """report.html for the run; a report that cannot be built (matplotlib missing included) never
    costs the run's results."""
    try:
        from kdkit.report import write_report

        return str(write_report(out, data=data, device=str(device), n_samples=500, trusted_hooks=trusted_hooks))
    except Exception as e:  # noqa: BLE001 -- the summary is written; say why the report is missing
        reason = str(e) if isinstance(e, KdkitError) else f"{type(e).__name__}: {str(e)[:120]}"
        print(f"report not written ({reason}); retry with `kdkit report {out}`")
        return None


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

