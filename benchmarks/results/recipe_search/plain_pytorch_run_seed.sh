#!/bin/bash
# usage: run_seed.sh SEED T ALPHA  -- full pipeline (teacher 8ep flip bf16, scratch 25ep, KD 25ep), sequential
S=$1; TT=$2; AL=$3; P=/work/main/.venv/bin/python; cd /work/recipe
[ -f ck/t8flip_s$S.pt ] || $P kd.py --role teacher --epochs 8 --aug 2 --bf16 1 --seed $S --tag T8flipbf16 --save ck/t8flip_s$S.pt > logs/t8flip_s$S.log 2>&1
$P kd.py --role student --arch 8,16,32 --epochs 25 --aug 2 --bank 2 --seed $S --tag S25flip > logs/s25flip_s$S.log 2>&1
$P kd.py --role student --arch 8,16,32 --epochs 25 --aug 2 --bank 2 --seed $S --teacher ck/t8flip_s$S.pt --T $TT --alpha $AL --tag KD25flip_T8_T${TT}a${AL} > logs/kd25_T8_T${TT}a${AL}_s$S.log 2>&1
