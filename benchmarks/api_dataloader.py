"""Distilling from a user's DataLoader through kdkit.distill, against a hand-written KD loop over the
very same DataLoader, and kdkit's in-memory fast path at this commit against an earlier one (issue 23).

    .venv/bin/python benchmarks/api_dataloader.py [--images 20000] [--epochs 2] [--repeats 2] [--old REV]

Fashion-MNIST's first N training images as float tensors in [0, 1] (what torchvision's ToTensor gives)
in a TensorDataset, a DataLoader (batch 128, shuffled); teacher `cnn` (as initialised: its accuracy
does not change the time of a step), student `cnn-tiny`, KD at T 4, alpha 0.9, AdamW; one thread.
Rows, alternated `--repeats` times (median):
  hand      a plain PyTorch loop: teacher forward (no grad), student forward, KD + CE, AdamW step
  kdkit     kdkit.distill(teacher, student, loader, val_loader, baseline=False): the seconds of its
            training phase (fit.json), and the whole call (reading the loader once, evaluation, table)
  fastpath  kdkit.train.fit on the same images held in memory, at this commit and at --old (a worktree
            of the commit before issue 23), each in its own process; images per second while training
Ratios are medians of the per-repeat ratios (each repeat runs the rows back to back). Writes
benchmarks/results/api_dataloader.json.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def fashion(images: int):
    import torch

    from kdkit.data import load_dataset

    data = load_dataset("fashion-mnist", os.environ.get("KDKIT_BENCH_DATA"), 0.1, seed=0)
    x = data.train.images[:images].float() / 255  # (N, 1, 28, 28) in [0, 1]
    return x, data.train.labels[:images], data.val.images.float() / 255, data.val.labels


def models():
    import torch

    from kdkit.models import create_model

    torch.manual_seed(0)
    teacher = create_model("cnn", num_classes=10, in_channels=1, image_size=28).eval()
    student = create_model("cnn-tiny", num_classes=10, in_channels=1, image_size=28)
    return teacher, student


def hand(loader, epochs: int) -> float:
    import torch
    import torch.nn.functional as F

    teacher, student = models()
    optimizer = torch.optim.AdamW(student.parameters(), lr=3e-3, weight_decay=0.01)
    t0 = time.perf_counter()
    for _ in range(epochs):
        for x, y in loader:
            with torch.no_grad():
                t = teacher(x)
            s = student(x)
            kd = F.kl_div(F.log_softmax(s / 4, 1), F.log_softmax(t / 4, 1), reduction="batchmean", log_target=True) * 16
            loss = 0.9 * kd + 0.1 * F.cross_entropy(s, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return time.perf_counter() - t0


def with_kdkit(loader, val_loader, epochs: int) -> dict:
    import kdkit

    teacher, student = models()
    with tempfile.TemporaryDirectory() as folder:
        t0 = time.perf_counter()
        kdkit.distill(teacher, student, loader, val_loader, epochs=epochs, baseline=False, seeds=[0], batch_size=128,
                      optimizer="adamw", lr=3e-3, temperature=4.0, alpha=0.9, out=f"{folder}/run", progress=False)
        whole = time.perf_counter() - t0
        fit = json.loads(Path(f"{folder}/run/student/seed0/fit.json").read_text())
    return {"train_seconds": fit["seconds"], "whole_call_seconds": whole}


FAST = """
import sys, json, tempfile, torch
torch.set_num_threads(1)
sys.path.insert(0, {bench!r})
from api_dataloader import fashion, models
from kdkit.config import DistillConfig, apply_overrides
from kdkit.data import from_arrays
from kdkit.methods import create_method
from kdkit.train import fit
x, y, xv, yv = fashion({images})
data = from_arrays((x * 255).round().to(torch.uint8), y, (xv * 255).round().to(torch.uint8), yv, val_fraction=0.0)
teacher, student = models()
cfg = apply_overrides(DistillConfig(), dict(epochs={epochs}, batch_size=128, optimizer="adamw", lr=3e-3, progress=False,
                                          device="cpu", compile="off"))
with tempfile.TemporaryDirectory() as folder:
    result = fit(create_method("kd", student, teacher, temperature=4.0, alpha=0.9), data, cfg, folder)
print(json.dumps({{"seconds": result.seconds, "train_images_per_second": result.train_images_per_second}}))
"""


def fast_path(src: Path, images: int, epochs: int) -> dict:
    code = FAST.format(bench=str(ROOT / "benchmarks"), images=images, epochs=epochs)
    env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--old", default=None, help="src/ folder of an earlier commit's worktree (the fast path before)")
    parser.add_argument("--result", default=str(ROOT / "benchmarks/results/api_dataloader.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    x, y, xv, yv = fashion(args.images)
    loader = DataLoader(TensorDataset(x, y), batch_size=128, shuffle=True, generator=torch.Generator().manual_seed(0))
    val_loader = DataLoader(TensorDataset(xv, yv), batch_size=512)
    runs = {"hand": [], "kdkit_train": [], "kdkit_whole_call": [], "fast_now": [], "fast_old": []}
    for _ in range(args.repeats):  # alternated, so a slower stretch of the machine hits every row
        runs["hand"].append(hand(loader, args.epochs))
        k = with_kdkit(loader, val_loader, args.epochs)
        runs["kdkit_train"].append(k["train_seconds"])  # (training and the per-epoch validation)
        runs["kdkit_whole_call"].append(k["whole_call_seconds"])
        runs["fast_now"].append(fast_path(ROOT / "src", args.images, args.epochs)["train_images_per_second"])
        if args.old:
            runs["fast_old"].append(fast_path(Path(args.old), args.images, args.epochs)["train_images_per_second"])
    med = {k: statistics.median(v) for k, v in runs.items() if v}
    result = {"command": "python benchmarks/api_dataloader.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, no GPU, 1 thread", "images": args.images,
              "epochs": args.epochs, "runs": runs, "median": med,
              "kdkit_speed_vs_hand_loop": statistics.median(h / k for h, k in zip(runs["hand"], runs["kdkit_train"])),
              "kdkit_whole_call_vs_hand_loop": statistics.median(h / k for h, k in zip(runs["hand"], runs["kdkit_whole_call"]))}
    if "fast_old" in med:  # paired: each repeat ran both back to back, so a busy stretch hits both
        result["fast_path_now_vs_old"] = statistics.median(a / b for a, b in zip(runs["fast_now"], runs["fast_old"]))
    Path(args.result).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))
    return result


if __name__ == "__main__":
    main()
