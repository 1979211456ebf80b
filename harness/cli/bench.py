"""``editbench bench``: measure editbench itself (the measurements:
``harness/checks/bench.py``)."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import click

from ...core.cache import atomic_write_bytes
from ...core.configs import parse_overrides
from ...core.micro import MicroModel, build_micro_model
from ..checks.bench import default_task, edit_throughput, generation_cost, scoring_throughput
from .values import COUNTS, NAMES


def _table(rows: list[dict], columns: list[str]) -> str:
    import pandas as pd

    from ...reports.summary import format_table

    return format_table(pd.DataFrame(rows)[columns])


def print_throughput(rows: list[dict]) -> None:
    click.echo("\nedit throughput and peak memory:")
    click.echo(_table(rows, ["method", "edits", "status", "edits_per_second", "ms_per_edit",
                             "peak_memory_mib"]))


@click.command()
@click.option("--methods", type=NAMES, default=None, metavar="A,B",
              help="Methods to measure; default: every registered method.")
@click.option("--sizes", type=COUNTS, default="100,1000,5000,20000", show_default=True,
              help="Edit counts to report.")
@click.option("--batch-size", type=click.IntRange(min=1), default=100, show_default=True,
              help="Edits applied per batch.")
@click.option("--eval-sample", type=click.IntRange(min=2), default=50, show_default=True,
              help="Edits scored at each size.")
@click.option("--pairs", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Pairs for the scoring-throughput test.")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True,
              help="Scoring timings are the best of this many.")
@click.option("--gen-edits", type=click.IntRange(min=1), default=200, show_default=True,
              help="Edits for the cost of generated against teacher-forced evaluation.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--param", "params", multiple=True, metavar="NAME.FIELD=VALUE",
              help="Method settings, as for run.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("editbench-bench"),
              show_default=True)
def bench(methods: tuple[str, ...] | None, sizes: tuple[int, ...], batch_size: int,
          eval_sample: int, pairs: int, repeats: int, gen_edits: int, device: str,
          params: tuple[str, ...], out: Path) -> None:
    """Measure editbench's own speed and memory (prints tables, writes OUT/bench.json and
    OUT/bench.png)."""
    import torch

    from ...core.models import resolve_device
    from ...core.outputs import check_work_folder
    from ...core.timing import device_name
    from ...methods import METHODS
    from ...reports.plots import bench_plots
    from ..plan.resolve import default_methods

    size_list = sizes
    method_list = methods or default_methods()
    overrides = parse_overrides(params)
    for name in method_list:  # KeyError lists the registered methods, before minutes of scoring
        METHODS[name]
    check_work_folder(out, "--out")
    resolved = resolve_device(device)
    out.mkdir(parents=True, exist_ok=True)
    model_path = build_micro_model(out / "micro-model", default_task(0).corpus() or [],
                                   MicroModel())
    scoring = scoring_throughput(model_path, resolved, pairs, repeats)
    generation = generation_cost(model_path, resolved, gen_edits, repeats=repeats)
    throughput = edit_throughput(model_path, out, method_list, size_list, batch_size, eval_sample,
                                 device, overrides)
    result = {"device": device_name(resolved), "torch": torch.__version__,
              "python": platform.python_version(), "micro_model": vars(MicroModel()),
              "batch_size": batch_size, "eval_sample": eval_sample,
              "scoring": scoring, "generation": generation, "edit_throughput": throughput}
    atomic_write_bytes(out / "bench.json", (json.dumps(result, indent=2) + "\n").encode())
    plots = bench_plots(result, out)
    click.echo(f"device: {result['device']}")
    click.echo(f"\nscoring {scoring['pairs']} pairs: one at a time "
               f"{scoring['one_at_a_time_s']:.2f} s; batched "
               f"{scoring['batched_s']:.2f} s ({scoring['speedup']:.1f}x, "
               f"{scoring['batched_forward_share']:.0%} of it in forward passes), repeated with "
               f"the pairs encoded {scoring['batched_repeat_s']:.2f} s "
               f"({scoring['speedup_repeat']:.1f}x); "
               f"{scoring['prediction_mismatches']} prediction mismatches, log-probs within "
               f"{scoring['max_logprob_difference']:.1e}")
    click.echo(f"\ngenerated evaluation of {generation['edits']} edits: teacher-forced metrics "
               f"{generation['teacher_forced_s']:.2f} s, generated metrics "
               f"{generation['generated_s']:.2f} s "
               f"({generation['generated_over_teacher_forced']:.2f}x); greedy decoding of "
               f"{generation['prompts']} prompts: batched {generation['batched_decoder_s']:.2f} s, "
               "one at a time with generate() "
               f"{generation['one_at_a_time_s']:.2f} s ({generation['decoder_speedup']:.1f}x), "
               f"{generation['decoder_mismatches']} different outputs")
    print_throughput(throughput)
    per_method = {r["method"]: r for r in throughput}
    click.echo("\nharness overhead (whole run, share of wall time outside apply, prepare and "
               "forward passes):")
    click.echo(_table(list(per_method.values()),
                      ["method", "run_wall_s", "apply_s", "prepare_s", "forward_s", "eval_s",
                       "load_s", "overhead_share"]))
    click.echo(f"\nwritten: {out / 'bench.json'}"
               + "".join(f", {plot.png}, {plot.svg}" for plot in plots))
