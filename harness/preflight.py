"""What a run checks before it loads any model: each method's requirements, and whether the plan fits.

A missing train split, a missing extra, a corpus that cannot be read or a plan that cannot fit the
device's memory used to surface only after the model had loaded and the baseline had run (minutes
on a 7B model). Here the methods are built on the model's ``meta``-device twin, read from its config
alone (``harness/planner.py``), and asked what they lack (``EditMethod.requirements``) and what
they will cost (``EditMethod.cost``). Every problem is one line that names the fix.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from statistics import mean

from ..core.costs import GiB, RunShape
from .planner import device_memory, model_shape, plan_methods

log = logging.getLogger(__name__)


def run_shape(runner, tokenizer, device_bytes: int) -> RunShape:
    """The sizes of ``runner``'s run that its cost depends on, measured on its own records."""
    spec = runner.spec
    sample = runner.records[:200]
    tokens = mean(len(tokenizer(f"{r.prompt} {r.target_new}")["input_ids"]) for r in sample)
    pairs = mean(1 + len(r.paraphrases) + len(r.neighbours) for r in sample)
    return RunShape(edits=runner.edits, batch_size=spec.batch_size,
                    scored_records=sum(len(p) for p in runner.positions.values()), pairs_per_record=round(pairs),
                    tokens_per_record=max(1, round(tokens)), generated=spec.gen_eval, gen_max_tokens=spec.gen_max_tokens,
                    device_bytes=device_bytes, master_copies=spec.master_copy)


def check_before_loading(runner, tokenizer) -> str | None:
    """Refuse the run, in one line per problem, before any weights load; return the model's hub
    revision (its commit), when it came from the hub, for the run's record."""
    spec = runner.spec
    runner.planned_peaks = {}  # method label -> planned peak bytes (Ray cells size their GPUs by it)
    try:
        shape = model_shape(str(runner.model_source), str(runner.dtype).removeprefix("torch."), spec.trust_remote_code)
    except (OSError, ValueError, KeyError) as exc:  # loading the model explains it, with the fix
        log.debug("no plan before loading: the model's config cannot be read (%s)", exc)
        return None
    whole = device_memory(runner.device)
    share = 1 - spec.vllm_memory if runner.backend == "vllm" else 1.0  # the vLLM engine takes its share
    capacity = int(whole * share)
    run = run_shape(runner, tokenizer, capacity)
    planned = plan_methods(shape, run, [p.label for p in runner.methods], spec.params, task=runner.task,
                           train_records=runner.train_records, editors=spec.editors)
    if share < 1 and spec.probe_backend == "auto" and not all(p.fits(run) for p in planned):
        # chosen by default, vLLM would leave the edited model too little: score with HF instead
        log.info("scoring with the Hugging Face backend: beside vLLM's %.0f%% of the GPU (--vllm-memory) the plan "
                 "does not fit", 100 * spec.vllm_memory)
        runner.backend, share, capacity = "hf", 1.0, whole
        run = replace(run, device_bytes=whole)
    problems = [line for item in planned for line in item.missing]
    for item in planned:
        if item.cost is None:
            continue
        phase = max(item.cost.phases, key=item.cost.peak)
        peak = item.cost.peak(phase, host_shared=runner.device.type == "cpu")
        runner.planned_peaks[item.label] = peak
        log.info("plan: %s peaks at %.1f GiB (%s) of %.1f GiB%s", item.label, peak / GiB, phase.phase, capacity / GiB,
                 " on the HF side of the GPU" if share < 1 else "")
        if peak > capacity and not spec.ignore_plan:
            problems.append(f"{item.label} needs about {peak / GiB:.1f} GiB ({phase.phase}) but the device has "
                            f"{capacity / GiB:.1f} GiB{' beside vLLM (--vllm-memory)' if share < 1 else ''}: use a smaller "
                            "--batch-size, --dtype bfloat16, --device-map auto over more GPUs, or --ignore-plan to run "
                            "anyway (editbench plan shows each phase)")
    if problems:
        raise ValueError("; ".join(problems))
    return getattr(shape.meta.config, "_commit_hash", None)
