"""The commands that make a run directory: train, distill, ensemble, tune and demo, and the
evidence table they print at the end."""
import dataclasses
import functools
from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.table import Table

from kdkit.cli.shared import TrustOpt, config_option, console
from kdkit.config import DistillConfig, TrainConfig, apply_overrides, parse_set, resolve
from kdkit.errors import KdkitError, shown

# The demo (configs/demo_teacher.yaml and configs/demo.yaml hold the same values; docs/demo.md says
# how it was chosen): a teacher trained on all the labels stands for a model the user already has;
# the student learns from 1,000 labels and the rest of the training images, unlabelled.
DEMO_TEACHER = {"dataset": "fashion-mnist", "model": "cnn", "epochs": 8, "val_fraction": 0.02, "optimizer": "adamw",
                "lr": 0.003, "weight_decay": 0.01, "batch_size": 128, "augment": "flip", "out": "runs/demo/teacher"}
DEMO = {"dataset": "fashion-mnist", "teacher": "runs/demo/teacher", "student": "cnn-tiny", "method": "kd",
        "labels_per_class": 100, "val_fraction": 0.02, "epochs": 15, "optimizer": "adamw", "lr": 0.003,
        "weight_decay": 0.01, "batch_size": 128, "augment": "flip", "temperature": 4.0, "alpha": 0.9, "seeds": [0],
        "out": "runs/demo/distill"}

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML file with config keys (every key: `kdkit docs config`)")
# A flag that sets a config key: None when left out (then --config, else the default, which --help shows).
distill_option = functools.partial(config_option, DistillConfig)
train_option = functools.partial(config_option, TrainConfig)
OverwriteOpt = train_option("overwrite", "write into an --out folder holding files kdkit did not write", "--overwrite")
SetOpt = typer.Option(None, "--set", help="override any config key: --set lr=0.1 (repeatable)")


def _seeds(text: Optional[str]):
    if text is None:
        return None
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise KdkitError(f"--seeds expects comma-separated integers, got {shown(text)}; e.g. --seeds 0,1,2") from None


def _keys(text: Optional[str]):
    """'temperature, alpha' -> ['temperature', 'alpha']; None stays None."""
    return None if text is None else [k.strip().replace("-", "_") for k in text.split(",") if k.strip()]


