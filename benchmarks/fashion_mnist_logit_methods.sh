#!/usr/bin/env bash
# DKD and DIST with the demo recipe (same teacher, student, budget, seeds) on Fashion-MNIST.
# Reuses the teacher of `make bench` (runs/bench-fashion-mnist/teacher) and compares with its scratch rows.
# Writes benchmarks/results/fashion_mnist_{dkd,dist}_3seeds.json
set -euo pipefail
cd "$(dirname "$0")/.."
TEACHER=runs/bench-fashion-mnist/teacher
for method in dkd dist; do
  extra=""
  [ "$method" = dkd ] && extra="--set kd_warmup_epochs=1"
  CMD=".venv/bin/kdkit distill --config configs/full_labels.yaml --teacher $TEACHER --method $method --set temperature= --set alpha=0.9 $extra --seeds 0,1,2 --no-baseline --out runs/bench-$method"
  echo "$CMD"
  $CMD
  .venv/bin/python - "runs/bench-$method/summary.json" "$CMD" "$method" <<'PY'
import json, sys
summary = json.load(open(sys.argv[1]))
summary["benchmark"] = {"command": sys.argv[2], "machine": "AMD EPYC (AVX512-BF16), 2 cores, no GPU",
                        "scratch_reference": "benchmarks/results/fashion_mnist_kd_3seeds.json (same config and seeds)"}
json.dump(summary, open(f"benchmarks/results/fashion_mnist_{sys.argv[3]}_3seeds.json", "w"), indent=1)
PY
done
