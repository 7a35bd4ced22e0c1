"""Nothing the user owns is written over, one writer per run, and --resume never changes only the
record (issue 20, items 2-5; src/kdkit/rundir.py)."""
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kdkit.config import TrainConfig, apply_overrides
from kdkit.errors import KdkitError
from kdkit.recipes import run_train
from kdkit.rundir import check_out_file, check_path, check_run_dir, claim_run_dir, is_kdkit_output

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from robustness_cli import snapshot  # noqa: E402  (every file's hash, every link's target)

KDKIT = [sys.executable, "-m", "kdkit"]


def config(out, **changes) -> TrainConfig:
    return apply_overrides(TrainConfig(), {"dataset": "digits", "model": "cnn-tiny", "epochs": 1, "batch_size": 64,
                                           "progress": False, "amp": "off", "out": str(out)} | changes)


@pytest.fixture
def user_folder(tmp_path):
    """A folder of the user's: files with the names a run writes, and a checkpoint."""
    folder = tmp_path / "mine"
    (folder / "checkpoints").mkdir(parents=True)
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "best.safetensors", "checkpoints/state-000001.safetensors",
                 "notes.txt"):
        (folder / name).write_text(f"the user's {name}\n")
    return folder


# ---------------------------------------------------------------- item 3: --out into a folder kdkit did not make

def test_a_run_never_writes_into_a_folder_of_user_files(user_folder, digits):
    before = snapshot(user_folder)
    with pytest.raises(KdkitError) as error:
        run_train(config(user_folder), digits)
    assert str(error.value) == (f"--out '{user_folder}' holds files kdkit did not write (e.g. 'best.safetensors'); choose "
                                "a new or empty folder, or add --overwrite to write into it anyway (files of the same "
                                "name are replaced)")
    assert snapshot(user_folder) == before


def test_overwrite_is_explicit(user_folder, digits):
    run_train(config(user_folder, overwrite=True), digits)
    assert (user_folder / "notes.txt").read_text() == "the user's notes.txt\n"
    assert json.loads((user_folder / ".kdkit-run.json").read_text())["kind"] == "train"
    run_train(config(user_folder), digits)  # now a kdkit train run: a rerun needs no --overwrite


def test_a_run_of_another_command_is_refused(tmp_path, digits):
    run_train(config(tmp_path / "t"), digits)
    with pytest.raises(KdkitError, match="is a `kdkit train` run, not a `kdkit distill` run; choose another folder"):
        check_run_dir(tmp_path / "t", "distill")
    assert check_run_dir(tmp_path / "new", "distill") == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    assert check_run_dir(tmp_path / "empty", "distill") == tmp_path / "empty"


@pytest.mark.parametrize("make,message", [
    (lambda p: p.symlink_to(p.with_name("nowhere")), "is a symlink to '.*nowhere', which does not exist; remove the link"),
    (lambda p: (p.symlink_to(p.with_name("b")), p.with_name("b").symlink_to(p)), "is a symlink loop; remove the link"),
    (lambda p: None, None),
])
def test_out_paths_that_cannot_be_made(tmp_path, make, message):
    out = tmp_path / "a"
    make(out)
    if message is None:  # a name longer than the file system allows
        out = tmp_path / ("x" * 300)
        message = "has a name of 300 bytes, longer than the file system allows"
    with pytest.raises(KdkitError, match=message):
        check_run_dir(out, "train")
    assert len(str(pytest.raises(KdkitError, check_path, out).value)) < 300


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_parent(tmp_path):
    (tmp_path / "ro").mkdir(mode=0o500)
    with pytest.raises(KdkitError, match="cannot create --out .*Permission denied"):
        claim_run_dir(tmp_path / "ro" / "run", "train")


def test_an_immutable_parent_is_one_line(tmp_path, monkeypatch):
    """EPERM from mkdir (an immutable folder: chattr +i) becomes one line, whatever the user."""
    def refuse(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(KdkitError, match=r"cannot create --out '.*run' \(Operation not permitted\); choose a folder"):
        claim_run_dir(tmp_path / "run", "train")


# ---------------------------------------------------------------- item 2: outputs never over inputs

@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits):
    out = tmp_path_factory.mktemp("rundir") / "train"
    run_train(config(out), digits)
    return out


def cli_error(*args, cwd=None) -> str:
    result = subprocess.run(KDKIT + [str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=300)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0].removeprefix("error: ")


def test_evaluate_never_writes_over_what_it_reads(trained):
    before = snapshot(trained)
    for target in ("best.safetensors", "best.json"):
        message = cli_error("evaluate", trained, "--out", trained / target)
        assert message.startswith(f"--out '{trained / target}' is a file this command reads")
    assert snapshot(trained) == before


