set -x
K=/work/main/.venv/bin/kdkit
export OMP_NUM_THREADS=1
C="--dataset fashion-mnist --teacher /work/exp/t8 --student cnn-tiny --epochs 12 --set optimizer=adamw --lr 3e-3 --set weight_decay=0.01 --set augment=flip --set progress=false"
$K distill $C --temperature 1 --alpha 1.0 --out /work/exp/tiny12_T1a1
$K distill $C --temperature 2 --alpha 1.0 --out /work/exp/tiny12_T2a1 --no-baseline
