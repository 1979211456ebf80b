"""``editbench bench``: measure editbench itself — edit throughput, scoring speed, overhead, memory.

Every figure comes from one invocation on this machine, so they can be compared with each other:

1. edit throughput per method (edits/s, s/edit) at each size of a ladder up to 20,000 edits on a
   micro model, with peak memory at each size (one lifelong run per method, checkpoints at the
   sizes);
2. evaluation throughput: the batched probe against scoring one pair at a time (the way most
   editing repositories score), same pairs and model;
3. harness overhead: the share of each method's wall time spent neither in ``apply`` nor in the
   model's forward passes nor in ``prepare`` (target: under 3%);
4. memory growth: peak memory against edits per method.

Results are printed as tables and written to ``OUT/bench.json`` for reports.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ...core.records import ScoringPair

if TYPE_CHECKING:
    import torch

    from ...core.tokenize import PairEncoder

log = logging.getLogger(__name__)


def default_task(edits: int, params: dict | None = None):
    """The registered default task, sized to hold ``edits`` records (the bench names no task)."""
    from ...core.configs import build_config
    from ...core.task import TaskOptions
    from ...tasks import TASKS

    name = TASKS.default()
    cls = TASKS[name]
    settings = {**cls.sized_for(edits), **(params or {}).get(name, {})}
    return cls(TaskOptions(), build_config(cls.Config, settings, owner=f"task {name}"))


def score_one_at_a_time(model, encoder: PairEncoder, pairs: list[ScoringPair],
                        device: torch.device) -> list[tuple[float, tuple[int, ...]]]:
    """The reference: one forward pass per pair, the way most editing repositories score (EasyEdit
    tokenizes and forwards each rewrite, paraphrase and locality prompt by itself). Written lean on
    purpose, so the comparison does not charge our probe's bookkeeping to the baseline."""
    import torch

    scores = []
    with torch.inference_mode():
        for pair in pairs:
            encoded = encoder.encode(pair.prompt, pair.target)
            ids = torch.tensor([encoded.ids], device=device)
            logits = model(input_ids=ids).logits[0, encoded.n_prompt - 1 : len(encoded.ids) - 1]
            labels = ids[0, encoded.n_prompt :]
            logprob = (torch.log_softmax(logits.float(), -1)
                       .gather(1, labels.unsqueeze(1)).sum().item())
            scores.append((logprob, tuple(logits.argmax(-1).tolist())))
    return scores


def _best_of(repeats: int, work):
    """The fastest of ``repeats`` timed calls of ``work()`` and the last result: on a shared machine
    noise only ever adds time, so the minimum is the figure that repeats."""
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        result = work()
        best = min(best, time.perf_counter() - started)
    return best, result


def scoring_throughput(model_path: Path, device: torch.device, n_pairs: int,
                       repeats: int = 3) -> dict[str, float]:
    """Batched scoring against one pair per forward pass, on the same pairs and model.

    The batched probe is timed on its first pass with a fresh probe, which tokenizes every pair
    (as at a run's first checkpoint), and again on a repeat that finds them encoded (as at later
    ones). Every timing is the best of ``repeats``. The headline speedup is the first pass's."""
    import torch

    from ...core.models import load_model
    from ...core.probe import HFProbe
    from ...core.tokenize import PairEncoder

    records = default_task(n_pairs).records()
    pairs = [ScoringPair(p, r.target_new)
             for r in records for p in (r.prompt, *r.paraphrases)][:n_pairs]
    model, tokenizer = load_model(model_path, device, torch.float32)
    # warm kernels and the allocator for both sides; every timed side starts with a fresh encoder,
    # so both pay for tokenizing every pair once
    HFProbe(model, tokenizer, device).score(pairs)
    score_one_at_a_time(model, PairEncoder(tokenizer), pairs[:32], device)
    probes: list[HFProbe] = []

    def first_pass():
        probes.append(HFProbe(model, tokenizer, device))
        return probes[-1].score(pairs)

    batched_s, batched = _best_of(repeats, first_pass)
    forward_share = min(p.forward_seconds for p in probes) / batched_s
    repeat_s, _ = _best_of(repeats, lambda: probes[-1].score(pairs))
    single_s, one_by_one = _best_of(max(1, repeats - 1),
                                    lambda: score_one_at_a_time(model, PairEncoder(tokenizer),
                                                                pairs, device))
    mismatches = sum(a.predictions != b[1] for a, b in zip(batched, one_by_one, strict=True))
    logprob_gap = max(abs(a.logprob - b[0]) for a, b in zip(batched, one_by_one, strict=True))
    return {"pairs": len(pairs), "target_tokens": sum(score.n_tokens for score in batched),
            "repeats": repeats, "batched_s": batched_s,
            "batched_forward_share": min(forward_share, 1.0),
            "batched_repeat_s": repeat_s, "one_at_a_time_s": single_s,
            "batched_pairs_per_s": len(pairs) / batched_s,
            "one_at_a_time_pairs_per_s": len(pairs) / single_s,
            "speedup": single_s / batched_s, "speedup_repeat": single_s / repeat_s,
            "prediction_mismatches": mismatches, "max_logprob_difference": logprob_gap}


