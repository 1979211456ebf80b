#!/usr/bin/env bash
# The release side: each (method, seed) in its own process, as evaluate.py runs one.
#   REL_PY=/tmp/memit-venv/bin/python RELEASE_SRC=/tmp/src/alphaedit \
#   bash fidelity/memit-alphaedit/run_release.sh OUT DATA MODEL EDITS TURN [SEEDS] [ALGS] [TAG]
set -euo pipefail
OUT=$(realpath "${1:?results folder}"); DATA=$(realpath "${2:?export folder}")
MODEL=$(realpath "${3:?model folder named *llama*}"); EDITS=${4:-100}; TURN=${5:-10}
SEEDS=${6:-0,1,2}; ALGS=${7:-MEMIT,AlphaEdit}; TAG=${8:-}
: "${REL_PY:?the release venv python}" "${RELEASE_SRC:?AlphaEdit f5248d3 source}"
HERE=$(cd "$(dirname "$0")" && pwd)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$OUT"
cd "$RELEASE_SRC"   # util/globals.py reads ./globals.yml; statistics cache under ./data/stats
for alg in ${ALGS//,/ }; do
  for seed in ${SEEDS//,/ }; do
    name="rel-$alg$TAG-n$EDITS-t$TURN-s$seed"
    "$REL_PY" "$HERE/run_release.py" --alg "$alg" --hparams "${HPARAMS_DIR:-$HERE/hparams}/$alg-pocket.json" \
      --data "$DATA/pocket-n$EDITS-seed$seed.json" --seed "$seed" --turn "$TURN" --model "$MODEL" \
      --corpus "$DATA/corpus.json" ${REL_FLAGS:-} --out "$OUT/$name.json" > "$OUT/$name.log" 2>&1
    tail -1 "$OUT/$name.log"
  done
done
