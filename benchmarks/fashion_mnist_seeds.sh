#!/usr/bin/env bash
# Fashion-MNIST with the demo recipe over 3 seeds: teacher, scratch and KD student, mean +- std.
# Writes the raw summary (with the command, machine and wall time) to
#   benchmarks/results/fashion_mnist_kd_3seeds.json
# Run: make bench   (about 3x the demo's time on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/bench-fashion-mnist}
CMD=".venv/bin/kdkit distill --config configs/full_labels.yaml --seeds 0,1,2 --out $OUT"
start=$(date +%s)
$CMD
end=$(date +%s)
.venv/bin/python - "$OUT/summary.json" "$CMD" "$((end - start))" <<'PY'
import json, platform, subprocess, sys
summary = json.load(open(sys.argv[1]))
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
summary["benchmark"] = {"command": sys.argv[2], "wall_seconds_total": int(sys.argv[3]),
                        "machine": f"{cpu}, {subprocess.check_output(['nproc']).decode().strip()} cores, no GPU"}
json.dump(summary, open("benchmarks/results/fashion_mnist_kd_3seeds.json", "w"), indent=1)
print("written: benchmarks/results/fashion_mnist_kd_3seeds.json")
PY