def generate_one_at_a_time(model, encoder: PairEncoder, prompts: list[str], budgets: list[int],
                           stop, device: torch.device) -> list[list[int]]:
    """The reference for the batched decoder: ``model.generate(do_sample=False)`` per prompt, with
    the same stop tokens and budgets, as a loop over records would call it."""
    import torch

    out = []
    for prompt, budget in zip(prompts, budgets, strict=True):
        ids = torch.tensor([encoder.encode_prompt(prompt)], device=device)
        new = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=budget, eos_token_id=sorted(stop.ids),
                             pad_token_id=encoder.pad_id)[0, ids.shape[1]:].tolist()
        out.append(new[:-1] if new and new[-1] in stop.ids else new)
    return out


def generation_cost(model_path: Path, device: torch.device, n_edits: int, max_new_tokens: int = 20,
                    repeats: int = 3) -> dict[str, float]:
    """What the generated metrics cost: the time of the core teacher-forced metrics and of the
    generated ones on the same edits (targets: at most 2x), and the batched greedy decoder against
    ``generate`` one prompt at a time on the same prompts (target: at least 5x, the same tokens)."""
    import torch

    from ...core.generate import StopRule, answer_budget, greedy_decode
    from ...core.models import load_model
    from ...core.probe import HFProbe
    from ..evaluation.generated import score_generated, unedited_generations
    from ..evaluation.teacher_forced import Baseline, score_edits

    task = default_task(n_edits)
    records = task.records()[:n_edits]
    positions = list(range(len(records)))
    model, tokenizer = load_model(model_path, device, torch.float32)
    probe = HFProbe(model, tokenizer, device)
    baseline = Baseline.compute(probe, records)
    unedited = unedited_generations(probe, task, records, max_new_tokens)
    teacher_s, _ = _best_of(repeats, lambda: score_edits(probe, baseline, records, positions))
    generated_s, _ = _best_of(repeats, lambda: score_generated(probe, task, unedited, records,
                                                              positions, max_new_tokens))
    prompts = [task.generation_prompt(p) for r in records for p in (r.prompt, *r.paraphrases)]
    targets = [r.target_new for r in records for _ in (r.prompt, *r.paraphrases)]
    budgets = [answer_budget(e.n_target, max_new_tokens)
               for e in probe.encoder.encode_many(list(zip(prompts, targets, strict=True)))]
    stop = StopRule.for_model(model, tokenizer)
    batched_s, batched = _best_of(repeats, lambda: greedy_decode(model, probe.encoder, prompts,
                                                                 budgets, stop, device))
    single_s, single = _best_of(1, lambda: generate_one_at_a_time(model, probe.encoder, prompts,
                                                                  budgets, stop, device))
    return {"edits": len(records), "teacher_forced_s": teacher_s, "generated_s": generated_s,
            "generated_over_teacher_forced": generated_s / teacher_s, "prompts": len(prompts),
            "new_tokens": sum(map(len, batched)), "batched_decoder_s": batched_s,
            "one_at_a_time_s": single_s, "decoder_speedup": single_s / batched_s,
            "decoder_mismatches": sum(a != b for a, b in zip(batched, single))}


