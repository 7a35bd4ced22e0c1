"""The `kdkit` command line. Every command has --help; user errors are one line, no traceback.

  kdkit demo                       Fashion-MNIST: teacher, scratch student, KD student, the table
  kdkit train --dataset D --model ARCH --epochs N --out DIR
  kdkit distill --dataset D --teacher RUN_DIR_OR_WEIGHTS_OR_ARCH --student ARCH --method kd --seeds 0,1,2 --out DIR
  kdkit distill --config FILE.yaml [--set key=value ...]
  kdkit tune --dataset D --teacher ARCH --student ARCH --method kd --trials 20 [--storage URL] --out DIR
  kdkit evaluate WEIGHTS_OR_RUN_DIR --dataset D
  kdkit datasets | models | methods
"""
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from kdkit.config import DistillConfig, TrainConfig, resolve
from kdkit.errors import KdkitError, shown

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="kdkit: distill a big teacher into a small student, and show the evidence.")
console = Console(width=None if sys.stdout.isatty() else 120)  # logs and pipes get the whole table
_debug = {"on": False}

# The demo recipe (configs/demo.yaml holds the same values; docs/demo.md says how it was chosen).
DEMO = {"dataset": "fashion-mnist", "teacher": "cnn", "teacher_epochs": 8, "student": "cnn-tiny", "method": "kd",
        "epochs": 15, "optimizer": "adamw", "lr": 0.003, "weight_decay": 0.01, "batch_size": 128,
        "augment": "flip", "temperature": 1.0, "alpha": 1.0, "seeds": [0], "out": "runs/demo"}


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="show full tracebacks")):
    _debug["on"] = debug


ConfigOpt = typer.Option(None, "--config", "-c", help="YAML file with config keys (see docs/config.md)")
TrustOpt = typer.Option(None, "--trust-hook", help="a module:function model hook that weights' sidecars may name "
                        "(kdkit never imports a name read from a file otherwise; repeatable)")
OverwriteOpt = typer.Option(None, "--overwrite", help="write into an --out folder holding files kdkit did not write")
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


@app.command()
def distill(
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    dataset: Optional[str] = typer.Option(None, help="named dataset or ImageFolder path (`kdkit datasets`)"),
    data_dir: Optional[str] = typer.Option(None, help="folder holding the dataset files"),
    imbalance: Optional[str] = typer.Option(None, help="long-tailed train/val splits: exp:100 or step:10 (test stays balanced)"),
    teacher: Optional[str] = typer.Option(None, help="run dir or .safetensors from `kdkit train`, or an architecture to train first"),
    student: Optional[str] = typer.Option(None, help="student architecture (`kdkit models`) or pkg.module:make_net"),
    method: Optional[str] = typer.Option(None, help="distillation method (`kdkit methods`)"),
    epochs: Optional[int] = typer.Option(None, help="student epochs (scratch and distilled)"),
    teacher_epochs: Optional[int] = typer.Option(None, help="teacher epochs when it is trained here (0 = --epochs)"),
    seeds: Optional[str] = typer.Option(None, help="comma-separated seeds, e.g. 0,1,2"),
    temperature: Optional[float] = typer.Option(None, help="softmax temperature T"),
    alpha: Optional[float] = typer.Option(None, help="weight of the KD term; 1-alpha weights cross-entropy"),
    lr: Optional[float] = typer.Option(None, help="learning rate"),
    batch_size: Optional[int] = typer.Option(None, help="batch size"),
    baseline: Optional[bool] = typer.Option(None, "--baseline/--no-baseline", help="train the scratch student too"),
    report: Optional[bool] = typer.Option(None, "--report/--no-report", help="write report.html at the end (default on)"),
    teacher_cache: Optional[bool] = typer.Option(None, "--teacher-cache/--no-teacher-cache",
                                                 help="offline KD: store the teacher's outputs once (per recorded view), distill from them"),
    compile_mode: Optional[str] = typer.Option(None, "--compile", help="torch.compile mode: off | default | reduce-overhead | max-autotune"),
    resume: Optional[bool] = typer.Option(None, "--resume", help="continue a killed run in --out"),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda | mps"),
    out: Optional[str] = typer.Option(None, help="run directory"),
    overwrite: Optional[bool] = OverwriteOpt,
    trust_hook: Optional[list[str]] = TrustOpt,
):
    """Distill a teacher into a student; also train the scratch baseline; write the evidence table."""
    flags = dict(dataset=dataset, data_dir=data_dir, imbalance=imbalance, teacher=teacher, student=student, method=method, epochs=epochs,
                 teacher_epochs=teacher_epochs, seeds=_seeds(seeds), temperature=temperature, alpha=alpha, lr=lr,
                 batch_size=batch_size, baseline=baseline, report=report, teacher_cache=teacher_cache, compile=compile_mode,
                 resume=resume, device=device, out=out, overwrite=overwrite, trust_hooks=trust_hook or None)
    cfg = resolve(DistillConfig, config, flags, set_)
    _run_distill(cfg)


