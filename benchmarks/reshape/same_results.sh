#!/bin/bash
# Does a reshaping change any result? The same deterministic distill run (kd+fitnet on digits, 2 seeds,
# mid-epoch checkpoints) with the code of two checkouts; every weights file compared bit for bit and
# the summary's metrics compared.
#   bash benchmarks/reshape/same_results.sh BEFORE_CHECKOUT AFTER_CHECKOUT [PYTHON]
# (issue 21: BEFORE = main before pipeline.py was dissolved, AFTER = the reshaped tree; 10 files equal.)
set -e
before=$(realpath "$1"); after=$(realpath "$2"); python=${3:-python}
for side in before after; do
  tree=${!side}
  rm -rf "/tmp/same_$side"
  OMP_NUM_THREADS=1 PYTHONPATH="$tree/src" "$python" -m kdkit distill --dataset digits --teacher cnn-x0.25 \
    --student cnn-tiny --epochs 2 --seeds 0,1 --set deterministic=true --set progress=false --set checkpoint_every=7 \
    --method kd+fitnet --no-report --out "/tmp/same_$side" > "/tmp/same_$side.log" 2>&1
done
"$python" - <<'PY'
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

a, b = Path("/tmp/same_before"), Path("/tmp/same_after")
files = sorted(p.relative_to(a) for p in a.rglob("*.safetensors") if "checkpoints" not in p.parts)
same = all(all(torch.equal(x, load_file(b / f)[k]) for k, x in load_file(a / f).items()) for f in files)
rows = [{k: r["metrics"] for k, r in json.loads((d / "summary.json").read_text())["rows"].items()} for d in (a, b)]
print(f"{len(files)} weights files bitwise equal: {same}; summary metrics equal: {rows[0] == rows[1]}")
PY
