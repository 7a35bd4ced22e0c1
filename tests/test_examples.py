"""examples/ at toy size: each runs as a user would run it and shows what it claims."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _example(name: str):
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(ROOT / "examples"))


def test_tabular_breast_cancer_student_takes_raw_features(tmp_path):
    result, accuracy = _example("tabular_breast_cancer").main(["--epochs", "3", "--csv", str(tmp_path)])
    rows = result.summary["rows"]
    assert set(rows) == {"teacher", "scratch", "student"} and rows["teacher"]["metrics"]["accuracy"]["mean"] > 0.85
    assert result.summary["config"]["teacher_folds"] == 5
    assert accuracy == pytest.approx(rows["student"]["per_seed"][0]["accuracy"], abs=1e-6)  # raw inputs, same score
    cli = json.loads((tmp_path / "run" / "summary.json").read_text())  # the same from cancer.csv on the command line
    assert cli["dataset"] == "cancer" and cli["rows"]["teacher"]["metrics"]["accuracy"]["mean"] > 0.85


def test_text_ids_through_a_torch_dataset_stay_integers():
    result = _example("text_ids_dataset").main(epochs=2)
    assert result.summary["rows"]["teacher"]["metrics"]["accuracy"]["mean"] > 0.8  # the user's Embedding teacher, as given
    assert set(result.summary["rows"]) == {"teacher", "scratch", "student"}
    ids = torch.randint(1, 500, (3, 7))
    assert result.student(ids).shape == (3, 4)  # token ids in, no input step in front (ids are never normalised)


def test_a_users_dataloader_and_batch_transform():
    module = _example("dataloader_images")
    result = module.main(epochs=1)
    assert result.summary["rows"]["teacher"]["train_samples"] == {"labelled": 1200, "unlabeled": 0}
    batch = torch.rand(4, 1, 8, 8)
    shifted = module.RandomShift(1, seed=0)(batch)
    torch.testing.assert_close(shifted.sum((2, 3)), batch.sum((2, 3)))  # a roll: the pixels move, none is lost


def test_teacher_from_weights_is_not_retrained(tmp_path):
    _example("teacher_from_weights").main(tmp_path, epochs=1)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert not (tmp_path / "run" / "teacher").exists()  # loaded, not trained
    assert summary["rows"]["teacher"]["metrics"]["accuracy"]["mean"] > 0.9  # the weights trained outside kdkit


def test_method_in_a_parent_module_moves_and_trains():
    losses = _example("method_in_a_parent_module").main(torch.float64)
    assert losses[-1] < losses[0]
