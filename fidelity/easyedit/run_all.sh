#!/usr/bin/env bash
# The whole side-by-side, from the repository root:
#   EE_PY=/work/easyedit-venv/bin/python EASYEDIT_SRC=/work/easyedit-src \
#   EB_PY=.venv/bin/python bash fidelity/easyedit/run_all.sh RESULTS_DIR [METHODS] [SEEDS]
# METHODS: any of wise,grace,ft-m (default all three), each optionally with an editbench preset
# (wise@easyedit: EasyEdit runs wise, editbench wise@easyedit); SEEDS default 0,1,2.
# EE_REUSE=DIR takes the release's ee-METHOD-sSEED.json from DIR (e.g. fidelity/easyedit/results)
# instead of running it again; then EE_PY and EASYEDIT_SRC are not needed.
set -euo pipefail
OUT=${1:?results folder}
METHODS=${2:-wise,grace,ft-m}
SEEDS=${3:-0,1,2}
if [ -z "${EE_REUSE:-}" ]; then
  : "${EE_PY:?the python of the EasyEdit venv}" "${EASYEDIT_SRC:?an export of EasyEdit 14cea82}"
fi
EB_PY=${EB_PY:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
HERE=fidelity/easyedit
mkdir -p "$OUT" "$HERE/work"
# EasyEdit's BaseEditor picks its model branch by the folder's name (editor.py:148)
ln -sfn ../../../artifacts/models/pocket-5cd5fddbcd24c6f2 "$HERE/work/pocket-llama"
"$EB_PY" "$HERE/export_pocket.py" "$OUT/data" "$SEEDS"

# editbench's settings matching each hparams file (layer, steps, lr; the rest are the defaults,
# which equal the files': see README.md)
declare -A EB_PARAMS=(
  [wise]="--param wise.layer=3 --param wise.n_iter=70 --param wise.n_templates=10 --param wise.lr=1.0"
  [grace]="--param grace.layer=3 --param grace.n_iter=50 --param grace.eps=1.0 --param grace.lr=1.0"
  [ft-m]="--param ft-m.layer=2 --param ft-m.steps=25 --param ft-m.lr=5e-4 --param ft-m.chunk=1"
)
for label in ${METHODS//,/ }; do
  method=${label%%@*}  # the release runs the method; editbench the label, preset included
  for seed in ${SEEDS//,/ }; do
    if [ -n "${EE_REUSE:-}" ]; then
      cp "$EE_REUSE/ee-$method-s$seed.json" "$OUT/"
      continue
    fi
    EASYEDIT_SRC=$EASYEDIT_SRC "$EE_PY" "$HERE/run_easyedit.py" "$method" \
      "$HERE/hparams/$method-pocket.yaml" "$OUT/data/pocket-seed$seed.json" "$seed" \
      "$OUT/ee-$method-s$seed.json" > "$OUT/ee-$method-s$seed.log" 2>&1
    tail -1 "$OUT/ee-$method-s$seed.log"
  done
  # shellcheck disable=SC2086
  "$EB_PY" -m editbench.harness.cli.group run --methods "$label" --edits 100 --batch-size 1 \
    --checkpoints 100 --seed "$SEEDS" ${EB_PARAMS[$method]} --gen-eval off \
    --out "$OUT/eb-$label" > "$OUT/eb-$label.log" 2>&1
  if [ "$label" = wise@easyedit ]; then  # also scored as the release's evaluation groups prompts
    "$EB_PY" "$HERE/editbench_wise_grouped.py" "$OUT/eb-wise-grouped.json" "$SEEDS" "$label" \
      > "$OUT/eb-wise-grouped.log" 2>&1
  fi
done
"$EB_PY" "$HERE/table.py" "$OUT" > "$OUT/results.md"
cat "$OUT/results.md"