def distill(
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    dataset: Optional[str] = distill_option("dataset", "named dataset (`kdkit datasets`), ImageFolder path, or .csv/.parquet table (--set label_column=NAME)"),
    data_dir: Optional[str] = distill_option("data_dir", "folder holding the dataset files"),
    imbalance: Optional[str] = distill_option("imbalance", "long-tailed train/val splits: exp:100 or step:10 (test stays balanced)"),
    teacher: Optional[str] = distill_option("teacher", "run dir or .safetensors from `kdkit train`, or an architecture to train first"),
    student: Optional[str] = distill_option("student", "student architecture (`kdkit models`) or pkg.module:make_net"),
    method: Optional[str] = distill_option("method", "distillation method (`kdkit methods`)"),
    epochs: Optional[int] = distill_option("epochs", "student epochs (scratch and distilled)"),
    teacher_epochs: Optional[int] = distill_option("teacher_epochs", "teacher epochs when it is trained here (0 = --epochs)"),
    seeds: Optional[str] = distill_option("seeds", "comma-separated seeds, e.g. 0,1,2"),
    temperature: Optional[float] = distill_option("temperature", "softmax temperature T"),
    alpha: Optional[float] = distill_option("alpha", "weight of the KD term; 1-alpha weights cross-entropy"),
    lr: Optional[float] = distill_option("lr", "learning rate"),
    batch_size: Optional[int] = distill_option("batch_size", "batch size"),
    baseline: Optional[bool] = distill_option("baseline", "train the scratch student too", "--baseline/--no-baseline"),
    report: Optional[bool] = distill_option("report", "write report.html at the end", "--report/--no-report"),
    teacher_cache: Optional[bool] = distill_option("teacher_cache", "offline KD: store the teacher's outputs once (per recorded "
                                                   "view), distill from them", "--teacher-cache/--no-teacher-cache"),
    compile_mode: Optional[str] = distill_option("compile", "torch.compile mode: off | default | reduce-overhead | max-autotune", "--compile"),
    resume: Optional[bool] = distill_option("resume", "continue a killed run in --out", "--resume"),
    device: Optional[str] = distill_option("device", "auto | cpu | cuda | mps"),
    out: Optional[str] = distill_option("out", "run directory"),
    overwrite: Optional[bool] = OverwriteOpt,
    trust_hook: Optional[list[str]] = TrustOpt,
):
    """Distill a teacher into a student; also train the scratch baseline; write the evidence table.

    Examples:

      kdkit distill --dataset fashion-mnist --teacher runs/teacher --student cnn-tiny --method kd --seeds 0,1,2 --out runs/kd

      kdkit distill --dataset digits --teacher cnn --teacher-epochs 5 --epochs 10 --out runs/digits

      kdkit distill --config configs/full_labels.yaml --set temperature=2 --out runs/t2
    """
    flags = dict(dataset=dataset, data_dir=data_dir, imbalance=imbalance, teacher=teacher, student=student, method=method, epochs=epochs,
                 teacher_epochs=teacher_epochs, seeds=_seeds(seeds), temperature=temperature, alpha=alpha, lr=lr,
                 batch_size=batch_size, baseline=baseline, report=report, teacher_cache=teacher_cache, compile=compile_mode,
                 resume=resume, device=device, out=out, overwrite=overwrite, trust_hooks=trust_hook or None)
    cfg = resolve(DistillConfig, config, flags, set_)
    _run_distill(cfg)


MAX_MEMBERS = 1000  # teachers in one ensemble (each trained here): more is a typo


def ensemble(
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    dataset: Optional[str] = distill_option("dataset", "named dataset (`kdkit datasets`), ImageFolder path, or .csv/.parquet table (--set label_column=NAME)"),
    teacher: Optional[str] = distill_option("teacher", "teacher architecture(s); one is repeated --members times"),
    members: int = typer.Option(3, help="ensemble size when --teacher names one architecture"),
    bootstrap: Optional[bool] = distill_option("bootstrap", "train each member on a bootstrap resample", "--bootstrap/--no-bootstrap"),
    combine: Optional[str] = distill_option("combine", "mean | weights | entropy | stacker"),
    student: Optional[str] = distill_option("student", "student architecture"),
    method: Optional[str] = distill_option("method", "distillation method (kd, dkd, dist)"),
    epochs: Optional[int] = distill_option("epochs", "student epochs"),
    teacher_epochs: Optional[int] = distill_option("teacher_epochs", "epochs of each member (0 = --epochs)"),
    seeds: Optional[str] = distill_option("seeds", "comma-separated student seeds; member i uses seeds[0] + i"),
    out: Optional[str] = distill_option("out", "run directory", default="runs/ensemble"),
):
    """Train K teachers (seeds, bootstrap samples or a list of architectures), report each and their
    combination, and distill the ensemble into one student.

    Examples:

      kdkit ensemble --dataset digits --teacher cnn --members 5 --bootstrap --student cnn-tiny --out runs/ensemble

      kdkit ensemble --dataset digits --teacher cnn,resnet8,wrn_16_2 --combine entropy --out runs/mixed
    """
    flags = dict(dataset=dataset, teacher=teacher, bootstrap=bootstrap, combine=combine, student=student, method=method,
                 epochs=epochs, teacher_epochs=teacher_epochs, seeds=_seeds(seeds), out=out)
    cfg = resolve(DistillConfig, config, flags, set_)
    from kdkit.teachers.specs import teacher_specs

    specs = teacher_specs(cfg.teacher)
    if len(specs) == 1:
        if members > MAX_MEMBERS:
            raise KdkitError(f"--members {shown(members)} is more than {MAX_MEMBERS} teachers; give at most {MAX_MEMBERS}")
        if members < 2:
            raise KdkitError(f"an ensemble needs at least 2 members, got --members {members}; use --members 2 or more, "
                             "or list the architectures: --teacher cnn,resnet8")
        cfg = dataclasses.replace(cfg, teacher=",".join(specs * members))
    if cfg.out == DistillConfig.out:
        cfg = dataclasses.replace(cfg, out="runs/ensemble")
    _run_distill(cfg)


