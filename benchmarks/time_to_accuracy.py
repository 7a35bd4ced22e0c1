"""Time to accuracy on CIFAR-10: the whole `kdkit distill` pipeline (teacher training, teacher-output
cache, distillation, evaluation) through kdkit's CLI, its wall time and the accuracies.

    python benchmarks/time_to_accuracy.py --data-dir DIR [--device cuda] [--compile reduce-overhead]
    .venv/bin/python benchmarks/time_to_accuracy.py --data-dir ../shared/data --quick   # CPU smoke run

DIR holds CIFAR-10 (cifar-10-python.tar.gz, or the ImageFolder JPEG copy cifar10-jpeg.tar.gz).
Defaults: teacher resnet32x4 and student resnet8x4, batch 512, SGD nesterov lr 0.2 (linear warmup
over 2 epochs, then cosine), weight decay 5e-4, bf16 autocast, crop + flip; KD T 4, alpha 0.9 from
the teacher-output cache with 8 recorded views; no scratch baseline (--baseline adds it; its time
is then counted too). Writes benchmarks/results/time_to_accuracy[_quick].json with the command, the
machine, the per-phase seconds from summary.json and the wall time of the kdkit process.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--teacher", default="resnet32x4")
    p.add_argument("--student", default="resnet8x4")
    p.add_argument("--teacher-epochs", type=int, default=None, help="default 18 (--quick: 1)")
    p.add_argument("--epochs", type=int, default=None, help="student epochs, default 18 (--quick: 1)")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--lr", type=float, default=0.2)
    p.add_argument("--views", type=int, default=8, help="teacher-cache views (0 = online KD, no cache)")
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", default="off")
    p.add_argument("--baseline", action="store_true", help="also train the scratch student (counted in the wall time)")
    p.add_argument("--quick", action="store_true", help="CPU smoke run: resnet8 -> resnet8, 1 + 1 epochs")
    p.add_argument("--out", default=None, help="run directory (default runs/time_to_accuracy[-quick])")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.teacher, args.student = "resnet8", "resnet8"
    args.teacher_epochs = args.teacher_epochs or (1 if args.quick else 18)
    args.epochs = args.epochs or (1 if args.quick else 18)
    return args


def command(args, out: Path) -> list[str]:
    cmd = [sys.executable, "-m", "kdkit", "distill", "--dataset", "cifar10", "--data-dir", args.data_dir,
           "--teacher", args.teacher, "--student", args.student, "--teacher-epochs", str(args.teacher_epochs),
           "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--lr", str(args.lr),
           "--device", args.device, "--compile", args.compile, "--out", str(out), "--no-report",
           "--baseline" if args.baseline else "--no-baseline", "--temperature", "4", "--alpha", "0.9",
           "--set", "optimizer=sgd", "--set", "momentum=0.9", "--set", "weight_decay=5e-4", "--set", "schedule=cosine",
           "--set", "warmup_epochs=2" if not args.quick else "warmup_epochs=0", "--set", "progress=false",
           "--set", "log_every=100"]
    if args.views:
        cmd += ["--teacher-cache", "--set", f"cache_views={args.views}"]
    return cmd


def main(argv=None):
    args = parse_args(argv)
    out = Path(args.out or ROOT / f"runs/time_to_accuracy{'-quick' if args.quick else ''}")
    cmd = command(args, out)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    print(" ".join(cmd), flush=True)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env)
    wall = time.perf_counter() - t0
    if done.returncode:
        sys.exit(f"kdkit distill failed (exit {done.returncode})")
    summary = json.loads((out / "summary.json").read_text())
    rows = summary["rows"]
    fits = {name: json.loads(p.read_text()) for name, p in
            [("teacher", out / "teacher/fit.json"), ("student", out / "student/seed0/fit.json"), ("scratch", out / "scratch/seed0/fit.json")]
            if p.is_file()}
    report = {
        "command": " ".join(["python", "benchmarks/time_to_accuracy.py"] + (argv if argv is not None else sys.argv[1:])),
        "kdkit_command": " ".join(cmd[1:]),
        "machine": summary.get("environment", {}) | {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "wall_seconds_kdkit_process": wall,
        "wall_seconds_pipeline": summary.get("wall_seconds"),
        "train_seconds": {name: fit.get("seconds") for name, fit in fits.items()},
        "train_images_per_second": {name: fit.get("train_images_per_second") for name, fit in fits.items()},
        "teacher_cache_seconds": fits.get("student", {}).get("teacher_cache_seconds"),
        "accuracy": {name: row["metrics"]["accuracy"]["mean"] for name, row in rows.items()},
    }
    report["train_seconds_total"] = sum(v or 0 for v in report["train_seconds"].values()) + (report["teacher_cache_seconds"] or 0)
    path = Path(args.json or ROOT / f"benchmarks/results/time_to_accuracy{'_quick' if args.quick else ''}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1))
    print(json.dumps({k: report[k] for k in ("accuracy", "train_seconds", "teacher_cache_seconds", "train_seconds_total",
                                              "wall_seconds_kdkit_process")}, indent=1))
    print(f"wrote {path}")
    return report


if __name__ == "__main__":
    main()
