#!/usr/bin/env bash
# The whole suite from the repository root: export, every variant on both sides, seeds 0-2.
#   bash fidelity/locft-release/run_all.sh WORK
# Variants (name: release batch_size / lr; editbench --batch-size / chunk / lr):
#   b100     the release's yaml as shipped: one call of 100 edits, mini-batches of 100, lr 5e-4
#            (25 epochs x 1 mini-batch); editbench --batch-size 100, chunk 100
#   b10      one call, mini-batches of 10 (25 epochs x 10 mini-batches, 250 steps, one Adam: the
#            shape of the release's 3,000-edit call, 25 x 30); editbench --batch-size 100, chunk 10
#   b10-lr5e-3  as b10 with lr 5e-3 (editbench's locft-bf@small-model lr)
#   b100-lr5e-3 as b100 with lr 5e-3
#   turns10 / turns10-lr5e-3  editbench only: its default lifelong turns, 10 batches of 10 edits,
#            each one call (25 steps, a fresh Adam), lr 5e-4 / 5e-3
set -euo pipefail
WORK=${1:?WORK folder}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
PY=${EDITBENCH_PYTHON:-$REPO/.venv/bin/python}
RPY=${RELEASE_PYTHON:-/tmp/locft-venv/bin/python}
RELEASE=${LOCFT_SRC:-/tmp/locft-src}
export OMP_NUM_THREADS=1
"$PY" "$REPO/fidelity/locft-release/export.py" --out "$WORK"
release() {  # NAME SEED BATCH LR
  local out=$WORK/release/$1-s$2
  "$RPY" "$REPO/fidelity/locft-release/run_release.py" --release "$RELEASE" \
    --data "$WORK/release_seed$2.json" --model "$WORK/model" --seed "$2" --out "$out" \
    --batch-size "$3" --lr "$4" > "$out.log" 2>&1 || { mkdir -p "$out"; cat "$out.log"; exit 1; }
  "$PY" "$REPO/fidelity/locft-release/score.py" --model "$out/model" --seed "$2" \
    --out "$out/score.json" > /dev/null 2>&1
  tail -1 "$out.log"
}
mkdir -p "$WORK/release" "$WORK/editbench"
for s in 0 1 2; do
  release b100 $s 100 5e-4
  release b10 $s 10 5e-4
  release b10-lr5e-3 $s 10 5e-3
  release b100-lr5e-3 $s 100 5e-3
  bash "$REPO/fidelity/locft-release/run_editbench.sh" "$WORK" $s b100 100 100 5e-4
  bash "$REPO/fidelity/locft-release/run_editbench.sh" "$WORK" $s b10 100 10 5e-4
  bash "$REPO/fidelity/locft-release/run_editbench.sh" "$WORK" $s b10-lr5e-3 100 10 5e-3
  bash "$REPO/fidelity/locft-release/run_editbench.sh" "$WORK" $s b100-lr5e-3 100 100 5e-3
  bash "$REPO/fidelity/locft-release/run_editbench.sh" "$WORK" $s turns10 10 100 5e-4
  bash "$REPO/fidelity/locft-release/run_editbench.sh" "$WORK" $s turns10-lr5e-3 10 100 5e-3
done