MAX_MEMBERS = 1000  # teachers in one ensemble (each trained here): more is a typo


@app.command()
def ensemble(
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    dataset: Optional[str] = typer.Option(None, help="named dataset or ImageFolder path (`kdkit datasets`)"),
    teacher: Optional[str] = typer.Option(None, help="teacher architecture(s); one is repeated --members times"),
    members: int = typer.Option(3, help="ensemble size when --teacher names one architecture"),
    bootstrap: Optional[bool] = typer.Option(None, "--bootstrap/--no-bootstrap", help="train each member on a bootstrap resample"),
    combine: Optional[str] = typer.Option(None, help="mean | weights | entropy | stacker"),
    student: Optional[str] = typer.Option(None, help="student architecture"),
    method: Optional[str] = typer.Option(None, help="distillation method (kd, dkd, dist)"),
    epochs: Optional[int] = typer.Option(None, help="student epochs"),
    teacher_epochs: Optional[int] = typer.Option(None, help="epochs of each member (0 = --epochs)"),
    seeds: Optional[str] = typer.Option(None, help="comma-separated student seeds; member i uses seeds[0] + i"),
    out: Optional[str] = typer.Option(None, help="run directory"),
):
    """Train K teachers (seeds, bootstrap samples or a list of architectures), report each and their
    combination, and distill the ensemble into one student."""
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


