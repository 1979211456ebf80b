"""Run EasyEdit's BaseEditor.edit(..., sequential_edit=True) on the exported pocket world and
score every edit at the end of the stream with EasyEdit's own evaluation functions.

Run with the EasyEdit venv's interpreter, EASYEDIT_SRC pointing at an export of the release:

    EASYEDIT_SRC=/work/easyedit-src python run_easyedit.py METHOD HPARAMS DATA_JSON SEED OUT_JSON

METHOD is wise, grace or ft-m. Diagnostic flags, which depart from the release on purpose:
--loc-own (WISE's unrelated rows as editbench makes them), --templates-period (editbench's
"prefix. {}" templates), --mask-pads (padded positions left out of the training-time scores,
as editbench does). What the script adds around the release (see README.md):
- ee_stubs.install(): unrelated packages that ``import easyeditor`` pulls in become stand-ins;
- WISE: ``hparams.sequential_edit = True`` (the attribute WISE.py:80 reads; the text
  WISEHyperParams has no such field, so at the release commit each edit call re-wraps the
  original layer and forgets the side memory). ``--no-wise-shim`` runs the release as it is;
- seeds: easyeditor.editors.editor.seed_everything(SEED) (torch, numpy, random) right before
  edit(); the release seeds 42 at import;
- end-of-stream scores: after the last edit, compute_edit_quality on every request with the final
  edited model (what the release's sequential_edit loop did before it moved the evaluation next to
  each edit), rephrase accuracy averaged over all paraphrases, locality = share of neighbour
  answer tokens whose top-1 equals the unedited model's (finalize_locality_metrics).
The release's own per-edit numbers (each edit scored right after it was applied, editor.py:403-406)
are kept too, as ``release_immediate``.

Streams of 500 edits or more (the yaml's save_freq) reach WISE's memory store and merge; see
``memory_batch_mean`` for the one shim they need. ``--model=PATH`` loads another model folder
than the yaml's (a link whose name holds "llama": the larger world a 1,000-edit stream needs).
Time inside ``edit()`` is split into editing and the release's own scoring (``timed_scoring``).
"""

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ee_stubs  # noqa: E402

ee_stubs.install()
sys.path.insert(0, os.environ.get("EASYEDIT_SRC", "/work/easyedit-src"))

import torch  # noqa: E402
from easyeditor import BaseEditor, FTHyperParams, GraceHyperParams, WISEHyperParams  # noqa: E402
from easyeditor.editors.editor import seed_everything  # noqa: E402
from easyeditor.evaluate import compute_edit_quality  # noqa: E402
from easyeditor.evaluate.evaluate_utils import test_prediction_acc  # noqa: E402

HPARAMS = {"wise": WISEHyperParams, "grace": GraceHyperParams, "ft-m": FTHyperParams}


def mean(values):
    return float(np.mean(values)) if len(values) else float("nan")


def grace_spaced_scores(edited, tok, hparams, data, pre_loc):
    """GRACE's scores as the release computes them (greedy generation of as many tokens as the
    answer has, compared position by position: evaluate_utils.py:243-263), with the answer
    tokenized after a space. The release tokenizes the bare answer (``tok.encode(target_new)``,
    :248), which on a SentencePiece Llama tokenizer starts with the word-initial piece, but on the
    pocket model's byte-level BPE is a different token from the one that follows a prompt: the
    unedited model then scores 1.7% (teacher-forced: 27.6%) and the metric measures tokenization.
    """
    es, gs, ls = [], [], []
    for i in range(len(data["prompts"])):
        target = " " + data["target_new"][i]
        es.append(mean(test_prediction_acc(edited, tok, hparams, data["prompts"][i], target,
                                           hparams.device, vanilla_generation=True)))
        paraphrases = data["all_rephrase_prompts"][i]
        gs.append(mean(test_prediction_acc(edited, tok, hparams, paraphrases,
                                           [target] * len(paraphrases), hparams.device,
                                           vanilla_generation=True)))
        answers = [" " + a for a in data["locality_inputs"]["neighborhood"]["ground_truth"][i]]
        post = test_prediction_acc(edited, tok, hparams,
                                   data["locality_inputs"]["neighborhood"]["prompt"][i], answers,
                                   hparams.device, locality=True, vanilla_generation=True)
        ls.append(mean([mean(np.equal(a, b)) for a, b in zip(pre_loc[i], post)]))
    return {"ES": mean(es), "GS": mean(gs), "LS": mean(ls)}


