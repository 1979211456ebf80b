"""Export editbench's pocket world (the default task) to EasyEdit's edit() inputs.

Run with editbench's interpreter. For each seed, the 100 records editbench edits in that seed's
stream order (``resolve(RunSpec(..., edits=100, seed=(s,))).records``) and, for WISE, EasyEdit's
``loc_prompts``: the i-th record of the TRAIN split's locality prompt and answer,
``loc + ' ' + loc_ans`` (EasyEdit examples/WISE.md:85-86; the pocket world's locality prompt of a
record is its first neighbour).

    python export_pocket.py OUT_DIR [SEEDS] [--edits N]

``--edits N`` (default 100) exports the first N records of the stream instead. Beyond the pocket
task's 648 eval records editbench sizes a larger world for the count (1,000 edits: 206 people,
1,116 records, its own model trained on first use), whose train split (369 records) is shorter
than the stream: the i-th edit's ``loc_prompts`` entry is then train record i mod len(train), as
the release's example would cycle a short train file (EasyEdit's WISE.md:85-86 takes one per
edit); ``loc_prompts_cycled`` says so.
"""

import json
import sys
from pathlib import Path

from editbench.harness.plan.resolve import resolve
from editbench.harness.plan.settings import RunSpec


def export(seed: int, edits: int = 100) -> dict:
    plan = resolve(RunSpec(methods=("wise",), edits=edits, seed=(seed,)))
    records, train = list(plan.records), plan.train_records()
    cycled = len(train) < len(records)
    if cycled and edits == 100:
        raise SystemExit("the train split is smaller than the edits")
    # the unrelated rows: train record i, cycled when the train split is shorter than the stream
    unrelated = [train[i % len(train)] for i in range(len(records))]
    return {
        "seed": seed,
        "model": str(plan.model_source),
        "uids": [r.uid for r in records],
        "prompts": [r.prompt for r in records],
        "target_new": [r.target_new for r in records],
        "ground_truth": [r.target_true for r in records],
        "subject": [r.subject for r in records],
        # EasyEdit takes one rephrase prompt per edit; all of them are kept for the end-of-stream
        # evaluation, which averages over them as editbench's generalization_acc does
        "rephrase_prompts": [r.paraphrases[0] for r in records],
        "all_rephrase_prompts": [list(r.paraphrases) for r in records],
        "locality_inputs": {"neighborhood": {
            "prompt": [[n.prompt for n in r.neighbours] for r in records],
            "ground_truth": [[n.answer for n in r.neighbours] for r in records],
        }},
        "loc_prompts": [t.neighbours[0].prompt + " " + t.neighbours[0].answer
                        for t in unrelated],
        "loc_prompts_cycled": cycled,
        # for a diagnostic run only: the unrelated row as editbench makes it (a train record's
        # own prompt and true answer; editbench draws the record at random, this takes the i-th)
        "loc_prompts_own": [t.prompt + " " + t.target_true for t in unrelated],
    }


if __name__ == "__main__":
    args = sys.argv[1:]
    edits = 100
    if "--edits" in args:
        at = args.index("--edits")
        edits = int(args[at + 1])
        del args[at:at + 2]
    out = Path(args[0])
    out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in (args[1] if len(args) > 1 else "0,1,2").split(",")]
    for seed in seeds:
        data = export(seed, edits)
        (out / f"pocket-seed{seed}.json").write_text(json.dumps(data, indent=1))
        n_par = sorted({len(p) for p in data["all_rephrase_prompts"]})
        n_nb = sorted({len(p) for p in data["locality_inputs"]["neighborhood"]["prompt"]})
        print(f"seed {seed}: {len(data['prompts'])} edits, paraphrases per edit {n_par}, "
              f"neighbours per edit {n_nb}, model {data['model']}")