@app.command()
def tune(
    config_file: Optional[Path] = typer.Argument(None, help="YAML config (as `kdkit tune CONFIG`; same as --config)"),
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = typer.Option(None, "--set", help="set any config key, e.g. --set temperature=2 "
                                             "(repeatable); a key set here is not searched"),
    trials: int = typer.Option(20, help="finished trials the study should have, counting every worker's"),
    search: Optional[str] = typer.Option(None, help="the method's hyper-parameters to search, comma-separated, e.g. "
                                         "temperature,alpha,ce_weight (default: those `kdkit methods NAME` marks tuned); "
                                         "lr and weight_decay are searched too"),
    storage: Optional[str] = typer.Option(None, help="database URL shared by the workers (default: sqlite:///OUT/study.db)"),
    study_name: Optional[str] = typer.Option(None, help="study to start or join (default: the --out path)"),
    metric: Optional[str] = typer.Option(None, help="validation score to maximise: accuracy or balanced_accuracy "
                                         "(default: balanced_accuracy when imbalance is set)"),
    timeout: Optional[float] = typer.Option(None, help="start no trial after this many seconds (then evaluate the best so far)"),
    dataset: Optional[str] = typer.Option(None, help="named dataset or ImageFolder path (`kdkit datasets`)"),
    data_dir: Optional[str] = typer.Option(None, help="folder holding the dataset files"),
    imbalance: Optional[str] = typer.Option(None, help="long-tailed train/val splits: exp:100 or step:10 (test stays balanced)"),
    teacher: Optional[str] = typer.Option(None, help="run dir or .safetensors from `kdkit train`, or an architecture to train once first"),
    student: Optional[str] = typer.Option(None, help="student architecture (`kdkit models`) or pkg.module:make_net"),
    method: Optional[str] = typer.Option(None, help="distillation method (`kdkit methods`)"),
    epochs: Optional[int] = typer.Option(None, help="epochs of each trial"),
    teacher_epochs: Optional[int] = typer.Option(None, help="teacher epochs when it is trained here (0 = --epochs)"),
    seeds: Optional[str] = typer.Option(None, help="the one seed of every trial, e.g. 0"),
    lr: Optional[float] = typer.Option(None, help="learning rate: the search spans lr/3 .. 3 lr"),
    batch_size: Optional[int] = typer.Option(None, help="batch size"),
    report: Optional[bool] = typer.Option(None, "--report/--no-report", help="write report.html at the end (default on)"),
    resume: bool = typer.Option(False, "--resume", help="continue the study, also to a new --trials"),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda | mps"),
    out: Optional[str] = typer.Option(None, help="run directory (default runs/tune)"),
):
    """Search the method's hyper-parameters with Optuna (pruning on validation), then evaluate the
    best trial on test. The same command on several machines, with one --storage URL, shares the
    study (docs/tune.md)."""
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
    plot = f"; importance: {cfg.out}/param_importance.png" if record["importance"] else ""
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
    from kdkit.summary import table_rows

    header, body = table_rows(summary)
    keep = [header.index(h) for h in CLI_COLUMNS]
    table = Table(*CLI_COLUMNS, box=box.SIMPLE_HEAD,
                  title=f"{summary['method']}: {summary['teacher']['arch']} -> {summary['student_arch']} on {summary['dataset']} (test set)")
    for cells in body:
        table.add_row(*(cells[i] for i in keep))
    console.print(table)
    if summary.get("gap_closed", {}).get("mean") is not None:
        console.print(f"gap closed (accuracy): {100 * summary['gap_closed']['mean']:.0f}%")
    console.print(f"full table: {out}/summary.md   data: {out}/summary.json   config: {out}/config.yaml")
    if summary.get("report"):
        console.print(f"report: {summary['report']}")


@app.command()
def train(
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    dataset: Optional[str] = typer.Option(None, help="named dataset or ImageFolder path"),
    data_dir: Optional[str] = typer.Option(None, help="folder holding the dataset files"),
    imbalance: Optional[str] = typer.Option(None, help="long-tailed train/val splits: exp:100 or step:10 (test stays balanced)"),
    model: Optional[str] = typer.Option(None, help="architecture (`kdkit models`) or pkg.module:make_net"),
    epochs: Optional[int] = typer.Option(None, help="epochs"),
    lr: Optional[float] = typer.Option(None, help="learning rate"),
    batch_size: Optional[int] = typer.Option(None, help="batch size"),
    seed: Optional[int] = typer.Option(None, help="seed"),
    resume: Optional[bool] = typer.Option(None, "--resume", help="continue a killed run in --out"),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda | mps"),
    out: Optional[str] = typer.Option(None, help="run directory"),
    overwrite: Optional[bool] = OverwriteOpt,
):
    """Train one model with cross-entropy (a teacher, usually); weights + summary in --out."""
    from kdkit.recipes import run_train

    flags = dict(dataset=dataset, data_dir=data_dir, imbalance=imbalance, model=model, epochs=epochs, lr=lr, batch_size=batch_size,
                 seed=seed, resume=resume, device=device, out=out, overwrite=overwrite)
    cfg = resolve(TrainConfig, config, flags, set_)
    summary = run_train(cfg)
    if summary.get("stopped_early"):
        console.print(f"stopped after max_steps; continue with: kdkit train --config {cfg.out}/config.yaml --resume")
        return
    m = summary["metrics"]
    console.print(f"{cfg.model} on {summary['dataset']}: test accuracy {100 * m['accuracy']:.2f}%, "
                  f"balanced accuracy {100 * m['balanced_accuracy']:.2f}%; weights: {cfg.out}/best.safetensors")


