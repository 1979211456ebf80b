#!/usr/bin/env bash
# Every variant of the suite, both sides, seeds 0-2, then one table per variant.
# Usage: run_all.sh RELEASE_DIR WORK [RELEASE_PYTHON]
#   RELEASE_DIR: the release at 0beb222 (README, "Rerun"); WORK: export.py's --out
set -euo pipefail
RELEASE=$(realpath "$1"); WORK=$(realpath "$2"); RPY=${3:-/tmp/ultraedit-venv/bin/python}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
PY=${EDITBENCH_PYTHON:-$REPO/.venv/bin/python}
export OMP_NUM_THREADS=1

release() {  # VARIANT SEED LR [--bf16]
  "$RPY" "$HERE/run_release.py" --release "$RELEASE" --data "$WORK" --seed "$2" --lr "$3" \
    --out "$WORK/$1/release/s$2" "${@:4}" > "$WORK/$1-release-s$2.log" 2>&1
}
editbench() {  # VARIANT SEED LR [editbench run options]
  "$HERE/run_editbench.sh" "$WORK" "$@" > "$WORK/$1-editbench-s$2.log" 2>&1
}

same_release() {  # VARIANT FROM SEED: this variant's editbench runs face FROM's release runs
  mkdir -p "$WORK/$1/release"
  rm -rf "$WORK/$1/release/s$3"
  cp -r "$WORK/$2/release/s$3" "$WORK/$1/release/s$3"
}

for s in 0 1 2; do
  for lr in 1e-6 1e-3 3e-3 1e-2; do
    release "fp32-lr$lr" $s $lr
    editbench "fp32-lr$lr" $s $lr --dtype float32
  done
  # editbench's default normaliser merge (exact; the preset-less `ultraedit`) against the release
  same_release fp32-lr3e-3-exact fp32-lr3e-3 $s
  METHOD=ultraedit editbench fp32-lr3e-3-exact $s 3e-3 --dtype float32
  for lr in 3e-3 1e-2; do
    release "bf16-lr$lr" $s $lr --bf16
    editbench "bf16-lr$lr" $s $lr --dtype bfloat16
    same_release "bf16-nomaster-lr$lr" "bf16-lr$lr" $s
    editbench "bf16-nomaster-lr$lr" $s $lr --dtype bfloat16 --no-master-copy
    # diagnostic: the release's edit loss on float32 logits, against the no-master-copy runs
    release "bf16-floatloss-lr$lr" $s $lr --bf16 --float-loss
    mkdir -p "$WORK/bf16-floatloss-lr$lr/editbench"
    rm -rf "$WORK/bf16-floatloss-lr$lr/editbench/s$s"
    cp -r "$WORK/bf16-nomaster-lr$lr/editbench/s$s" "$WORK/bf16-floatloss-lr$lr/editbench/s$s"
  done
done
# the unedited model, scored by the release (edit lr 0): the same at every order
release unedited 0 0
release unedited-bf16 0 0 --bf16
for v in fp32-lr1e-6 fp32-lr1e-3 fp32-lr3e-3 fp32-lr1e-2 fp32-lr3e-3-exact bf16-lr3e-3 \
    bf16-lr1e-2 bf16-nomaster-lr3e-3 bf16-nomaster-lr1e-2 bf16-floatloss-lr3e-3 \
    bf16-floatloss-lr1e-2; do
  "$PY" "$HERE/collect.py" "$WORK/$v"
  echo
done > "$WORK/tables.md"
cat "$WORK/tables.md"
