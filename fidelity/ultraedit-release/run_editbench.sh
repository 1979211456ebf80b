#!/usr/bin/env bash
# editbench's side of the suite: ultraedit@release on the same pairs as the release (export.py's
# JSONL), the release's turn structure (turns of 100 edits, --batch-size 100, each read in
# sub-batches of 10: the preset's sub_batch), scored once after the last turn, one seed per call.
# Usage: [METHOD=ultraedit] run_editbench.sh WORK VARIANT SEED LR [EXTRA editbench run options...]
#   e.g. run_editbench.sh /tmp/fid-ultra fp32-lr1e-3 0 1e-3 --dtype float32
set -euo pipefail
WORK=$(realpath "$1"); VARIANT=$2; SEED=$3; LR=$4; shift 4
REPO=$(cd "$(dirname "$0")/../.." && pwd)
PY=${EDITBENCH_PYTHON:-$REPO/.venv/bin/python}
export OMP_NUM_THREADS=1
# the release's Llama-3 choice carried over to the pocket model (run_release.py, EDIT_MODULES)
MODULES=model.layers.1.mlp.gate_proj,model.layers.2.mlp.up_proj
OUT=$WORK/$VARIANT/editbench/s$SEED
rm -rf "$OUT"
"$PY" -m editbench.harness.cli.group --threads 1 run \
  --task jsonl --data "$WORK/editbench_eval.jsonl" \
  --model "$REPO/artifacts/models/pocket-5cd5fddbcd24c6f2" --device cpu \
  --methods "${METHOD:-ultraedit@release}" --param "ultraedit.lr=$LR" \
  --param "ultraedit.module_names=$MODULES" \
  --edits 300 --batch-size 100 --checkpoints 300 --seed "$SEED" --gen-eval off \
  --out "$OUT" --cache-dir "$WORK/editbench-cache" "$@"
