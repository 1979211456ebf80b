"""Do the release's key statistics (``layer_stats`` over the pocket corpus, saved by
``run_release.py --save-stats``) equal editbench's (``methods/locate/stats.py``, its cache)?

    python compare_stats.py RELEASE_STATS.pt EDITBENCH_CACHE_FOLDER > stats.json

EDITBENCH_CACHE_FOLDER is ``<cache>/key-stats/<model>/<corpus>-n<samples>``.
"""

import json
import sys
from pathlib import Path

import torch
from safetensors import safe_open

release = torch.load(sys.argv[1], weights_only=True)
folder = Path(sys.argv[2])
out = {}
for layer, mom2 in sorted(release.items()):
    with safe_open(str(folder / f"model.layers.{layer}.mlp.down_proj.safetensors"), "pt") as f:
        eb, meta = f.get_tensor("mom2"), f.metadata()
    mom2 = mom2.double()
    eb = eb.double()
    diff = (mom2 - eb).abs().max().item()
    out[f"layer {layer}"] = {
        "editbench_tokens": int(meta["n_tokens"]), "editbench_samples": int(meta["n_samples"]),
        "max_abs_diff": diff, "max_abs_entry": mom2.abs().max().item(),
        "relative_frobenius": ((mom2 - eb).norm() / mom2.norm()).item(),
        # the null spaces AlphaEdit keeps at the threshold of hparams/AlphaEdit-pocket.json
        "eigenvalues_below_0.5": [int((torch.linalg.eigvalsh(m) < 0.5).sum()) for m in (mom2, eb)],
    }
print(json.dumps(out, indent=1))
