"""Export the pocket world for the UltraEdit release (0beb222) and for editbench, as the same pairs
in the same order.

The release reads ZsRE rows through ``data/zsre.py:9-21``: ``src`` (edit prompt), ``rephrase``
(ONE paraphrase), ``ans`` (new answer), ``loc`` and ``loc_ans`` (ONE unrelated prompt and its
answer; the reader appends "?" to ``loc``). A pocket record has three paraphrases and several
neighbours, so each record is reduced the same way for both sides: ``paraphrases[0]`` and
``neighbours[0]``; editbench gets them as a JSONL file in its own schema (``--task jsonl``), the
neighbour prompt with the "?" the release adds. Then editbench's efficacy_acc / generalization_acc
/ specificity_acc are exactly the release's ES / GS / LS quantities (README).

Records and order: the 300 edits are the first 300 of the pocket eval split in editbench's stream
order for seed 0. The release seeds everything with 42 (``main.py:29``) and reads its valid file
in file order (``data/base.py:117-123``, ``shuffle=False``): its three "seeds" would be one run.
So the seed is carried by the order: for each seed S, ``release_eval_seedS.json`` holds the 300
records in the order editbench edits ``editbench_eval.jsonl`` at ``--seed S``
(``resolve(RunSpec(task="jsonl", ...)).records``). Both sides then edit the same records in the
same turns of 100; the release's first turn is its file's first 100 rows.

The model folder is copied with one change to tokenizer_config.json: transformers 4.51 (the
release's pin) does not know the class name "TokenizersBackend" that transformers 5 writes;
"PreTrainedTokenizerFast" reads the same tokenizer.json.

    .venv/bin/python fidelity/ultraedit-release/export.py --out WORK
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from editbench.harness.plan.resolve import resolve
from editbench.harness.plan.settings import RunSpec

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
MODEL = REPO / "artifacts/models/pocket-5cd5fddbcd24c6f2"
EDITS = 300
TURN = 100  # the release's dataset.n_edits
SEEDS = (0, 1, 2)


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
    out = parser.parse_args().out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    plan = resolve(RunSpec(task="pocket", seed=(0,), edits=EDITS, batch_size=TURN,
                           checkpoints=(EDITS,), model=str(MODEL), device="cpu"))
    records = list(plan.records)
    assert len(records) == EDITS, len(records)
    jsonl = out / "editbench_eval.jsonl"
    jsonl.write_text("".join(json.dumps(editbench_row(r)) + "\n" for r in records))
    by_uid = {r.uid: r for r in records}
    orders = {}
    for seed in SEEDS:
        seeded = resolve(RunSpec(task="jsonl", data=str(jsonl), seed=(seed,), edits=EDITS,
                                 batch_size=TURN, checkpoints=(EDITS,), model=str(MODEL),
                                 device="cpu"))
        uids = [r.uid for r in seeded.records]
        assert sorted(uids) == sorted(by_uid), "the JSONL run edits other records"
        orders[seed] = uids
        (out / f"release_eval_seed{seed}.json").write_text(
            json.dumps([release_row(by_uid[u]) for u in uids], indent=1))
    model = out / "model"
    if model.exists():
        shutil.rmtree(model)
    shutil.copytree(MODEL, model)
    config = json.loads((model / "tokenizer_config.json").read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    (model / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (out / "export.json").write_text(json.dumps({
        "pocket_dataset_hash_seed0": plan.dataset_hash, "n_edits": len(records),
        "model": str(MODEL), "first_uids_per_seed": {s: o[:5] for s, o in orders.items()}},
        indent=1))
    print(f"exported {len(records)} edits in the orders of seeds {SEEDS} to {out}")


if __name__ == "__main__":
    main()
