"""Export the pocket world for the RLEdit release (c6576a1) and for editbench, as the same pairs.

The release reads ZsRE rows through ``data/zsre.py`` (``ZSREDataset.__getitem__``): ``src`` (edit
prompt), ``rephrase`` (ONE paraphrase), ``ans`` (new answer), ``loc`` and ``loc_ans`` (ONE
unrelated prompt and its answer; the reader appends "?" to ``loc``). A pocket record has three
paraphrases and several neighbours, which the release cannot hold. So that both sides train and
are scored on the same (prompt, answer) pairs, each record is reduced the same way for both:
``paraphrases[0]`` and ``neighbours[0]``; editbench gets them as a JSONL file in its own schema
(``--task jsonl``), the neighbour prompt with the "?" the release adds (as editbench's own ZsRE
task reads ``loc``: tasks/zsre.py:65). Then editbench's efficacy_acc / generalization_acc /
specificity_acc are exactly the release's ES / GS / LS quantities (README).

Records: the 100 evaluated edits are the first 100 of the pocket eval split in editbench's seeded
stream order for seed 0 (``resolve(RunSpec(...)).records``); the train split is
``plan.train_records()`` (216 records). editbench holds out a seeded 20% of it for validation in
whole batches (methods/hypernet/training.py:113-123: 40 records) and trains on the other 176 (8
batches of 20, 16 left out); the release has no validation. So that both walk 8 batches of the
same records, the release gets, per seed, the 176 records editbench trains on at that seed
(``release_train_seedS.json``); editbench gets all 216 and takes the same split itself.
The model folder is copied with one change to
tokenizer_config.json (transformers 4.46, the release's pin, does not know the class name
"TokenizersBackend" that transformers 5 writes; "PreTrainedTokenizerFast" reads the same
tokenizer.json).

    .venv/bin/python fidelity/rledit-release/export.py --out WORK
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
from pathlib import Path

from editbench.harness.plan.resolve import resolve
from editbench.harness.plan.settings import RunSpec

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
MODEL = REPO / "artifacts/models/pocket-5cd5fddbcd24c6f2"
EDITS = 100
SEEDS = (0, 1, 2)
TRAIN_BATCH = 20  # train_batch of the @release / @rledit-release presets


def editbench_train_part(records: list, seed: int) -> list:
    """The records editbench's Trainer trains on at ``seed`` (training.py:113-123, defaults
    val_fraction 0.2, max_val_records 1000): what is left after the validation share."""
    order = list(range(len(records)))
    random.Random(f"{seed}-split").shuffle(order)
    n_val = min(len(records) - 1, 1000, max(1, round(0.2 * len(records))))
    if n_val >= TRAIN_BATCH:
        n_val = round(n_val / TRAIN_BATCH) * TRAIN_BATCH
    return [records[i] for i in sorted(order[n_val:])]


def release_row(record) -> dict:
    """One row for the release's data/zsre.py reader."""
    neighbour = record.neighbours[0]
    return {"src": record.prompt, "rephrase": record.paraphrases[0], "ans": record.target_new,
            "loc": neighbour.prompt, "loc_ans": neighbour.answer, "subject": record.subject,
            "uid": record.uid}


def editbench_row(record) -> dict:
    """The same pairs in editbench's JSONL schema (tasks/jsonl.py)."""
    neighbour = record.neighbours[0]
    return {"uid": record.uid, "prompt": record.prompt, "subject": record.subject,
            "target_new": record.target_new, "target_true": record.target_true,
            "paraphrases": [record.paraphrases[0]],
            "neighbours": [{"prompt": neighbour.prompt + "?", "answer": neighbour.answer}]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    plan = resolve(RunSpec(task="pocket", seed=(0,), edits=EDITS, batch_size=20,
                           checkpoints=(EDITS,), model=str(MODEL), device="cpu"))
    evaluated, train = list(plan.records), plan.train_records()
    assert len(evaluated) == EDITS and len(train) == 216, (len(evaluated), len(train))
    for name, records in (("eval", evaluated), ("train", train)):
        (out / f"release_{name}.json").write_text(
            json.dumps([release_row(r) for r in records], indent=1))
        (out / f"editbench_{name}.jsonl").write_text(
            "".join(json.dumps(editbench_row(r)) + "\n" for r in records))
    for seed in SEEDS:
        part = editbench_train_part(train, seed)
        (out / f"release_train_seed{seed}.json").write_text(
            json.dumps([release_row(r) for r in part], indent=1))
    model = out / "model"
    if model.exists():
        shutil.rmtree(model)
    shutil.copytree(MODEL, model)
    config = json.loads((model / "tokenizer_config.json").read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    (model / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (out / "export.json").write_text(json.dumps({
        "dataset_hash_seed0_eval": plan.dataset_hash, "first_edits": [r.uid for r in evaluated[:5]],
        "n_eval": len(evaluated), "n_train": len(train), "model": str(MODEL)}, indent=1))
    print(f"exported {len(evaluated)} edits and {len(train)} train records to {out}")


if __name__ == "__main__":
    main()
