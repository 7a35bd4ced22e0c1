"""Out-of-fold against in-sample soft targets from scikit-learn teachers trained here (teacher_folds).

    PYTHONPATH=src python benchmarks/oof_teacher.py [--seeds 0,1,2] [--jobs 2] [--epochs 30]

On kdkit's `digits` (scikit-learn's 8x8 digits: 1,295 train / 143 validation / 359 test, the test
split fixed), each of sklearn:forest and sklearn:hgb teaches an mlp-32 student (2,410 parameters)
by KD (alpha 0.9) at T = 1 and T = 4, with teacher_folds = 0 (the training rows labelled by the
model fit on them) and 5 (each fold by a model fit on the other four). Recipe: 30 epochs, AdamW
3e-3, batch 64. Each seed is its own `kdkit distill` run, so the seed sets the teacher's seed,
its folds, the validation split and the student's initialisation; the in-sample and out-of-fold
runs of one seed differ only in teacher_folds. The scratch row (no teacher) comes from the
in-sample runs. Beside the students: what the teacher gives the training rows (mean max
probability, accuracy and NLL of the train-row targets) in-sample and out of fold, from the code
the runs use. Resumable (a finished run is read, not rerun); the runs go to runs/bench-oof/.
Writes benchmarks/results/oof_teacher.json (raw per-seed values, mean and std) and prints a table.
OpenMP is held to one thread per process: on the 2-core VM where this ran, HistGradientBoosting on
digits took 28 s with 2 threads against 2 s with one.
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
RUNS = ROOT / "runs/bench-oof"
TEACHERS = ("forest", "hgb")
TEMPERATURES = (1, 4)
FOLDS = (0, 5)
METRICS = ("accuracy", "nll", "ece")


def recipe(epochs: int) -> list[str]:
    return ["--dataset", "digits", "--student", "mlp-32", "--method", "kd", "--epochs", str(epochs), "--batch-size", "64",
            "--lr", "0.003", "--alpha", "0.9", "--no-report", "--set", "optimizer=adamw", "--set", "progress=false"]


def command(cell: tuple, epochs: int, out: Path) -> list[str]:
    teacher, temperature, folds, seed = cell
    baseline = "--baseline" if folds == 0 else "--no-baseline"
    return [sys.executable, "-m", "kdkit", "distill", *recipe(epochs), "--teacher", f"sklearn:{teacher}",
            "--temperature", str(temperature), "--seeds", str(seed), baseline, "--set", f"teacher_folds={folds}",
            "--out", str(out)]


def run(cell: tuple, epochs: int, runs: Path) -> dict:
    teacher, temperature, folds, seed = cell
    out = runs / f"{teacher}-T{temperature}-folds{folds}" / f"seed{seed}"
    if not (out / "summary.json").is_file():
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
        t0 = time.perf_counter()
        result = subprocess.run(command(cell, epochs, out), cwd=ROOT, env=env, capture_output=True, text=True)
        print(f"{out.relative_to(runs)}: exit {result.returncode} in {time.perf_counter() - t0:.0f} s", flush=True)
        if result.returncode != 0:
            raise SystemExit(result.stderr[-2000:])
    return json.loads((out / "summary.json").read_text())


def target_facts(probs, labels) -> dict:
    """What a teacher's (N, K) probabilities on the training rows give the student to learn."""
    import numpy as np

    picked = np.clip(probs[np.arange(len(labels)), labels], 1e-8, 1)
    return {"mean_max_probability": float(probs.max(axis=1).mean()),
            "accuracy": float((probs.argmax(axis=1) == labels).mean()), "nll": float(-np.log(picked).mean())}


def teacher_targets(teacher: str, seed: int) -> dict:
    """In-sample and 5-fold out-of-fold train-row targets of sklearn:`teacher` with seed `seed`, as
    `kdkit distill --seeds seed` builds them (same data split, estimator and folds)."""
    from kdkit.data import load_dataset
    from kdkit.teachers import flatten_raw
    from kdkit.teachers.specs import other_teacher

    data = load_dataset("digits", seed=seed)
    source = other_teacher(f"sklearn:{teacher}", "t", data, seed, 5)
    labels = data.train.labels.numpy()
    in_sample = source.estimator.predict_proba(flatten_raw(data.train.images.numpy()))
    return {"in_sample": target_facts(in_sample, labels), "out_of_fold": target_facts(source.train_probabilities, labels)}