def tune(
    config_file: Optional[Path] = typer.Argument(None, help="YAML config (as `kdkit tune CONFIG`; same as --config)"),
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = typer.Option(None, "--set", help="set any config key, e.g. --set temperature=2 "
                                             "(repeatable); a key set here is not searched"),
    trials: int = typer.Option(20, help="finished trials the study should have, counting every worker's"),
    search: Optional[str] = typer.Option(None, help="the method's hyper-parameters to search, comma-separated, e.g. "
                                         "temperature,alpha,ce_weight; lr and weight_decay are searched too "
                                         "\\[default: those `kdkit methods NAME` marks tuned]"),
    storage: Optional[str] = typer.Option(None, help="database URL shared by the workers \\[default: sqlite:///OUT/study.db]"),
    study_name: Optional[str] = typer.Option(None, help="study to start or join \\[default: the --out path]"),
    metric: Optional[str] = typer.Option(None, help="validation score to maximise: accuracy or balanced_accuracy "
                                         "\\[default: balanced_accuracy when imbalance is set, else accuracy]"),
    timeout: Optional[float] = typer.Option(None, help="start no trial after this many seconds (then evaluate the best "
                                            "so far) \\[default: no limit]"),
    dataset: Optional[str] = distill_option("dataset", "named dataset (`kdkit datasets`), ImageFolder path, or .csv/.parquet table (--set label_column=NAME)"),
    data_dir: Optional[str] = distill_option("data_dir", "folder holding the dataset files"),
    imbalance: Optional[str] = distill_option("imbalance", "long-tailed train/val splits: exp:100 or step:10 (test stays balanced)"),
    teacher: Optional[str] = distill_option("teacher", "run dir or .safetensors from `kdkit train`, or an architecture to train once first"),
    student: Optional[str] = distill_option("student", "student architecture (`kdkit models`) or pkg.module:make_net"),
    method: Optional[str] = distill_option("method", "distillation method (`kdkit methods`)"),
    epochs: Optional[int] = distill_option("epochs", "epochs of each trial"),
    teacher_epochs: Optional[int] = distill_option("teacher_epochs", "teacher epochs when it is trained here (0 = --epochs)"),
    seeds: Optional[str] = distill_option("seeds", "the one seed of every trial, e.g. 0"),
    lr: Optional[float] = distill_option("lr", "learning rate: the search spans lr/3 .. 3 lr"),
    batch_size: Optional[int] = distill_option("batch_size", "batch size"),
    report: Optional[bool] = distill_option("report", "write report.html at the end", "--report/--no-report"),
    resume: bool = typer.Option(False, "--resume", help="continue the study, also to a new --trials"),
    device: Optional[str] = distill_option("device", "auto | cpu | cuda | mps"),
    out: Optional[str] = distill_option("out", "run directory", default="runs/tune"),
):
    """Search the method's hyper-parameters with Optuna (pruning on validation), then evaluate the
    best trial on test. The same command on several machines, with one --storage URL, shares the
    study (`kdkit docs tune`). Needs the tune extra: pip install 'kdkit\\[tune]'.

    Examples:

      kdkit tune --dataset fashion-mnist --teacher cnn --student cnn-tiny --method kd --epochs 10 --trials 30 --out runs/tune

      kdkit tune --dataset digits --teacher cnn --method dkd --search temperature,dkd_beta --trials 20 --storage postgresql+psycopg://user:pw@db/kdkit
    """
    from kdkit.config import parse_set
    from kdkit.tune import tune as run_tune

    flags = dict(dataset=dataset, data_dir=data_dir, imbalance=imbalance, teacher=teacher, student=student, method=method,
                 epochs=epochs, teacher_epochs=teacher_epochs, seeds=_seeds(seeds), lr=lr, batch_size=batch_size,
                 report=report, device=device, out=out)
    if config_file and config and config_file != config:
        raise KdkitError(f"two config files given ({config_file} and --config {config}); give one")
    cfg = resolve(DistillConfig, config_file or config, flags, set_)
    if cfg.out == DistillConfig.out:
        cfg = dataclasses.replace(cfg, out="runs/tune")
    fixed = [key.replace("-", "_") for key in parse_set(set_)]
    summary = run_tune(cfg, trials, storage=storage, study_name=study_name, metric=metric, resume=resume,
                       timeout=timeout, fixed=fixed, searched=_keys(search))
    record = summary["tune"]
    plot = f"; importance: {cfg.out}/param_importance.png" if (Path(cfg.out) / "param_importance.png").is_file() else ""
    console.out(f"{record['finished']} of {record['trials_wanted']} trials finished ({record['complete']} complete, "
                f"{record['pruned']} pruned); all trials: {cfg.out}/tune.json{plot}")
    if "rows" not in summary:
        console.out(summary["note"])
        return
    best = record["best"]
    params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best["params"].items())
    console.out(f"best trial {best['number']}: validation {record['metric']} {best['value']:.4f} with {params}")
    _print_summary(summary, cfg.out)


