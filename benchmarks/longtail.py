"""Long-tailed Fashion-MNIST and MNIST: does balanced distillation protect the minority classes?

    .venv/bin/python benchmarks/longtail.py [--jobs 2] [--datasets fashion-mnist,mnist] [--factors 100,10]

For each dataset and imbalance factor (exponential profile, Cui et al. 2019; test stays balanced):
one cnn teacher trained on the long-tailed train split (plain CE, 8 epochs), then cnn-tiny students
over seeds 0, 1, 2 (all on the same long-tailed split, the one of seed 0), configs/full_labels.yaml's budget
(15 epochs, AdamW 3e-3, flips): scratch CE, scratch logit-adjusted CE (tau 1), vanilla KD, BKD and
logit-adjusted KD, logit-adjusted KD with logit standardisation (T 2 and 4), the others at T = 4 (KD and LAKD alpha = 0.9; BKD CE 1 + class-balanced KD 1,
in its per-sample form, bkd_form=per_sample, the one the stored results were measured with).
Resumable (finished runs are read, not rerun). Writes benchmarks/results/longtail.json and prints a
markdown table.
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
KDKIT = str(ROOT / ".venv/bin/kdkit")
ROWS = {  # row -> (method, extra settings); the scratch CE row comes from the kd run's baseline
    "kd": ("kd", ["--set", "temperature=4", "--set", "alpha=0.9"]),
    "scratch_logit_adjusted": ("ce", ["--set", "balance=logit_adjusted", "--set", "tau=1"]),
    "bkd": ("bkd", ["--set", "temperature=4", "--set", "bkd_form=per_sample"]),  # the form results/longtail.json measured
    "lakd": ("lakd", ["--set", "temperature=4", "--set", "alpha=0.9", "--set", "tau=1"]),
    # logit standardisation (Sun et al. 2024; issue 22): the balanced teacher and the student z-scored
    "lakd_ls": ("lakd", ["--set", "temperature=2", "--set", "alpha=0.9", "--set", "tau=1", "--set", "logit_standardize=true"]),
    "lakd_ls_t4": ("lakd", ["--set", "temperature=4", "--set", "alpha=0.9", "--set", "tau=1", "--set", "logit_standardize=true"]),
}


def run_dir(dataset: str, factor: str, row: str) -> Path:
    return ROOT / f"runs/bench-longtail/{dataset}-lt{factor}/{row}"


def command(dataset: str, factor: str, row: str) -> list[str]:
    method, extra = ROWS[row]
    teacher = ["--teacher", "cnn", "--teacher-epochs", "8"] if row == "kd" else \
        ["--teacher", str(run_dir(dataset, factor, "kd") / "teacher"), "--no-baseline"]
    return [KDKIT, "distill", "--config", "configs/full_labels.yaml", "--dataset", dataset, "--method", method, *teacher,
            "--seeds", "0,1,2", "--set", f"imbalance=exp:{factor}", "--set", "progress=false", "--resume",
            "--out", str(run_dir(dataset, factor, row)), *extra]


COLLECT = False  # --collect: only read finished runs


def run(dataset: str, factor: str, row: str) -> dict:
    out = run_dir(dataset, factor, row)
    if COLLECT and not (out / "summary.json").is_file():
        return {}
    if not (out / "summary.json").is_file():
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        t0 = time.perf_counter()
        result = subprocess.run(command(dataset, factor, row), cwd=ROOT, env=env, capture_output=True, text=True)
        print(f"{dataset} lt{factor} {row}: exit {result.returncode} in {time.perf_counter() - t0:.0f} s", flush=True)
        if result.returncode != 0:
            print(result.stderr[-2000:], flush=True)
            return {}
    return json.loads((out / "summary.json").read_text())


def pipeline(dataset: str, factor: str) -> dict:
    """The kd run first (it trains the teacher and the scratch baseline), then the others."""
    summaries = {"kd": run(dataset, factor, "kd")}
    for row in [row for row in ROWS if row != "kd"]:
        summaries[row] = run(dataset, factor, row) if summaries["kd"] else {}
    return summaries


KEYS = ("accuracy", "balanced_accuracy", "worst_class_recall", "many_shot_accuracy", "medium_shot_accuracy",
        "few_shot_accuracy")


def stats(per_seed: list[dict]) -> dict:
    out = {}
    for key in KEYS:
        values = [m[key] for m in per_seed if m.get(key) is not None]
        if values:
            out[key] = {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                        "per_seed": values}
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--datasets", default="fashion-mnist,mnist")
    parser.add_argument("--factors", default="100,10")
    parser.add_argument("--collect", action="store_true", help="only read finished runs and write the table")
    args = parser.parse_args()
    global COLLECT
    COLLECT = args.collect
    combos = [(d, f) for f in args.factors.split(",") for d in args.datasets.split(",")]  # factor 100 first
    with ThreadPoolExecutor(args.jobs) as pool:
        results = dict(zip(combos, pool.map(lambda c: pipeline(*c), combos)))
    table = {}
    for (dataset, factor), summaries in results.items():
        kd = summaries.get("kd")
        if not kd:
            continue
        rows = {"teacher": stats(kd["rows"]["teacher"]["per_seed"]), "scratch_ce": stats(kd["rows"]["scratch"]["per_seed"])}
        for row, summary in summaries.items():
            if summary:
                rows[row] = stats(summary["rows"]["student"]["per_seed"])
        table[f"{dataset}-lt{factor}"] = {"train_class_counts": kd.get("train_class_counts"), "rows": rows,
                                          "shot_thresholds": kd["rows"]["scratch"]["per_seed"][0].get("shot_thresholds")}
    result = {"benchmark": "long-tailed Fashion-MNIST / MNIST (exp profile), cnn -> cnn-tiny, seeds 0,1,2",
              "command": f"python benchmarks/longtail.py --jobs {args.jobs} --datasets {args.datasets} --factors {args.factors}",
              "per_run_commands": {row: " ".join(command("DATASET", "FACTOR", row)).replace(str(ROOT) + "/", "") for row in ROWS},
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, no GPU; "
                         f"{args.jobs} pipelines side by side, 1 thread each",
              "results": table}
    path = ROOT / "benchmarks/results/longtail.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    for name, entry in old.get("results", {}).items():  # results of datasets and factors not run this time stay
        result["results"].setdefault(name, entry)
    path.write_text(json.dumps(result, indent=1))
    print(markdown(result))


def markdown(result: dict) -> str:
    lines = []
    for name, entry in result["results"].items():
        lines += [f"\n{name}\n", "| row | acc % | balanced acc % | worst-class recall % | many % | medium % | few % |",
                  "|---|---|---|---|---|---|---|"]
        for row, metrics in entry["rows"].items():
            cells = [f"{100 * metrics[k]['mean']:.2f} ± {100 * metrics[k]['std']:.2f}" if k in metrics else "-" for k in KEYS]
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