def mask_pads():
    """Diagnostics (not the release): leave padded positions out of WISE's training-time scores,
    as editbench does. The release averages |act(xW') - act(xW)| over every position of its
    left-padded 12-row batch (WISE.py:30-45 with act_mask None, :295-300, :474-476). Works for one
    request per call (k = 1): rows [:-1] are the edit rows, row [-1] the unrelated one."""
    from easyeditor.models.wise import WISE as wise_module

    original_euc, original_ft = wise_module.euc, wise_module.WISE._cal_ft_loss
    state = {}

    def ft_loss(self, tokens, last_prompt_token_loc):
        state["mask"] = tokens["attention_mask"]
        return original_ft(self, tokens, last_prompt_token_loc)

    def euc(query, key, config, act_mask=None, infer=False):
        mask = state.get("mask")
        if infer or act_mask is not None or mask is None or query.dim() != 3:
            return original_euc(query, key, config, act_mask=act_mask, infer=infer)
        if query.shape[0] == mask.shape[0] - 1:
            act_mask = mask[:-1]
        elif query.shape[0] == 1:
            act_mask = mask[-1:]
        return original_euc(query, key, config, act_mask=act_mask, infer=infer)

    wise_module.euc = euc
    wise_module.WISE._cal_ft_loss = ft_loss


def memory_batch_mean():
    """Shim 6 (README), only where a stored memory exists (save_freq edits reached): one routing
    score per forward call for the memories too. At 14cea82 WISE-Retrieve's forward reduces the
    current shard's per-row scores to their mean (``WISE.py:537-538``, ``min_dist.mean()``) but
    compares each memory's per-row scores with ``dist > min_dist and ...`` (``:547-548``): with
    more rows than one (an edit's four neighbours, scored in one call by ``evaluate.py:191``)
    that raises "Boolean value of Tensor with more than one value is ambiguous", so a lifelong
    run stops at its first locality score after the 500th edit. Here ``euc(..., infer=True)``
    returns the rows' mean, which leaves the shard's score as it was (the mean of the mean) and a
    single row's as it was, and gives the memories the shard's batch-mean rule, as editbench's
    ``route_by_batch_mean`` does (``methods/wise.py``, ``routing_score``)."""
    from easyeditor.models.wise import WISE as wise_module

    original_euc = wise_module.euc

    def euc(query, key, config, act_mask=None, infer=False):
        out = original_euc(query, key, config, act_mask=act_mask, infer=infer)
        return out.mean() if infer and out.dim() > 0 else out

    wise_module.euc = euc


