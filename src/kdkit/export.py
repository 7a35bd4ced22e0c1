"""Ship a student: ONNX export checked against PyTorch, int8 quantisation, a deployment table, and
predictions from the exported file alone (kdkit.predict).

    kdkit export runs/demo --quantize int8       # a distill run's student -> runs/demo/export/student.onnx
    kdkit predict runs/demo/export/student.onnx images/ --top 3 --out preds.csv

    from kdkit.export import export_run
    report = export_run("runs/demo", quantize="int8")   # report["verification"], ["int8"], ["deploy"]

Written next to OUT.onnx: OUT.json (sidecar: classes, mean/std, input shape, source checksum),
OUT.int8.onnx + OUT.int8.json (with quantize="int8"), OUT.report.json (parity and int8 numbers)
and OUT.deploy.json (the deployment table). docs/export.md says what is checked and how.
onnx and onnxruntime are optional (`pip install kdkit[onnx]`), so they are imported inside functions.
"""
import contextlib
import copy
import errno
import hashlib
import json
import os
import re
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from kdkit.version import __version__
from kdkit import checkpoint as ckpt
from kdkit.data import BatchLoader, Split, load_dataset
from kdkit.errors import KdkitError, shown, unknown
from kdkit.evaluate import predict_logits
from kdkit.weights import load_model, weights_path
from kdkit.rundir import check_out_file

ONNX_FORMAT = "kdkit-onnx-1"
INPUT_NAME, OUTPUT_NAME = "input", "logits"
FP32_TOLERANCE = 1e-3  # max |logit difference| allowed between onnxruntime and PyTorch (fp32)
MIN_IDENTICAL = 0.999  # fraction of test images whose predicted class must be the same
CALIBRATION_SAMPLES = 256  # training images that set the int8 activation ranges
LATENCY_REPEATS, WARMUP_RUNS, BATCH_SIZES = 20, 3, (1, 64)
THREADS = 1  # onnxruntime intra-op threads for every timing (and verification)


def require_onnx():
    """(onnx, onnxruntime), or the one-line error saying how to install them."""
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise KdkitError(f"ONNX export and predict need the optional packages onnx and onnxruntime "
                         f"({e.name or e} is not installed); pip install kdkit[onnx]") from None
    return onnx, onnxruntime


# ---------------------------------------------------------------- which weights


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


# ---------------------------------------------------------------- export


def export_onnx(model: torch.nn.Module, path, input_shape, opset: int = 17) -> Path:
    """Write `model` (a copy, in eval mode, on CPU) as ONNX: input "input" (B, C, H, W) float32,
    output "logits" (B, K), batch size B free. torch's TorchScript exporter (dynamo=False) is
    used: the torch.export-based default needs the onnxscript package and gains nothing here."""
    path = Path(path)
    example = torch.zeros(1, *input_shape)  # (1, C, H, W)
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _quiet_stderr(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
            torch.onnx.export(copy.deepcopy(model).cpu().eval(), (example,), str(path), input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME], opset_version=opset, dynamic_axes=axes, dynamo=False)
    except OSError as e:  # the disk, not the model
        raise write_error(path, e) from None
    except Exception as e:
        raise export_error(e, opset) from e
    return path


def write_error(path: Path, error: OSError) -> KdkitError:
    """A file of the export that could not be written (disk full, permissions): a fix for the disk,
    not for the model, and no --resume (export has nothing to resume)."""
    return KdkitError(f"cannot write '{path}' ({error.strerror or error}); free disk space or make its folder writable "
                      "(or choose another --out), then run kdkit export again")


def _atomic_write(path: Path, data: bytes):
    try:
        ckpt.atomic_write(path, data)
    except (OSError, ckpt.DiskFull) as e:
        raise write_error(path, e if isinstance(e, OSError) else OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))) from None


