"""Export the pocket world for the LocFT release (ICT-STAR/LocFT 51db785).

The release reads one JSON list per call (``fine-tune.py:210-229``): each row's edit prompt is
``prompt`` (or ``src``) and its new answer ``target_new`` (or ``alt``); its evaluation
(``eval_edit_metric.py:61-64``) also reads ONE paraphrase, ``rephrase_prompt`` (or ``rephrase``).
Per seed, the rows are the 100 records editbench streams at that seed, in its order:
``resolve(RunSpec(task="pocket", seed=(S,), edits=100, ...)).records``, with ``paraphrases[0]`` as
``rephrase_prompt``. Every other field of the pocket record (all three paraphrases, the
neighbours) is left to ``score.py``, which resolves the same records itself and scores both
sides' models with editbench's own teacher-forced metrics.

The model folder is copied with one change to tokenizer_config.json: transformers 4.51 (the
release's pin) does not know the class name "TokenizersBackend" that transformers 5 writes;
"PreTrainedTokenizerFast" reads the same tokenizer.json.

    .venv/bin/python fidelity/locft-release/export.py --out WORK
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
SEEDS = (0, 1, 2)


def records(seed: int, edits: int) -> list:
    """The records editbench's run of ``edits`` pocket edits at ``seed`` streams, in order."""
    plan = resolve(RunSpec(task="pocket", seed=(seed,), edits=edits, batch_size=edits,
                           checkpoints=(edits,), model=str(MODEL), device="cpu"))
    chosen = list(plan.records)
    assert len(chosen) == edits, len(chosen)
    return chosen


def release_row(record) -> dict:
    return {"prompt": record.prompt, "target_new": record.target_new,
            "rephrase_prompt": record.paraphrases[0], "subject": record.subject,
            "uid": record.uid}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--edits", type=int, default=100)
    args = parser.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    summary = {}
    for seed in SEEDS:
        chosen = records(seed, args.edits)
        (out / f"release_seed{seed}.json").write_text(
            json.dumps([release_row(r) for r in chosen], indent=1))
        summary[f"seed{seed}"] = [r.uid for r in chosen[:5]]
    model = out / "model"
    if model.exists():
        shutil.rmtree(model)
    shutil.copytree(MODEL, model)
    config = json.loads((model / "tokenizer_config.json").read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    (model / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (out / "export.json").write_text(json.dumps({"edits": args.edits, "first_uids": summary,
                                                 "model": str(MODEL)}, indent=1))
    print(f"exported {args.edits} edits per seed to {out}")


if __name__ == "__main__":
    main()