# The columns printed at the end of a run; summary.md has them all.
CLI_COLUMNS = ("row", "acc %", "bal acc %", "macro F1 %", "ECE", "agree %", "params", "ms b1", "train s")


def _run_distill(cfg: DistillConfig):
    from kdkit.recipes import run_distill

    summary = run_distill(cfg)
    if summary.get("stopped_early"):
        console.print(f"stopped after max_steps; continue with: kdkit distill --config {cfg.out}/config.yaml --resume")
        return
    _print_summary(summary, cfg.out)


def _print_summary(summary: dict, out: str):
    """The evidence table of a finished distill (or tune) run, and where its files are."""
    from kdkit.summary import small_print, table_rows

    header, body = table_rows(summary)
    keep = [header.index(h) for h in CLI_COLUMNS]
    table = Table(*CLI_COLUMNS, box=box.SIMPLE_HEAD,
                  title=f"{summary['method']}: {summary['teacher']['arch']} -> {summary['student_arch']} on {summary['dataset']} (test set)")
    for cells in body:
        table.add_row(*(cells[i] for i in keep))
    console.print(table)
    for line in small_print(summary):  # the gap, the seed-noise caution, a step budget, the shot groups
        console.out(line)
    console.print(f"full table: {out}/summary.md   data: {out}/summary.json   config: {out}/config.yaml")
    if summary.get("report"):
        console.print(f"report: {summary['report']}")