def export_error(error: Exception, opset: int) -> KdkitError:
    """The exporter's exception as one line: the operator it rejected, when it names one."""
    text = str(error).strip()
    op = re.search(r"operator '([^']+)'", text)
    if op:
        return KdkitError(f"the ONNX exporter cannot export operator '{op.group(1)}' at opset {opset}; replace that "
                          "operation in the model's forward(), try another --opset, or register a symbolic for it "
                          "(torch.onnx.register_custom_op_symbolic)")
    first = text.splitlines()[0][:200] if text else ""
    return KdkitError(f"the ONNX exporter failed ({type(error).__name__}: {first}); use only tensor operations in "
                      "forward() (no Python-side data-dependent logic); kdkit --debug export ... shows the traceback")


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2 for the block: torch 2.13's legacy exporter leaves its C++ log on
    (setup_onnx_logging tests a function object, which is always true) and prints the whole graph
    to stderr when an operator fails, which would bury the one-line error."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def write_sidecar(onnx_path: Path, meta: dict, weights: Path, data, **extra) -> dict:
    """OUT.json: everything `kdkit predict` needs, and where the file came from. input_dtype says
    whether the model was trained on uint8 pixels (scaled to [0, 1] before mean/std) or on floats."""
    side = {"format": ONNX_FORMAT, "arch": meta["arch"], "classes": list(meta["classes"]),
            "mean": list(meta["mean"]), "std": list(meta["std"]), "input_shape": list(data.input_shape),
            "input_dtype": str(data.train.images.dtype).removeprefix("torch."), "input_name": INPUT_NAME,
            "output_name": OUTPUT_NAME, "dataset": meta.get("dataset"),
            "source_weights": str(weights), "source_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
            "kdkit_version": __version__, "torch_version": torch.__version__, "written_by": "kdkit export"} | extra
    _atomic_write(onnx_path.with_suffix(".json"), json.dumps(side, indent=1).encode())
    return side


def load_sidecar(onnx_path) -> dict:
    path = Path(onnx_path)
    if path.is_dir():
        found = sorted(path.glob("export/*.onnx")) + sorted(path.glob("*.onnx"))
        if found:
            raise KdkitError(f"'{path}' is a folder; pass the .onnx file that kdkit export wrote, e.g. {found[0]}")
        raise KdkitError(f"'{path}' is a folder without an exported model; run `kdkit export RUN_DIR` first and "
                         "pass the .onnx file it writes")
    if not path.is_file():
        raise KdkitError(f"model file '{path}' not found; check the path (kdkit export writes RUN/export/student.onnx, "
                         "or model.onnx for a train run)")
    if path.suffix.lower() != ".onnx":
        raise KdkitError(f"'{path}' is not an exported .onnx model; run `kdkit export {path}` first and pass the "
                         ".onnx file it writes")
    meta = ckpt.load_meta(path)
    if meta.get("format") != ONNX_FORMAT:
        raise KdkitError(f"'{path}' has no kdkit sidecar '{path.with_suffix('.json').name}' (classes, mean, std); "
                         "export the model with kdkit export")
    return meta


# ---------------------------------------------------------------- running an exported file


def ort_session(path, threads: int = THREADS):
    """An onnxruntime CPU session with `threads` intra-op threads (and one inter-op thread)."""
    _, ort = require_onnx()
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _loader(split: Split, meta: dict, batch_size: int = 512) -> BatchLoader:
    """Batches normalised with the model's own mean/std (from its sidecar, not the dataset's)."""
    return BatchLoader(split, batch_size, shuffle=False, mean=meta["mean"], std=meta["std"])


def ort_logits(session, split: Split, meta: dict) -> np.ndarray:
    """(N, K) float32 logits of an onnxruntime session over a split."""
    return np.concatenate([session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0] for x, _, _ in _loader(split, meta)])


