"""benchmarks/oof_teacher.py at toy size: one teacher, one temperature, one seed, one epoch."""
import json

import numpy as np

from bench_scripts import load_script


def _script():
    return load_script("oof_teacher")


def test_target_facts_by_hand():
    probs = np.array([[0.7, 0.2, 0.1], [0.3, 0.6, 0.1], [0.5, 0.25, 0.25]])  # (3, 3)
    facts = _script().target_facts(probs, np.array([0, 2, 0]))
    assert np.isclose(facts["mean_max_probability"], (0.7 + 0.6 + 0.5) / 3)
    assert np.isclose(facts["accuracy"], 2 / 3)
    assert np.isclose(facts["nll"], -(np.log(0.7) + np.log(0.1) + np.log(0.5)) / 3)


def test_toy_run_writes_what_the_runs_measured(tmp_path):
    result_path = tmp_path / "oof.json"
    result = _script().main(["--seeds", "0", "--epochs", "1", "--teachers", "forest", "--temperatures", "1",
                             "--runs", str(tmp_path / "runs"), "--result", str(result_path)])
    assert json.loads(result_path.read_text()) == json.loads(json.dumps(result))
    entry = result["results"]["sklearn:forest"]
    for folds in (0, 5):
        summary = json.loads((tmp_path / f"runs/forest-T1-folds{folds}/seed0/summary.json").read_text())
        student = summary["rows"]["student"]["per_seed"][0]
        assert entry["students"][f"T1_folds{folds}"]["accuracy"]["per_seed"] == [student["accuracy"]]
        assert summary["config"]["teacher_folds"] == folds and summary["config"]["temperature"] == 1.0
    targets = entry["train_targets"]
    assert targets["in_sample"]["accuracy"]["mean"] == 1.0  # the forest scores rows it was fit on
    assert targets["out_of_fold"]["mean_max_probability"]["mean"] < targets["in_sample"]["mean_max_probability"]["mean"]
