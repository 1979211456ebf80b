#!/usr/bin/env bash
# editbench's side of the suite: the three release presets on the same pairs as the release
# (export.py's JSONL), one seed per call, in a fresh cache so that each editor is trained (and
# timed) in this run. Usage: run_editbench.sh WORK SEED
set -euo pipefail
WORK=$(realpath "$1"); SEED=$2
REPO=$(cd "$(dirname "$0")/../.." && pwd)
PY=${EDITBENCH_PYTHON:-$REPO/.venv/bin/python}
export OMP_NUM_THREADS=1
OUT=$WORK/editbench/seed$SEED
rm -rf "$OUT" "$WORK/editbench/cache-seed$SEED"
"$PY" -m editbench.harness.cli.group --threads 1 run \
  --task jsonl --data "$WORK/editbench_eval.jsonl" --param "jsonl.train_data=$WORK/editbench_train.jsonl" \
  --model "$REPO/artifacts/models/pocket-5cd5fddbcd24c6f2" --device cpu \
  --methods rledit@release,malmen@rledit-release,mend@rledit-release \
  --param rledit.edit_lr=1e-2 --param malmen.edit_lr=1e-2 --param mend.edit_lr=1e-2 \
  --edits 100 --batch-size 20 --checkpoints 100 --seed "$SEED" \
  --out "$OUT" --cache-dir "$WORK/editbench/cache-seed$SEED"
