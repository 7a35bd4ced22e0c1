"""The deployment table: test accuracy, file size and onnxruntime CPU latency (median of timed
runs after warm-up runs) of each exported file, and how the smaller compares with the bigger."""
import statistics
import time
from pathlib import Path

import numpy as np

from kdkit.data import Split
from kdkit.export.onnx_file import INPUT_NAME, OUTPUT_NAME, THREADS, loader, ort_logits, ort_session, require_onnx

LATENCY_REPEATS, WARMUP_RUNS, BATCH_SIZES = 20, 3, (1, 64)
SAMPLE_ROWS = 256  # the test inputs the timed runs read


def median_latency_ms(session, sample: np.ndarray, batch: int, repeats: int = LATENCY_REPEATS) -> float:
    """Median wall time of `repeats` runs at `batch` on rows of `sample` (the test split's first inputs,
    as the model takes them: normalised, or token ids), after WARMUP_RUNS runs; run r reads rows
    r*batch .. r*batch+batch-1, cycling (a batch of typical inputs: a model that drops padding is as
    fast as the sentences are long)."""
    def rows(r: int) -> np.ndarray:
        return sample[(r * batch + np.arange(batch)) % len(sample)]

    for _ in range(WARMUP_RUNS):
        session.run([OUTPUT_NAME], {INPUT_NAME: rows(0)})
    times = []
    for r in range(repeats):
        x = rows(r)
        start = time.perf_counter()
        session.run([OUTPUT_NAME], {INPUT_NAME: x})
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0


def deploy_row(onnx_path, test: Split, meta: dict, repeats: int = LATENCY_REPEATS) -> dict:
    """Test accuracy, file size and onnxruntime CPU speed (THREADS intra-op threads) of one file."""
    session = ort_session(onnx_path)
    logits = ort_logits(session, test, meta)
    row = {"accuracy": float((logits.argmax(1) == test.labels.numpy()).mean()),
           "size_mb": Path(onnx_path).stat().st_size / 1e6}
    sample = next(iter(loader(test, meta, batch_size=SAMPLE_ROWS)))[0].numpy()  # (n, ...) the first test inputs
    for batch in BATCH_SIZES:
        row[f"latency_ms_b{batch}"] = median_latency_ms(session, sample, batch, repeats)
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
