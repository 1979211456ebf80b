"""Score a saved model (the release's or editbench's) with editbench's own teacher-forced metrics.

The same ruler for both sides: the seed's 100 pocket records (``export.records``), editbench's
``HFProbe`` and ``score_edits`` (``harness/evaluation/teacher_forced.py``), the unedited pocket
model's predictions as the baseline of ``specificity_agree``, the pocket tokenizer. Prints and
writes the means in % (ES = efficacy_acc, GS = generalization_acc over the three paraphrases,
LS = specificity_agree over the neighbours; specificity_acc beside it).

    .venv/bin/python fidelity/locft-release/score.py --model DIR --seed S --out FILE.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from editbench.core.probe import HFProbe
from editbench.harness.evaluation.teacher_forced import Baseline, score_edits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from export import MODEL, records  # noqa: E402

NAMES = {"efficacy_acc": "ES", "generalization_acc": "GS", "specificity_agree": "LS",
         "specificity_acc": "LS_acc"}


def load(folder: Path):
    return AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--edits", type=int, default=100)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(str(MODEL))
    chosen = records(args.seed, args.edits)
    device = torch.device("cpu")
    with torch.no_grad():
        baseline = Baseline.compute(HFProbe(load(MODEL), tokenizer, device), chosen)
        rows = score_edits(HFProbe(load(args.model), tokenizer, device), baseline, chosen,
                           list(range(len(chosen))))
    sums: dict[str, list[float]] = {}
    for row in rows:
        if row.metric in NAMES:
            sums.setdefault(NAMES[row.metric], []).append(row.value)
    result = {key: 100 * sum(v) / len(v) for key, v in sums.items()}
    result.update(model=str(args.model), seed=args.seed, n=len(chosen))
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
