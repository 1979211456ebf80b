"""The context prefixes editbench generated in each run of a log (``METHOD: context prefixes
[...]``, one line per seed, in seed order), one JSON list per seed: for run_release.py's
diagnostic ``--templates-from``.

    python eb_prefixes.py EDITBENCH_LOG METHOD SEEDS OUT_PREFIX   # writes OUT_PREFIX-sSEED.json
"""

import ast
import json
import sys
from pathlib import Path

log, method, seeds, out = sys.argv[1], sys.argv[2], sys.argv[3].split(","), sys.argv[4]
found = [ast.literal_eval(line.split("context prefixes ", 1)[1])
         for line in Path(log).read_text().splitlines()
         if f"{method}: context prefixes " in line]
if len(found) != len(seeds):
    raise SystemExit(f"{len(found)} prefix lines in {log}, {len(seeds)} seeds given")
for seed, prefixes in zip(seeds, found):
    Path(f"{out}-s{seed}.json").write_text(json.dumps(prefixes))
    print(seed, prefixes)
