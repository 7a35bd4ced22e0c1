"""Every feature method at its default weights on digits, against the student trained alone.

    PYTHONPATH=src python benchmarks/feature_defaults_digits.py --label after [--set feature_scale=paper]

On kdkit's `digits` (scikit-learn's 8x8 digits: 1,295 train / 143 validation / 359 test), a `cnn`
teacher trained once here (10 epochs) teaches a `cnn-tiny` student (3,706 parameters on 8x8 inputs)
with each of fitnet, at, sp, rkd, pkt, nst, crd and vector at its defaults, 10 epochs, seed 0, kdkit's
default recipe (SGD 0.05, cosine, batch 128); one `kd` run also trains the scratch student. Each
`--label` is one column of benchmarks/results/feature_defaults_digits.json (rerun a label to replace
it; the other labels stay), with the exact commands and the commit they ran at. Extra `--set`
arguments go to every distillation run. Runs go to runs/bench-feature-defaults/LABEL/ and are
rerun every time (about 6 s each on one core).
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs/bench-feature-defaults"
METHODS = ("fitnet", "at", "sp", "rkd", "pkt", "nst", "crd", "vector")
EPOCHS = 10


def kdkit(args: list[str]) -> tuple[list[str], float]:
    """Run `python -m kdkit ARGS` from the repo root on one thread; the command and its seconds."""
    command = [sys.executable, "-m", "kdkit", *args]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    t0 = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args)}\n{result.stderr[-2000:]}")
    return ["python", "-m", "kdkit", *args], time.perf_counter() - t0


def accuracy(out: Path, row: str) -> float:
    return json.loads((out / "summary.json").read_text())["rows"][row]["per_seed"][0]["accuracy"]


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--label", required=True, help="the column: before, after, ...")
    parser.add_argument("--set", action="append", default=[], dest="sets", help="k=v for every distillation run")
    parser.add_argument("--result", default=str(ROOT / "benchmarks/results/feature_defaults_digits.json"))
    args = parser.parse_args(argv)
    teacher = RUNS / "teacher"
    if not (teacher / "best.safetensors").is_file():
        kdkit(["train", "--dataset", "digits", "--model", "cnn", "--epochs", str(EPOCHS), "--out", str(teacher)])
    recipe = ["distill", "--dataset", "digits", "--teacher", str(teacher.relative_to(ROOT)), "--student", "cnn-tiny",
              "--epochs", str(EPOCHS), "--seeds", "0", "--no-report", "--overwrite", "--set", "progress=false",
              *[a for s in args.sets for a in ("--set", s)]]
    column, commands = {}, {}
    for method in ("kd",) + METHODS:
        out = RUNS / args.label / method
        baseline = "--baseline" if method == "kd" else "--no-baseline"
        commands[method], seconds = kdkit([*recipe, "--method", method, baseline, "--out", str(out.relative_to(ROOT))])
        if method == "kd":
            column["teacher"], column["scratch"] = accuracy(out, "teacher"), accuracy(out, "scratch")
        column[method] = accuracy(out, "student")
        print(f"{args.label} {method}: {100 * column[method]:.2f}% ({seconds:.0f} s)", flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    path = Path(args.result)
    result = json.loads(path.read_text()) if path.is_file() else {
        "benchmark": "feature methods at their default weights on digits: cnn teacher -> cnn-tiny student, "
                     f"{EPOCHS} epochs, seed 0; test accuracy",
        "teacher": f"python -m kdkit train --dataset digits --model cnn --epochs {EPOCHS} --out {teacher.relative_to(ROOT)}",
        "machine": "AMD EPYC, 2 cores shared with other jobs, no GPU; one OpenMP thread per run", "columns": {}}
    result["columns"][args.label] = {"commit": commit, "extra_sets": args.sets,
                                     "command": "PYTHONPATH=src python benchmarks/feature_defaults_digits.py "
                                                + " ".join(sys.argv[1:] if argv is None else argv),
                                     "test_accuracy": column, "per_run": {m: " ".join(c) for m, c in commands.items()}}
    path.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
