"""Export the pocket world's edit stream to the records the MEMIT/AlphaEdit releases edit and score.

Run with editbench's interpreter. For each seed, the first N records
``resolve(RunSpec(methods=("memit",), edits=N, seed=(s,))).records`` streams, in that order, as the
release's in-memory ZsRE records (what ``dsets/zsre.py`` ``MENDQADataset`` yields:
``requested_rewrite`` with the prompt's subject replaced by ``{}``, ``paraphrase_prompts``), with
every paraphrase and every neighbour of the record kept (the release's file format holds one of
each); the neighbours' per-token prompts are built by ``run_release.py`` with the release's
tokenizer. Also writes the key-statistics corpus editbench uses on this task (``Task.corpus()``,
the pocket world's training sentences; ``methods/locate/stats.py`` ``resolve_corpus``, "auto").

    python export_pocket.py OUT_DIR [N] [SEEDS]
"""

import json
import sys
from pathlib import Path

from editbench.harness.plan.resolve import resolve
from editbench.harness.plan.settings import RunSpec


def export(seed: int, n: int) -> tuple[dict, list[str]]:
    plan = resolve(RunSpec(methods=("memit",), edits=n, seed=(seed,)))
    records = list(plan.records)
    out = []
    for i, r in enumerate(records):
        if r.prompt.count(r.subject) != 1:
            raise SystemExit(f"{r.uid}: the subject must occur once in the prompt")
        out.append({
            "case_id": i,
            "uid": r.uid,
            "requested_rewrite": {
                "prompt": r.prompt.replace(r.subject, "{}"),
                "subject": r.subject,
                "target_new": {"str": r.target_new},
                "target_true": {"str": r.target_true},
            },
            "paraphrase_prompts": list(r.paraphrases),
            "neighbours": [{"prompt": nb.prompt, "answer": nb.answer} for nb in r.neighbours],
        })
    task = plan.task if hasattr(plan, "task") else None
    corpus = task.corpus() if task is not None else None
    return {"seed": seed, "edits": n, "model": str(plan.model_source), "records": out}, corpus


if __name__ == "__main__":
    folder = Path(sys.argv[1])
    folder.mkdir(parents=True, exist_ok=True)
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    for seed in [int(s) for s in (sys.argv[3] if len(sys.argv) > 3 else "0,1,2").split(",")]:
        data, corpus = export(seed, n)
        (folder / f"pocket-n{n}-seed{seed}.json").write_text(json.dumps(data, indent=1))
        if corpus is not None:
            (folder / "corpus.json").write_text(json.dumps(corpus))
        print(f"seed {seed}: {len(data['records'])} edits, corpus "
              f"{len(corpus) if corpus else 0} texts, model {data['model']}")
