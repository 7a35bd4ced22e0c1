"""How many recorded views does the teacher-output cache need? Online KD against cached KD with
K = 1, 4 and 15 (= the epochs: as many distinct views as online KD sees) on Fashion-MNIST with
translation augmentation; the demo's pair and recipe otherwise (cnn -> cnn-tiny, AdamW 3e-3, 15
epochs, T 1, alpha 1). One teacher, trained once; each row a `kdkit distill` run per seed.

    .venv/bin/python benchmarks/cache_views.py [--seeds 0,1] [--jobs 2] [--data-dir DIR]

Resumable (a finished row is read, not rerun). Results: benchmarks/results/cache_views.json with
test accuracy per row and seed, the student phase's seconds and the cache's build seconds.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs/cache_views"
ROWS = {"online": [], "cached_k1": ["--teacher-cache", "--set", "cache_views=1"],
        "cached_k4": ["--teacher-cache", "--set", "cache_views=4"],
        "cached_k15": ["--teacher-cache", "--set", "cache_views=15"]}
RECIPE = ["--dataset", "fashion-mnist", "--student", "cnn-tiny", "--method", "kd", "--epochs", "15",
          "--batch-size", "128", "--lr", "0.003", "--temperature", "1", "--alpha", "1", "--no-baseline", "--no-report",
          "--set", "optimizer=adamw", "--set", "weight_decay=0.01", "--set", "augment=crop", "--set", "progress=false"]


def kdkit(args, extra, out: Path, command=("distill", *RECIPE)):
    cmd = [sys.executable, "-m", "kdkit", *command, *extra, "--out", str(out), "--resume"]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{out}: exit {done.returncode}\n{done.stderr[-1500:]}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--data-dir", default=None)
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    teacher_run = RUNS / "teacher"
    if not (teacher_run / "best.safetensors").is_file():  # the teacher, trained once (crop augmentation)
        kdkit(args, [], teacher_run, ("train", "--dataset", "fashion-mnist", "--model", "cnn", "--epochs", "8",
                                      "--batch-size", "128", "--lr", "0.003", "--set", "optimizer=adamw",
                                      "--set", "weight_decay=0.01", "--set", "augment=crop", "--set", "progress=false"))
    jobs = [(row, seed) for seed in seeds for row in ROWS]

    def run(job):
        row, seed = job
        out = RUNS / row / f"seed{seed}"
        if not (out / "summary.json").is_file():
            kdkit(args, ["--teacher", str(teacher_run), "--seeds", str(seed), *ROWS[row]], out)
        summary = json.loads((out / "summary.json").read_text())
        fit = json.loads((out / f"student/seed{seed}/fit.json").read_text())
        return row, seed, {"accuracy": summary["rows"]["student"]["metrics"]["accuracy"]["mean"],
                           "student_seconds": fit["seconds"], "teacher_cache_seconds": fit.get("teacher_cache_seconds"),
                           "train_images_per_second": fit.get("train_images_per_second")}

    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(run, jobs))
    first = RUNS / "online" / f"seed{seeds[0]}" / "summary.json"
    teacher = json.loads(first.read_text())["rows"]["teacher"]["metrics"]["accuracy"]["mean"]
    rows = {row: {"per_seed": {seed: r for rw, seed, r in results if rw == row}} for row in ROWS}
    for row in rows.values():
        accs = [r["accuracy"] for r in row["per_seed"].values()]
        row["accuracy_mean"] = statistics.fmean(accs)
        row["accuracy_std"] = statistics.stdev(accs) if len(accs) > 1 else 0.0
        row["student_seconds_mean"] = statistics.fmean(r["student_seconds"] for r in row["per_seed"].values())
    report = {"command": "python benchmarks/cache_views.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, 1 thread per run, "
                         f"{args.jobs} runs side by side", "recipe": " ".join(RECIPE), "teacher_accuracy": teacher,
              "rows": rows}
    path = ROOT / "benchmarks/results/cache_views.json"
    path.write_text(json.dumps(report, indent=1))
    for name, row in rows.items():
        print(f"{name:12s} {100 * row['accuracy_mean']:.2f} ± {100 * row['accuracy_std']:.2f}  "
              f"student {row['student_seconds_mean']:.0f} s")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