def median_latency_ms(session, shape, repeats: int = LATENCY_REPEATS) -> float:
    """Median wall time of `repeats` runs on random input of `shape`, after WARMUP_RUNS runs."""
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for _ in range(WARMUP_RUNS):
        session.run([OUTPUT_NAME], {INPUT_NAME: x})
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run([OUTPUT_NAME], {INPUT_NAME: x})
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0


# ---------------------------------------------------------------- verification


def verify(onnx_path, model: torch.nn.Module, split: Split, meta: dict, tolerance: float = FP32_TOLERANCE) -> dict:
    """Parity of the exported file with PyTorch on `split`: max |logit difference| and the fraction
    of identical predicted classes. passed = diff < tolerance and identical >= MIN_IDENTICAL."""
    torch_logits, labels = predict_logits(model, _loader(split, meta))
    torch_logits, labels = torch_logits.numpy(), labels.numpy()  # (N, K), (N,)
    onnx_logits = ort_logits(ort_session(onnx_path), split, meta)  # (N, K)
    diff = float(np.abs(onnx_logits - torch_logits).max())
    identical = float((onnx_logits.argmax(1) == torch_logits.argmax(1)).mean())
    return {"n": len(labels), "max_abs_logit_diff": diff, "identical_predictions": identical,
            "tolerance": tolerance, "min_identical": MIN_IDENTICAL,
            "passed": diff < tolerance and identical >= MIN_IDENTICAL,
            "accuracy_torch": float((torch_logits.argmax(1) == labels).mean()),
            "accuracy_onnx": float((onnx_logits.argmax(1) == labels).mean())}


def parity_error(check: dict, report_path: Path) -> KdkitError:
    return KdkitError(
        f"the exported model does not match PyTorch on {check['n']} test images: max |logit diff| "
        f"{check['max_abs_logit_diff']:.2e} (tolerance {check['tolerance']:.0e}), identical predictions "
        f"{100 * check['identical_predictions']:.2f}% (need >= {100 * check['min_identical']:.1f}%); numbers in "
        f"{report_path}; look for operations that trace differently (data-dependent branches), or try another --opset")


# ---------------------------------------------------------------- int8


def quantize_int8(fp32_path, out_path, train: Split, meta: dict, samples: int = CALIBRATION_SAMPLES,
                  mode: str = "static") -> dict:
    """Write an int8 copy of `fp32_path`. static: QDQ format, uint8 activations with ranges from
    `samples` training images (min/max), int8 weights per output channel. dynamic (also the
    fallback when static quantisation raises): int8 weights, activation ranges found at run time."""
    require_onnx()
    if mode not in ("static", "dynamic"):
        raise unknown("quantisation mode", mode, ["static", "dynamic"])
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    with tempfile.TemporaryDirectory() as tmp:
        source = _preprocessed(fp32_path, Path(tmp) / "pre.onnx")
        reason = None
        if mode == "static":
            try:
                quantize_static(source, out_path, _calibration_reader(train, meta, samples), quant_format=QuantFormat.QDQ,
                                per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
                return {"mode": "static", "format": "QDQ", "per_channel": True, "calibration_samples": min(samples, len(train)),
                        "activations": "uint8", "weights": "int8"}
            except Exception as e:  # an operator or graph static quantisation does not handle
                reason = f"static quantisation failed ({type(e).__name__}: {str(e).strip()[:120]})"
        quantize_dynamic(source, out_path, weight_type=QuantType.QInt8)
    return {"mode": "dynamic", "weights": "int8", "activations": "uint8, range per batch at run time",
            "fallback_reason": reason}


def _preprocessed(fp32_path, pre_path: Path) -> str:
    """onnxruntime's recommended pre-pass (shape inference, graph optimisation); the original if it fails."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        with _quiet_stderr():
            quant_pre_process(str(fp32_path), str(pre_path))
        return str(pre_path)
    except Exception:
        return str(fp32_path)


def _calibration_reader(train: Split, meta: dict, samples: int):
    """onnxruntime's CalibrationDataReader over `samples` training images (seeded pick), normalised."""
    from onnxruntime.quantization import CalibrationDataReader

    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:samples]
    batches = [{INPUT_NAME: x.numpy()} for x, _, _ in _loader(Split(train.images[pick], train.labels[pick]), meta, 32)]

    class Reader(CalibrationDataReader):  # onnxruntime wants an object with get_next()
        def __init__(self):
            self.batches = iter(batches)

        def get_next(self):
            return next(self.batches, None)

    return Reader()


