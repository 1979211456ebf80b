"""``editbench selfcheck``: the checks that need a GPU, in one command, with figures to record.

On a machine with a CUDA GPU it runs the float32 master-copy check on the GPU
(``harness/checks/precision_check.py``), the plan-against-measurement check on micro models of
every architecture with the CUDA allocator's exact peak (``harness/checks/cost_check.py``), and
the vLLM parity check when vLLM is installed, then a small ``editbench bench`` (scoring speed and
a short lifelong run per method that needs no training). On a CPU it says what it skipped and runs
what a CPU can. Its output (with the GPU's name) goes into docs/benchmarks.md.
"""

from __future__ import annotations

import importlib.util
import json
import platform
import sys
import time
from pathlib import Path

import click

from ...core.cache import atomic_write_bytes
from .values import NAMES, Counts


def bench_methods() -> tuple[str, ...]:
    """The small bench's methods: every registered method that edits without training (the trained
    ones are left to ``editbench bench``)."""
    from ...core.method import is_trainable
    from ...methods import METHODS

    return tuple(name for name, cls in METHODS.items()
                 if not is_trainable(cls))


@click.command()
@click.option("--device", default="auto", show_default=True,
              help="auto (a CUDA GPU when there is one), cpu or cuda:N.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Also write the figures as JSON here.")
@click.option("--vllm-model", default=None,
              help="Model for the vLLM parity check (default: a micro model made here).")
@click.option("--scale-config", default=None, metavar="CONFIG_JSON",
              help="Also compare plan and measurement on a random-weight bf16 model of this "
                   "published config (e.g. tests/configs/llama-3-8b.json; needs the memory of the "
                   "real model).")
@click.option("--families", type=NAMES, default=None, metavar="A,B",
              help="Architectures for the plan check (default: llama, gpt2, gptj, mistral, qwen2, "
                   "gemma2).")
@click.option("--plan-methods", type=NAMES, default=None, metavar="A,B",
              help="Methods for the plan check (default: every method with a cost model).")
@click.option("--bench-sizes", type=Counts(allow_empty=True), default="100,500", show_default=True,
              help="Edit counts of the small bench (as `editbench bench --sizes`); empty to skip "
                   "it.")
@click.option("--bench-methods", type=NAMES, default=None, metavar="A,B",
              help="Methods of the small bench; default: every method that edits without training "
                   "(the ones that train are left to `editbench bench`).")
