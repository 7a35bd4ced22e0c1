"""benchmarks/throughput.py in its CPU quick mode: every row runs side by side and the file is written."""
import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))


def test_quick_mode_runs_every_row_and_writes_ratios(tmp_path):
    import throughput

    out = tmp_path / "t.json"
    throughput.main(["--quick", "--teacher", "mlp-64", "--student", "mlp-32", "--classes", "10", "--batch-size", "16",
                     "--warmup", "1", "--steps", "9", "--json", str(out)])
    report = json.loads(out.read_text())
    assert not Path(str(out) + ".partial").exists()  # the rows-so-far file goes once the report is written
    rows = report["rows"]
    for name in ("student_only", "plain_kd", "plain_kd_nchw", "kdkit_student", "kdkit_online", "kdkit_cached", "kdkit_online_crd",
                 "kdkit_cached_crd"):
        assert rows[name]["images_per_s"] > 0, (name, rows[name])
    assert rows["kdkit_cached"]["cache_build_seconds_one_view"] > 0
    for name in ("torchdistill_teacher_train", "torchdistill_teacher_eval"):  # measured only where it is installed
        assert "images_per_s" in rows[name] or "skipped" in rows[name]
    assert report["ratios"]["kdkit_online / plain_kd"] == pytest.approx(
        rows["kdkit_online"]["images_per_s"] / rows["plain_kd"]["images_per_s"])


def test_repeats_report_the_median_run_and_every_rate():
    import throughput

    runs = [{"images_per_s": 30.0, "seconds": 1}, {"images_per_s": 10.0, "seconds": 3}, {"images_per_s": 20.0, "seconds": 2}]
    row = throughput.median_row(runs)
    assert row["images_per_s"] == 20.0 and row["seconds"] == 2  # the median run's own fields
    assert row["images_per_s_runs"] == [30.0, 10.0, 20.0]  # in round order
    assert throughput.median_row(runs[:2])["images_per_s"] == 10.0  # even count: the lower middle
    assert throughput.median_row([{"skipped": "no torchdistill"}] * 2) == {"skipped": "no torchdistill"}
    assert throughput.median_row([{"images_per_s": 5.0}]) == {"images_per_s": 5.0}


def test_layout_benchmark_times_both_layouts(tmp_path, monkeypatch):
    import layout_cpu

    monkeypatch.setattr(layout_cpu, "CASES", [("cnn-tiny", True, (3, 8, 8), 4), ("cnn-tiny", False, (3, 8, 8), 4)])
    report = layout_cpu.main(["--rounds", "1", "--steps", "1", "--json", str(tmp_path / "l.json")])
    assert json.loads((tmp_path / "l.json").read_text()) == report
    assert len(report["rows"]) == 4  # 2 cases x (bf16, float32)
    for row in report["rows"]:
        assert row["ms"]["nchw"] > 0 and row["ms"]["channels_last"] > 0
        assert row["speedup"] == pytest.approx(row["ms"]["nchw"] / row["ms"]["channels_last"])


def test_latency_threads_benchmark_times_each_thread_count(tmp_path, monkeypatch):
    import latency_threads

    monkeypatch.setattr(latency_threads, "MODELS", [("cnn-tiny", (1, 8, 8))])
    report = latency_threads.main(["--rounds", "2", "--json", str(tmp_path / "t.json")])
    assert json.loads((tmp_path / "t.json").read_text()) == report
    threads = sorted({1, torch.get_num_threads()})
    assert set(report["runs"]) == {f"cnn-tiny/{t}t/b{b}" for t in threads for b in (1, 64)}
    for key, values in report["runs"].items():
        assert len(values) == 2 and min(values) > 0
        assert report["stats"][key]["max/min"] == pytest.approx(max(values) / min(values))
    threads_before = torch.get_num_threads()
    latency_threads.main(["--rounds", "1", "--json", str(tmp_path / "u.json")])
    assert torch.get_num_threads() == threads_before  # the caller's thread count is given back
