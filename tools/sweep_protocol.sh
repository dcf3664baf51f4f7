#!/usr/bin/env bash
# Rerun the English zero-shot protocol sweep of docs/protocol.md with multilingual-e5-small, one run
# at a time, on the CPU: xeroalign.py --no-align on MultiATIS++, MTOD and MASSIVE; ear_push_pull.py
# --mode plain (plain fine-tuning, EAR's baseline) on XNLI's and PAWS-X's dev halves.
#
#   DATA=data MODEL=intfloat/multilingual-e5-small OUT=/tmp/sweep bash tools/sweep_protocol.sh [RUN ...]
#
# Environment (all optional):
#   DATA     folder holding the datasets as multiatis/, mtod/, massive/, xnli/, pawsx/ (default: data)
#   MODEL    HF hub name or local folder of the encoder (default: intfloat/multilingual-e5-small)
#   TRIM_TO  if set, first trim MODEL's vocabulary to the sweep's data with tools/trim_vocab.py
#            (MODEL must then be a local folder) into this folder, and run on the trimmed encoder;
#            outputs are unchanged, CPU steps about 3x faster. Skipped when TRIM_TO/config.json exists.
#   OUT      where each run's folder (results.json) and log go (default: /tmp/sweep)
#   THREADS  torch threads per run, via OMP_NUM_THREADS/MKL_NUM_THREADS (default: 1)
#   DEVICE   cpu, cuda or auto (default: cpu; the protocol was measured on the CPU)
# Arguments: run names to do (default: all, in sweep order); `--list` prints them.
# Runs whose results.json already exists are skipped (xeroalign.py refuses to overwrite a run
# made with other settings anyway). Choose on English dev only; see docs/protocol.md.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${DATA:-data}
MODEL=${MODEL:-intfloat/multilingual-e5-small}
OUT=${OUT:-/tmp/sweep}
THREADS=${THREADS:-1}
DEVICE=${DEVICE:-cpu}

# name | dataset flags | training flags (the sweep, in the order it was run); XNLI and PAWS-X runs
# use ear_push_pull.py --mode plain and evaluate English only (--lang en)
NLI="--data xnli --data_dir $DATA/xnli --dev_halves --lang en --mode plain"
PAWS="--data pawsx --data_dir $DATA/pawsx --dev_halves --lang en --mode plain"
RUNS=(
  "a_matis_e2|--data matis --data_dir $DATA/multiatis --lang de,hi,tr,ja|--epochs 2 --lr 5e-5 --head_lr 1e-2"
  "b_mtod_n4000_e2|--data mtod --data_dir $DATA/mtod --lang es,th|--limit_train 4000 --epochs 2 --lr 5e-5 --head_lr 1e-2"
  "c_massive_n4000_e2|--data massive --data_dir $DATA/massive --lang th,hi,de|--limit_train 4000 --epochs 2 --lr 5e-5 --head_lr 1e-2"
  "d_massive_n4000_e2_lr1e-4|--data massive --data_dir $DATA/massive --lang th,hi,de|--limit_train 4000 --epochs 2 --lr 1e-4 --head_lr 1e-2"
  "e_massive_n4000_e3_lr1e-4|--data massive --data_dir $DATA/massive --lang th,hi,de|--limit_train 4000 --epochs 3 --lr 1e-4 --head_lr 1e-2"
  "f_mtod_n4000_e2_lr1e-4|--data mtod --data_dir $DATA/mtod --lang es,th|--limit_train 4000 --epochs 2 --lr 1e-4 --head_lr 1e-2"
  "g_matis_e2_lr1e-4|--data matis --data_dir $DATA/multiatis --lang de,hi,tr,ja|--epochs 2 --lr 1e-4 --head_lr 1e-2"
  "h_xnli_e6|$NLI|--epochs 6 --lr 5e-5 --head_lr 1e-2"
  "i_xnli_e6_lr1e-4|$NLI|--epochs 6 --lr 1e-4 --head_lr 1e-2"
  "j_pawsx_e6|$PAWS|--epochs 6 --lr 5e-5 --head_lr 1e-2"
  "k_pawsx_e6_lr1e-4|$PAWS|--epochs 6 --lr 1e-4 --head_lr 1e-2"
)

if [[ "${1:-}" == "--list" ]]; then
  for r in "${RUNS[@]}"; do IFS='|' read -r name dflags tflags <<<"$r"; echo "$name: $dflags $tflags"; done
  exit 0
fi

if [[ -n "${TRIM_TO:-}" ]]; then
  if [[ ! -f "$TRIM_TO/config.json" ]]; then
    OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS python tools/trim_vocab.py --model "$MODEL" --out "$TRIM_TO" \
      --data "massive:$DATA/massive:en,th,hi,de" --data "matis:$DATA/multiatis:en,de,hi,tr,ja" \
      --data "mtod:$DATA/mtod:en,es,th" --data "xnli:$DATA/xnli:en" --data "pawsx:$DATA/pawsx:en"
  fi
  MODEL=$TRIM_TO
fi

mkdir -p "$OUT"
for r in "${RUNS[@]}"; do
  IFS='|' read -r name dflags tflags <<<"$r"
  if [[ $# -gt 0 ]] && [[ " $* " != *" $name "* ]]; then continue; fi
  if [[ -f "$OUT/$name/results.json" ]]; then echo "skip $name: $OUT/$name/results.json exists"; continue; fi
  echo "run $name -> $OUT/$name.log"
  start=$(date +%s)
  script="xeroalign.py --no-align"; [[ "$dflags" == *"--mode plain"* ]] && script=ear_push_pull.py
  # shellcheck disable=SC2086  # the flag strings are meant to split into words
  OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS python $script --cls first --model "$MODEL" \
    $dflags $tflags --batch_size 32 --select_on en --seed 1 --device "$DEVICE" --out_dir "$OUT/$name" \
    > "$OUT/$name.log" 2>&1 || { echo "FAILED $name: see $OUT/$name.log"; tail -5 "$OUT/$name.log"; exit 1; }
  echo "WALL $(( $(date +%s) - start )) s" | tee -a "$OUT/$name.log"
  grep -E "^epoch [0-9]+ dev|^final +en" "$OUT/$name.log" || true
done