def timed_scoring():
    """Time spent in the release's own scoring inside ``edit()`` (its pre-edit pass over every
    request and the score after each edit, ``editor.py:342, 388-397``), so that editing and
    evaluation are timed apart. Wraps the names editor.py calls; scores are untouched."""
    from easyeditor.editors import editor as editor_module

    spent = {"s": 0.0}

    def timed(fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent["s"] += time.perf_counter() - start
        return wrapper

    editor_module.compute_edit_quality = timed(editor_module.compute_edit_quality)
    editor_module.finalize_locality_metrics = timed(editor_module.finalize_locality_metrics)
    return spent


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    model = [a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--model=")]
    method, hparams_path, data_path, seed, out_path = args
    seed = int(seed)
    data = json.loads(Path(data_path).read_text())
    hparams = HPARAMS[method].from_hparams(hparams_path)
    if model:
        hparams.model_name = model[0]
    # the release writes logs/run.log into the working folder (editor.py:34-38, called at :110):
    # run in fidelity/easyedit/work, with the model's path made absolute (not resolved:
    # BaseEditor reads "llama" in the link's name)
    hparams.model_name = str(Path(hparams.model_name).absolute())
    out_path = str(Path(out_path).absolute())
    work = Path(__file__).resolve().parent / "work"
    work.mkdir(exist_ok=True)
    os.chdir(work)
    if method == "wise" and "--no-wise-shim" not in sys.argv:
        hparams.sequential_edit = True
    torch.set_num_threads(1)
    editor = BaseEditor.from_hparams(hparams)
    tok = editor.tok
    n = len(data["prompts"])
    kwargs = {}
    if method == "wise":
        kwargs["loc_prompts"] = data["loc_prompts"][:n]
        # diagnostics (not the release): the unrelated row as editbench builds it, a train
        # record's own prompt and true answer
        if "--loc-own" in sys.argv:
            kwargs["loc_prompts"] = data["loc_prompts_own"][:n]
        # diagnostics: editbench's template form "prefix. {}" instead of the release's
        # "prefix {}" (utils.py:447)
        if "--templates-period" in sys.argv:
            from easyeditor.models.wise import utils as wise_utils

            templates = wise_utils.get_context_templates(
                editor.model, tok, length_params=[[5, 5], [10, 5]], device=hparams.device)
            wise_utils.CONTEXT_TEMPLATES_CACHE = ["{}"] + [
                t[:-len(" {}")].strip() + ". {}" for t in templates[1:]]
    if method == "wise" and "--mask-pads" in sys.argv:
        mask_pads()
    memory_shim = method == "wise" and n >= hparams.save_freq and "--no-memory-shim" not in sys.argv
    if memory_shim:
        memory_batch_mean()
    scoring = timed_scoring()
    seed_everything(seed)
    # the unedited model's neighbour predictions, for the end-of-stream locality
    generation = method == "grace"
    pre_loc = [test_prediction_acc(editor.model, tok, hparams, p, a, hparams.device,
                                   locality=True, vanilla_generation=generation)
               for p, a in zip(data["locality_inputs"]["neighborhood"]["prompt"],
                               data["locality_inputs"]["neighborhood"]["ground_truth"])]
    pre_spaced = None
    if method == "grace":
        pre_spaced = [test_prediction_acc(editor.model, tok, hparams, p, [" " + x for x in a],
                                          hparams.device, locality=True, vanilla_generation=True)
                      for p, a in zip(data["locality_inputs"]["neighborhood"]["prompt"],
                                      data["locality_inputs"]["neighborhood"]["ground_truth"])]
    seed_everything(seed)
    start = time.perf_counter()
    metrics, edited, _ = editor.edit(
        prompts=data["prompts"], target_new=data["target_new"],
        ground_truth=data["ground_truth"], subject=data["subject"],
        rephrase_prompts=data["rephrase_prompts"], locality_inputs=data["locality_inputs"],
        sequential_edit=True, verbose=False, **kwargs)
    edit_s = time.perf_counter() - start
    immediate_eval_s = scoring["s"]
    # the release's own numbers: each edit scored right after it was applied
    immediate = {
        "ES": mean([mean(m["post"]["rewrite_acc"]) for m in metrics]),
        "GS": mean([mean(m["post"]["rephrase_acc"]) for m in metrics]),
        "LS": mean([mean(m["post"]["locality"]["neighborhood_acc"]) for m in metrics]),
    }
    # every edit scored once all 100 are in
    start = time.perf_counter()
    es, gs, ls = [], [], []
    for i in range(n):
        request = {"prompt": data["prompts"][i], "target_new": data["target_new"][i],
                   "ground_truth": data["ground_truth"][i]}
        post = compute_edit_quality(edited, hparams.model_name, hparams, tok, request,
                                    hparams.device)
        es.append(mean(post["rewrite_acc"]))
        paraphrases = data["all_rephrase_prompts"][i]
        rephrase = [mean(compute_edit_quality(
            edited, hparams.model_name, hparams, tok,
            {"prompt": p, "target_new": data["target_new"][i], "ground_truth": None},
            hparams.device)["rewrite_acc"]) for p in paraphrases]
        gs.append(mean(rephrase))
        post_loc = test_prediction_acc(
            edited, tok, hparams, data["locality_inputs"]["neighborhood"]["prompt"][i],
            data["locality_inputs"]["neighborhood"]["ground_truth"][i], hparams.device,
            locality=True, vanilla_generation=generation)
        ls.append(mean([mean(np.equal(a, b)) for a, b in zip(pre_loc[i], post_loc)]))
    eval_s = time.perf_counter() - start
    spaced = None
    if method == "grace":
        spaced = grace_spaced_scores(edited, tok, hparams, data, pre_spaced)
    result = {
        "method": method, "seed": seed, "hparams": hparams_path,
        "wise_sequential_shim": method == "wise" and "--no-wise-shim" not in sys.argv,
        "wise_memory_batch_mean_shim": memory_shim,
        "model": hparams.model_name,
        "diagnostic_flags": [a for a in sys.argv[1:]
                             if a.startswith("--") and not a.startswith("--model=")],
        "n": n, "end_of_stream": {"ES": mean(es), "GS": mean(gs), "LS": mean(ls)},
        "per_edit": {"ES": es, "GS": gs, "LS": ls},
        "release_immediate": immediate,
        "grace_spaced": spaced,
        "edit_and_immediate_eval_s": edit_s, "end_eval_s": eval_s,
        # edit() apart: editing alone, and the release's own scoring inside it
        "edit_only_s": edit_s - immediate_eval_s, "immediate_eval_s": immediate_eval_s,
        "stubbed": sorted(ee_stubs.USED),
    }
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    Path(out_path).write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("method", "seed", "end_of_stream",
                                              "release_immediate", "edit_and_immediate_eval_s",
                                              "edit_only_s", "immediate_eval_s",
                                              "end_eval_s")}))


if __name__ == "__main__":
    main()
