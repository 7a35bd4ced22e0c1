"""The command line end to end: a tiny distill run, and one test per bad input of the core issue.

Runs the real `kdkit` entry point in a subprocess so exit codes and stderr are what a user sees.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

KDKIT = [sys.executable, "-m", "kdkit"]
FAST = ["--set", "progress=false", "--set", "batch_size=64"]


def kdkit(*args, cwd=None, env=None):
    env = dict(os.environ, **(env or {}))
    return subprocess.run(KDKIT + [str(a) for a in args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def one_line_error(result, pattern):
    """Non-zero exit, a single 'error: ...' line on stderr matching pattern, no traceback."""
    import re

    assert result.returncode != 0, result.stdout
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    assert re.search(pattern, lines[0]), lines[0]


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    """A tiny teacher trained with `kdkit train` on digits."""
    out = tmp_path_factory.mktemp("teacher")
    r = kdkit("train", "--dataset", "digits", "--model", "cnn-x0.25", "--epochs", "2", "--out", out, *FAST)
    assert r.returncode == 0, r.stderr
    return out


def test_distill_end_to_end(tmp_path, teacher_run):
    out = tmp_path / "d"
    r = kdkit("distill", "--dataset", "digits", "--teacher", teacher_run, "--student", "cnn-tiny", "--method", "kd",
              "--epochs", "2", "--seeds", "0,1", "--out", out, *FAST)
    assert r.returncode == 0, r.stderr
    assert "gap closed" in r.stdout and "summary.md" in r.stdout
    s = json.loads((out / "summary.json").read_text())
    assert set(s["rows"]) == {"teacher", "scratch", "student"}
    student = s["rows"]["student"]
    assert len(student["per_seed"]) == 2 and [p["seed"] for p in student["per_seed"]] == [0, 1]
    for key in ("accuracy", "top5", "balanced_accuracy", "f1_macro", "precision_weighted", "auc", "nll", "ece",
                "top1_agreement", "mean_kl"):
        values = [seed_row[key] for seed_row in student["per_seed"]]
        assert student["metrics"][key]["mean"] == pytest.approx(sum(values) / 2), key
        assert student["metrics"][key]["std"] == pytest.approx(abs(values[0] - values[1]) / 2 ** 0.5), key
    for key in ("parameters", "size_mb", "flops_per_sample", "latency_ms_b1", "latency_ms_b64"):
        assert student["facts"][key] > 0
    assert student["fit"]["peak_memory_mb"]["mean"] > 0
    assert s["rows"]["teacher"]["facts"]["parameters"] > student["facts"]["parameters"]
    t, sc, st = (s["rows"][r]["metrics"]["accuracy"]["mean"] for r in ("teacher", "scratch", "student"))
    assert s["gap_closed"]["mean"] == pytest.approx((st - sc) / (t - sc))
    assert "per_class" in student["per_seed"][0] and len(student["per_seed"][0]["confusion_matrix"]) == 10
    assert (out / "config.yaml").read_text().count("seeds") == 1
    assert "| teacher |" in (out / "summary.md").read_text()
    assert (out / "report.html").is_file() and f"report: {out}/report.html" in r.stdout.replace("\n", "")


def test_distill_from_yaml_with_set(tmp_path, teacher_run):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"dataset: digits\nteacher: {teacher_run}\nstudent: cnn-tiny\nepochs: 1\nbaseline: false\nout: {tmp_path / 'y'}\n")
    r = kdkit("distill", "--config", cfg, "--set", "temperature=2", "--no-report", *FAST)
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "y" / "report.html").exists()
    s = json.loads((tmp_path / "y" / "summary.json").read_text())
    assert s["config"]["temperature"] == 2.0 and "scratch" not in s["rows"]


def test_evaluate_and_listings(teacher_run):
    r = kdkit("evaluate", teacher_run)
    assert r.returncode == 0, r.stderr
    assert "accuracy" in r.stdout and "latency_ms_b1" in r.stdout
    for cmd, expect in (("models", "resnet32x4"), ("methods", "kd"), ("datasets", "fashion-mnist")):
        r = kdkit(cmd)
        assert r.returncode == 0 and expect in r.stdout, r.stderr
    r = kdkit("models", "--layers", "wrn_16_2")
    assert r.returncode == 0 and "block3" in r.stdout and "(128, 8, 8)" in r.stdout, r.stderr
    for cmd in ("demo", "train", "distill", "evaluate", "datasets", "models", "methods"):
        assert kdkit(cmd, "--help").returncode == 0


# ---- bad input: one line, names the problem and the fix, non-zero exit, no traceback --------------

def test_missing_dataset(tmp_path):
    env = {"HOME": str(tmp_path), "KDKIT_DATA": str(tmp_path / "none")}
    r = kdkit("train", "--dataset", "cifar100", "--set", "download=false", "--out", tmp_path / "o", env=env)
    one_line_error(r, "dataset 'cifar100' not found.*--data-dir")


@pytest.mark.parametrize("args,pattern", [
    (["--dataset", "fashion_mnist"], "unknown dataset 'fashion_mnist'; did you mean 'fashion-mnist'"),
    (["--student", "resnet8x5"], "unknown model 'resnet8x5'; did you mean 'resnet8x4'"),
    (["--method", "kdd"], "unknown method 'kdd'; did you mean 'kd'"),
    (["--set", "temprature=4"], "unknown config key 'temprature'; did you mean 'temperature'"),
    (["--set", "epochs=ten"], "config key 'epochs' expects an integer, got 'ten'"),
])
def test_unknown_names_and_bad_values(tmp_path, args, pattern):
    # the teacher is an architecture name: every check must fire before any training starts
    base = ["--dataset", "digits", "--teacher", "cnn-x0.25", "--student", "cnn-tiny", "--epochs", "1"]
    r = kdkit("distill", *base, *args, "--out", tmp_path / "o", *FAST)
    one_line_error(r, pattern)
    assert not (tmp_path / "o" / "teacher").exists()


def test_class_count_mismatch(tmp_path):
    out = tmp_path / "t3"
    from kdkit.checkpoint import save_weights
    from kdkit.models import create_model

    model = create_model("cnn-tiny", num_classes=3, in_channels=1, image_size=8)
    save_weights(out / "best.safetensors", model.state_dict(),
                 {"arch": "cnn-tiny", "num_classes": 3, "in_channels": 1, "image_size": 8, "classes": ["a", "b", "c"]})
    r = kdkit("distill", "--dataset", "digits", "--teacher", out, "--epochs", "1", "--out", tmp_path / "o", *FAST)
    one_line_error(r, "teacher predicts 3 classes but dataset 'digits' has 10")


def test_input_shape_the_model_cannot_take(tmp_path):
    # an MNIST-sized (28x28) MLP teacher used on 8x8 digits: same classes, wrong input
    from kdkit.checkpoint import save_weights
    from kdkit.data import load_dataset
    from kdkit.models import create_model

    model = create_model("mlp", num_classes=10, in_channels=1, image_size=28)
    classes = load_dataset("digits").classes
    save_weights(tmp_path / "t" / "best.safetensors", model.state_dict(),
                 {"arch": "mlp", "num_classes": 10, "in_channels": 1, "image_size": 28, "classes": classes})
    r = kdkit("distill", "--dataset", "digits", "--teacher", tmp_path / "t", "--epochs", "1", "--out", tmp_path / "o", *FAST)
    one_line_error(r, r"cannot take input of shape \(1, 8, 8\)")


def test_truncated_and_pickled_weights(tmp_path, teacher_run):
    bad = tmp_path / "bad"
    bad.mkdir()
    data = (teacher_run / "best.safetensors").read_bytes()
    (bad / "best.safetensors").write_bytes(data[: len(data) // 2])
    (bad / "best.json").write_text((teacher_run / "best.json").read_text())
    r = kdkit("distill", "--dataset", "digits", "--teacher", bad, "--epochs", "1", "--out", tmp_path / "o", *FAST)
    one_line_error(r, "truncated or corrupt")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"x": Evil()}, tmp_path / "evil.safetensors")
    r = kdkit("evaluate", tmp_path / "evil.safetensors")
    one_line_error(r, "not a safetensors file; kdkit never unpickles weights")
    assert not marker.exists()


def test_nan_loss_cli(tmp_path):
    r = kdkit("train", "--dataset", "digits", "--model", "mlp", "--epochs", "1", "--set", "lr=1e30",
              "--set", "log_every=1", "--out", tmp_path / "o", *FAST)
    one_line_error(r, r"loss became NaN/inf at step \d+")


def test_labels_out_of_range():
    import numpy as np

    from kdkit import from_arrays
    from kdkit.errors import KdkitError

    x = np.zeros((10, 1, 4, 4), np.uint8)
    with pytest.raises(KdkitError, match="labels range 0..5 but there are 3 classes"):
        from_arrays(x, np.array([0, 1, 2, 5, 0, 1, 2, 0, 1, 2]), x, np.zeros(10, int), classes=["a", "b", "c"])


def test_debug_shows_traceback(tmp_path):
    r = subprocess.run(KDKIT + ["--debug", "distill", "--method", "kdd", "--out", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_demo_config_files_match_the_demo():
    import yaml

    from kdkit.cli.runs import DEMO, DEMO_TEACHER

    configs = Path(__file__).parents[1] / "configs"
    assert yaml.safe_load((configs / "demo.yaml").read_text()) == DEMO
    assert yaml.safe_load((configs / "demo_teacher.yaml").read_text()) == DEMO_TEACHER
    assert DEMO["teacher"] == DEMO_TEACHER["out"]


def test_demo_runs_end_to_end_on_small_data(tmp_path):
    # the real demo is Fashion-MNIST (minutes); the same command path on digits takes seconds
    args = ("demo", "--out", tmp_path / "demo", "--set", "dataset=digits", "--set", "epochs=1", "--set", "teacher_epochs=2",
            "--set", "labels_per_class=10", "--set", "progress=false", "--set", "report=false")
    r = kdkit(*args)
    assert r.returncode == 0, r.stderr
    assert "gap closed" in r.stdout and (tmp_path / "demo" / "distill" / "summary.md").is_file()
    teacher = json.loads((tmp_path / "demo" / "teacher" / "summary.json").read_text())
    summary = json.loads((tmp_path / "demo" / "distill" / "summary.json").read_text())
    assert "epochs: 2\n" in (tmp_path / "demo" / "teacher" / "config.yaml").read_text()
    assert teacher["train_samples"]["unlabeled"] == 0  # all labels
    assert summary["config"]["teacher"] == str(tmp_path / "demo" / "teacher") and summary["config"]["epochs"] == 1
    assert summary["rows"]["scratch"]["train_samples"]["labelled"] == 100
    assert summary["rows"]["student"]["train_samples"]["unlabeled"] == teacher["train_samples"]["labelled"] - 100
    again = kdkit(*args)  # the finished teacher is reused, not trained again
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "demo" / "teacher" / "fit.json").read_text()) == teacher["fit"]


def test_ensemble_command(tmp_path):
    out = tmp_path / "ens"
    result = kdkit("ensemble", "--dataset", "digits", "--teacher", "cnn-tiny", "--members", "2", "--bootstrap",
                   "--epochs", "1", "--set", "baseline=false", "--out", out, *FAST)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["rows"]) == ["teacher1", "teacher2", "teacher", "student"]
    assert summary["config"]["teacher"] == "cnn-tiny,cnn-tiny" and summary["config"]["bootstrap"]
    member_accs = [summary["rows"][m]["metrics"]["accuracy"]["mean"] for m in ("teacher1", "teacher2")]
    assert member_accs[0] != member_accs[1]  # different seeds and resamples
    assert "teacher1" in result.stdout and "teacher2" in result.stdout


@pytest.mark.parametrize("args,pattern", [
    (["--in-channels", "0"], r"--in-channels must be in 1..1024, got 0; e.g. --in-channels 3"),
    (["--in-channels", "-1"], r"--in-channels must be in 1..1024, got -1"),
    (["--num-classes", "-1"], r"--num-classes must be in 1..1000000, got -1; e.g. --num-classes 100"),
    (["--image-size", "-3"], r"--image-size must be in 1..4096, got -3; e.g. --image-size 32"),
    (["--image-size", "100000"], r"--image-size must be in 1..4096, got 100000"),
    (["--layers", " "], r"--layers is empty; name an architecture"),
])
def test_models_layers_with_bad_sizes(args, pattern):
    one_line_error(kdkit("models", "--layers", "cnn", *args), pattern)


def test_version():
    from kdkit.version import __version__

    r = kdkit("--version")
    assert r.returncode == 0 and r.stdout == f"kdkit {__version__}\n", r.stderr


def test_docs_lists_and_prints_the_pages():
    docs = Path(__file__).parents[1] / "docs"
    r = kdkit("docs")
    assert r.returncode == 0, r.stderr
    for page in docs.glob("*.md"):  # each page by name, with its title
        title = page.read_text().splitlines()[0].removeprefix("# ")
        assert any(line.split()[:1] == [page.stem] and title[:40] in line for line in r.stdout.splitlines()), page.stem
    r = kdkit("docs", "config")
    assert r.returncode == 0 and r.stdout == (docs / "config.md").read_text(), r.stderr
    assert kdkit("docs", "Errors.md").stdout == (docs / "errors.md").read_text()
    one_line_error(kdkit("docs", "confg"), r"^error: unknown docs page 'confg'; did you mean 'config'\?$")


def test_help_points_at_kdkit_docs_not_at_the_source_tree():
    for command in ([], ["distill"], ["tune"], ["report"], ["export"]):
        r = kdkit(*command, "--help", env={"COLUMNS": "200"})
        assert r.returncode == 0, r.stderr
        assert "docs/" not in r.stdout and "kdkit docs" in r.stdout, command


def examples(command) -> list[list[str]]:
    """The `kdkit ...` example lines of a command's docstring, as argument lists (a trailing
    `(comment)` dropped)."""
    import shlex

    lines = [line.strip() for line in (command.callback.__doc__ or "").splitlines()]
    return [shlex.split(line.split("   (")[0])[2:] for line in lines if line.startswith("kdkit ")]


def test_every_command_has_examples_that_parse():
    import typer.main

    from kdkit.cli import app

    group = typer.main.get_command(app)
    assert len(group.commands) == 14
    for name, command in group.commands.items():
        found = examples(command)
        assert found, f"kdkit {name} --help shows no example"
        for args in found:  # every option and argument of the example exists and takes its value
            command.make_context(name, list(args))


def test_help_shows_the_config_defaults_and_flags_stay_unset():
    import typer.main
    from typer.testing import CliRunner

    from kdkit.cli import app
    from kdkit.config import DistillConfig, TrainConfig

    runner = CliRunner()
    shown = {name: " ".join(runner.invoke(app, [name, "--help"], env={"COLUMNS": "250"}).output.split())
             for name in ("distill", "train", "tune", "ensemble")}
    assert f"student epochs (scratch and distilled) [default: {DistillConfig.epochs}]" in shown["distill"]
    assert "softmax temperature T [default: the method's own: 4 (kd, dkd, fitnet, bkd, lakd), 1 (dist, dml)]" in shown["distill"]
    assert "comma-separated seeds, e.g. 0,1,2 [default: 0]" in shown["distill"]
    assert "write report.html at the end [default: on]" in shown["distill"]
    assert f"learning rate [default: {TrainConfig.lr:g}]" in shown["train"] and "[default: runs/train]" in shown["train"]
    assert "run directory [default: runs/tune]" in shown["tune"] and "run directory [default: runs/ensemble]" in shown["ensemble"]
    # a flag left out is None, so --config and then the dataclass's default decide, as before
    group = typer.main.get_command(app)
    for name in ("distill", "train", "tune", "ensemble"):
        for param in group.commands[name].params:
            if "[default: " in (param.help or ""):
                assert param.default is None, (name, param.name)
