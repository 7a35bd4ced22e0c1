"""CRD's CIFAR-100 recipes (configs/reproduce/cifar100/) for every pair and method, through kdkit's CLI.

    .venv/bin/python benchmarks/reproduce/crd_cifar.py --dataset cifar10 --data-dir ../shared/data \\
        [--pairs resnet56-resnet20,...] [--methods ce,kd,crd,...] [--seeds 0,1,2] [--jobs 2] [--device cuda]
    .venv/bin/python benchmarks/reproduce/crd_cifar.py --dataset cifar10 --collect   # only read finished runs

--dataset cifar100 is the published setting (CIFAR-100 via --data-dir, or downloaded when online).
--dataset cifar10 runs the same recipes on CIFAR-10 (e.g. the JPEG copy in ../shared/data): those
numbers are ours, on CIFAR-10, and are never to be put beside the CIFAR-100 ones as a reproduction.

Each teacher is trained once (`kdkit train --config teacher-T.yaml`), then one `kdkit distill
--config PAIR.yaml --method M` per (pair, method, seed); method `ce` is the student from scratch.
Every process gets --resume, and a run whose summary.json exists is read, not rerun. --epochs N
(a smoke test) replaces the 240 epochs and goes into the run directory names. Results (top-1 of the
last epoch's weights, mean +- std over seeds): benchmarks/results/crd_recipes_{dataset}.json.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs/reproduce/cifar100"
PAIRS = ("resnet32x4-resnet8x4", "wrn_40_2-wrn_16_2", "resnet56-resnet20", "resnet110-resnet32", "vgg13-vgg8")
METHODS = ("ce", "kd", "fitnet", "at", "sp", "rkd", "pkt", "crd", "dkd", "dist")
# Published CIFAR-100 top-1 (%): teacher, student and every method but DKD and DIST from the
# RepDistiller README (the CRD authors' code, Tian et al., ICLR 2020); DKD from the mdistiller README
# (Zhao et al., CVPR 2022); DIST from the DIST_KD README (Huang et al., NeurIPS 2022), which lists
# only two of these pairs (None: not found in a source we could check).
PUBLISHED = {
    "resnet32x4-resnet8x4": dict(teacher=79.42, ce=72.50, kd=73.33, fitnet=73.50, at=73.44, sp=72.94, rkd=71.90,
                                 pkt=73.64, crd=75.51, dkd=76.32, dist=76.31),
    "wrn_40_2-wrn_16_2": dict(teacher=75.61, ce=73.26, kd=74.92, fitnet=73.58, at=74.08, sp=73.83, rkd=73.35,
                              pkt=74.54, crd=75.48, dkd=76.23, dist=None),
    "resnet56-resnet20": dict(teacher=72.34, ce=69.06, kd=70.66, fitnet=69.21, at=70.55, sp=69.67, rkd=69.61,
                              pkt=70.34, crd=71.16, dkd=71.97, dist=71.75),
    "resnet110-resnet32": dict(teacher=74.31, ce=71.14, kd=73.08, fitnet=71.06, at=72.31, sp=72.69, rkd=71.82,
                               pkt=72.61, crd=73.48, dkd=74.11, dist=None),
    "vgg13-vgg8": dict(teacher=74.64, ce=70.36, kd=72.98, fitnet=71.02, at=71.43, sp=72.68, rkd=71.48,
                       pkt=72.88, crd=73.94, dkd=74.68, dist=None),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=("cifar100", "cifar10"), default="cifar100")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--pairs", default=",".join(PAIRS))
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--seeds", default="0")
    p.add_argument("--epochs", type=int, default=None, help="replace the recipe's 240 epochs (smoke tests)")
    p.add_argument("--jobs", type=int, default=1, help="kdkit processes side by side")
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each process")
    p.add_argument("--device", default="auto")
    p.add_argument("--collect", action="store_true", help="run nothing: read finished runs, write the JSON")
    p.add_argument("--dry-run", action="store_true", help="print the commands and stop")
    args = p.parse_args(argv)
    args.pairs, args.methods = args.pairs.split(","), args.methods.split(",")
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.data_dir = str(Path(args.data_dir).resolve()) if args.data_dir else None  # the processes run in ROOT
    unknown = [x for x in args.pairs if x not in PAIRS] + [m for m in args.methods if m not in METHODS]
    if unknown:
        p.error(f"unknown pair or method {unknown[0]}; pairs: {', '.join(PAIRS)}; methods: {', '.join(METHODS)}")
    return args


def suffix(args) -> str:
    return f"-e{args.epochs}" if args.epochs else ""


def teacher_dir(args, teacher: str) -> Path:
    return ROOT / "runs/reproduce" / args.dataset / "teachers" / f"{teacher}{suffix(args)}"


def student_dir(args, pair: str, method: str, seed: int) -> Path:
    return ROOT / "runs/reproduce" / args.dataset / f"{pair}{suffix(args)}" / method / f"seed{seed}"


def shared(args) -> list[str]:
    data = ["--dataset", args.dataset] + (["--data-dir", args.data_dir] if args.data_dir else [])
    epochs = ["--epochs", str(args.epochs)] if args.epochs else []
    return data + epochs + ["--device", args.device, "--resume", "--set", "progress=false"]


def teacher_command(args, teacher: str) -> list[str]:
    return [sys.executable, "-m", "kdkit", "train", "--config", str(CONFIGS / f"teacher-{teacher}.yaml"),
            *shared(args), "--out", str(teacher_dir(args, teacher))]


def student_command(args, pair: str, method: str, seed) -> list[str]:
    teacher = pair.split("-")[0]
    return [sys.executable, "-m", "kdkit", "distill", "--config", str(CONFIGS / f"{pair}.yaml"), *shared(args),
            "--teacher", str(teacher_dir(args, teacher)), "--method", method, "--seeds", str(seed),
            "--out", str(student_dir(args, pair, method, seed))]


def run(args, cmd: list[str], out: Path, wait=None) -> bool:
    """Run one kdkit process unless out/summary.json exists; its wall time goes to out/wall.json."""
    if (out / "summary.json").is_file():
        return True
    if args.collect or (wait is not None and not wait.result()):
        return False
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    t0 = time.perf_counter()
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    print(f"{out.relative_to(ROOT)}: exit {result.returncode} in {wall:.0f} s", flush=True)
    if result.returncode != 0 or not (out / "summary.json").is_file():
        print(result.stderr[-2000:] or result.stdout[-2000:], flush=True)
        return False
    (out / "wall.json").write_text(json.dumps({"wall_seconds": wall}))
    return True


def run_all(args):
    """Every teacher first, then the students; a student's job waits for its own teacher."""
    teachers = list(dict.fromkeys(pair.split("-")[0] for pair in args.pairs))
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        done = {t: pool.submit(run, args, teacher_command(args, t), teacher_dir(args, t)) for t in teachers}
        jobs = [pool.submit(run, args, student_command(args, pair, method, seed), student_dir(args, pair, method, seed),
                            done[pair.split("-")[0]])
                for pair in args.pairs for method in args.methods for seed in args.seeds]
        [job.result() for job in [*done.values(), *jobs]]


