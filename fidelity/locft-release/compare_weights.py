"""How far apart the two sides' edited weights are: per (variant, seed), the change each side made
to ``model.layers.2.mlp.down_proj.weight`` (the one tensor both tune), their relative difference
``|dW_eb - dW_rel| / |dW_rel|`` (Frobenius) and the cosine between them, and whether any other
tensor changed (the release resizes the tied embeddings for its [PAD] token: the first 1000 rows
are compared).

    .venv/bin/python fidelity/locft-release/compare_weights.py WORK > WORK/weights.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from export import MODEL  # noqa: E402

NAME = "model.layers.2.mlp.down_proj.weight"


def main() -> None:
    work = Path(sys.argv[1])
    base = load_file(str(MODEL / "model.safetensors"))
    results = {}
    for rel in sorted((work / "release").glob("*-s[0-9]")):
        eb = work / "editbench" / rel.name
        if not (rel / "model/model.safetensors").exists() or not (eb / "model").exists():
            continue
        a = load_file(str(rel / "model/model.safetensors"))
        b = load_file(str(eb / "model/model.safetensors"))
        da, db = a[NAME] - base[NAME], b[NAME] - base[NAME]
        others = {}
        for side, weights in (("release", a), ("editbench", b)):
            changed = []
            for key, value in base.items():
                if key == NAME or key not in weights:
                    continue
                other = weights[key][: value.shape[0]] if weights[key].shape != value.shape \
                    else weights[key]
                if not torch.equal(other, value):
                    changed.append(key)
            others[side] = changed
        results[rel.name] = {
            "norm_release": da.norm().item(), "norm_editbench": db.norm().item(),
            "relative_difference": ((db - da).norm() / da.norm().clamp_min(1e-12)).item(),
            "cosine": torch.nn.functional.cosine_similarity(da.flatten(), db.flatten(), 0).item(),
            "other_changed": others}
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
