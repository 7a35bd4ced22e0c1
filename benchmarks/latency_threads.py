"""How stable is the summary table's CPU latency? kdkit's `ms b1` / `ms b64` (kdkit.evaluate.model_facts:
median of 20 timed forwards after 3 untimed ones) measured again and again for the demo's pair, with
1 thread (model_facts' default) and with every thread (what it used before), the
two interleaved round by round in one process.

    .venv/bin/python benchmarks/latency_threads.py [--rounds 10] [--json benchmarks/results/latency_threads.json]

Written because the demo's teacher went from 0.70 to 0.32 ms at batch 1 between two runs whose
evaluation code was the same: on a 2-vCPU machine the 2-thread figure is bimodal, so a single run's
figure could move 2x without any change in the model or code.
"""
import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from kdkit.evaluate import model_facts  # noqa: E402
from kdkit.models import create_model  # noqa: E402

MODELS = [("cnn", (1, 28, 28)), ("cnn-tiny", (1, 28, 28))]  # the demo's teacher and student


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--json", default=str(ROOT / "benchmarks/results/latency_threads.json"))
    args = p.parse_args(argv)
    all_threads = torch.get_num_threads()
    thread_counts = sorted({1, all_threads})
    models = {}
    for name, shape in MODELS:
        torch.manual_seed(0)
        models[name] = create_model(name, num_classes=10, in_channels=shape[0], image_size=shape[1]).eval()
    runs = {f"{name}/{t}t/b{b}": [] for name, _ in MODELS for t in thread_counts for b in (1, 64)}
    for r in range(args.rounds):
        for t in thread_counts:
            for name, shape in MODELS:
                facts = model_facts(models[name], shape, threads=t)
                for b in (1, 64):
                    runs[f"{name}/{t}t/b{b}"].append(facts[f"latency_ms_b{b}"])
        print(f"round {r}: " + "  ".join(f"{k} {v[-1]:.3f}" for k, v in runs.items()), flush=True)
    stats = {k: {"min": min(v), "median": statistics.median(v), "max": max(v), "max/min": max(v) / min(v)}
             for k, v in runs.items()}
    report = {"command": " ".join(["python", "benchmarks/latency_threads.py"] + (argv if argv is not None else sys.argv[1:])),
              "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
                          "threads_default": all_threads},
              "note": "each value is one model_facts() call: median of 20 timed forwards after 3 untimed ones (ms)",
              "stats": stats, "runs": runs}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=1))
    for k, s in stats.items():
        print(f"{k:22s} min {s['min']:.3f}  median {s['median']:.3f}  max {s['max']:.3f}  max/min {s['max/min']:.2f}")
    print(f"wrote {args.json}")
    return report


if __name__ == "__main__":
    main()
