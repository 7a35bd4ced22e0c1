"""Feature methods, born-again generations and DML through the whole `kdkit distill` pipeline."""
import json

import torch

from kdkit import checkpoint as ckpt
from kdkit.config import DistillConfig, apply_overrides
from kdkit.recipes import run_distill


def config(tmp_path, **overrides):
    base = {"dataset": "digits", "teacher": "cnn", "student": "cnn-tiny", "epochs": 1, "teacher_epochs": 1,
            "batch_size": 64, "progress": False, "log_every": 5, "out": str(tmp_path / "run"), "amp": "off"}
    return apply_overrides(DistillConfig(), base | overrides)


def test_crd_stops_and_resumes_with_its_memory_bank(tmp_path, digits):
    cfg = config(tmp_path, method="crd", baseline=False, epochs=2, nce_k=64)
    assert run_distill(apply_overrides(cfg, {"max_steps": 30}), digits)["stopped_early"]  # teacher done, student mid-way
    state, _ = ckpt.load_weights(sorted((tmp_path / "run/student/seed0/checkpoints").glob("state-*.safetensors"))[-1])
    assert any("memory_student" in k for k in state)  # the bank is part of the trainable state
    summary = run_distill(apply_overrides(cfg, {"resume": True}), digits)
    assert summary["rows"]["student"]["metrics"]["accuracy"]["mean"] > 0.3
    weights, meta = ckpt.load_weights(tmp_path / "run/student/seed0/best.safetensors")
    assert set(weights) == set(torch.nn.Module.state_dict(_student(digits)))  # the student alone, no adapters
    logged = [json.loads(line) for line in (tmp_path / "run/student/seed0/metrics.jsonl").read_text().splitlines()]
    assert any("train/crd" in row for row in logged) and any("train/ce" in row for row in logged)


def test_feature_scale_first_value_is_saved_and_a_resumed_run_is_bit_identical(tmp_path, digits):
    """feature_scale=first_step divides by the first step's value: a buffer in the checkpoint (here
    of a composite's part), so a run stopped mid-way and resumed ends with the same weights, bit for bit."""
    from safetensors.torch import load_file

    cfg = config(tmp_path, method="kd+at", teacher="cnn-x0.25", baseline=False, report=False, epochs=2, deterministic=True)
    run_distill(cfg, digits)
    part = apply_overrides(cfg, {"out": str(tmp_path / "part"), "max_steps": 27})  # teacher: 20 steps, student: 27 of 40
    assert run_distill(part, digits)["stopped_early"]
    state, _ = ckpt.load_weights(sorted((tmp_path / "part/student/seed0/checkpoints").glob("state-*.safetensors"))[-1])
    assert state["model.at_first_value.value"] > 0
    run_distill(apply_overrides(part, {"resume": True, "max_steps": 0}), digits)
    a = load_file(tmp_path / "run/student/seed0/last.safetensors")
    b = load_file(tmp_path / "part/student/seed0/last.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _student(data):
    from kdkit.weights import build_model

    return build_model("cnn-tiny", data, 0)


def test_born_again_generations(tmp_path, digits):
    summary = run_distill(config(tmp_path, method="kd", teacher="cnn-tiny", generations=3, baseline=False), digits)
    assert list(summary["rows"]) == ["teacher", "gen1", "gen2", "student"]
    for g in ("gen1", "gen2"):
        assert (tmp_path / f"run/{g}/seed0/best.safetensors").is_file()


def test_dml_with_a_peer_architecture(tmp_path, digits):
    summary = run_distill(config(tmp_path, method="dml", peer="mlp-64", baseline=False), digits)
    assert summary["rows"]["student"]["metrics"]["accuracy"]["mean"] > 0.3


def test_composite_through_the_pipeline(tmp_path, digits):
    summary = run_distill(config(tmp_path, method="kd+fitnet"), digits)
    assert summary["config"]["feature_weight"] == 1.0 and summary["config"]["temperature"] == 4.0
    assert set(summary["rows"]) == {"teacher", "scratch", "student"}


def test_hybrid_teachers_sklearn_and_torch(tmp_path, digits):
    cfg = config(tmp_path, method="kd", teacher="sklearn:logistic,cnn-tiny", combine="entropy", baseline=False)
    summary = run_distill(cfg, digits)
    assert list(summary["rows"]) == ["teacher1", "teacher2", "teacher", "student"]
    members = summary["teacher"]["members"]
    assert [m["kind"] for m in members["teachers"]] == ["proba", "torch"] and members["combine"] == "entropy"
    assert summary["rows"]["teacher1"]["metrics"]["accuracy"]["mean"] > 0.85  # logistic regression on digits
    assert summary["rows"]["teacher"]["facts"]["parameters"] > 0  # the torch member's


def test_saved_outputs_teacher_is_keyed_by_source_position(tmp_path, digits):
    import numpy as np

    # "perfect" saved logits, one row per sample of the source's training array (all 1,797 digits)
    source_labels = np.zeros(1797, dtype=np.int64)
    for split in (digits.train, digits.val):
        source_labels[split.index.numpy()] = split.labels.numpy()
    np.save(tmp_path / "logits.npy", np.eye(10, dtype=np.float32)[source_labels] * 5)
    summary = run_distill(config(tmp_path, method="kd", teacher=str(tmp_path / "logits.npy"), baseline=False), digits)
    teacher = summary["rows"]["teacher"]
    assert teacher["per_seed"][0]["measured_on"] == "val" and teacher["metrics"]["accuracy"]["mean"] == 1.0


def test_hybrid_preflight_errors(tmp_path, digits):
    import pytest

    from kdkit.errors import KdkitError

    with pytest.raises(KdkitError, match="method at matches features of one torch teacher"):
        run_distill(config(tmp_path, method="at", teacher="cnn,sklearn:logistic"), digits)
    with pytest.raises(KdkitError, match="2 teachers, 1 weights"):
        run_distill(config(tmp_path, method="kd", teacher="cnn,cnn-tiny", combine="weights", teacher_weights=[1.0]), digits)
    with pytest.raises(KdkitError, match="did you mean 'sklearn:forest'"):
        run_distill(config(tmp_path, method="kd", teacher="sklearn:forrest"), digits)
    assert not (tmp_path / "run" / "teacher1").exists()  # nothing was trained before the errors


def test_api_with_a_hybrid_teacher(tmp_path, digits):
    from sklearn.linear_model import LogisticRegression
    from torch import nn

    import kdkit
    from kdkit.teachers import HybridTeacher, ProbaTeacher, TorchTeacher, flatten_raw

    estimator = LogisticRegression(max_iter=300).fit(flatten_raw(digits.train.images.numpy()) / 255, digits.train.labels.numpy())
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    teacher = HybridTeacher([ProbaTeacher(estimator, transform=lambda x: flatten_raw(x) / 255, name="logreg"),
                             TorchTeacher(net, name="net")], combine="weights", weights=[0.8, 0.2])
    result = kdkit.distill(teacher, "cnn-tiny", digits, method="kd", epochs=3, batch_size=64, out=str(tmp_path / "api"),
                           baseline=False)
    assert teacher.report()["teachers"][0]["val_accuracy"] > 0.85
    assert result.metrics["test"]["accuracy"] > 0.2
