"""The commands that ship a student: export (ONNX, checked, optionally int8, the deployment table)
and predict (with the exported file alone)."""
from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.table import Table

from kdkit.cli.shared import TrustOpt, check_dataset_option, console


def export(
    source: Path = typer.Argument(..., help="run directory (a distill run: its student) or .safetensors file"),
    format_: str = typer.Option("onnx", "--format", help="export format (onnx)"),
    out: Optional[Path] = typer.Option(None, help="output .onnx file \\[default: RUN/export/student.onnx, or model.onnx for a train run]"),
    quantize: Optional[str] = typer.Option(None, help="int8: also write a statically quantised copy, calibrated on train"),
    opset: int = typer.Option(17, help="ONNX opset version"),
    dataset: Optional[str] = typer.Option(None, help="verify on this dataset's test split \\[default: the model's own]"),
    data_dir: Optional[str] = typer.Option(None, help="folder holding the dataset files"),
    tolerance: float = typer.Option(1e-3, help="max |logit difference| allowed between onnxruntime and PyTorch"),
    repeats: int = typer.Option(20, help="timed runs per latency (median; after 3 warm-up runs)"),
    trust_hook: Optional[list[str]] = TrustOpt,
):
    """Export the student to ONNX, check it against PyTorch on the test split, optionally quantise
    it to int8, and print the deployment table (`kdkit docs export`). Needs the onnx extra:
    pip install 'kdkit\\[onnx]'.

    Examples:

      kdkit export runs/kd --quantize int8

      kdkit export runs/teacher/best.safetensors --out teacher.onnx
    """
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
    say(f"verified on {check['n']} {report['dataset']} test samples: max |logit diff| {check['max_abs_logit_diff']:.2e} "
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


def predict(
    model: Path = typer.Argument(..., help=".onnx file written by kdkit export (its .json sidecar beside it)"),
    inputs: Path = typer.Argument(..., help="folder of png/jpg images, a .npy array (N, C, H, W) or (N, H, W), or for a text model a .txt file of sentences"),
    out: Optional[Path] = typer.Option(None, help="write the predictions as CSV here instead of printing them"),
    top: int = typer.Option(3, help="how many classes to list per input"),
):
    """Predict classes with an exported model: onnxruntime and the sidecar only, no PyTorch weights.

    Examples:

      kdkit predict runs/kd/export/student.onnx photos/ --top 3

      kdkit predict runs/kd/export/student.onnx images.npy --out predictions.csv
    """
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
