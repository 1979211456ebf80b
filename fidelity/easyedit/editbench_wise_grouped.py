"""editbench's WISE (a preset, default ``wise@easyedit``) scored the way run_easyedit.py scores
the release at the end of the stream, and, on the same edited model, the way editbench scores it.

Why: with ``route_by_batch_mean`` a routing decision is one per forward call, so a score depends
on which prompts share a call. EasyEdit's evaluation sends the edit prompt alone, each paraphrase
alone, and an edit's four neighbours in one call, padded on the left with EOS
(``evaluate_utils.py:265-317``, ``test_prediction_acc``; the tokenizer's pad is EOS and its side
left, ``editors/editor.py:148-151, 178-181``); editbench's probe batches the pairs of all 100
edits by length, padded on the right (``core/probe.py``). This script scores both ways:

- ``grouped``: ES = the edit prompt + ' ' + target alone, the share of target tokens that are the
  top-1; GS the same at each paraphrase alone, averaged; LS = the four neighbours + ' ' + answer
  in one left-padded call, the share of answer positions whose top-1 equals the unedited model's
  (computed with the same calls before the first edit), averaged over neighbours
  (``finalize_locality_metrics``, ``editor.py:56-97``);
- ``editbench``: editbench's own teacher-forced scores of the same model (``score_edits``:
  ``efficacy_acc``, ``generalization_acc``, ``specificity_agree``).

Run with editbench's interpreter; edits in process with ``editbench.edit`` (batch size 1, seed S,
the task's train split for the unrelated rows), so the run's generator is seeded as
``editbench.edit`` seeds it, not as ``editbench run`` does.

    python editbench_wise_grouped.py OUT_JSON [SEEDS] [METHOD] [--edits N]

``--edits N`` (default 100): the first N records of the stream (beyond 648, the larger world
editbench sizes for the count, and its model); the scores are those after the N-th edit.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer

from editbench.core.models import load_model
from editbench.core.probe import HFProbe
from editbench.harness.api import edit
from editbench.harness.evaluation.teacher_forced import Baseline, score_edits
from editbench.harness.plan.resolve import resolve
from editbench.harness.plan.settings import RunSpec

#: the hparams file's settings at the pocket model's layer (README, "editbench's side")
PARAMS = {"layer": 3, "n_iter": 70, "n_templates": 10, "lr": 1.0}
METRICS = {"ES": "efficacy_acc", "GS": "generalization_acc", "LS": "specificity_agree"}


def release_tokenizer(source):
    """The tokenizer as EasyEdit's BaseEditor sets it up for a Llama model."""
    tok = AutoTokenizer.from_pretrained(source)
    tok.pad_token_id = tok.eos_token_id
    tok.padding_side = "left"
    return tok


def predictions(model, tok, prompts, targets):
    """test_prediction_acc's teacher-forced path, one call: per row the top-1 tokens at the
    positions that predict the target, and the target's tokens (``evaluate_utils.py:276-317``)."""
    full = tok([p + " " + t for p, t in zip(prompts, targets)], padding=True,
               return_tensors="pt")
    prompt_ids = tok(prompts, padding=True, return_tensors="pt")["input_ids"]
    n_prompt = [int((row != tok.pad_token_id).sum()) for row in prompt_ids]
    n_pad = [int((row == tok.pad_token_id).sum()) for row in full["input_ids"]]
    with torch.no_grad():
        top = model(**full).logits.argmax(-1).tolist()
    ids = full["input_ids"].tolist()
    starts = [a + b for a, b in zip(n_pad, n_prompt)]
    return ([row[s - 1:-1] for row, s in zip(top, starts)],
            [row[s:] for row, s in zip(ids, starts)])


def accuracy(model, tok, prompt, target) -> float:
    (top,), (wanted,) = predictions(model, tok, [prompt], [target])
    return float(np.mean(np.equal(top, wanted)))


def neighbour_tops(model, tok, record):
    return predictions(model, tok, [n.prompt for n in record.neighbours],
                       [n.answer for n in record.neighbours])[0]


def main():
    args = sys.argv[1:]
    edits = 100
    if "--edits" in args:
        at = args.index("--edits")
        edits = int(args[at + 1])
        del args[at:at + 2]
    out = Path(args[0])
    seeds = [int(s) for s in (args[1] if len(args) > 1 else "0,1,2").split(",")]
    method = args[2] if len(args) > 2 else "wise@easyedit"
    torch.set_num_threads(1)
    results = {"method": method, "params": PARAMS, "edits": edits}
    for seed in seeds:
        plan = resolve(RunSpec(methods=(method,), edits=edits, seed=(seed,)))
        records, train = list(plan.records), plan.train_records()
        # as a run loads it: float32, eval mode, weights frozen (a backward then stops at the
        # hooked layer); editbench's tokenizer (pad 0, right)
        model, tok = load_model(plan.model_source, torch.device("cpu"), torch.float32)
        ee_tok = release_tokenizer(plan.model_source)
        probe = HFProbe(model, tok, torch.device("cpu"))
        baseline = Baseline.compute(probe, records)
        before = [neighbour_tops(model, ee_tok, r) for r in records]
        start = time.perf_counter()
        edit(model, tok, method, records, params=PARAMS, batch_size=1, seed=seed,
             train_records=train)
        edit_s = time.perf_counter() - start
        start = time.perf_counter()
        es = [accuracy(model, ee_tok, r.prompt, r.target_new) for r in records]
        gs = [float(np.mean([accuracy(model, ee_tok, p, r.target_new) for p in r.paraphrases]))
              for r in records]
        ls = [float(np.mean([np.mean(np.equal(a, b))
                             for a, b in zip(pre, neighbour_tops(model, ee_tok, r))]))
              for pre, r in zip(before, records)]
        grouped_s = time.perf_counter() - start
        start = time.perf_counter()
        rows = score_edits(probe, baseline, records, range(len(records)))
        own_s = time.perf_counter() - start
        own = {short: float(np.mean([row.value for row in rows if row.metric == metric]))
               for short, metric in METRICS.items()}
        results[seed] = {
            "grouped": {"ES": float(np.mean(es)), "GS": float(np.mean(gs)),
                        "LS": float(np.mean(ls))},
            "per_edit_grouped": {"ES": es, "GS": gs, "LS": ls},
            "editbench": own,
            "edit_s": edit_s, "grouped_eval_s": grouped_s, "editbench_eval_s": own_s,
        }
        print(seed, {k: results[seed][k] for k in ("grouped", "editbench", "edit_s")},
              flush=True)
        out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