#: Training records for a method that trains before it edits. The pocket world grows with the
#: largest size so that there are enough edits, and its train split grows with it; a fixed sample
#: keeps training time (``prepare``, reported apart) from growing with the edit count measured.
BENCH_TRAIN_RECORDS = 1000


def bench_defaults(method: str) -> dict[str, str]:
    """A trainable method trains on ``BENCH_TRAIN_RECORDS`` records (its config's
    ``max_train_records``)."""
    from ...core.method import MethodRef, is_trainable
    from ...methods import METHODS

    ref = MethodRef.parse(method)
    if ref.name not in METHODS:  # an unknown name is the runner's to report
        return {}
    return {"max_train_records": str(BENCH_TRAIN_RECORDS)} if is_trainable(ref.cls) else {}


def edit_throughput(model_path: Path, out: Path, methods: tuple[str, ...], sizes: tuple[int, ...],
                    batch_size: int, eval_sample: int, device: str, params: dict) -> list[dict]:
    """One lifelong run per method with checkpoints at ``sizes``; figures read back from its
    store."""
    from ...core.store import load_results
    from ..plan.resolve import resolve
    from ..plan.settings import RunSpec
    from ..running.runner import Runner

    edits = max(sizes)
    task = default_task(edits)
    stray = sorted(set(params) - {task.name, *methods})
    if stray:
        raise ValueError(f"--param {stray[0]}.…: {stray[0]!r} is neither the task nor a method "
                         f"being measured (measured: {', '.join(methods)})")
    rows = []
    for method in methods:
        # each run gets its own method's settings only: the runner refuses settings for others
        settings = {}
        settings[task.name] = {**task.sized_for(edits), **params.get(task.name, {})}
        settings[method] = {**bench_defaults(method), **params.get(method, {})}
        spec = RunSpec(methods=(method,), task=task.name, model=str(model_path), edits=edits,
                       batch_size=batch_size, checkpoints=sizes, eval_sample=eval_sample,
                       device=device, out=out / "runs" / method, params=settings)
        runner = Runner(resolve(spec))
        started = time.perf_counter()
        outcome = runner.run()
        wall = time.perf_counter() - started
        store = load_results(spec.out)
        timings = store.timings()
        timings = timings[timings["run_id"] == outcome.run_id]
        phase = timings.groupby("phase")["seconds"].sum()
        checkpoints = store.checkpoints().query("method == @method and run_id == @outcome.run_id")
        model_work = sum(phase.get(p, 0.0)
                         for p in ("edit", "prepare", "eval_forward", "baseline_forward"))
        for _, row in checkpoints.iterrows():
            rows.append({
                "method": method, "edits": int(row["n_edits"]), "status": outcome.statuses[method],
                "edit_seconds": row["edit_seconds"], "seconds_per_edit": row["seconds_per_edit"],
                "ms_per_edit": 1000 * row["seconds_per_edit"],
                "edits_per_second": (row["n_edits"] / row["edit_seconds"] if row["edit_seconds"]
                                     else float("inf")),
                "peak_memory_mib": row["peak_memory_bytes"] / 2**20,
                "run_wall_s": wall, "apply_s": phase.get("edit", 0.0),
                "forward_s": phase.get("eval_forward", 0.0) + phase.get("baseline_forward", 0.0),
                "prepare_s": phase.get("prepare", 0.0), "load_s": phase.get("load", 0.0),
                "eval_s": phase.get("eval", 0.0),
                "overhead_share": max(0.0, wall - model_work) / wall,
            })
    return rows
