"""Nothing the user owns changes, whatever --out says (issue 20): every command that writes is run
against a folder of the user's files with every --out trick (the folder itself, a file in it, a
symlink to one, a path inside a file, a dangling link), and every file is hashed before and after.
Each cell must end with exit code 2 and one line on stderr, before any work."""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from robustness_cli import snapshot  # noqa: E402  (every file's hash, every link's target)

FAST = ["--epochs", "1", "--set", "progress=false", "--set", "batch_size=64"]


@pytest.fixture
def user_folder(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    for name in ("notes.txt", "config.yaml", "summary.json", "metrics.json", "best.safetensors", "model.onnx",
                 "predictions.csv", "compare.html", "student.onnx", "student.json"):
        (folder / name).write_text(f"the user's {name}\n")
    np.save(folder / "x.npy", np.zeros((2, 1, 8, 8), np.uint8))
    (folder / "link.json").symlink_to(folder / "metrics.json")
    (folder / "dangling").symlink_to(folder / "nowhere")
    return folder


@pytest.fixture(scope="module")
def train_run(tmp_path_factory, digits):
    from kdkit.config import TrainConfig, apply_overrides
    from kdkit.recipes import run_train

    out = tmp_path_factory.mktemp("safety") / "train"
    run_train(apply_overrides(TrainConfig(), {"dataset": "digits", "model": "cnn-tiny", "epochs": 1, "batch_size": 64,
                                              "progress": False, "amp": "off", "out": str(out)}))
    return out


def commands(train_run, folder) -> dict:
    """Each writing command, without its --out."""
    return {
        "train": ["train", "--dataset", "digits", "--model", "cnn-tiny", *FAST],
        "distill": ["distill", "--dataset", "digits", "--teacher", str(train_run), "--student", "cnn-tiny", *FAST],
        "ensemble": ["ensemble", "--dataset", "digits", "--teacher", "cnn-tiny", "--student", "cnn-tiny", *FAST],
        "tune": ["tune", "--dataset", "digits", "--teacher", str(train_run), "--student", "cnn-tiny", "--trials", "1", *FAST],
        "evaluate": ["evaluate", str(train_run)],
        "export": ["export", str(train_run)],
        "predict": ["predict", str(folder / "model.onnx"), str(folder / "x.npy")],
        "compare": ["compare", str(train_run)],
    }


TRICKS = {  # --out values, relative to the user's folder
    "the folder": "", "a file in it": "notes.txt", "a file of the output's name": None, "a symlink to a file": "link.json",
    "inside a file": "notes.txt/run", "a dangling link": "dangling",
}
OUTPUT_NAME = {"evaluate": "metrics.json", "export": "student.onnx", "predict": "predictions.csv", "compare": "compare.html",
               "train": "summary.json", "distill": "summary.json", "ensemble": "summary.json", "tune": "summary.json"}


def test_no_command_changes_a_user_file(user_folder, train_run, monkeypatch, capsys):
    from kdkit.cli import main

    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("KDKIT_CACHE", str(user_folder.parent / "cache"))
    before = snapshot(user_folder)
    cells, failures = 0, []
    for name, args in commands(train_run, user_folder).items():
        for trick, relative in TRICKS.items():
            out = user_folder / (relative if relative is not None else OUTPUT_NAME[name])
            monkeypatch.setattr(sys, "argv", ["kdkit", *args, "--out", str(out)])
            with pytest.raises(SystemExit) as exit_:
                main()
            _, err = capsys.readouterr()
            lines = [line for line in err.splitlines() if line.strip()]
            cells += 1
            if exit_.value.code != 2 or len(lines) != 1 or "Traceback" in err or len(lines[0]) > 300:
                failures.append((name, trick, exit_.value.code, err[-300:]))
            if snapshot(user_folder) != before:
                failures.append((name, trick, "changed the user's files"))
                before = snapshot(user_folder)
    assert cells == len(TRICKS) * 8
    assert not failures, failures