def stats(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "per_seed": values}


def row(summaries: list[dict], phase: str) -> dict:
    per_seed = [s["rows"][phase]["per_seed"][0] for s in summaries]
    return {key: stats([m[key] for m in per_seed]) for key in METRICS}


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--teachers", default=",".join(TEACHERS))
    parser.add_argument("--temperatures", default=",".join(map(str, TEMPERATURES)))
    parser.add_argument("--runs", default=str(RUNS), help="where the runs go (read back when finished)")
    parser.add_argument("--result", default=str(ROOT / "benchmarks/results/oof_teacher.json"))
    args = parser.parse_args(argv)
    seeds, teachers = [int(s) for s in args.seeds.split(",")], args.teachers.split(",")
    temperatures = [int(t) for t in args.temperatures.split(",")]
    cells = [(t, temp, f, s) for t in teachers for temp in temperatures for f in FOLDS for s in seeds]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.jobs) as pool:
        summaries = dict(zip(cells, pool.map(lambda cell: run(cell, args.epochs, Path(args.runs)), cells)))
        targets = dict(zip([(t, s) for t in teachers for s in seeds],
                           pool.map(lambda ts: teacher_targets(*ts), [(t, s) for t in teachers for s in seeds])))
    results = {}
    for t in teachers:
        results[f"sklearn:{t}"] = {
            "teacher_test": row([summaries[(t, temperatures[0], 0, s)] for s in seeds], "teacher"),
            "scratch": row([summaries[(t, temperatures[0], 0, s)] for s in seeds], "scratch"),
            "train_targets": {mode: {key: stats([targets[(t, s)][mode][key] for s in seeds])
                                     for key in ("mean_max_probability", "accuracy", "nll")}
                              for mode in ("in_sample", "out_of_fold")},
            "students": {f"T{temp}_folds{f}": row([summaries[(t, temp, f, s)] for s in seeds], "student")
                         for temp in temperatures for f in FOLDS}}
    result = {"benchmark": "sklearn teachers trained here: in-sample (teacher_folds=0) vs out-of-fold (teacher_folds=5) "
                           f"soft targets, digits, kd -> mlp-32, seeds {args.seeds}",
              "command": " ".join(["PYTHONPATH=src python benchmarks/oof_teacher.py", *(sys.argv[1:] if argv is None else argv)]),
              "per_run_command": f"python -m kdkit distill {' '.join(recipe(args.epochs))} --teacher sklearn:forest|hgb "
                                 "--temperature 1|4 --seeds S --baseline (folds 0) | --no-baseline (folds 5) "
                                 "--set teacher_folds=0|5 --out OUT",
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, no GPU; "
                         f"{args.jobs} runs side by side, 1 OpenMP thread each",
              "wall_seconds": time.perf_counter() - t0, "results": results}
    Path(args.result).write_text(json.dumps(result, indent=1))
    print(markdown(result))
    return result


def markdown(result: dict) -> str:
    def cell(entry, key, scale=100, digits=2):
        return f"{scale * entry[key]['mean']:.{digits}f} ± {scale * entry[key]['std']:.{digits}f}"

    lines = []
    for teacher, entry in result["results"].items():
        targets = entry["train_targets"]
        lines += [f"\n{teacher}: teacher test acc {cell(entry['teacher_test'], 'accuracy')}%; train-row targets "
                  f"in-sample max-p {cell(targets['in_sample'], 'mean_max_probability', 1, 3)}, "
                  f"out-of-fold max-p {cell(targets['out_of_fold'], 'mean_max_probability', 1, 3)}\n",
                  "| student | test acc % | NLL | ECE |", "|---|---|---|---|",
                  f"| scratch | {cell(entry['scratch'], 'accuracy')} | {cell(entry['scratch'], 'nll', 1, 3)} | "
                  f"{cell(entry['scratch'], 'ece', 1, 3)} |"]
        for name, metrics in entry["students"].items():
            lines.append(f"| kd {name} | {cell(metrics, 'accuracy')} | {cell(metrics, 'nll', 1, 3)} | {cell(metrics, 'ece', 1, 3)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # before sklearn and torch start their thread pools (imported lazily)
    main()
