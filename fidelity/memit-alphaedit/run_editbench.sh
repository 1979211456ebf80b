#!/usr/bin/env bash
# editbench's memit and alphaedit with the settings of hparams/*-pocket.json (README.md lists the
# mapping), on the same pocket stream, turns and seeds:
#   EB_PY=.venv/bin/python bash fidelity/memit-alphaedit/run_editbench.sh OUT EDITS TURN [SEEDS] [METHODS]
set -euo pipefail
OUT=${1:?results folder}; EDITS=${2:-100}; TURN=${3:-10}; SEEDS=${4:-0,1,2}
METHODS=${5:-memit,alphaedit}
EB_PY=${EB_PY:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
COMMON="layers=0,1 v_steps=25 v_lr=0.1 v_weight_decay=0.5 kl_factor=0.0625 clamp_norm_factor=0.75
 context_prefixes=5 context_prefix_tokens=10 stats_corpus=task mom2_n_samples=21354"
declare -A OWN=([memit]="mom2_update_weight=100" [alphaedit]="nullspace_threshold=0.5 l2=3")
for method in ${METHODS//,/ }; do
  params=()
  for kv in $COMMON ${OWN[$method]} ${EXTRA_PARAMS:-}; do params+=(--param "$method.$kv"); done
  "$EB_PY" -m editbench.harness.cli.group --threads 1 run --methods "$method" --edits "$EDITS" \
    --batch-size "$TURN" --checkpoints "$EDITS" --gen-eval off --seed "$SEEDS" "${params[@]}" \
    --out "$OUT/eb-$method-n$EDITS-t$TURN" > "$OUT/eb-$method-n$EDITS-t$TURN.log" 2>&1
  tail -2 "$OUT/eb-$method-n$EDITS-t$TURN.log"
done
