#!/usr/bin/env bash
# How results/ was assembled from the working folders of this session (/tmp/fidm/all holds the
# rel-*.json files and the editbench stores under the names collect.py looks for):
# the release runs as compact JSON, editbench's cells (collect.store_cells) as editbench.json
set -e; shopt -s nullglob
cd /work/wt-fid-memit
R=fidelity/memit-alphaedit/results; mkdir -p $R
cd /tmp/fidm/all && ln -sf /tmp/fidm/rel/rel-*.json . && for t in /tmp/fidm/timing/rel-*.json; do ln -sf "$t" .; done
cd /work/wt-fid-memit
for f in /tmp/fidm/all/rel-*.json; do python3 -c "import json,sys;d=json.load(open(sys.argv[1]));json.dump(d,open(sys.argv[2],'w'),separators=(',',':'))" $f $R/$(basename $f); done
.venv/bin/python - <<'PY'
import json, sys
from pathlib import Path
sys.path.insert(0, 'fidelity/memit-alphaedit')
from collect import store_cells
out = {}
for store in sorted(Path('/tmp/fidm/all').glob('eb-*/results.sqlite')):
    name = store.parent.name
    method = 'alphaedit' if name.startswith('eb-alphaedit') else 'memit'
    edits = int(name.split('-n')[1].split('-')[0])
    for seed, cell in store_cells(store, method, edits).items():
        out[f"{name}/{method}/seed{seed}"] = cell
Path('fidelity/memit-alphaedit/results/editbench.json').write_text(json.dumps(out, separators=(',', ':')))
print(len(out), "editbench cells")
PY
du -sh $R