@click.option("--bench-pairs", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Prompt-target pairs the small bench scores, batched and one at a time.")
def selfcheck(device: str, out: Path | None, vllm_model: str | None, scale_config: str | None,
              families: tuple[str, ...] | None, bench_sizes: tuple[int, ...],
              bench_methods: tuple[str, ...] | None, plan_methods: tuple[str, ...] | None,
              bench_pairs: int) -> None:
    """Run the GPU checks (precision, plan against measured memory, vLLM parity, a small bench) and
    print their figures."""
    import torch

    from ...core.models import resolve_device
    from ...core.outputs import check_output_file
    from ...methods import METHODS
    from ..checks.cost_check import FAMILIES, check_at_scale, check_family
    from ..checks.precision_check import precision_check

    # everything that can be refused is refused before minutes of checks (issue 31)
    if out is not None:
        check_output_file(out, "--out", "selfcheck")
    unknown = [f for f in families or () if f not in FAMILIES]
    if unknown:
        raise click.BadParameter(f"unknown family {unknown[0]!r}; choose among "
                                 f"{', '.join(FAMILIES)}", param_hint="--families")
    if plan_methods:
        from ..checks.cost_check import checked_methods

        unplanned = [m for m in plan_methods if m in METHODS and m not in checked_methods()]
        if unplanned:
            raise click.BadParameter(f"{unplanned[0]} has no cost model (or its optional library "
                                     "is missing); choose among "
                                     f"{', '.join(checked_methods())}", param_hint="--plan-methods")
    for name in (*(bench_methods or ()), *(plan_methods or ())):
        METHODS[name]  # a KeyError that lists the registered methods
    where = resolve_device(device)
    name = (torch.cuda.get_device_name(where) if where.type == "cuda"
            else platform.processor() or "CPU")
    # the first key marks the file as editbench's (core/outputs.py), so a rerun may replace it
    figures: dict = {"editbench": "selfcheck", "device": str(where), "name": name,
                     "torch": torch.__version__}
    click.echo(f"device: {where} ({name}), torch {torch.__version__}")
    if where.type != "cuda":
        click.echo("skipped on CPU: the CUDA allocator's exact peaks and the vLLM parity check "
                   "(they need a CUDA GPU)")

    failed: list[str] = []  # every check that fails: the command then exits with status 1
    started = time.perf_counter()
    report = precision_check(where, batches=2000)
    figures["precision"] = report.as_dict()
    ok = (abs(report.weight_error_master - report.weight_error_one_rounding) < 1e-6
          and report.weight_error_rounded > 0.5)
    click.echo("precision, 2,000 small batches on bf16: error with master copies "
               f"{report.weight_error_master:.4f} "
               f"(one rounding {report.weight_error_one_rounding:.4f}), "
               f"without {report.weight_error_rounded:.4f}; "
               f"logits {report.logit_error_master:.4f} / {report.logit_error_rounded:.4f} "
               f"[{'ok' if ok else 'FAILED'}, {time.perf_counter() - started:.1f} s]")
    if not ok:
        failed.append("precision")

    _write(out, figures)
    if scale_config:
        scale = []
        for check in check_at_scale(scale_config, where):
            if isinstance(check, str):
                click.echo(f"  at scale, FAILED: {check}")
                scale.append({"error": check})
                failed.append(f"at scale: {check}")
            else:
                scale.append({"model": check.family, "what": check.what,
                              "measured_gib": check.measured / 2**30,
                              "planned_gib": check.planned / 2**30, "ratio": check.ratio})
                click.echo(f"  {check.family} bf16 {check.what:<11} "
                           f"measured {check.measured / 2**30:7.2f} GiB  plan "
                           f"{check.planned / 2**30:7.2f} GiB  ratio {check.ratio:.2f}")
            figures["plan_vs_measured_at_scale"] = scale
            _write(out, figures)  # as it goes: a later check may run out of time

    rows = []
    for family in families or FAMILIES:
        for check in check_family(family, where, plan_methods):
            rows.append({"family": family, "what": check.what, "measured_mb": check.measured / 1e6,
                         "planned_mb": check.planned / 1e6, "ratio": check.ratio})
    figures["plan_vs_measured"] = rows
    _write(out, figures)
    worst = max(rows, key=lambda r: abs(r["ratio"] - 1))
    click.echo("plan against measured peak (MB), micro models:")
    for row in rows:
        click.echo(f"  {row['family']:<8} {row['what']:<11} measured {row['measured_mb']:8.2f}  "
                   f"plan {row['planned_mb']:8.2f}"
                   f"  ratio {row['ratio']:.2f}")
    within = 0.75 <= worst["ratio"] <= 1.25
    click.echo(f"worst ratio {worst['ratio']:.2f} ({worst['family']} {worst['what']}) "
               f"[{'ok' if within else 'outside 25%'}]")
    if not within:
        failed.append(f"plan against measured peak: {worst['family']} {worst['what']}")

    if where.type == "cuda" and importlib.util.find_spec("vllm") is not None:
        try:
            from ..checks.vllm_parity import vllm_parity
        except ImportError:
            click.echo("vLLM parity: skipped (this editbench has no parity check)")
        else:
            parity = vllm_parity(vllm_model) if vllm_model else vllm_parity()
            figures["vllm"] = list(parity.lines())
            for line in parity.lines():
                click.echo(f"vLLM parity: {line}")
    else:
        click.echo("vLLM parity: skipped ("
                   + ("vLLM is not installed" if where.type == "cuda" else "needs a CUDA GPU")
                   + ")")
    _write(out, figures)

    if bench_sizes:
        figures["bench"] = _small_bench(where, bench_sizes, bench_methods, bench_pairs)
        _write(out, figures)
    if failed:
        click.echo(f"selfcheck: {len(failed)} check(s) failed: {'; '.join(failed)}", err=True)
        sys.exit(1)


def _write(out: Path | None, figures: dict) -> None:
    if out is not None:
        atomic_write_bytes(out, (json.dumps(figures, indent=2) + "\n").encode())


def _small_bench(where, size_list: tuple[int, ...], methods: tuple[str, ...] | None,
                 pairs: int = 2000) -> dict:
    """``editbench bench``'s scoring and edit-throughput measurements, small: the batched probe
    against one pair per forward pass, and a short lifelong run per method on the same micro model.
    Its stores live in a fresh temporary folder: a kept one would be resumed next time, and its old
    figures read back as new."""
    import tempfile

    from ...core.micro import MicroModel, build_micro_model
    from ..checks.bench import default_task, edit_throughput, scoring_throughput
    from .bench import print_throughput

    with tempfile.TemporaryDirectory(prefix="editbench-selfcheck-") as scratch:
        folder = Path(scratch)
        model_path = build_micro_model(folder / "micro-model", default_task(0).corpus() or [],
                                       MicroModel())
        scoring = scoring_throughput(model_path, where, pairs, repeats=3)
        click.echo(f"bench, scoring {scoring['pairs']} pairs: one at a time "
                   f"{scoring['one_at_a_time_s']:.2f} s, "
                   f"batched {scoring['batched_s']:.2f} s ({scoring['speedup']:.1f}x; "
                   f"{scoring['speedup_repeat']:.1f}x with the pairs encoded), "
                   f"{scoring['prediction_mismatches']} prediction mismatches")
        chosen = methods or bench_methods()
        rows = edit_throughput(model_path, folder, chosen, size_list, batch_size=100,
                               eval_sample=50, device=str(where), params={})
    print_throughput(rows)
    return {"scoring": scoring, "edit_throughput": rows}
