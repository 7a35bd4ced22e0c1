"""Ship a student: ONNX export checked against PyTorch, int8 quantisation, a deployment table, and
predictions from the exported file alone (kdkit.predict).

    kdkit export runs/demo --quantize int8       # a distill run's student -> runs/demo/export/student.onnx
    kdkit predict runs/demo/export/student.onnx images/ --top 3 --out preds.csv

    from kdkit.export import export_run
    report = export_run("runs/demo", quantize="int8")   # report["verification"], ["int8"], ["deploy"]

Written next to OUT.onnx: OUT.json (sidecar: classes, mean/std, input shape, source checksum),
OUT.int8.onnx + OUT.int8.json (with quantize="int8"), OUT.report.json (parity and int8 numbers)
and OUT.deploy.json (the deployment table). docs/export.md says what is checked and how.
onnx and onnxruntime are optional (`pip install 'kdkit[onnx]'`), so they are imported inside functions.

Where things live: onnx_file.py (the .onnx and its sidecar: write, read, run), parity.py (the file
against PyTorch), int8.py (quantisation), deploy.py (accuracy, size and latency of each file),
pipeline.py (the whole `kdkit export`: which weights, option checks, the files in order).
"""
from kdkit.export.deploy import (BATCH_SIZES, LATENCY_REPEATS, WARMUP_RUNS, deploy_cells, deploy_row, deploy_table,
                                 median_latency_ms, ratios)
from kdkit.export.int8 import CALIBRATION_SAMPLES, quantize_int8
from kdkit.export.onnx_file import (INPUT_NAME, ONNX_FORMAT, OUTPUT_NAME, THREADS, export_error, export_onnx, load_sidecar,
                                    ort_logits, ort_session, require_onnx, write_error, write_sidecar)
from kdkit.export.parity import FP32_TOLERANCE, MIN_IDENTICAL, parity_error, verify
from kdkit.export.pipeline import check_options, default_out, export_run, opset_range, output_files, resolve_source

__all__ = ["BATCH_SIZES", "CALIBRATION_SAMPLES", "FP32_TOLERANCE", "INPUT_NAME", "LATENCY_REPEATS", "MIN_IDENTICAL",
           "ONNX_FORMAT", "OUTPUT_NAME", "THREADS", "WARMUP_RUNS", "check_options", "default_out", "deploy_cells",
           "deploy_row", "deploy_table", "export_error", "export_onnx", "export_run", "load_sidecar",
           "median_latency_ms", "opset_range", "ort_logits", "ort_session", "output_files", "parity_error",
           "quantize_int8", "ratios", "require_onnx", "resolve_source", "verify", "write_error", "write_sidecar"]
