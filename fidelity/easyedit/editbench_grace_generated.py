"""editbench's GRACE scored the way EasyEdit scores GRACE: greedy generation of as many tokens as
the answer has, compared position by position with the answer's tokens (EasyEdit
``evaluate_utils.py:243-263``, ``vanilla_generation=True``; ``use_cache=False``), the answer
tokenized after a space (README: the release's bare-answer tokenization does not fit the pocket
model's byte-level BPE). Locality: the generated tokens at each neighbour prompt against the
unedited model's.

Run with editbench's interpreter; edits in process with ``editbench.edit`` (the same method and
settings as the command-line run, batch size 1, seed S), so the cold-start values come from a
generator seeded like ``editbench.edit`` seeds it, not the runner's.

    python editbench_grace_generated.py OUT_JSON [SEEDS]
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from editbench.harness.api import edit
from editbench.harness.plan.resolve import resolve
from editbench.harness.plan.settings import RunSpec

PARAMS = {"layer": 3, "n_iter": 50, "eps": 1.0, "lr": 1.0}


def generated_tokens(model, tok, prompt: str, answer: str) -> list[int]:
    wanted = tok(" " + answer, add_special_tokens=False)["input_ids"]
    ids = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=len(wanted), do_sample=False, use_cache=False,
                             pad_token_id=tok.eos_token_id)
    return out[0, -len(wanted):].tolist()


def token_match(model, tok, prompt: str, answer: str) -> float:
    wanted = tok(" " + answer, add_special_tokens=False)["input_ids"]
    return float(np.mean(np.equal(wanted, generated_tokens(model, tok, prompt, answer))))


def main():
    out = Path(sys.argv[1])
    seeds = [int(s) for s in (sys.argv[2] if len(sys.argv) > 2 else "0,1,2").split(",")]
    torch.set_num_threads(1)
    results = {}
    for seed in seeds:
        plan = resolve(RunSpec(methods=("grace",), edits=100, seed=(seed,)))
        records = list(plan.records)
        model = AutoModelForCausalLM.from_pretrained(plan.model_source, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(plan.model_source)
        model.eval()
        pre = [[generated_tokens(model, tok, n.prompt, n.answer) for n in r.neighbours]
               for r in records]
        start = time.perf_counter()
        edit(model, tok, "grace", records, params=PARAMS, batch_size=1, seed=seed)
        edit_s = time.perf_counter() - start
        es = [token_match(model, tok, r.prompt, r.target_new) for r in records]
        gs = [float(np.mean([token_match(model, tok, p, r.target_new) for p in r.paraphrases]))
              for r in records]
        ls = [float(np.mean([np.mean(np.equal(before, generated_tokens(model, tok, n.prompt,
                                                                       n.answer)))
                             for before, n in zip(pre_r, r.neighbours)]))
              for pre_r, r in zip(pre, records)]
        results[seed] = {"ES": float(np.mean(es)), "GS": float(np.mean(gs)),
                         "LS": float(np.mean(ls)), "edit_s": edit_s}
        print(seed, results[seed], flush=True)
    out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
