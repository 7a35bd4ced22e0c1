"""The whole `kdkit export`: which weights a run directory means, the option checks, the files it
writes (OUT.onnx and its sidecar, OUT.report.json, OUT.deploy.json, the int8 copy), and the order:
export, check, verify, quantise, measure."""
import json
import tempfile
from pathlib import Path

from kdkit import checkpoint as ckpt
from kdkit.data import load_dataset
from kdkit.data.registry import loading_options
from kdkit.errors import KdkitError, shown, unknown
from kdkit.export.deploy import LATENCY_REPEATS, deploy_table
from kdkit.export.int8 import CALIBRATION_SAMPLES, quantize_int8
from kdkit.export.onnx_file import export_onnx, require_onnx, write_file, write_sidecar
from kdkit.export.parity import FP32_TOLERANCE, parity_error, verify
from kdkit.weights import input_sizes, load_model, weights_path
from kdkit.rundir import check_out_file


def resolve_source(source) -> tuple[Path, Path | None]:
    """(student weights, teacher weights or None) for a distill run dir (student/seed{first}/),
    a train run dir, or a .safetensors file. Only a distill run dir has a teacher to compare with."""
    path = Path(source)
    distill_run = path.is_dir() and not (path / "best.safetensors").is_file() and any(
        (path / phase).is_dir() for phase in ("student", "teacher"))
    if not distill_run:
        return weights_path(path), None
    teacher = path / "teacher" / "best.safetensors"
    return _student_weights(path), teacher if teacher.is_file() else None


def _student_weights(run: Path) -> Path:
    """RUN/student/seed{S}/best.safetensors for the first seed of the run's config that has one."""
    from kdkit.config import load_yaml

    config = run / "config.yaml"
    seeds = load_yaml(config).get("seeds") if config.is_file() else None
    if seeds is not None and not (isinstance(seeds, list) and all(type(s) is int for s in seeds)):
        raise KdkitError(f"run config '{config}' has seeds: {seeds}, not a list of integers; write it as "
                         f"seeds: [{seeds if type(seeds) is int else 0}] (or delete the seeds line to use the seed folders)")
    if not seeds:  # no config: the seed folders, in numeric order
        seeds = sorted(int(p.name[4:]) for p in run.glob("student/seed*") if p.name[4:].isdigit())
    for seed in seeds:
        weights = run / "student" / f"seed{seed}" / "best.safetensors"
        if weights.is_file():
            return weights
    raise KdkitError(f"run '{run}' has no student weights (student/seed*/best.safetensors); finish the run first")


def default_out(source, weights: Path) -> Path:
    """RUN/export/student.onnx for a run directory, else export/NAME.onnx beside the weights file
    (not NAME.onnx: its sidecar NAME.json would be the weights' own)."""
    source = Path(source)
    if source.is_dir():
        name = "student.onnx" if weights.parent.parent.name == "student" else "model.onnx"
        return source / "export" / name
    return weights.parent / "export" / f"{weights.stem}.onnx"


def export_run(source, out=None, *, quantize: str | None = None, opset: int = 17, dataset: str | None = None,
               data_dir=None, tolerance: float = FP32_TOLERANCE, calibration_samples: int = CALIBRATION_SAMPLES,
               repeats: int = LATENCY_REPEATS, quantize_mode: str = "static", trusted_hooks=()) -> dict:
    """Export the student of `source`, verify it on the test split, optionally quantise it, and
    measure the deployment table. Returns the report (also written to OUT.report.json).
    trusted_hooks: module:function model hooks the weights' sidecars may name (else refused)."""
    require_onnx()
    check_options(quantize, opset, tolerance, calibration_samples, repeats, quantize_mode)
    weights, teacher = resolve_source(source)
    model, meta = load_model(weights, trusted_hooks)
    out = Path(out) if out else default_out(source, weights)
    if out.suffix != ".onnx":
        raise KdkitError(f"--out must name a .onnx file, got {shown(str(out))}; e.g. --out student.onnx")
    reads = [p for w in (weights, teacher) if w is not None for p in (w, ckpt.sidecar(w))]
    for path in output_files(out, quantize):
        check_out_file(path, reads, example="student.onnx")
    data, meta = _test_data(meta, dataset, data_dir)
    files = {"student fp32": _export_checked(model, out, meta, weights, data, opset)}
    report = {"source": str(weights), "onnx": str(out), "dataset": data.name, "opset": opset,
              "exporter": "torch.onnx.export(dynamo=False)", "verification": verify(out, model, data.test, meta, tolerance)}
    report_path = out.with_suffix(".report.json")
    _write_json(report_path, report)
    if not report["verification"]["passed"]:
        raise parity_error(report["verification"], report_path)
    if quantize:
        int8 = out.with_suffix(".int8.onnx")
        report["int8"] = quantize_int8(out, int8, data.train, files["student fp32"][1], calibration_samples, quantize_mode)
        files["student int8"] = (int8, write_sidecar(int8, meta, weights, data, opset=opset,
                                                     precision="int8", quantization=report["int8"]))
    report["deploy"] = _measure(files, teacher, data, opset, repeats, trusted_hooks)
    if quantize:
        report["int8"] |= _int8_summary(report["deploy"])
    _write_json(report_path, report)
    _write_json(out.with_suffix(".deploy.json"), report["deploy"])
    return report