@app.command()
def evaluate(
    weights: Path = typer.Argument(..., help="run directory or .safetensors file written by kdkit"),
    dataset: Optional[str] = typer.Option(None, help="dataset (default: the one the model was trained on)"),
    data_dir: Optional[str] = typer.Option(None, help="folder holding the dataset files"),
    teacher: Optional[Path] = typer.Option(None, help="also report agreement with this teacher"),
    out: Optional[Path] = typer.Option(None, help="write the metrics as JSON here"),
    device: str = typer.Option("auto", help="auto | cpu | cuda | mps"),
    trust_hook: Optional[list[str]] = TrustOpt,
):
    """Test-set metrics and model facts (size, FLOPs, latency) of saved weights."""
    from kdkit.checkpoint import atomic_write, sidecar
    from kdkit.data import load_dataset
    from kdkit.evaluate import model_facts
    from kdkit.evaluate import evaluate_model
    from kdkit.train import parse_device
    from kdkit.weights import check_teacher, load_model, weights_path
    from kdkit.rundir import check_out_file

    dev = parse_device(device)
    check_dataset_option(dataset)
    if out:
        reads = [p for w in [weights, teacher] if w is not None and Path(w).exists() for p in (weights_path(w), sidecar(weights_path(w)))]
        check_out_file(out, reads, example="metrics.json")
    model, meta = load_model(weights, trust_hook or ())
    data = load_dataset(dataset or meta.get("dataset", "fashion-mnist"), data_dir)
    check_teacher(meta, data)
    teacher_logits = None
    if teacher:
        t_model, t_meta = load_model(teacher, trust_hook or ())
        check_teacher(t_meta, data)
        _, teacher_logits = evaluate_model(t_model, data, dev)
    metrics, _ = evaluate_model(model, data, dev, teacher_logits)
    result = {"weights": str(weights), "arch": meta["arch"], "dataset": data.name, "metrics": metrics,
              "facts": model_facts(model, data.input_shape), "written_by": "kdkit evaluate"}
    keys = ("accuracy", "top5", "balanced_accuracy", "f1_macro", "auc", "nll", "ece", "top1_agreement", "mean_kl")
    for k in keys:
        if metrics.get(k) is not None:
            console.print(f"{k:>20}: {metrics[k]:.4f}")
    for k, v in result["facts"].items():
        console.print(f"{k:>20}: {v:,.3f}" if isinstance(v, float) else f"{k:>20}: {v:,}")
    if out:
        atomic_write(out, json.dumps(result, indent=1).encode())
        console.print(f"written: {out}")


@app.command()
def demo(
    data_dir: Optional[str] = typer.Option(None, help="folder holding Fashion-MNIST (else found or downloaded)"),
    out: str = typer.Option(DEMO["out"], help="run directory"),
    set_: Optional[list[str]] = SetOpt,
):
    """Fashion-MNIST: train a CNN teacher, a scratch student and a KD student (31x fewer parameters)."""
    cfg = resolve(DistillConfig, None, dict(DEMO, data_dir=data_dir, out=out), set_)
    _run_distill(cfg)


@app.command()
def datasets(data_dir: Optional[str] = typer.Option(None, help="also look here")):
    """Named datasets and where (if anywhere) their files were found."""
    from kdkit.data import DATASETS, dataset_status

    if data_dir is not None and not Path(data_dir).is_dir():
        raise KdkitError(f"--data-dir {shown(data_dir)} is not a folder; name the folder that holds the dataset files")
    status = {s["name"]: s for s in dataset_status(data_dir)}
    table = Table("name", "description", "found")
    for name, text in DATASETS.items():
        s = status.get(name, {})
        table.add_row(name, text, str(s.get("path") or s.get("found") or "no (downloads when online)"))
    console.print(table)
    console.print("Also: any ImageFolder path (train/<class>/*.png, test/<class>/...), or arrays via kdkit.data.from_arrays.")


