set -x
K=/work/main/.venv/bin/kdkit
export OMP_NUM_THREADS=1
$K train --dataset fashion-mnist --model cnn --epochs 8 --set optimizer=adamw --lr 3e-3 --set weight_decay=0.01 --set augment=flip --out /work/exp/t8 --set progress=false
$K distill --dataset fashion-mnist --teacher /work/exp/t8 --student mlp-32 --epochs 15 --set optimizer=adamw --lr 3e-3 --set weight_decay=0.01 --set augment=flip --temperature 4 --alpha 0.9 --out /work/exp/mlp32_T4 --set progress=false
$K distill --dataset fashion-mnist --teacher /work/exp/t8 --student cnn-tiny --epochs 8 --set optimizer=adamw --lr 3e-3 --set weight_decay=0.01 --set augment=flip --temperature 4 --alpha 0.9 --out /work/exp/tiny8_T4 --set progress=false