def collect(args) -> dict:
    table = {}
    for pair in args.pairs:
        teacher_summary = teacher_dir(args, pair.split("-")[0]) / "summary.json"
        entry = {"teacher": json.loads(teacher_summary.read_text())["metrics"]["accuracy"] * 100
                 if teacher_summary.is_file() else None, "methods": {}}
        for method in args.methods:
            per_seed = []
            for seed in args.seeds:
                summary = student_dir(args, pair, method, seed) / "summary.json"
                if summary.is_file():
                    row = json.loads(summary.read_text())["rows"]["student"]["per_seed"][0]
                    per_seed.append({"seed": seed, "top1": 100 * row["accuracy"]})
            if per_seed:
                values = [r["top1"] for r in per_seed]
                entry["methods"][method] = {"mean": statistics.fmean(values), "per_seed": per_seed,
                                            "std": statistics.stdev(values) if len(values) > 1 else 0.0}
        if args.dataset == "cifar100":
            entry["published"] = PUBLISHED[pair]
        table[pair] = entry
    label = "CIFAR-100: the published setting" if args.dataset == "cifar100" else \
        "CIFAR-10, ours: the CIFAR-100 recipes run on CIFAR-10; not comparable with the published CIFAR-100 numbers"
    return {"benchmark": "CRD CIFAR recipes (configs/reproduce/cifar100/) through kdkit's CLI", "dataset": label,
            "epochs": args.epochs or 240, "seeds": args.seeds, "results": table,
            "commands": {"teacher": text(teacher_command(args, "TEACHER")),
                         "student": text(student_command(args, "PAIR", "METHOD", "SEED"))}}


def text(cmd: list[str]) -> str:
    """A command as a user types it: `kdkit ...`, paths relative to the repository."""
    return " ".join(cmd).replace(f"{sys.executable} -m kdkit", "kdkit").replace(f"{ROOT}/", "")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.dry_run:
        teachers = dict.fromkeys(pair.split("-")[0] for pair in args.pairs)
        for cmd in [teacher_command(args, t) for t in teachers] + [
                student_command(args, p, m, s) for p in args.pairs for m in args.methods for s in args.seeds]:
            print(text(cmd))
        return 0
    run_all(args)
    result = collect(args)
    path = ROOT / f"benchmarks/results/crd_recipes_{args.dataset}{suffix(args)}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
