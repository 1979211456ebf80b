#!/usr/bin/env bash
# editbench's side of the suite, one (variant, seed) per call: locft-bf on the seed's 100 pocket
# edits at layer 2 (the default 22/32 of the depth, as the release's yaml is read), saving the
# model at checkpoint 100; then that saved model is scored by the release's own evaluation
# (run_release.py --eval-only, the same shims as the release's side) and by score.py.
#   run_editbench.sh WORK SEED LABEL BATCH_SIZE CHUNK LR [EXTRA editbench args...]
# LABEL names the variant; BATCH_SIZE is editbench's --batch-size (edits per call), CHUNK the
# method's mini-batch (the release's batch_size), LR its lr.
set -euo pipefail
WORK=$(realpath "$1"); SEED=$2; LABEL=$3; BATCH=$4; CHUNK=$5; LR=$6; shift 6
REPO=$(cd "$(dirname "$0")/../.." && pwd)
PY=${EDITBENCH_PYTHON:-$REPO/.venv/bin/python}
RPY=${RELEASE_PYTHON:-/tmp/locft-venv/bin/python}
RELEASE=${LOCFT_SRC:-/tmp/locft-src}
export OMP_NUM_THREADS=1
OUT=$WORK/editbench/$LABEL-s$SEED
rm -rf "$OUT" && mkdir -p "$OUT"
"$PY" -m editbench.harness.cli.group --threads 1 run --task pocket \
  --model "$REPO/artifacts/models/pocket-5cd5fddbcd24c6f2" --device cpu \
  --methods locft-bf --param locft-bf.layer=2 --param "locft-bf.chunk=$CHUNK" \
  --param "locft-bf.lr=$LR" "$@" \
  --edits 100 --batch-size "$BATCH" --checkpoints 100 --seed "$SEED" --save-model 100 \
  --out "$OUT/store" --cache-dir "$WORK/editbench/cache" > "$OUT.log" 2>&1
SAVED=$(find "$OUT/store/models" -type d -name edits-100 | head -1)
# the saved folder as the release's transformers 4.51 reads it: the same files, the tokenizer class
# named as export.py names it (transformers 5 writes "TokenizersBackend")
mkdir -p "$OUT/model"
for f in "$SAVED"/*; do ln -sfn "$f" "$OUT/model/$(basename "$f")"; done
rm "$OUT/model/tokenizer_config.json"
"$PY" -c 'import json, sys; c = json.load(open(sys.argv[1])); c["tokenizer_class"] = "PreTrainedTokenizerFast"; json.dump(c, open(sys.argv[2], "w"), indent=2)' \
  "$SAVED/tokenizer_config.json" "$OUT/model/tokenizer_config.json"
"$RPY" "$REPO/fidelity/locft-release/run_release.py" --release "$RELEASE" \
  --data "$WORK/release_seed$SEED.json" --model none --seed "$SEED" --out "$OUT" --eval-only \
  > /dev/null 2>&1
"$PY" "$REPO/fidelity/locft-release/score.py" --model "$OUT/model" --seed "$SEED" \
  --out "$OUT/score.json" > /dev/null 2>&1
"$PY" - "$OUT" <<'PYEOF'
import json, sys
from pathlib import Path
from editbench.core.store import load_results
out = Path(sys.argv[1])
store = load_results(out / "store")
rows = store.per_edit()
rows = rows[rows.n_edits == 100]
times = store.timings()
assert len(rows) == 100, len(rows)
result = {"ES": 100 * rows.efficacy_acc.mean(), "GS": 100 * rows.generalization_acc.mean(),
          "LS": 100 * rows.specificity_agree.mean(), "LS_acc": 100 * rows.specificity_acc.mean(),
          "gen_em_es": 100 * rows.efficacy_gen_em.mean(),
          "gen_em_gs": 100 * rows.generalization_gen_em.mean(),
          "edit_seconds": float(times[times.phase == "edit"].seconds.sum()),
          "eval_seconds": float(times[times.phase == "eval"].seconds.sum()),
          "phases": {p: float(s) for p, s in times.groupby("phase").seconds.sum().items()}}
release_eval = json.loads((out / "release.json").read_text())
result.update(release_em_es=100 * release_eval["release_em_es"],
              release_em_gs=100 * release_eval["release_em_gs"],
              release_eval_seconds=release_eval["eval_seconds"],
              score=json.loads((out / "score.json").read_text()))
(out / "editbench.json").write_text(json.dumps(result, indent=1))
print(json.dumps({k: (round(v, 2) if isinstance(v, float) else v) for k, v in result.items()
                  if k not in ("score", "phases")}))
PYEOF
