"""benchmarks/sst2.py at toy size: a tiny BERT saved in tmp_path stands for all-MiniLM-L6-v2, 200 cue-word
sentences for SST-2, one seed, 2 copies per sentence. Every phase runs through kdkit's CLI."""
import json
import sys
from pathlib import Path

from bench_scripts import load_script

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))


def test_toy_run_times_each_phase_and_checks_the_export(tmp_path):
    from test_text_augment import write_cues
    from test_text_models import bert_folder, need_hf

    need_hf()
    data = write_cues(tmp_path / "cues")
    (data / "dev.txt").write_text((data / "test.txt").read_text())  # SST-2's layout has a dev file
    folder = bert_folder(tmp_path / "bert", classifier=False)
    result_path = tmp_path / "sst2.json"
    result = load_script("sst2").main(["--data-dir", str(data), "--teacher-dir", str(folder), "--runs-dir", str(tmp_path / "runs"),
                                       "--result", str(result_path), "--seeds", "0", "--copies", "2", "--teacher-epochs", "1",
                                       "--epochs", "2", "--max-length", "16"])
    assert json.loads(result_path.read_text()) == json.loads(json.dumps(result))
    assert set(result["phase_seconds"]) == {"teacher", "plain", "transfer", "export", "scratch_steps seed 0"}
    rows = result["rows"]
    assert set(rows) == {"teacher", "scratch", "student", "student_transfer", "scratch_transfer_steps"}
    seen = rows["student_transfer"]["train_samples"]
    assert rows["scratch_transfer_steps"]["epochs"] == round(3 * (seen["labelled"] + seen["unlabeled"]) / seen["labelled"])
    summary = json.loads((tmp_path / "runs/transfer/summary.json").read_text())
    assert rows["student_transfer"]["test_accuracy"]["values"] == [summary["rows"]["student"]["metrics"]["accuracy"]["mean"]]
    labelled = rows["scratch"]["train_samples"]["labelled"]
    assert rows["student_transfer"]["train_samples"]["labelled"] == labelled
    assert rows["student_transfer"]["train_samples"]["unlabeled"] > labelled  # about 2 copies of each sentence
    assert result["onnx"]["verification"]["passed"] and result["ratios"]["parameters_x_fewer"] > 0
    assert result["facts"]["teacher"]["latency_ms_b1"] > 0 and result["teacher_outputs_seconds"]["transfer"] > 0
    again = load_script("sst2").main(["--data-dir", str(data), "--teacher-dir", str(folder), "--runs-dir", str(tmp_path / "runs"),
                                      "--result", str(result_path), "--seeds", "0", "--copies", "2"])
    assert again["rows"] == rows and again["phase_seconds"] == result["phase_seconds"]  # finished phases are read
