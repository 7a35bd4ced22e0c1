"""ONNX export, int8 quantisation, the deployment table and `kdkit predict` (src/kdkit/export/).

One tiny distill run on digits (teacher cnn-x0.25, student cnn-tiny, 3 epochs) is exported once for
the module; the CLI tests run the real `kdkit` entry point in a subprocess, as a user would.
"""
import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from kdkit import checkpoint as ckpt
from kdkit.config import DistillConfig, apply_overrides
from kdkit.errors import KdkitError
from kdkit.export import export_onnx, export_run, ort_session, quantize_int8, require_onnx
from kdkit.predict import predict
from kdkit.recipes import run_distill
from kdkit.weights import load_model, model_meta

from test_cli import kdkit, one_line_error

INT8_MAX_DROP = 0.05  # int8 test accuracy may be at most 5 points below fp32 on digits


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "run"
    cfg = apply_overrides(DistillConfig(), {
        "dataset": "digits", "teacher": "cnn-x0.25", "student": "cnn-tiny", "epochs": 3, "batch_size": 64,
        "seeds": [0], "baseline": False, "progress": False, "amp": "off", "out": str(out)})
    run_distill(cfg)
    return out


@pytest.fixture(scope="module")
def report(run_dir):
    return export_run(run_dir, quantize="int8", repeats=3)


def student_predictions(run_dir, images: np.ndarray) -> np.ndarray:
    """PyTorch's predicted classes for (N, 1, 8, 8) uint8 images, normalised as in training."""
    model, meta = load_model(run_dir / "student" / "seed0" / "best.safetensors")
    x = (torch.from_numpy(images).float() / 255 - meta["mean"][0]) / meta["std"][0]
    with torch.inference_mode():
        return model(x).argmax(1).numpy()


# ---------------------------------------------------------------- export, parity, int8, table


