"""benchmarks/label_scarce.py at toy size: digits, a 2-epoch teacher, 50 labels (5 per class), one seed."""
import json
from pathlib import Path

from bench_scripts import load_script

def _script():
    return load_script("label_scarce")


def test_recipes_become_the_settings_they_name():
    script = _script()
    cmd = script.command("fashion-mnist", Path("r"), "kd-only-1000", 2, None)
    assert cmd[cmd.index("--seeds") + 1] == "2" and "--no-baseline" in cmd
    sets = [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "--set"]
    assert "labels_per_class=100" in sets and "unlabeled_rest=false" in sets and "epochs=6" in sets
    assert "--no-baseline" not in script.command("cifar10", Path("r"), "kd-250", 0, None)
    assert "labels_per_class=25" in script.command("cifar10", Path("r"), "kd-250", 0, None)


def test_toy_run_records_what_each_row_trained_on(tmp_path):
    result_path = tmp_path / "result.json"
    result = _script().main(["--dataset", "digits", "--runs", "kd-50,kd-only-50", "--seeds", "0", "--jobs", "1",
                             "--runs-dir", str(tmp_path / "runs"), "--result", str(result_path)])
    assert json.loads(result_path.read_text()) == json.loads(json.dumps(result))
    kd, only = result["runs"]["kd-50"]["rows"], result["runs"]["kd-only-50"]["rows"]
    summary = json.loads((tmp_path / "runs/kd-50/seed0/summary.json").read_text())
    assert kd["student"]["values"] == [summary["rows"]["student"]["metrics"]["accuracy"]["mean"]]
    assert kd["scratch"]["train_samples"] == {"labelled": 50, "unlabeled": 0}
    assert kd["student"]["train_samples"]["labelled"] == 50 and kd["student"]["train_samples"]["unlabeled"] > 1000
    assert only["student"]["train_samples"] == {"labelled": 50, "unlabeled": 0} and "scratch" not in only
    teacher = json.loads((tmp_path / "runs/teacher/summary.json").read_text())
    assert result["teacher_all_labels"]["test_accuracy"] == teacher["metrics"]["accuracy"]
