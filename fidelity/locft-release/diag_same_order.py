"""Diagnostic: editbench's locft-bf with the release's mini-batch order.

The release shuffles its request list in place every epoch with Python's ``random``
(``fine-tune.py:122``; ``run_release.py`` seeds it with the run's seed), editbench draws a fresh
permutation from the run's torch generator (``methods/locft.py``, ``epoch_chunks``). Here
editbench's ``editbench.edit`` runs with ``epoch_chunks`` replaced by the release's draw (the same
``random.Random(seed)`` state, the same in-place shuffle of the file's order), and the edited weight
is compared with the release's saved model of the same variant and seed.

    .venv/bin/python fidelity/locft-release/diag_same_order.py WORK VARIANT SEED CHUNK LR
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

import editbench
from editbench.methods.locft import LocFTBF

sys.path.insert(0, str(Path(__file__).resolve().parent))
from export import MODEL, records  # noqa: E402

NAME = "model.layers.2.mlp.down_proj.weight"


def main() -> None:
    work, variant, seed, chunk, lr = (Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]),
                                      int(sys.argv[4]), float(sys.argv[5]))
    torch.set_num_threads(1)
    chosen = records(seed, 100)
    rng = random.Random(seed)
    current: list = []

    def release_order(self, batch, size):
        if not current:
            current.extend(batch)
        rng.shuffle(current)  # fine-tune.py:122, on the list left by the epoch before
        return [current[i:i + size] for i in range(0, len(current), size)]

    LocFTBF.epoch_chunks = release_order
    tokenizer = AutoTokenizer.from_pretrained(str(MODEL))
    model = AutoModelForCausalLM.from_pretrained(str(MODEL), dtype=torch.float32).eval()
    base = model.get_parameter(NAME).detach().clone()
    editbench.edit(model, tokenizer, "locft-bf", chosen, batch_size=100, seed=seed,
                   params={"layer": 2, "chunk": chunk, "lr": lr})
    mine = model.get_parameter(NAME).detach() - base
    theirs = load_file(str(work / "release" / f"{variant}-s{seed}" / "model/model.safetensors"))
    theirs = theirs[NAME] - base
    print(json.dumps({
        "variant": variant, "seed": seed,
        "relative_difference": ((mine - theirs).norm() / theirs.norm()).item(),
        "cosine": torch.nn.functional.cosine_similarity(mine.flatten(), theirs.flatten(),
                                                        0).item()}))


if __name__ == "__main__":
    main()