def test_export_matches_pytorch_and_writes_sidecar(run_dir, report):
    onnx_path = run_dir / "export" / "student.onnx"
    assert report["onnx"] == str(onnx_path) and report["source"].endswith("student/seed0/best.safetensors")
    check = report["verification"]
    assert check["passed"] and check["n"] == 359  # the whole digits test split
    assert check["max_abs_logit_diff"] < 1e-3 and check["identical_predictions"] >= 0.999  # docs/export.md's bound
    assert check["accuracy_onnx"] == pytest.approx(check["accuracy_torch"])
    side = json.loads(onnx_path.with_suffix(".json").read_text())
    weights = run_dir / "student" / "seed0" / "best.safetensors"
    assert side["source_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert side["classes"] == [str(d) for d in range(10)] and side["input_shape"] == [1, 8, 8]
    assert side["mean"] == ckpt.load_meta(weights)["mean"] and side["kdkit_version"] and side["precision"] == "fp32"
    assert json.loads(onnx_path.with_suffix(".report.json").read_text()) == dict(report, written_by="kdkit export")


def test_int8_is_static_qdq_and_close_to_fp32(run_dir, report):
    import onnx

    q = report["int8"]
    assert q["mode"] == "static" and q["per_channel"] and q["calibration_samples"] == 256
    assert q["accuracy_int8"] >= q["accuracy_fp32"] - INT8_MAX_DROP
    int8_path = run_dir / "export" / "student.int8.onnx"
    ops = {node.op_type for node in onnx.load(str(int8_path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    logits = ort_session(int8_path).run(["logits"], {"input": np.zeros((5, 1, 8, 8), np.float32)})[0]
    assert logits.shape == (5, 10)  # the batch axis stays free after quantisation


def test_deployment_table(run_dir, report):
    table = report["deploy"]
    assert list(table["rows"]) == ["teacher", "student fp32", "student int8"]
    assert table["intra_op_threads"] == 1 and table["n_test"] == 359
    for row in table["rows"].values():
        assert row["size_mb"] > 0 and row["latency_ms_b1"] > 0
        assert row["throughput_b64"] == pytest.approx(64_000 / row["latency_ms_b64"])
    teacher, student = table["rows"]["teacher"], table["rows"]["student fp32"]
    summary = json.loads((run_dir / "summary.json").read_text())["rows"]
    # onnxruntime's accuracy is the one the run measured in PyTorch
    assert teacher["accuracy"] == pytest.approx(summary["teacher"]["metrics"]["accuracy"]["mean"])
    assert student["accuracy"] == pytest.approx(summary["student"]["metrics"]["accuracy"]["mean"])
    ratio = table["ratios"]["student_vs_teacher"]
    assert ratio["speedup_b64"] == pytest.approx(teacher["latency_ms_b64"] / student["latency_ms_b64"])
    assert ratio["size_x_smaller"] > 1  # cnn-tiny is smaller than cnn-x0.25
    assert "int8_vs_fp32" in table["ratios"]
    assert json.loads((run_dir / "export" / "student.deploy.json").read_text()) == dict(table, written_by="kdkit export")


def test_report_includes_the_deployment_table(run_dir, report):
    from kdkit.report import write_report

    html = write_report(run_dir, importance=False).read_text()
    assert 'id="deploy-table"' in html and "student int8" in html


def test_failed_parity_check_gives_the_numbers(run_dir, report, tmp_path):
    out = tmp_path / "strict.onnx"
    with pytest.raises(KdkitError, match=r"does not match PyTorch on 359 test samples: max \|logit diff\| .* \(tolerance 0e\+00\), "
                                         r"identical predictions 100.00% \(need >= 99.9%\); numbers in .*strict.report.json"):
        export_run(run_dir, out, tolerance=0.0)  # no difference is below 0: the check must fail
    saved = json.loads(out.with_suffix(".report.json").read_text())["verification"]
    assert saved["passed"] is False and saved["max_abs_logit_diff"] == report["verification"]["max_abs_logit_diff"]


def test_dynamic_fallback_when_static_fails(run_dir, report, tmp_path, monkeypatch, digits):
    import onnxruntime.quantization

    def broken(*args, **kwargs):
        raise NotImplementedError("no static kernel")

    monkeypatch.setattr(onnxruntime.quantization, "quantize_static", broken)
    side = json.loads((run_dir / "export" / "student.json").read_text())
    out = tmp_path / "dyn.onnx"
    info = quantize_int8(run_dir / "export" / "student.onnx", out, digits.train, side)
    assert info["mode"] == "dynamic" and "no static kernel" in info["fallback_reason"]
    assert ort_session(out).run(["logits"], {"input": np.zeros((2, 1, 8, 8), np.float32)})[0].shape == (2, 10)


# ---------------------------------------------------------------- predict


def test_predict_npy_matches_pytorch(run_dir, report, tmp_path, digits):
    images = digits.test.images[:20].numpy()  # (20, 1, 8, 8) uint8
    expected = student_predictions(run_dir, images)
    model = run_dir / "export" / "student.onnx"
    for name, array in (("nchw.npy", images), ("nhw.npy", images[:, 0]), ("float.npy", images / 255.0)):
        np.save(tmp_path / name, array)
        rows = predict(model, tmp_path / name, top=3)
        assert [int(r["class"]) for r in rows] == expected.tolist(), name
    assert rows[0]["input"] == "float.npy[0]" and len(rows[0]["top"]) == 3
    assert rows[0]["top"][0] == (rows[0]["class"], rows[0]["probability"])
    assert all(r["top"][0][1] >= r["top"][1][1] >= r["top"][2][1] for r in rows)
    int8_rows = predict(run_dir / "export" / "student.int8.onnx", tmp_path / "nchw.npy")
    assert len(int8_rows) == 20


def test_predict_png_folder_converts_and_resizes(run_dir, report, tmp_path, digits):
    from PIL import Image

    images = digits.test.images[:4].numpy()  # (4, 1, 8, 8) uint8
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image[0]).save(folder / f"img{i}.png")
    # an RGB image at twice the size: converted to grey and resized to 8x8
    Image.fromarray(np.repeat(images[0, 0], 2, 0).repeat(2, 1)).convert("RGB").save(folder / "z_big.png")
    rows = predict(run_dir / "export" / "student.onnx", folder, top=2)
    assert [r["input"] for r in rows] == ["img0.png", "img1.png", "img2.png", "img3.png", "z_big.png"]
    assert [int(r["class"]) for r in rows[:4]] == student_predictions(run_dir, images).tolist()
    assert len(rows[4]["top"]) == 2 and 0 < rows[4]["probability"] <= 1


def test_predict_rejects_wrong_shapes(run_dir, report, tmp_path):
    model = run_dir / "export" / "student.onnx"
    np.save(tmp_path / "rgb.npy", np.zeros((4, 3, 8, 8), np.uint8))
    with pytest.raises(KdkitError, match=r"shape \(4, 3, 8, 8\) but the model takes \(N, 1, 8, 8\) or \(N, 8, 8\)"):
        predict(model, tmp_path / "rgb.npy")
    np.save(tmp_path / "raw.npy", np.full((2, 1, 8, 8), 255.0))
    with pytest.raises(KdkitError, match=r"\[0, 1\].*divide by 255"):
        predict(model, tmp_path / "raw.npy")
    with pytest.raises(KdkitError, match="no .png/.jpg images"):
        predict(model, tmp_path)


# ---------------------------------------------------------------- errors


def test_run_without_student(run_dir, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(run_dir / "teacher", partial / "teacher")
    shutil.copy(run_dir / "config.yaml", partial / "config.yaml")
    with pytest.raises(KdkitError, match=r"run '.*partial' has no student weights \(student/seed\*/best.safetensors\); finish the run first"):
        export_run(partial)


class FourierNet(torch.nn.Module):
    """A linear model on FFT magnitudes: aten::fft_fft has no ONNX export at opset 17."""

    def __init__(self, num_classes=10, in_channels=1, image_size=8):
        super().__init__()
        self.fc = torch.nn.Linear(in_channels * image_size * image_size, num_classes)

    def forward(self, x):  # (B, C, H, W)
        return self.fc(torch.fft.fft(x).abs().flatten(1))  # (B, K)


def test_unsupported_operator_is_named(tmp_path, capfd):
    with pytest.raises(KdkitError, match=r"cannot export operator 'aten::fft_fft' at opset 17; replace that operation"):
        export_onnx(FourierNet(), tmp_path / "f.onnx", (1, 8, 8))
    assert "Torch IR graph" not in capfd.readouterr().err  # the exporter's graph dump is silenced


def test_missing_optional_dependency(monkeypatch, run_dir):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    with pytest.raises(KdkitError, match=r"^ONNX \(export, int8, predict\) needs onnxruntime: pip install 'kdkit\[onnx\]'$"):
        require_onnx()
    with pytest.raises(KdkitError, match=r"pip install 'kdkit\[onnx\]'"):
        export_run(run_dir)


def test_kdkit_works_without_onnx(run_dir):
    # a fresh interpreter where onnx and onnxruntime cannot be imported: kdkit loads, export says what to install
    code = ("import sys; sys.modules['onnx'] = sys.modules['onnxruntime'] = None; import kdkit.export; "
            f"from kdkit.cli import main; sys.argv = ['kdkit', 'export', {str(run_dir)!r}]; main()")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    one_line_error(result, r"needs onnx: pip install 'kdkit\[onnx\]'$")


# ---------------------------------------------------------------- the command line


def test_cli_export_and_predict(run_dir, tmp_path, digits):
    out = tmp_path / "cli" / "s.onnx"
    r = kdkit("export", run_dir, "--out", out, "--quantize", "int8", "--repeats", "3")
    assert r.returncode == 0, r.stderr
    assert "identical predictions 100.00%" in r.stdout and "int8 (static QDQ" in r.stdout
    assert "student int8" in r.stdout and "student_vs_teacher" in r.stdout
    assert all(out.with_suffix(s).is_file() for s in (".json", ".int8.onnx", ".report.json", ".deploy.json"))
    np.save(tmp_path / "x.npy", digits.test.images[:5].numpy())
    r = kdkit("predict", out, tmp_path / "x.npy", "--top", "2", "--out", tmp_path / "p.csv")
    assert r.returncode == 0, r.stderr
    rows = list(csv.reader((tmp_path / "p.csv").open()))
    assert rows[0] == ["input", "prediction", "probability", "top1", "p1", "top2", "p2"] and len(rows) == 6


FOURIER_HOOK = """
import torch


class FFT(torch.nn.Module):
    def forward(self, x):
        return torch.fft.fft(x).abs()


def make_net(num_classes, in_channels, image_size):
    return torch.nn.Sequential(FFT(), torch.nn.Flatten(), torch.nn.Linear(in_channels * image_size ** 2, num_classes))
"""


def test_cli_errors_are_one_line(run_dir, report, tmp_path, digits):
    (tmp_path / "partial" / "teacher").mkdir(parents=True)
    one_line_error(kdkit("export", tmp_path / "partial"), "has no student weights.*finish the run first")
    # a user model (module:function hook) whose forward uses an operator ONNX cannot express
    (tmp_path / "fourier_hook.py").write_text(FOURIER_HOOK)
    weights = tmp_path / "fourier" / "best.safetensors"
    state = {k.replace("fc.", "2."): v for k, v in FourierNet().state_dict().items()}  # FFT (0), Flatten (1), Linear (2)
    ckpt.save_weights(weights, state, model_meta("fourier_hook:make_net", digits))
    one_line_error(kdkit("export", weights, cwd=tmp_path), r"names the user model hook 'fourier_hook:make_net'; kdkit "
                   r"never imports code named by a file. If you trust that code, allow it: --trust-hook fourier_hook:make_net")
    one_line_error(kdkit("export", weights, "--trust-hook", "fourier_hook:make_net", cwd=tmp_path,
                         env=dict(os.environ, PYTHONPATH=str(tmp_path))), r"cannot export operator 'aten::fft_fft'")
    np.save(tmp_path / "bad.npy", np.zeros((3, 9, 9), np.uint8))
    one_line_error(kdkit("predict", run_dir / "export" / "student.onnx", tmp_path / "bad.npy"), r"shape \(3, 9, 9\)")


# ---------------------------------------------------------------- bad options and damaged runs (issue 20)


@pytest.mark.parametrize("text,pattern", [
    ("seeds: [0\n", r"config file '.*config.yaml' is not valid YAML at line 2; fix the syntax"),
    ("- 0\n- 1\n", r"config file '.*config.yaml' must be a mapping of key: value, got list"),
    ("seeds: 5\n", r"run config '.*config.yaml' has seeds: 5, not a list of integers; write it as seeds: \[5\]"),
])
def test_damaged_run_config_is_named(run_dir, tmp_path, text, pattern):
    damaged = tmp_path / "damaged"
    shutil.copytree(run_dir / "student", damaged / "student")
    (damaged / "config.yaml").write_text(text)
    with pytest.raises(KdkitError, match=pattern):
        export_run(damaged)


@pytest.mark.parametrize("options,pattern", [
    ({"repeats": 0}, r"--repeats must be at least 1, got 0; e.g. --repeats 20"),
    ({"repeats": -3}, r"--repeats must be at least 1, got -3"),
    ({"tolerance": -1.0}, r"--tolerance must be a number >= 0 \(the max \|logit difference\| allowed\), got -1.0; e.g. --tolerance 1e-3"),
    ({"tolerance": float("nan")}, r"--tolerance must be a number >= 0 .*got nan"),
    ({"calibration_samples": 0}, r"calibration_samples must be at least 1, got 0"),
    ({"quantize_mode": "fast"}, r"unknown quantisation mode 'fast'"),
])
def test_bad_numeric_options_refused_up_front(run_dir, tmp_path, options, pattern):
    out = tmp_path / "x.onnx"
    with pytest.raises(KdkitError, match=pattern):
        export_run(run_dir, out, **options)
    assert not out.exists()  # refused before any export work


def test_cli_bad_options_are_one_line(run_dir, tmp_path):
    one_line_error(kdkit("export", run_dir, "--repeats", "0", "--out", tmp_path / "x.onnx"), r"--repeats must be at least 1, got 0")
    one_line_error(kdkit("export", run_dir, "--tolerance", "-1", "--out", tmp_path / "x.onnx"), r"--tolerance must be a number >= 0")
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "x.report.json").exists()


def test_disk_full_while_exporting_is_not_blamed_on_the_model(run_dir, tmp_path, monkeypatch):
    """A full disk (or a folder without write permission) is said as such, not as an exporter failure
    (which advises changing forward()) nor with the training fix '--resume'."""
    import errno
    import os

    def no_space(model, args, f, *rest, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), f)

    out = tmp_path / "x.onnx"
    with monkeypatch.context() as m:
        m.setattr(torch.onnx, "export", no_space)
        with pytest.raises(KdkitError, match=rf"^cannot write '{out}' \(No space left on device\); free disk space or make "
                                             r"its folder writable \(or choose another --out\), then run kdkit export again$"):
            export_run(run_dir, out, repeats=1)

    def denied(path, data):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(ckpt, "atomic_write", denied)
    with pytest.raises(KdkitError, match=rf"^cannot write '{tmp_path}/y.json' \(Permission denied\); free disk space or make"):
        export_run(run_dir, tmp_path / "y.onnx", repeats=1)


def test_a_text_student_exports_on_its_own_data(tmp_path, monkeypatch):
    """A text run (max_length set, a word vocabulary built on its training split) exports from the
    run alone: its data is read from the path the run was given, tokenised as in training (same
    vocabulary and width), the ONNX file takes int64 ids and is timed on real sentences."""
    from test_text_augment import write_cues

    write_cues(tmp_path / "cues")
    monkeypatch.chdir(tmp_path)
    cfg = apply_overrides(DistillConfig(), {
        "dataset": "cues", "teacher": "bag-of-ngrams", "student": "textcnn", "epochs": 2, "batch_size": 32, "max_length": 4,
        "optimizer": "adamw", "lr": 0.01, "seeds": [0], "baseline": False, "progress": False, "amp": "off", "report": False,
        "student_kwargs": {"embed_dim": 8, "channels": 4}, "teacher_kwargs": {"embed_dim": 8, "buckets": 100}, "out": "run"})
    summary = run_distill(cfg)
    report = export_run(tmp_path / "run", repeats=2)
    session = ort_session(tmp_path / "run" / "export" / "student.onnx")
    width = 4  # max_length: the sentences (3 filler words, a cue word, ".") are cut, as in training
    assert session.get_inputs()[0].type == "tensor(int64)" and session.get_inputs()[0].shape[1] == width
    student = report["deploy"]["rows"]["student fp32"]
    assert student["accuracy"] == pytest.approx(summary["rows"]["student"]["metrics"]["accuracy"]["mean"])
    assert student["latency_ms_b1"] > 0 and report["deploy"]["n_test"] == 40
    # kdkit predict reads raw sentences with the vocabulary the sidecar carries: the student's own
    # predictions on the same test sentences, read by PyTorch from the run's data
    from kdkit.data import load_dataset
    from kdkit.data.registry import loading_options

    model, meta = load_model(tmp_path / "run" / "student" / "seed0" / "best.safetensors")
    data = load_dataset("cues", **loading_options(meta))
    sentences = [data.text.sentences[int(i)] for i in data.test.index[:6]]
    (tmp_path / "sentences.txt").write_text("\n".join(sentences[:3]) + "\n\n" + "\n".join(sentences[3:]) + "\n")
    rows = predict(tmp_path / "run" / "export" / "student.onnx", tmp_path / "sentences.txt", top=2)
    with torch.inference_mode():
        expected = model(data.test.images[:6]).argmax(1).tolist()
    assert [r["class"] for r in rows] == [data.classes[k] for k in expected]
    assert [r["input"] for r in rows] == ["sentences.txt:1", "sentences.txt:2", "sentences.txt:3", "sentences.txt:5",
                                          "sentences.txt:6", "sentences.txt:7"]
    with pytest.raises(KdkitError, match="this model reads sentences: pass a .txt file"):
        predict(tmp_path / "run" / "export" / "student.onnx", tmp_path / "x.npy")
