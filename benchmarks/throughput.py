"""Distillation throughput side by side, in one process, on the same data and pair: images/s and
peak memory of
  student_only       a hand-written PyTorch loop training the student alone (the ceiling of any KD step)
  plain_kd           a hand-written PyTorch online-KD loop (teacher forward + student step)
  plain_kd_nchw      the same loop as usually written: models and batches in the default NCHW layout
                     (the other hand-written loops use the layout kdkit resolves: channels_last on
                     CUDA and CPU, see kdkit.train.uses_channels_last)
  torchdistill_*     torchdistill 1.1.5's KD box, teacher left in train mode as its samples leave it,
                     and with the teacher in eval (only where torchdistill is installed)
  kdkit_student      kdkit's own loop (fit) training the student alone (method ce)
  kdkit_online       kdkit's loop, method kd, teacher run at every step
  kdkit_cached       kdkit's loop, method kd from the teacher-output cache (built before; its build
                     time is reported apart)
  kdkit_*_crd        the same two for CRD (the teacher's pooled last-stage features come from the
                     cache too; negatives capped at the synthetic set's size - 1)
The hand-written loops are benchmarks/throughput_peers.py. kdkit rows report fit()'s steady-state
training rate (FitResult.train_images_per_second: the first `warmup` steps, validation and
checkpoints excluded); the peers time `steps` steps after `warmup` untimed ones: the same counts.
With `--repeats R` every row runs R times, in R interleaved rounds (so drift on a shared machine
reaches every row alike); a row reports the median of its R rates and all R of them.

    .venv/bin/python benchmarks/throughput.py --quick           # CPU: 2 cores, batch 64, eager
    python benchmarks/throughput.py --device cuda --compile reduce-overhead   # GPU: batch 256

Data: CIFAR-shaped synthetic uint8 images (N = batch * (warmup + steps)), 100 classes, crop + flip
augmentation on the device in every loop. Results: benchmarks/results/throughput[_quick].json.
"""
import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "benchmarks")]

from throughput_peers import plain_kd, student_only, torchdistill_kd  # noqa: E402

