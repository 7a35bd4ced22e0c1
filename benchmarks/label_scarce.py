"""Distillation where labels are scarce (issue 22): Fashion-MNIST with N labels per class, the other
training images unlabelled, cnn -> cnn-tiny, the recipe of `make demo` (configs/demo.yaml), at
6 epochs (2,754 steps, the reference's budget) unless the name says long (15 epochs, the demo's).

    .venv/bin/python benchmarks/label_scarce.py [--runs kd-1000,scratch-...] [--seeds 0,1,2] [--jobs 2]

Rows (each over --seeds, mean +- std, one distill run per seed):
  the teacher: configs/demo_teacher.yaml, trained once on all labels (it stands for a model the user
  already has), runs/bench-label-scarce/teacher
  kd-N        scratch (N labels per class only, same steps) and KD from that teacher (labels + unlabelled)
  kd-ls-N     KD with logit standardisation (logit_standardize=true, T 2)
  kd-long-N   scratch and KD with 15 epochs in place of 6 (the demo's recipe)
  fm-long-N   function matching (Beyer et al. 2022): mixup (scratch too), 15 epochs; N = 0: all labels
  semi-N      the semi-supervised case: a teacher trained in the run on the N labels only (8 epochs)
  dkd-N, dist-N   DKD and DIST at their defaults
  fm-N        KD + function matching (mixup) at 6 epochs
  kd-only-N   KD without the unlabelled rest (unlabeled_rest=false): the N labels repeated, same steps
  ls-long-N   KD + logit standardisation (T 2) at 15 epochs (N = 0: the full-label pair)
  fm-2x-N, fm-4x-N   function matching on cached teacher outputs (15 recorded mixup views) at 30 and 60
              epochs, scratch with mixup at the same schedule
`--dataset cifar10` runs the same recipes on CIFAR-10 (N = 250 or 4,000 labels), a CPU budget:
20,000 of its training images (2,000 per class), an 8-epoch cnn teacher on their labels, 6-epoch
cnn-tiny students, crops and flips; results in benchmarks/results/label_scarce_cifar10.json.
Each run is resumable: a finished run is read, not rerun. `--jobs` distill processes run side by
side with one thread each, so wall times compare only with each other. Writes
benchmarks/results/label_scarce.json and prints a markdown table.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KDKIT = [sys.executable, "-m", "kdkit"]
# dataset -> (run folder, the teacher's `kdkit train` arguments, the students' base arguments, results file)
DATASETS = {
    "fashion-mnist": ("runs/bench-label-scarce", ["--config", "configs/demo_teacher.yaml"], ["--config", "configs/demo.yaml"],
                      "label_scarce.json"),
    # CIFAR-10 at a CPU budget (2 cores shared with other work): the same cnn -> cnn-tiny pair and
    # optimiser, random crops and flips, 20,000 of the training images (train_per_class=2000, the same
    # draw for teacher and students); an 8-epoch teacher on their 20,000 labels, 6-epoch students
    "cifar10": ("runs/bench-label-scarce-cifar10",
                ["--config", "configs/demo_teacher.yaml", "--dataset", "cifar10", "--set", "epochs=8", "--set", "augment=crop_flip",
                 "--set", "train_per_class=2000"],
                ["--config", "configs/demo.yaml", "--dataset", "cifar10", "--set", "augment=crop_flip", "--set", "train_per_class=2000"],
                "label_scarce_cifar10.json"),
    # the toy size of tests/bench/test_label_scarce.py (scikit-learn's digits, bundled)
    "digits": ("runs/bench-label-scarce-digits",
               ["--config", "configs/demo_teacher.yaml", "--dataset", "digits", "--set", "epochs=2", "--set", "val_fraction=0.1"],
               ["--config", "configs/demo.yaml", "--dataset", "digits", "--set", "val_fraction=0.1"], "label_scarce_digits.json"),
}
# name prefix -> (extra --set values, whether the run also trains the scratch row)
RECIPES = {
    "kd": (["epochs=6"], True),
    "kd-ls": (["logit_standardize=true", "temperature=2", "epochs=6"], False),
    "kd-long": (["epochs=15"], True),  # a patient teacher (Beyer et al. 2022): 2.5x the steps, scratch too
    "fm-long": (["mix=mixup", "epochs=15"], True),  # ... and consistent: mixup views the teacher labels too
    "fm": (["mix=mixup", "epochs=6"], False),  # KD + function matching (mixup) at 6 epochs
    "kd-only": (["unlabeled_rest=false", "epochs=6"], False),  # KD on the N labelled images only (same steps)
    "ls-long": (["logit_standardize=true", "temperature=2", "epochs=15"], False),
    # the full-label pair on cached outputs (15 recorded mixup views), 2x and 4x the demo's 15 epochs; scratch with mixup too
    "fm-2x": (["mix=mixup", "epochs=30", "teacher_cache=true", "cache_views=15"], True),
    "fm-4x": (["mix=mixup", "epochs=60", "teacher_cache=true", "cache_views=15"], True),
    "semi": (["teacher=cnn", "teacher_epochs=8", "epochs=6"], True),
    "dkd": (["method=dkd", "temperature=", "epochs=6"], False),
    "dist": (["method=dist", "temperature=", "epochs=6"], False),
}


def parse(name: str) -> tuple[str, int]:
    recipe, labels = name.rsplit("-", 1)
    return recipe, int(labels)


def command(dataset: str, runs: Path, name: str, seed: int, data_dir: str | None) -> list[str]:
    recipe, labels = parse(name)
    sets, baseline = RECIPES[recipe]
    cmd = [*KDKIT, "distill", *DATASETS[dataset][2], "--teacher", str(runs / "teacher"), "--seeds", str(seed),
           "--out", str(runs / name / f"seed{seed}"), "--set", "progress=false", "--set", "report=false",
           "--set", f"labels_per_class={labels // 10}", "--resume"]
    for value in sets:
        cmd += ["--set", value]
    cmd += [] if baseline else ["--no-baseline"]
    return cmd + (["--data-dir", data_dir] if data_dir else [])


def run(cmd: list[str], out: Path, label: str) -> dict:
    if not (out / "summary.json").is_file():
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        t0 = time.perf_counter()
        result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        print(f"{label}: exit {result.returncode} in {time.perf_counter() - t0:.0f} s", flush=True)
        if result.returncode != 0:
            print(result.stderr[-2000:], flush=True)
            return {}
    return json.loads((out / "summary.json").read_text())


def stats(values: list[float]) -> dict:
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values),
            "values": values}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", default="kd-1000,semi-1000,kd-ls-1000")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--data-dir", default=None, help="folder holding the dataset (else kdkit finds it)")
    parser.add_argument("--dataset", default="fashion-mnist", choices=sorted(DATASETS))
    parser.add_argument("--runs-dir", default=None, help="where the runs go (default: runs/bench-label-scarce...)")
    parser.add_argument("--result", default=None, help="the results file (default: benchmarks/results/...)")
    args = parser.parse_args(argv)
    dataset = args.dataset
    runs = Path(args.runs_dir) if args.runs_dir else ROOT / DATASETS[dataset][0]
    path = Path(args.result) if args.result else ROOT / "benchmarks/results" / DATASETS[dataset][3]
    names, seeds = args.runs.split(","), [int(s) for s in args.seeds.split(",")]
    teacher_cmd = [*KDKIT, "train", *DATASETS[dataset][1], "--out", str(runs / "teacher"), "--resume",
                   "--set", "progress=false"] + (["--data-dir", args.data_dir] if args.data_dir else [])
    teacher = run(teacher_cmd, runs / "teacher", "teacher (all labels)")
    t0 = time.perf_counter()
    jobs = [(name, seed) for name in names for seed in seeds]
    with ThreadPoolExecutor(args.jobs) as pool:
        summaries = list(pool.map(lambda job: run(command(dataset, runs, *job, args.data_dir), runs / job[0] / f"seed{job[1]}",
                                                   f"{job[0]} seed {job[1]}"), jobs))
    results = {"benchmark": f"label-scarce {dataset}, cnn -> cnn-tiny, " + " ".join(DATASETS[dataset][2]), "seeds": seeds,
               "teacher_all_labels": {"test_accuracy": teacher.get("metrics", {}).get("accuracy"),
                                      "command": " ".join(teacher_cmd[len(KDKIT):])},
               "wall_seconds": time.perf_counter() - t0, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, no GPU",
               "runs": {}}
    for name in names:
        per_seed = [s for (n, _), s in zip(jobs, summaries) if n == name and s]
        if not per_seed:
            continue
        rows = {}
        for row in per_seed[0]["rows"]:
            accs = [s["rows"][row]["metrics"]["accuracy"]["mean"] for s in per_seed if row in s["rows"]]
            rows[row] = stats(accs) | {"train_samples": per_seed[0]["rows"][row].get("train_samples")}
        results["runs"][name] = {"command": " ".join(command(dataset, runs, name, seeds[0], args.data_dir)[len(KDKIT):]),
                                 "rows": rows, "seconds": [s.get("wall_seconds") for s in per_seed]}
    old = json.loads(path.read_text()) if path.is_file() else {}
    old.setdefault("runs", {}).update(results.pop("runs"))
    path.write_text(json.dumps(old | results, indent=1) + "\n")
    print("| run | row | test accuracy % (mean +- std) | labelled / unlabelled |\n|---|---|---|---|")
    for name, run_ in old["runs"].items():
        for row, s in run_["rows"].items():
            print(f"| {name} | {row} | {100 * s['mean']:.2f} +- {100 * s['std']:.2f} (n={s['n']}) | {s['train_samples']} |")
    return old | results


if __name__ == "__main__":
    main()
