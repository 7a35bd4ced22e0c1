"""Data-parallel runs with torchrun (DDP, gloo on CPU): the same result as one process at the same
global batch, files written once, and the global batch split evenly."""
import json
import os
import subprocess
import sys

import pytest
import torch

from kdkit import distributed
from kdkit.checkpoint import load_weights
from kdkit.errors import KdkitError

COMMON = ["--dataset", "digits", "--set", "progress=false", "--set", "batch_size=64", "--set", "deterministic=true", "--set", "amp=off",
          "--set", "log_every=5"]


def kdkit(args, out, processes: int = 1):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    cmd = (launcher if processes > 1 else [sys.executable]) + ["-m", "kdkit", *args, "--out", str(out)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def test_shard_splits_a_global_batch(monkeypatch):
    batch = torch.arange(10)
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    parts = []
    for r in range(3):
        monkeypatch.setattr(distributed, "rank", lambda r=r: r)
        parts.append(distributed.shard(batch))
    assert [p.tolist() for p in parts] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    with pytest.raises(KdkitError, match=r"batch_size 64 is the global batch and must divide evenly over 3 processes; "
                                         r"e.g. --set batch_size=63"):
        distributed.check_batch_size(64)


def test_two_processes_match_one_and_write_once(tmp_path):
    """An MLP without dropout or BatchNorm: 2 processes x 32 samples give the gradient of 1 x 64 up
    to float rounding, so the weights agree to 1e-5 and the validation history is the same."""
    args = ["train", "--model", "mlp", "--epochs", "2", *COMMON]
    one, two = kdkit(args, tmp_path / "one"), kdkit(args, tmp_path / "two", processes=2)
    assert one.returncode == 0, one.stderr[-2000:]
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = load_weights(tmp_path / "one/last.safetensors")[0], load_weights(tmp_path / "two/last.safetensors")[0]
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)
    s1, s2 = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("one", "two"))
    assert abs(s1["metrics"]["accuracy"] - s2["metrics"]["accuracy"]) <= 2 / 360  # at most 2 test samples
    # written once, by rank 0: the log has exactly the lines of the one-process run
    lines1, lines2 = ((tmp_path / d / "metrics.jsonl").read_text().splitlines() for d in ("one", "two"))
    assert len(lines1) == len(lines2)
    val1 = [json.loads(x)["val/accuracy"] for x in lines1 if "val/accuracy" in x]
    val2 = [json.loads(x)["val/accuracy"] for x in lines2 if "val/accuracy" in x]
    assert val1 == val2
    assert two.stdout.count("test accuracy") == 1  # one process prints the result


def test_distill_with_two_processes(tmp_path):
    """teacher, scratch and student all trained data-parallel; BatchNorm statistics are per process
    (as in any DDP run), so the result is close to, not equal to, one process's."""
    args = ["distill", "--teacher", "cnn-x0.25", "--student", "cnn-tiny", "--epochs", "2", "--no-report", *COMMON]
    one, two = kdkit(args, tmp_path / "one"), kdkit(args, tmp_path / "two", processes=2)
    assert two.returncode == 0, [line for line in two.stderr.splitlines() if "error" in line.lower()][:5]
    assert one.returncode == 0, one.stderr[-2000:]
    s1, s2 = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("one", "two"))
    for row in ("teacher", "scratch", "student"):
        a, b = s1["rows"][row]["metrics"]["accuracy"]["mean"], s2["rows"][row]["metrics"]["accuracy"]["mean"]
        assert abs(a - b) < 0.05, (row, a, b)
    for phase in ("teacher", "scratch/seed0", "student/seed0"):
        n1 = len((tmp_path / "one" / phase / "metrics.jsonl").read_text().splitlines())
        assert len((tmp_path / "two" / phase / "metrics.jsonl").read_text().splitlines()) == n1


def test_label_scarce_distill_with_two_processes(tmp_path):
    """labels_per_class with torchrun: 5 labels per class, the rest unlabelled, so many per-process
    half-batches hold no labelled sample (their hard-label term is 0 with a zero gradient, which DDP
    still reduces). Every process draws the same labelled subset; the rows see what one process sees."""
    args = ["distill", "--teacher", "cnn-x0.25", "--student", "cnn-tiny", "--epochs", "2", "--no-report", *COMMON,
            "--set", "labels_per_class=5"]
    one, two = kdkit(args, tmp_path / "one"), kdkit(args, tmp_path / "two", processes=2)
    assert two.returncode == 0, [line for line in two.stderr.splitlines() if "error" in line.lower()][:5]
    assert one.returncode == 0, one.stderr[-2000:]
    s1, s2 = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("one", "two"))
    for row in ("teacher", "scratch", "student"):
        assert s1["rows"][row]["train_samples"] == s2["rows"][row]["train_samples"], row
        a, b = s1["rows"][row]["metrics"]["accuracy"]["mean"], s2["rows"][row]["metrics"]["accuracy"]["mean"]
        assert abs(a - b) < 0.1, (row, a, b)
    assert s2["rows"]["scratch"]["train_samples"] == {"labelled": 50, "unlabeled": 0}
    assert s2["rows"]["student"]["train_samples"]["unlabeled"] > 1000
    for phase in ("teacher", "scratch/seed0", "student/seed0"):
        n1 = len((tmp_path / "one" / phase / "metrics.jsonl").read_text().splitlines())
        assert len((tmp_path / "two" / phase / "metrics.jsonl").read_text().splitlines()) == n1


def test_uneven_global_batch_is_refused(tmp_path):
    r = kdkit(["train", "--model", "mlp", "--epochs", "1", *COMMON, "--set", "batch_size=65"], tmp_path / "x", processes=2)
    assert r.returncode != 0
    assert "error: batch_size 65 is the global batch and must divide evenly over 2 processes; e.g. --set batch_size=64" in r.stderr
    # (torchrun then reports the failed child with its own traceback: the launcher's, not kdkit's)


def test_feature_scale_first_value_is_the_mean_over_processes(tmp_path):
    """feature_scale=first_step: every process divides its feature loss by the same first value,
    the mean of the processes' first losses (here 1 and 3), kept from then on."""
    script = tmp_path / "first_value.py"
    script.write_text("import sys\nimport torch\nfrom kdkit import distributed\nfrom kdkit.methods.features import FirstValue\n"
                      "distributed.setup()\nrank, first = distributed.rank(), FirstValue()\n"
                      "values = [first(torch.tensor(1.0 + 2 * rank)).item(), first(torch.tensor(7.0)).item()]\n"
                      "open(f'{sys.argv[1]}/rank{rank}.txt', 'w').write(str(values))\n"
                      "distributed.barrier()\ntorch.distributed.destroy_process_group()\n")  # no rank leaves mid-teardown
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), str(tmp_path)]
    r = subprocess.run(launcher, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert [(tmp_path / f"rank{r}.txt").read_text() for r in (0, 1)] == ["[2.0, 2.0]", "[2.0, 2.0]"]
