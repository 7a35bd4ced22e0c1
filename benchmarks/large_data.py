"""A dataset larger than the memory it may use: memory and loader speed of splits held in RAM vs
splits memory-mapped from disk (kdkit's path above $KDKIT_MEMORY_LIMIT), with and without workers.

A synthetic CIFAR-shaped uint8 dataset of --gigabytes is written straight into kdkit's decoded
cache (through files.cached and its memory-mapped alloc, the path an ImageFolder decode takes), then
each mode runs in its own process, so each peak is its own:
  memory        splits copied into RAM (the path below the limit); loader in the training loop
  memory_workers  the same with --workers background threads gathering and augmenting batches
  disk_first    splits on disk, first load: the split files are written (once per validation carve)
  disk          splits on disk, the files reused; loader in the training loop (workers=0)
  disk_workers  the same with --workers background threads gathering and augmenting batches
Per mode: load seconds, peak anonymous memory (RssAnon sampled every 10 ms: the memory a process
owns; mapped file pages are page cache the kernel can drop), and the loader's images/s over
--batches batches of --batch-size with crop + flip (no model: the rate a GPU could be fed at).

    .venv/bin/python benchmarks/large_data.py --gigabytes 2 --repeats 3

Results: benchmarks/results/large_data.json. The machine's RAM is reported beside them; file pages
read in an earlier mode stay in the page cache, so the rates are those of a warm cache.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from statistics import median

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

MODES = ("memory", "memory_workers", "disk_first", "disk", "disk_workers")
ROUND = ("memory", "memory_workers", "disk", "disk_workers")  # the modes of each interleaved round
IMAGE = (3, 32, 32)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gigabytes", type=float, default=2.0, help="size of the synthetic dataset's images")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--batches", type=int, default=200, help="batches timed per mode")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds over the modes but disk_first")
    p.add_argument("--cache", default=None, help="KDKIT_CACHE for the run (default: a temporary folder)")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "large_data.json"))
    p.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # one measurement, in a child process
    p.add_argument("--source", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def make_source(folder: Path, gigabytes: float) -> Path:
    """A source folder whose decoded cache holds N random CIFAR-shaped images, 10 classes; N from gigabytes."""
    from kdkit.data import files
    from kdkit.data.dataset import RawData

    source = folder / "synthetic"
    source.mkdir(parents=True, exist_ok=True)
    (source / "README").write_text("stand-in source; the images live in kdkit's decoded cache\n")
    count = int(gigabytes * 1e9 // np.prod(IMAGE))

    def build(alloc):
        x = alloc("x_train", (count, *IMAGE), np.uint8)
        rng = np.random.default_rng(0)
        for start in range(0, count, 8192):
            x[start:start + 8192] = rng.integers(0, 256, (min(8192, count - start), *IMAGE), dtype=np.uint8)
        return RawData(x, np.arange(count) % 10, None, None, [str(i) for i in range(10)], str(source))

    files.cached(source, build)
    return source


class AnonPeak:
    """Peak RssAnon of this process, sampled every 10 ms in a thread (not kdkit's PeakMemory: its
    VmHWM counts the mapped file pages, which are page cache here, as the process's own)."""

    def __enter__(self):
        self.peak, self.running = 0, True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, rss_anon())
            time.sleep(0.01)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, rss_anon())


def rss_anon() -> int:
    """Bytes of anonymous resident memory of this process (Linux /proc)."""
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    return 0


def measure(args) -> dict:
    """One mode, in this process: load, then time the loader."""
    from kdkit.data import BatchLoader, load_dataset

    os.environ["KDKIT_MEMORY_LIMIT"] = str(10**15 if args.mode.startswith("memory") else 0)
    workers = args.workers if args.mode.endswith("_workers") else 0
    with AnonPeak() as peak:
        start = time.perf_counter()
        data = load_dataset(args.source, val_fraction=0.1, seed=0)
        load_seconds = time.perf_counter() - start
        loader = BatchLoader(data.train, args.batch_size, shuffle=True, seed=0, augment="crop_flip",
                             mean=data.mean, std=data.std, workers=workers)
        batches = iter(loader)
        for _ in range(3):  # warm up (thread pool, first pages)
            next(batches)
        start = time.perf_counter()
        for _ in range(args.batches):
            x, y, idx = next(batches)
        seconds = time.perf_counter() - start
        batches.close()
    return {"mode": args.mode, "workers": workers, "load_seconds": load_seconds, "train_images": len(data.train),
            "images_bytes": int(data.train.images.numel() + data.val.images.numel() + data.test.images.numel()),
            "peak_anon_bytes": peak.peak, "loader_images_per_second": args.batches * args.batch_size / seconds}


def child(args, mode: str, source: Path, cache: Path) -> dict:
    command = [sys.executable, __file__, "--mode", mode, "--source", str(source), "--batch-size", str(args.batch_size),
               "--batches", str(args.batches), "--workers", str(args.workers)]
    env = dict(os.environ, KDKIT_CACHE=str(cache))
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    args = parse_args(argv)
    if args.mode:
        print(json.dumps(measure(args)))
        return
    with tempfile.TemporaryDirectory() as scratch:
        cache = Path(args.cache or Path(scratch) / "cache")
        os.environ["KDKIT_CACHE"] = str(cache)
        start = time.perf_counter()
        source = make_source(Path(scratch), args.gigabytes)
        write_seconds = time.perf_counter() - start
        runs = {"disk_first": [child(args, "disk_first", source, cache)]}
        for _ in range(args.repeats):
            for mode in ROUND:
                runs.setdefault(mode, []).append(child(args, mode, source, cache))
    rows = {}
    for mode, results in runs.items():
        row = dict(results[0])
        for key in ("load_seconds", "peak_anon_bytes", "loader_images_per_second"):
            row[key] = median(r[key] for r in results)
            row[f"{key}_runs"] = [r[key] for r in results]
        rows[mode] = row
    memory, disk = rows["memory"], rows["disk"]
    report = {
        "command": "python benchmarks/large_data.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "ram_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")},
        "dataset_bytes": memory["images_bytes"], "cache_write_seconds": write_seconds, "rows": rows,
        "ratios": {
            "peak_anon_disk_over_memory": disk["peak_anon_bytes"] / memory["peak_anon_bytes"],
            "loader_disk_over_memory": disk["loader_images_per_second"] / memory["loader_images_per_second"],
            "loader_workers_over_disk": rows["disk_workers"]["loader_images_per_second"] / disk["loader_images_per_second"],
            "loader_workers_over_memory": (rows["memory_workers"]["loader_images_per_second"]
                                           / memory["loader_images_per_second"]),
            "loader_disk_workers_over_memory": (rows["disk_workers"]["loader_images_per_second"]
                                                / memory["loader_images_per_second"]),
        },
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    for mode, row in rows.items():
        print(f"{mode:15s} load {row['load_seconds']:6.1f} s  peak anon {row['peak_anon_bytes'] / 1e9:5.2f} GB  "
              f"loader {row['loader_images_per_second']:8.0f} img/s")
    print(json.dumps(report["ratios"], indent=2))


if __name__ == "__main__":
    main()
