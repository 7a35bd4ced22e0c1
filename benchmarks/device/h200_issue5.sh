#!/bin/bash
# One device call for issue 5 (GPU throughput side by side + CIFAR-10 time to accuracy + host loader rate), as run through
# the workplace's device tool: `bash benchmarks/device/h200_issue5.sh` from the repo root, with .carry/
# holding cifar10-jpeg.tar.gz and the torchdistill 1.1.5 wheel; results under $OUT (default /tmp/out).
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .carry/torchdistill-*.whl \
  && export PYTHONPATH=$PYTHONPATH:/tmp/site
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"
timeout ${T_THROUGHPUT:-170} python3 benchmarks/throughput.py --device cuda --compile reduce-overhead \
  --only student_only,plain_kd,torchdistill_teacher_train,torchdistill_teacher_eval,kdkit_online,kdkit_cached,kdkit_online_crd,kdkit_cached_crd \
  --json "$OUT/throughput.json" > "$OUT/throughput.log" 2>&1; echo "throughput exit $?"; tail -n 20 "$OUT/throughput.log"
timeout ${T_TTA:-290} python3 benchmarks/time_to_accuracy.py --data-dir .carry --device cuda --compile reduce-overhead --lr 0.4 \
  --out /tmp/tta --json "$OUT/time_to_accuracy.json" > "$OUT/tta.log" 2>&1; echo "tta exit $?"; tail -n 25 "$OUT/tta.log"
# host-side loader rate from RAM vs from disk, with 8 workers: can data that stays on the CPU feed the GPU's step rate?
timeout ${T_LARGE:-100} python3 benchmarks/large_data.py --gigabytes 4 --workers 8 --repeats 1 --batches 300 \
  --json "$OUT/large_data.json" > "$OUT/large_data.log" 2>&1; echo "large_data exit $?"; tail -n 12 "$OUT/large_data.log"