@app.command()
def models(
    layers: Optional[str] = typer.Option(None, "--layers", help="print the tappable layer names of this architecture"),
    in_channels: int = typer.Option(3, help="input channels for --layers"),
    image_size: int = typer.Option(32, help="input size for --layers"),
    num_classes: int = typer.Option(100, help="classes for --layers"),
):
    """Architectures by name, with their parameter counts for 3x32x32 input and 100 classes."""
    from kdkit.models import count_parameters, create_model, describe_model, list_models

    for flag, value, example, most in (("--in-channels", in_channels, 3, 1024), ("--image-size", image_size, 32, 4096),
                                       ("--num-classes", num_classes, 100, 1_000_000)):
        if not 1 <= value <= most:  # (the layer listing runs the model on one input of this size)
            raise KdkitError(f"{flag} must be in 1..{most}, got {shown(value)}; e.g. {flag} {example}")
    if layers is not None and not layers.strip():
        raise KdkitError("--layers is empty; name an architecture, e.g. --layers resnet8x4 (`kdkit models` lists them)")
    if layers:
        from kdkit.taps import layer_shapes

        model = create_model(layers, num_classes=num_classes, in_channels=in_channels, image_size=image_size)
        table = Table("layer name (for feature taps)", "module", "output shape", box=box.SIMPLE_HEAD)
        for name, kind, shape in layer_shapes(model, (in_channels, image_size, image_size)):
            table.add_row(name, kind, str(shape))
        console.print(table)
        console.print(f"stage outputs (default taps): {', '.join(getattr(model, 'feature_modules', []))}")
        return

    table = Table("name", "parameters", "description")
    for name in list_models():
        n = count_parameters(create_model(name, num_classes=100, in_channels=3, image_size=32))
        table.add_row(name, f"{n:,}", describe_model(name))
    console.print(table)
    console.print("Also: any nn.Module through the Python API, or --student my_pkg.my_module:make_net.")


@app.command()
def methods(name: Optional[str] = typer.Argument(None, help="a method: show each hyper-parameter's default, valid "
                                                            "values, search range and meaning")):
    """Distillation methods and their hyper-parameters (config keys)."""
    from kdkit.methods import METHODS, names

    if name is not None:
        console.print(_method_table(name))
        return
    table = Table("name", "what it transfers (paper)", "hyper-parameters (config keys)")
    for method, cls in METHODS.items():
        table.add_row(method, cls.paper, ", ".join(names(cls)))
    console.print(table)
    console.print("Compose with +, e.g. --method kd+fitnet (CE counted once; every term logged). "
                  "`kdkit methods NAME` shows one method's hyper-parameters.")


def _method_table(name: str) -> Table:
    """One method's hyper-parameters: key, default, valid values, search range (* = searched by default), meaning."""
    from kdkit.config import METHOD_KEYS, DistillConfig, valid_values
    from kdkit.methods import defaults_of, hyperparameters_of, method_parts

    method_parts(name)
    table = Table("key", "default", "valid", "search (* by default)", "meaning", title=f"method {name}")
    defaults = defaults_of(name)
    for key in hyperparameters_of(name):
        declared = METHOD_KEYS.get(key)
        meaning = declared.hyper.doc if declared else "a training key (`kdkit train` reads it too)"
        default = defaults.get(key, getattr(DistillConfig, key, ""))
        default = list(default) if isinstance(default, tuple) else default
        search = declared.hyper.describe_search() if declared else "-"
        table.add_row(key, str(default), valid_values(DistillConfig, key), search, meaning)
    return table


