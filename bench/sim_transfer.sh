#!/usr/bin/env bash
# A classifier trained on one simulation preset, tested on held-out images of both presets.
#
#   bench/sim_transfer.sh OUT      (env: N, NTEST, EPOCHS, SIZE, J, BATCH, LENS)
#
# For each preset P in {model-i, common-test-i}: simulate N training images per class and
# NTEST test images per class (another seed), pack P's training images with the OTHER
# preset's test images as the test split (5 folds), and train the default classifier on
# fold 0. result.json then holds both: "val" = held-out fold 0 of P (same physics),
# "test" = the other preset's images (the physics it was not trained on).
set -euo pipefail
OUT=${1:?usage: bench/sim_transfer.sh OUT}
N=${N:-5000} NTEST=${NTEST:-1000} EPOCHS=${EPOCHS:-20} SIZE=${SIZE:-150} J=${J:-8} BATCH=${BATCH:-128}
LENS=${LENS:-lens}
PRESETS=(model-i common-test-i)

for p in "${PRESETS[@]}"; do
  $LENS simulate "$OUT/data/$p-train" --preset "$p" -n "$N" --size "$SIZE" -j "$J" --seed 0
  $LENS simulate "$OUT/data/$p-test" --preset "$p" -n "$NTEST" --size "$SIZE" -j "$J" --seed 1
done
for p in "${PRESETS[@]}"; do
  other=${PRESETS[0]}; [[ $p == "$other" ]] && other=${PRESETS[1]}
  mkdir -p "$OUT/layout/$p"
  ln -sfn "../../data/$p-train" "$OUT/layout/$p/train"
  ln -sfn "../../data/$other-test" "$OUT/layout/$p/val"
  $LENS pack "$OUT/layout/$p" "$OUT/$p.h5" --folds 5 --seed 0 --workers "$J"
done
for p in "${PRESETS[@]}"; do  # both trainings share the machine
  $LENS train --stage classify --data "$OUT/$p.h5" --fold 0 --out "$OUT/run-$p" \
    --set epochs="$EPOCHS" --set batch_size="$BATCH" > "$OUT/train-$p.log" 2>&1 &
done
wait
for p in "${PRESETS[@]}"; do
  tail -n 1 "$OUT/train-$p.log"
done
