"""NCHW against channels_last (NHWC) on this machine, model by model: the milliseconds of an
inference forward (a teacher's part of a KD step) and of a training step (forward, backward,
AdamW), in bf16 autocast and in float32, the two layouts interleaved round by round.

    .venv/bin/python benchmarks/layout_cpu.py [--rounds 3] [--json benchmarks/results/layout_cpu.json]

What `channels_last: auto` (kdkit.train.uses_channels_last) rests on for CPUs. Each case is
(model, input shape, batch): the demo's pair on Fashion-MNIST-sized input, the throughput
benchmark's resnet32x4 -> resnet8x4, and the other students kdkit ships. A row reports the median
over rounds of each round's median step; `speedup` = NCHW ms / channels_last ms (> 1: NHWC faster).
"""
import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from kdkit.models import create_model  # noqa: E402

CASES = [  # (model, train step?, (C, H, W), batch)
    ("cnn", False, (1, 28, 28), 128), ("cnn", True, (1, 28, 28), 128), ("cnn-tiny", True, (1, 28, 28), 128),
    ("resnet32x4", False, (3, 32, 32), 64), ("resnet8x4", True, (3, 32, 32), 64), ("resnet56", False, (3, 32, 32), 64),
    ("resnet20", True, (3, 32, 32), 64), ("wrn-16-2", True, (3, 32, 32), 64), ("vgg8", True, (3, 32, 32), 64),
    ("mobilenetv2", True, (3, 32, 32), 64), ("shufflenetv2", True, (3, 32, 32), 64),
]
LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


def step_ms(name, train, shape, batch, layout, bf16, steps) -> float:
    """Median milliseconds of `steps` steps after 3 untimed ones."""
    torch.manual_seed(0)
    model = create_model(name, 10, in_channels=shape[0], image_size=shape[1]).to(memory_format=LAYOUTS[layout])
    model = model.train() if train else model.eval().requires_grad_(False)
    x = torch.randn(batch, *shape).contiguous(memory_format=LAYOUTS[layout])
    y = torch.randint(0, 10, (batch,))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3) if train else None

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16), (contextlib.nullcontext() if train else torch.no_grad()):
            out = model(x)
        if train:
            torch.nn.functional.cross_entropy(out.float(), y).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--json", default=str(ROOT / "benchmarks/results/layout_cpu.json"))
    args = p.parse_args(argv)
    runs: dict[tuple, list[float]] = {}
    for _ in range(args.rounds):
        for bf16 in (True, False):
            for case in CASES:
                for layout in LAYOUTS:
                    runs.setdefault((bf16, *case, layout), []).append(step_ms(*case, layout, bf16, args.steps))
    rows = []
    for bf16 in (True, False):
        for name, train, shape, batch in CASES:
            ms = {layout: statistics.median(runs[(bf16, name, train, shape, batch, layout)]) for layout in LAYOUTS}
            rows.append({"model": name, "step": "train" if train else "inference forward", "input": list(shape), "batch": batch,
                         "precision": "bf16 autocast" if bf16 else "float32", "ms": ms,
                         "ms_rounds": {layout: runs[(bf16, name, train, shape, batch, layout)] for layout in LAYOUTS},
                         "speedup": ms["nchw"] / ms["channels_last"]})
            print(f"{name:13s} {rows[-1]['step']:17s} {rows[-1]['precision']:13s} NCHW {ms['nchw']:7.1f} ms  "
                  f"NHWC {ms['channels_last']:7.1f} ms  {rows[-1]['speedup']:.2f}x", flush=True)
    report = {"command": "python benchmarks/layout_cpu.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                          "threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version()},
              "rows": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=1))
    print(f"wrote {args.json}")
    return report


if __name__ == "__main__":
    main()