@app.command()
def export(
    source: Path = typer.Argument(..., help="run directory (a distill run: its student) or .safetensors file"),
    format_: str = typer.Option("onnx", "--format", help="export format (onnx)"),
    out: Optional[Path] = typer.Option(None, help="output .onnx file (default: RUN/export/student.onnx)"),
    quantize: Optional[str] = typer.Option(None, help="int8: also write a statically quantised copy, calibrated on train"),
    opset: int = typer.Option(17, help="ONNX opset version"),
    dataset: Optional[str] = typer.Option(None, help="verify on this dataset's test split (default: the model's own)"),
    data_dir: Optional[str] = typer.Option(None, help="folder holding the dataset files"),
    tolerance: float = typer.Option(1e-3, help="max |logit difference| allowed between onnxruntime and PyTorch"),
    repeats: int = typer.Option(20, help="timed runs per latency (median; after 3 warm-up runs)"),
    trust_hook: Optional[list[str]] = TrustOpt,
):
    """Export the student to ONNX, check it against PyTorch on the test split, optionally quantise
    it to int8, and print the deployment table (docs/export.md)."""
    from kdkit.errors import unknown
    from kdkit.export import deploy_cells, export_run

    check_dataset_option(dataset)
    if format_ != "onnx":
        raise unknown("export format", format_, ["onnx"])
    report = export_run(source, out, quantize=quantize, opset=opset, dataset=dataset, data_dir=data_dir,
                        tolerance=tolerance, repeats=repeats, trusted_hooks=trust_hook or ())
    check, onnx_path = report["verification"], Path(report["onnx"])
    say = console.out  # plain lines: no wrapping or markup inside paths and numbers
    say(f"exported: {onnx_path} (from {report['source']}; opset {opset}, {report['exporter']})")
    say(f"verified on {check['n']} {report['dataset']} test images: max |logit diff| {check['max_abs_logit_diff']:.2e} "
        f"(tolerance {check['tolerance']:.0e}), identical predictions {100 * check['identical_predictions']:.2f}% "
        f"(need >= {100 * check['min_identical']:.1f}%)")
    if "int8" in report:
        q = report["int8"]
        how = f"static QDQ, per-channel, {q['calibration_samples']} calibration images" if q["mode"] == "static" else \
            f"dynamic: {q['fallback_reason'] or 'asked for'}"
        say(f"int8 ({how}): test accuracy {100 * q['accuracy_int8']:.2f}% vs fp32 {100 * q['accuracy_fp32']:.2f}%, "
            f"speed-up {q['speedup_b1']:.2f}x at batch 1, {q['speedup_b64']:.2f}x at batch 64")
    deploy = report["deploy"]
    header, body = deploy_cells(deploy)
    table = Table(*header, box=box.SIMPLE_HEAD, title="deployment (test set)")
    for cells in body:
        table.add_row(*cells)
    console.print(table)
    say(f"timing: {deploy['runtime']}, {deploy['intra_op_threads']} intra-op thread, "
        f"median of {deploy['repeats']} runs after {deploy['warmup_runs']} warm-up runs")
    for name, r in deploy["ratios"].items():
        say(f"{name}: {r['size_x_smaller']:.2f}x smaller file, speed-up {r['speedup_b1']:.2f}x at batch 1 and "
            f"{r['speedup_b64']:.2f}x at batch 64, accuracy {r['accuracy_change_points']:+.2f} points")
    say(f"files: {onnx_path.with_suffix('.json')}  {onnx_path.with_suffix('.report.json')}  {onnx_path.with_suffix('.deploy.json')}")