# ---------------------------------------------------------------- deployment table


def deploy_row(onnx_path, test: Split, meta: dict, repeats: int = LATENCY_REPEATS) -> dict:
    """Test accuracy, file size and onnxruntime CPU speed (THREADS intra-op threads) of one file."""
    session = ort_session(onnx_path)
    logits = ort_logits(session, test, meta)
    row = {"accuracy": float((logits.argmax(1) == test.labels.numpy()).mean()),
           "size_mb": Path(onnx_path).stat().st_size / 1e6}
    for batch in BATCH_SIZES:
        row[f"latency_ms_b{batch}"] = median_latency_ms(session, (batch, *meta["input_shape"]), repeats)
    row["throughput_b64"] = 64 / (row["latency_ms_b64"] / 1000.0)
    return row


def ratios(small: dict, big: dict) -> dict:
    """How the smaller model compares with the bigger one (both measured in the same run)."""
    return {"size_x_smaller": big["size_mb"] / small["size_mb"],
            "speedup_b1": big["latency_ms_b1"] / small["latency_ms_b1"],
            "speedup_b64": big["latency_ms_b64"] / small["latency_ms_b64"],
            "accuracy_change_points": 100 * (small["accuracy"] - big["accuracy"])}


def deploy_table(files: dict, test: Split, repeats: int = LATENCY_REPEATS) -> dict:
    """files: row name -> (onnx path, sidecar). Rows, ratios and how the timings were taken."""
    _, ort = require_onnx()
    rows = {name: dict(deploy_row(path, test, side, repeats), file=str(path)) for name, (path, side) in files.items()}
    table = {"rows": rows, "ratios": {}, "n_test": len(test), "runtime": f"onnxruntime {ort.__version__} CPUExecutionProvider",
             "intra_op_threads": THREADS, "repeats": repeats, "warmup_runs": WARMUP_RUNS, "statistic": "median"}
    if "teacher" in rows:
        table["ratios"]["student_vs_teacher"] = ratios(rows["student fp32"], rows["teacher"])
    if "student int8" in rows:
        table["ratios"]["int8_vs_fp32"] = ratios(rows["student int8"], rows["student fp32"])
    return table


def deploy_cells(table: dict) -> tuple[list[str], list[list[str]]]:
    """The deployment table as text cells (the CLI prints them; docs/export.md shows the columns)."""
    header = ["model", "acc %", "size MB", "ms b1", "ms b64", "samples/s b64"]
    body = [[name, f"{100 * r['accuracy']:.2f}", f"{r['size_mb']:.3f}", f"{r['latency_ms_b1']:.3f}",
             f"{r['latency_ms_b64']:.3f}", f"{r['throughput_b64']:,.0f}"] for name, r in table["rows"].items()]
    return header, body


# ---------------------------------------------------------------- the whole `kdkit export`


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
    name = dataset or meta.get("dataset")
    if not name:
        raise KdkitError("the weights' sidecar names no dataset to verify the export on; pass --dataset NAME_OR_PATH")
    data = data or load_dataset(name, data_dir)
    meta = {"classes": list(data.classes), "mean": list(data.mean), "std": list(data.std)} | meta
    if list(meta["classes"]) != list(data.classes) or (meta["in_channels"], meta["image_size"]) != data.input_shape[:2]:
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
    _atomic_write(path, json.dumps(dict(data, written_by="kdkit export"), indent=1).encode())