def train(
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    dataset: Optional[str] = train_option("dataset", "named dataset, ImageFolder path, or .csv/.parquet table (--set label_column=NAME)"),
    data_dir: Optional[str] = train_option("data_dir", "folder holding the dataset files"),
    imbalance: Optional[str] = train_option("imbalance", "long-tailed train/val splits: exp:100 or step:10 (test stays balanced)"),
    model: Optional[str] = train_option("model", "architecture (`kdkit models`) or pkg.module:make_net"),
    epochs: Optional[int] = train_option("epochs", "epochs"),
    lr: Optional[float] = train_option("lr", "learning rate"),
    batch_size: Optional[int] = train_option("batch_size", "batch size"),
    seed: Optional[int] = train_option("seed", "seed"),
    resume: Optional[bool] = train_option("resume", "continue a killed run in --out", "--resume"),
    device: Optional[str] = train_option("device", "auto | cpu | cuda | mps"),
    out: Optional[str] = train_option("out", "run directory"),
    overwrite: Optional[bool] = OverwriteOpt,
):
    """Train one model with cross-entropy (a teacher, usually); weights + summary in --out.

    Examples:

      kdkit train --dataset fashion-mnist --model cnn --epochs 5 --set optimizer=adamw --lr 3e-3 --out runs/teacher

      kdkit train --dataset path/to/imagefolder --model resnet8x4 --epochs 30 --out runs/my-teacher
    """
    flags = dict(dataset=dataset, data_dir=data_dir, imbalance=imbalance, model=model, epochs=epochs, lr=lr, batch_size=batch_size,
                 seed=seed, resume=resume, device=device, out=out, overwrite=overwrite)
    _run_train(resolve(TrainConfig, config, flags, set_))


def _run_train(cfg: TrainConfig) -> bool:
    """kdkit train's run and its one-line result; False when it stopped early (max_steps)."""
    from kdkit.recipes import run_train

    summary = run_train(cfg)
    if summary.get("stopped_early"):
        console.print(f"stopped after max_steps; continue with: kdkit train --config {cfg.out}/config.yaml --resume")
        return False
    m = summary["metrics"]
    console.print(f"{cfg.model} on {summary['dataset']}: test accuracy {100 * m['accuracy']:.2f}%, "
                  f"balanced accuracy {100 * m['balanced_accuracy']:.2f}%; weights: {cfg.out}/best.safetensors")
    fit = summary["fit"]
    if fit.get("steps", 0) < fit.get("full_steps", 0):
        console.out(f"budget-limited: {fit['steps']:,} of {fit['full_steps']:,} steps (step_budget), schedule compressed: "
                    "a quick trial, not a result")
    return True


def demo(
    data_dir: Optional[str] = train_option("data_dir", "folder holding Fashion-MNIST (else found or downloaded)"),
    out: str = typer.Option("runs/demo", help="folder for the two runs: OUT/teacher and OUT/distill"),
    set_: Optional[list[str]] = SetOpt,
):
    """Fashion-MNIST with 1,000 labels: a CNN teacher trained on all 60,000 labels (it stands for a model
    you already have; kept and reused in OUT/teacher), then the scratch student on the 1,000 labels and
    the KD student (31x fewer parameters) on the 1,000 labels plus the other training images, unlabelled.
    --set applies to both runs where the key exists (teacher_epochs: the teacher's epochs).

    Examples:

      kdkit demo

      kdkit demo --out runs/quick --set epochs=3 --set teacher_epochs=2
    """
    given = {key.replace("-", "_"): value for key, value in parse_set(set_).items()}
    own = set(TrainConfig.__dataclass_fields__) - {"epochs", "out", "labels_per_class", "unlabeled"}
    teacher_cfg = apply_overrides(TrainConfig(), dict(DEMO_TEACHER, data_dir=data_dir, out=f"{out}/teacher", resume=True)
                                  | {k: v for k, v in given.items() if k in own}
                                  | ({"epochs": given["teacher_epochs"]} if "teacher_epochs" in given else {}))
    console.print(f"1/2 the teacher, on all the {teacher_cfg.dataset} labels (it stands for a model you already have; "
                  f"reused when finished): {teacher_cfg.out}")
    if not _run_train(teacher_cfg):
        return
    cfg = resolve(DistillConfig, None, dict(DEMO, data_dir=data_dir, teacher=teacher_cfg.out, out=f"{out}/distill"), set_)
    console.print(f"2/2 the students, on {cfg.labels_per_class:g} labels per class, the other training images "
                  f"unlabelled: {cfg.out}")
    _run_distill(cfg)