@app.command()
def predict(
    model: Path = typer.Argument(..., help=".onnx file written by kdkit export (its .json sidecar beside it)"),
    inputs: Path = typer.Argument(..., help="folder of png/jpg images, or a .npy array (N, C, H, W) or (N, H, W)"),
    out: Optional[Path] = typer.Option(None, help="write the predictions as CSV here instead of printing them"),
    top: int = typer.Option(3, help="how many classes to list per input"),
):
    """Predict classes with an exported model: onnxruntime and the sidecar only, no PyTorch weights."""
    from kdkit.predict import predict as run_predict
    from kdkit.predict import write_predictions
    from kdkit.rundir import check_out_file

    from rich.text import Text

    if out:
        reads = [model, model.with_suffix(".json"), inputs]
        check_out_file(out, reads, example="predictions.csv")
    rows = run_predict(model, inputs, top=top)
    if out:
        console.out(f"{len(rows)} predictions written: {write_predictions(rows, out)}")
        return
    table = Table("input", "class", "probability", f"top {top}", box=box.SIMPLE_HEAD)
    for r in rows:  # Text: file and class names are shown as they are, never read as markup
        table.add_row(Text(r["input"]), Text(r["class"]), f"{r['probability']:.3f}",
                      Text(", ".join(f"{c} {p:.3f}" for c, p in r["top"])))
    console.print(table)


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="a finished `kdkit distill` run directory"),
    importance: bool = typer.Option(True, "--importance/--no-importance", help="measure feature importance (the slow part)"),
    samples: int = typer.Option(1000, help="test samples for the importance analysis"),
    device: str = typer.Option("cpu", help="cpu | cuda | mps (rebuilt models run here)"),
    trust_hook: Optional[list[str]] = TrustOpt,
):
    """Write RUN_DIR/report.html: the table, training curves, per-class and calibration plots,
    size/speed, the feature-importance graph, config and environment (docs/report.md)."""
    from kdkit.report import write_report

    if samples < 1:
        raise KdkitError(f"--samples must be at least 1, got {samples}; e.g. --samples 1000 (or --no-importance to skip the analysis)")
    console.out(str(write_report(run_dir, importance=importance, n_samples=samples, device=device,
                                 trusted_hooks=trust_hook or ())))


@app.command()
def compare(
    run_dirs: list[Path] = typer.Argument(..., help="`kdkit distill` run directories to put side by side"),
    out: Path = typer.Option(Path("compare.html"), help="the HTML file to write"),
):
    """One table across runs (each student; a shared teacher and scratch once) and the accuracy vs
    parameters / latency plots, in one HTML file."""
    from kdkit.report import compare as write_compare

    console.out(str(write_compare(run_dirs, out)))


def check_dataset_option(dataset: str | None):
    """--dataset may be left out (the model's own), not given empty."""
    if dataset is not None and not dataset.strip():
        raise KdkitError("--dataset is empty; name a dataset or an ImageFolder path, or leave it out to use the "
                         "one the model was trained on")


def usage_error(error) -> str:
    """A command-line usage error (unknown command or option, a flag's missing or mistyped value)
    as one line naming the problem and where the fix is: the command's --help."""
    message = " ".join(str(error.format_message()).split())
    ctx, names = getattr(error, "ctx", None), []
    while ctx is not None and ctx.parent is not None:  # the subcommand path, without the program name
        names.insert(0, ctx.info_name)
        ctx = ctx.parent
    if getattr(error, "ctx", None) is None:  # some errors carry no context: the command named on the line
        commands = {c.name or c.callback.__name__ for c in app.registered_commands}
        names = [a for a in sys.argv[1:] if a in commands][:1]
    where = "`" + " ".join(["kdkit", *names, "--help"]) + "`"
    return f"{message} See {where}" if message.endswith("?") else f"{message.rstrip('.')}; see {where}"


def main():
    # No sys.path change: kdkit never imports from the working directory on its own (PYTHONPATH=. does).
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: rank 0 prints the results, the others stay quiet
        console.quiet = True
    try:
        code = app(standalone_mode=False)  # usage errors come back as exceptions: printed below as one line
    except KdkitError as e:
        if _debug["on"]:
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        code = 130
    except OSError as e:  # a path the file system refuses (too long, a loop, ...) that no check above caught
        if _debug["on"]:
            raise
        where = f" {shown(str(e.filename))}" if e.filename else ""
        print(f"error: cannot use{where} ({e.strerror or type(e).__name__}); check the path", file=sys.stderr)
        sys.exit(2)
    except Exception as e:
        if not (hasattr(e, "format_message") and hasattr(e, "exit_code")):  # not a click usage error: a bug
            raise
        if type(e).__name__ == "NoArgsIsHelpError":  # plain `kdkit`: the help was printed
            sys.exit(2)
        print(f"error: {usage_error(e)}", file=sys.stderr)
        sys.exit(2)
    if code == 130:  # Ctrl-C (typer turns KeyboardInterrupt into exit code 130)
        print("interrupted; continue with --resume (checkpoints are kept)", file=sys.stderr)
    sys.exit(code if isinstance(code, int) else 0)
