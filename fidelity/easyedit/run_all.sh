#!/usr/bin/env bash
# The whole side-by-side, from the repository root:
#   EE_PY=/work/easyedit-venv/bin/python EASYEDIT_SRC=/work/easyedit-src \
#   EB_PY=.venv/bin/python bash fidelity/easyedit/run_all.sh RESULTS_DIR [METHODS] [SEEDS]
# METHODS: any of wise,grace,ft-m (default all three), each optionally with an editbench preset
# (wise@easyedit: EasyEdit runs wise, editbench wise@easyedit); SEEDS default 0,1,2.
# EE_REUSE=DIR takes the release's ee-METHOD-sSEED.json from DIR (e.g. fidelity/easyedit/results)
# instead of running it again; then EE_PY and EASYEDIT_SRC are not needed.
# EDITS=N (default 100) edits the first N records of each seed's stream and compares the scores
# after the N-th; beyond 648 editbench sizes a larger world, whose model (trained on first use) the
# release loads through the link work/pocket-llama-eN. EDITS=1000 reaches WISE's memory store (500)
# and merge (1000).
set -euo pipefail
OUT=${1:?results folder}
METHODS=${2:-wise,grace,ft-m}
SEEDS=${3:-0,1,2}
EDITS=${EDITS:-100}
if [ -z "${EE_REUSE:-}" ]; then
  : "${EE_PY:?the python of the EasyEdit venv}" "${EASYEDIT_SRC:?an export of EasyEdit 14cea82}"
fi
EB_PY=${EB_PY:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
HERE=fidelity/easyedit
mkdir -p "$OUT" "$HERE/work"
# EasyEdit's BaseEditor picks its model branch by the folder's name (editor.py:148)
ln -sfn ../../../artifacts/models/pocket-5cd5fddbcd24c6f2 "$HERE/work/pocket-llama"
"$EB_PY" "$HERE/export_pocket.py" "$OUT/data" "$SEEDS" --edits "$EDITS"
MODEL_ARG=()
if [ "$EDITS" != 100 ]; then  # the larger world's model, as the export names it
  first=${SEEDS%%,*}
  model=$("$EB_PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['model'])" \
    "$OUT/data/pocket-seed$first.json")
  ln -sfn "$model" "$HERE/work/pocket-llama-e$EDITS"
  MODEL_ARG=(--model="$HERE/work/pocket-llama-e$EDITS")
fi

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
      "$OUT/ee-$method-s$seed.json" "${MODEL_ARG[@]}" > "$OUT/ee-$method-s$seed.log" 2>&1
    tail -1 "$OUT/ee-$method-s$seed.log"
  done
  # shellcheck disable=SC2086
  "$EB_PY" -m editbench.harness.cli.group run --methods "$label" --edits "$EDITS" --batch-size 1 \
    --checkpoints "$EDITS" --seed "$SEEDS" ${EB_PARAMS[$method]} --gen-eval off \
    --out "$OUT/eb-$label" > "$OUT/eb-$label.log" 2>&1
  if [ "$label" = wise@easyedit ]; then  # also scored as the release's evaluation groups prompts
    "$EB_PY" "$HERE/editbench_wise_grouped.py" "$OUT/eb-wise-grouped.json" "$SEEDS" "$label" \
      --edits "$EDITS" > "$OUT/eb-wise-grouped.log" 2>&1
  fi
done
"$EB_PY" "$HERE/table.py" "$OUT" --edits "$EDITS" > "$OUT/results.md"
cat "$OUT/results.md"