def check_options(quantize, opset: int, tolerance: float, calibration_samples: int, repeats: int, quantize_mode: str):
    """Refuse option values that cannot work before any export work starts (a negative or NaN
    tolerance would otherwise read as a failed parity check, zero repeats as a crash)."""
    if quantize not in (None, "int8"):
        raise unknown("quantisation", quantize, ["int8"])
    if quantize_mode not in ("static", "dynamic"):
        raise unknown("quantisation mode", quantize_mode, ["static", "dynamic"])
    low, high = opset_range()
    if not low <= opset <= high:
        raise KdkitError(f"--opset {shown(opset)} is outside the {low}..{high} that the ONNX exporter supports; "
                         "the default 17 runs on onnxruntime")
    if not tolerance >= 0:  # (NaN fails too)
        raise KdkitError(f"--tolerance must be a number >= 0 (the max |logit difference| allowed), got {tolerance}; "
                         f"e.g. --tolerance 1e-3 (the default)")
    if repeats < 1:
        raise KdkitError(f"--repeats must be at least 1, got {repeats}; e.g. --repeats 20 (timed runs per latency)")
    if calibration_samples < 1:
        raise KdkitError(f"calibration_samples must be at least 1, got {calibration_samples}; e.g. "
                         f"calibration_samples={CALIBRATION_SAMPLES} (training images that set the int8 ranges)")


def opset_range() -> tuple[int, int]:
    """The ONNX opsets torch.onnx.export (TorchScript exporter) accepts."""
    from torch.onnx import _constants

    return (getattr(_constants, "ONNX_MIN_OPSET", 7),
            getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", getattr(_constants, "ONNX_MAX_OPSET", 20)))


def output_files(out: Path, quantize: str | None) -> list[Path]:
    """Every file `kdkit export --out OUT.onnx` writes."""
    int8 = [out.with_suffix(".int8.onnx"), out.with_suffix(".int8.json")] if quantize else []
    return [out, out.with_suffix(".json"), out.with_suffix(".report.json"), out.with_suffix(".deploy.json"), *int8]


def _measure(files: dict, teacher: Path | None, data, opset: int, repeats: int, trusted_hooks=()) -> dict:
    """The deployment table of `files`, with the teacher (exported to a temporary file) first."""
    with tempfile.TemporaryDirectory() as tmp:
        if teacher is not None:
            t_model, t_meta = load_model(teacher, trusted_hooks)
            _, t_meta = _test_data(t_meta, data.name, None, data)
            files = {"teacher": _export_checked(t_model, Path(tmp) / "teacher.onnx", t_meta, teacher, data, opset)} | files
        return deploy_table(files, data.test, repeats)


def _export_checked(model, path: Path, meta: dict, weights: Path, data, opset: int) -> tuple[Path, dict]:
    """Export, run onnx's model checker, write the sidecar: (path, sidecar)."""
    onnx, _ = require_onnx()
    export_onnx(model, path, data.input_shape, opset)
    onnx.checker.check_model(str(path))
    return path, write_sidecar(path, meta, weights, data, opset=opset, precision="fp32")


def _test_data(meta: dict, dataset: str | None, data_dir, data=None):
    """(the dataset the model was trained on (or --dataset), meta with classes, mean and std filled
    from the dataset where hand-saved weights lack them), checked against the model."""
    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    given = config.get("dataset") if isinstance(config.get("dataset"), str) else ""  # as the run was given it: a path
    name = dataset or (given if given and Path(given).expanduser().exists() else meta.get("dataset"))
    if not name:
        raise KdkitError("the weights' sidecar names no dataset to verify the export on; pass --dataset NAME_OR_PATH")
    try:
        data = data or load_dataset(name, data_dir, **loading_options(meta))
    except KdkitError as error:
        if dataset:
            raise
        raise KdkitError(f"the weights' sidecar names dataset '{name}', which kdkit cannot read here ({error}); "
                         "pass --dataset with the data the model was trained on") from None
    meta = {"classes": list(data.classes), "mean": list(data.mean), "std": list(data.std)} | meta
    if list(meta["classes"]) != list(data.classes) or (meta["in_channels"], meta["image_size"]) != input_sizes(data):
        raise KdkitError(f"the model ({meta['num_classes']} classes, {meta['in_channels']}x{meta['image_size']} input) "
                         f"does not fit dataset '{data.name}' ({data.num_classes} classes, input {data.input_shape}); "
                         "pass --dataset with the data it was trained on")
    return data, meta


def _int8_summary(table: dict) -> dict:
    fp32, int8 = table["rows"]["student fp32"], table["rows"]["student int8"]
    return {"accuracy_fp32": fp32["accuracy"], "accuracy_int8": int8["accuracy"],
            "speedup_b1": table["ratios"]["int8_vs_fp32"]["speedup_b1"],
            "speedup_b64": table["ratios"]["int8_vs_fp32"]["speedup_b64"]}


def _write_json(path: Path, data: dict):
    write_file(path, json.dumps(dict(data, written_by="kdkit export"), indent=1).encode())