from kdkit.config import DistillConfig, apply_overrides  # noqa: E402
from kdkit.data import from_arrays  # noqa: E402
from kdkit.methods import CRD, create_method  # noqa: E402
from kdkit.models.registry import create_model  # noqa: E402
from kdkit.teachers.cache import TeacherCache  # noqa: E402
from kdkit.train import autocast_dtype, fit, select_device, uses_channels_last  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="CPU sizes: batch 64, 3 + 27 steps, no compile")
    p.add_argument("--teacher", default="resnet32x4")
    p.add_argument("--student", default="resnet8x4")
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=None, help="default 256 (--quick: 64)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps (default 20; --quick: 3)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 180; --quick: 27)")
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", default="auto", help="kdkit's amp setting; the plain loops follow what it resolves to")
    p.add_argument("--compile", default="off", help="torch.compile mode for every loop that supports it")
    p.add_argument("--repeats", type=int, default=1, help="rounds over all rows; rates are the rounds' median")
    p.add_argument("--only", default="", help="comma-separated rows to run (default all)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    args.batch_size = args.batch_size or (64 if args.quick else 256)
    args.warmup = args.warmup or (3 if args.quick else 20)
    args.steps = args.steps or (27 if args.quick else 180)
    return args


def kdkit_row(method_name, teacher, student, data, args, device, cache=None):
    """kdkit's own fit() for one epoch of warmup + steps batches; its steady-state rate."""
    with tempfile.TemporaryDirectory() as run_dir:
        cfg = apply_overrides(DistillConfig(), dict(
            epochs=1, batch_size=args.batch_size, lr=0.05, optimizer="sgd", momentum=0.9, weight_decay=5e-4,
            amp=args.amp, compile=args.compile, progress=False, log_every=50, device=str(device), val_fraction=0.0,
            out=run_dir, augment="crop_flip"))
        source = cache if cache is not None else teacher
        if method_name == "ce":
            method = create_method("ce", student)
        elif method_name == "crd":
            method = create_method("crd", student, source, input_shape=tuple(data.input_shape), num_train=len(data.train))
        else:
            method = create_method("kd", student, source, temperature=4.0, alpha=0.9)
        result = fit(method, data, cfg, run_dir)
    # fit's warm-up is min(20, total_steps // 10) steps: the same count as the peers' when steps = 9 * warmup
    return {"images_per_s": result.train_images_per_second, "peak_memory_mb": result.peak_memory.get("peak_memory_mb"),
            "memory_kind": result.peak_memory.get("peak_memory_kind"), "seconds_whole_fit": result.seconds}


def main(argv=None):
    args = parse_args(argv)
    device = select_device(args.device)
    dtype = autocast_dtype(args.amp, device)
    amp = dtype is not None
    channels_last = uses_channels_last("auto", device)  # the hand-written loops get kdkit's layout
    torch.manual_seed(0)
    n = args.batch_size * (args.warmup + args.steps)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)  # (N, 3, 32, 32)
    labels = torch.randint(0, args.classes, (n,))
    data = from_arrays(images.numpy(), labels.numpy(), images[:256].numpy(), labels[:256].numpy(),
                       classes=[str(k) for k in range(args.classes)], val_fraction=0.0, augment="crop_flip")
    compile_mode = None if args.compile == "off" else args.compile

    def models():
        torch.manual_seed(0)
        return create_model(args.teacher, args.classes).eval(), create_model(args.student, args.classes)

    on_device = images.to(device)
    peers = dict(batch_size=args.batch_size, steps=args.steps, warmup=args.warmup, device=device)
    rows = {
        "student_only": lambda: student_only(models()[1], on_device, labels.to(device), amp=amp, channels_last=channels_last,
                                             compile_mode=compile_mode, **peers),
        "plain_kd": lambda: plain_kd(*models(), on_device, labels.to(device), amp=amp, channels_last=channels_last,
                                     compile_mode=compile_mode, **peers),
        "plain_kd_nchw": lambda: plain_kd(*models(), on_device, labels.to(device), amp=amp, channels_last=False,
                                          compile_mode=compile_mode, **peers),
        "torchdistill_teacher_train": lambda: torchdistill_kd(*models(), images, labels, teacher_train_mode=True, **peers),
        "torchdistill_teacher_eval": lambda: torchdistill_kd(*models(), images, labels, teacher_train_mode=False, **peers),
        "kdkit_student": lambda: kdkit_row("ce", None, models()[1], data, args, device),
        "kdkit_online": lambda: kdkit_row("kd", *models(), data, args, device),
        "kdkit_cached": lambda: cached_row(args, data, device, dtype, models),
        "kdkit_online_crd": lambda: kdkit_row("crd", *models(), data, args, device),
        "kdkit_cached_crd": lambda: cached_row(args, data, device, dtype, models, method="crd"),
    }
    only = [r for r in args.only.split(",") if r]
    rounds: dict[str, list[dict]] = {}
    partial = Path(str(args.json or "/tmp/throughput") + ".partial")
    for _ in range(args.repeats):
        for name, run in rows.items():
            if only and name not in only:
                continue
            try:
                row = run()
            except ImportError as error:  # torchdistill not installed here
                row = {"skipped": str(error)}
            except Exception as error:  # noqa: BLE001 -- one failing row must not lose the others
                row = {"error": f"{type(error).__name__}: {str(error)[:300]}"}
            rounds.setdefault(name, []).append(row)
            print(f"{name:28s} {row}", flush=True)
            partial.write_text(json.dumps(rounds, indent=1))  # rows so far, should a time limit stop the rest
    results = {name: median_row(runs) for name, runs in rounds.items()}
    rate = {k: v.get("images_per_s") for k, v in results.items()}

    def ratio(a, b):
        return rate[a] / rate[b] if rate.get(a) and rate.get(b) else None

    report = {
        "command": "python benchmarks/throughput.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "python": platform.python_version()},
        "settings": {"teacher": args.teacher, "student": args.student, "classes": args.classes, "batch_size": args.batch_size,
                     "warmup": args.warmup, "steps": args.steps, "repeats": args.repeats, "amp": str(dtype), "compile": args.compile,
                     "channels_last": channels_last, "device": str(device)},
        "rows": results,
        "ratios": {"kdkit_online / torchdistill_teacher_train": ratio("kdkit_online", "torchdistill_teacher_train"),
                   "kdkit_online / torchdistill_teacher_eval": ratio("kdkit_online", "torchdistill_teacher_eval"),
                   "kdkit_online / plain_kd": ratio("kdkit_online", "plain_kd"),
                   "kdkit_online / plain_kd_nchw": ratio("kdkit_online", "plain_kd_nchw"),
                   "kdkit_cached / student_only": ratio("kdkit_cached", "student_only"),
                   "kdkit_cached / kdkit_online": ratio("kdkit_cached", "kdkit_online"),
                   "kdkit_student / student_only": ratio("kdkit_student", "student_only"),
                   "kdkit_cached_crd / kdkit_online_crd": ratio("kdkit_cached_crd", "kdkit_online_crd")},
    }
    path = Path(args.json or ROOT / f"benchmarks/results/throughput{'_quick' if args.quick else ''}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1))
    partial.unlink(missing_ok=True)  # the rows so far are in the report now
    print(json.dumps(report["ratios"], indent=1))
    print(f"wrote {path}")
    return report


def median_row(runs: list[dict]) -> dict:
    """The run with the median rate (the lower middle one for an even count), plus every run's rate."""
    rated = sorted((r for r in runs if r.get("images_per_s")), key=lambda r: r["images_per_s"])
    if not rated:
        return runs[-1]
    if len(runs) == 1:
        return rated[0]
    return rated[(len(rated) - 1) // 2] | {"images_per_s_runs": [r.get("images_per_s") for r in runs]}


def cached_row(args, data, device, dtype, models, method="kd"):
    teacher, student = models()
    layers = CRD.teacher_layers_of(teacher, [], tuple(data.input_shape)) if method == "crd" else []
    with tempfile.TemporaryDirectory() as folder:
        t0 = time.perf_counter()
        cache = TeacherCache.build(teacher, data.train, folder, augment="crop_flip", views=1, seed=0, mean=data.mean,
                                   std=data.std, device=device, autocast=dtype, layers=layers, log=lambda m: None,
                                   channels_last=uses_channels_last("auto", device))
        build = time.perf_counter() - t0
        row = kdkit_row(method, None, student, data, args, device, cache=cache)
    return row | {"cache_build_seconds_one_view": build}


if __name__ == "__main__":
    main()