def test_predict_never_writes_over_its_model_or_inputs(tmp_path):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"an onnx model")
    (tmp_path / "x.npy").write_bytes(b"inputs")
    before = snapshot(tmp_path)
    for target in ("model.onnx", "x.npy"):
        assert cli_error("predict", model, tmp_path / "x.npy", "--out", tmp_path / target).startswith(
            f"--out '{tmp_path / target}' is a file this command reads")
    assert snapshot(tmp_path) == before


def test_single_file_outputs_only_replace_kdkit_files(tmp_path):
    mine = tmp_path / "metrics.json"
    mine.write_text('{"mine": 1}')
    with pytest.raises(KdkitError, match="exists and is not a file kdkit wrote; kdkit never writes over a file it did not create"):
        check_out_file(mine)
    ours = tmp_path / "ours.json"
    ours.write_text('{"written_by": "kdkit evaluate"}')
    assert check_out_file(ours) == ours
    csv = tmp_path / "p.csv"
    csv.write_text("input,prediction,probability,top1,p1\n")
    assert is_kdkit_output(csv) and not is_kdkit_output(mine)


# ---------------------------------------------------------------- item 4: one writer per run directory

def start_train(out: Path, *extra) -> subprocess.Popen:
    args = ["train", "--dataset", "digits", "--model", "cnn", "--epochs", "200", "--set", "progress=false",
            "--set", "batch_size=32", "--set", "amp=off", "--out", str(out), *extra]
    return subprocess.Popen(KDKIT + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for(condition, seconds=120):
    end = time.time() + seconds
    while time.time() < end:
        if condition():
            return True
        time.sleep(0.2)
    return False


def test_a_second_writer_is_refused_and_a_killed_one_leaves_no_lock(tmp_path):
    out = tmp_path / "run"
    first = start_train(out, "--set", "checkpoint_every=5")
    try:
        assert wait_for(lambda: any((out / "checkpoints").glob("state-*.json"))), "the first run never checkpointed"
        message = cli_error("train", "--dataset", "digits", "--model", "cnn", "--epochs", "1", "--set", "progress=false",
                            "--out", out)
        assert message.startswith(f"run directory '{out}' is in use by pid {first.pid} on host ")
        assert message.endswith("wait for it to finish (or stop it), then rerun with --resume, or choose another --out")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # SIGKILL: the kernel dropped the lock; --resume takes it and goes on (one step, then stops)
    result = subprocess.run(KDKIT + ["train", "--dataset", "digits", "--model", "cnn", "--epochs", "200", "--set",
                                     "progress=false", "--set", "batch_size=32", "--set", "amp=off", "--set",
                                     "checkpoint_every=5", "--set", "max_steps=1", "--resume", "--out", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def test_the_lock_is_released_when_the_run_ends(tmp_path):
    with claim_run_dir(tmp_path / "r", "train"):
        with pytest.raises(KdkitError, match=f"is in use by pid {os.getpid()} on host "):
            claim_run_dir(tmp_path / "r", "train")
    with claim_run_dir(tmp_path / "r", "train"):
        pass


# ---------------------------------------------------------------- item 5: --resume changes the run or nothing

@pytest.mark.parametrize("changes,shown", [
    (dict(epochs=3), "epochs: 1 -> 3"),
    (dict(lr=0.5), "lr: 0.05 -> 0.5"),
    (dict(batch_size=32), "batch_size: 64 -> 32"),
    (dict(model="cnn-x0.25"), "model: 'cnn-tiny' -> 'cnn-x0.25'"),
])
def test_resume_of_a_finished_run_with_other_settings_is_refused(tmp_path, digits, changes, shown):
    out = tmp_path / "run"
    run_train(config(out), digits)
    before = snapshot(out)
    with pytest.raises(KdkitError) as error:
        run_train(dataclasses.replace(config(out, **changes), resume=True), digits)
    assert str(error.value).startswith(f"--resume: the run in '{out}' ")
    assert shown in str(error.value) and "rerun with the original values, or drop --resume" in str(error.value)
    if "epochs" in changes:
        assert "a finished run is not extended: its learning-rate schedule has ended" in str(error.value)
    assert snapshot(out) == before  # config.yaml still describes the weights beside it


def test_resume_of_a_finished_run_with_its_own_settings_changes_nothing(tmp_path, digits):
    out = tmp_path / "run"
    first = run_train(config(out), digits)
    again = run_train(dataclasses.replace(config(out), resume=True, log_every=7), digits)  # a run-only key may change
    assert again["metrics"]["accuracy"] == first["metrics"]["accuracy"]
