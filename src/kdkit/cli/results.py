"""The commands that read a finished run or saved weights: evaluate (test metrics and model
facts), report (report.html) and compare (runs side by side)."""
import json
from pathlib import Path
from typing import Optional

import typer

from kdkit.cli.shared import TrustOpt, check_dataset_option, console
from kdkit.errors import KdkitError


def evaluate(
    weights: Path = typer.Argument(..., help="run directory or .safetensors file written by kdkit"),
    dataset: Optional[str] = typer.Option(None, help="dataset \\[default: the one the model was trained on]"),
    data_dir: Optional[str] = typer.Option(None, help="folder holding the dataset files"),
    teacher: Optional[Path] = typer.Option(None, help="also report agreement with this teacher"),
    out: Optional[Path] = typer.Option(None, help="write the metrics as JSON here"),
    device: str = typer.Option("auto", help="auto | cpu | cuda | mps"),
    trust_hook: Optional[list[str]] = TrustOpt,
):
    """Test-set metrics and model facts (size, FLOPs, latency) of saved weights.

    Examples:

      kdkit evaluate runs/kd/student/seed0 --teacher runs/teacher

      kdkit evaluate runs/teacher/best.safetensors --out metrics.json
    """
    from kdkit.checkpoint import atomic_write, sidecar
    from kdkit.data import load_dataset
    from kdkit.data.registry import loading_options
    from kdkit.evaluate import model_facts
    from kdkit.teachers.specs import fact_sample
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
    data = load_dataset(dataset or meta.get("dataset", "fashion-mnist"), data_dir, **loading_options(meta))
    check_teacher(meta, data)
    teacher_logits = None
    if teacher:
        t_model, t_meta = load_model(teacher, trust_hook or ())
        check_teacher(t_meta, data)
        _, teacher_logits = evaluate_model(t_model, data, dev)
    metrics, _ = evaluate_model(model, data, dev, teacher_logits)
    result = {"weights": str(weights), "arch": meta["arch"], "dataset": data.name, "metrics": metrics,
              "facts": model_facts(model, data.input_shape, sample=fact_sample(data)), "written_by": "kdkit evaluate"}
    keys = ("accuracy", "top5", "balanced_accuracy", "f1_macro", "auc", "nll", "ece", "top1_agreement", "mean_kl")
    for k in keys:
        if metrics.get(k) is not None:
            console.print(f"{k:>20}: {metrics[k]:.4f}")
    for k, v in result["facts"].items():
        console.print(f"{k:>20}: {v:,.3f}" if isinstance(v, float) else f"{k:>20}: {v:,}")
    if out:
        atomic_write(out, json.dumps(result, indent=1).encode())
        console.print(f"written: {out}")


def report(
    run_dir: Path = typer.Argument(..., help="a finished `kdkit distill` run directory"),
    importance: bool = typer.Option(True, "--importance/--no-importance", help="measure feature importance (the slow part)"),
    samples: int = typer.Option(1000, help="test samples for the importance analysis"),
    device: str = typer.Option("cpu", help="cpu | cuda | mps (rebuilt models run here)"),
    trust_hook: Optional[list[str]] = TrustOpt,
):
    """Write RUN_DIR/report.html: the table, training curves, per-class and calibration plots,
    size/speed, the feature-importance graph, config and environment (`kdkit docs report`). Needs the
    report extra: pip install 'kdkit\\[report]'.

    Examples:

      kdkit report runs/kd

      kdkit report runs/kd --no-importance
    """
    from kdkit.report import write_report

    if samples < 1:
        raise KdkitError(f"--samples must be at least 1, got {samples}; e.g. --samples 1000 (or --no-importance to skip the analysis)")
    console.out(str(write_report(run_dir, importance=importance, n_samples=samples, device=device,
                                 trusted_hooks=trust_hook or ())))


def compare(
    run_dirs: list[Path] = typer.Argument(..., help="`kdkit distill` run directories to put side by side"),
    out: Path = typer.Option(Path("compare.html"), help="the HTML file to write"),
):
    """One table across runs (each student; a shared teacher and scratch once) and the accuracy vs
    parameters / latency plots, in one HTML file.

    Example:

      kdkit compare runs/kd runs/dkd runs/fitnet --out compare.html
    """
    from kdkit.report import compare as write_compare

    console.out(str(write_compare(run_dirs, out)))
