"""What a run checks before it loads any model: each method's requirements, and whether it fits.

A missing train split, a missing extra, a corpus that cannot be read or a plan that cannot fit the
device's memory used to surface only after the model had loaded and the baseline had run (minutes
on a 7B model). The plan already holds each method built on the model's ``meta``-device twin and
asked what it lacks (``EditMethod.requirements``) and what it will cost (``EditMethod.cost``);
:func:`preflight` reads those and returns every problem as one line that names the fix. It
changes nothing; the runner refuses a plan with findings (``--ignore-plan`` waives the memory
ones).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from ...core.costs import GiB
from .resolve import RunPlan

log = logging.getLogger(__name__)


def log_peaks(plan: RunPlan) -> None:
    """Each method's planned peak, in the log of the run (the record of what was expected)."""
    for item in plan.estimates:
        largest = item.largest_phase(plan.device.type == "cpu")
        if largest is not None:
            phase, peak = largest
            log.info("plan: %s peaks at %.1f GiB (%s) of %.1f GiB%s", item.label, peak / GiB,
                     phase.phase, plan.capacity / GiB,
                     " on the HF side of the GPU" if plan.backend == "vllm" else "")


def memory_findings(plan: RunPlan) -> list[str]:
    """Methods whose planned peak exceeds what the device leaves the edited model."""
    findings = []
    beside = " beside vLLM (--vllm-memory)" if plan.backend == "vllm" else ""
    for item in plan.estimates:
        largest = item.largest_phase(plan.device.type == "cpu")
        if largest is None:
            continue
        phase, peak = largest
        if peak > plan.capacity:
            findings.append(
                f"{item.label} needs about {peak / GiB:.1f} GiB ({phase.phase}) but the device has "
                f"{plan.capacity / GiB:.1f} GiB{beside}: use a smaller --batch-size, --dtype "
                "bfloat16, --device-map auto over more GPUs, or --ignore-plan to run anyway "
                "(editbench run --dry-run shows each phase)")
    return findings


def preflight(plan: RunPlan) -> list[str]:
    """Every reason the run would fail or not fit, one line each; empty when it can run."""
    findings = [line for item in plan.estimates for line in item.missing]
    if plan.spec.device_map and importlib.util.find_spec("accelerate") is None:
        findings.append('--device-map auto shards the model with accelerate: '
                        'pip install "editbench[shard]"')
    if Path(plan.model_source).is_file():
        findings.append(f"--model {plan.model_source} is a file: a dry run plans a config.json, "
                        "a run needs the model's folder (save_pretrained) or a hub name")
    if not plan.spec.ignore_plan:
        findings += memory_findings(plan)
    return findings


def refuse(plan: RunPlan) -> None:
    """Stop, in one line, a plan that :func:`preflight` finds would fail or not fit."""
    findings = preflight(plan)
    if findings:
        raise ValueError("; ".join(findings))
