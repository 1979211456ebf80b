"""``editbench run``: its options come from the run's schema (``options.py``), its work from the
library (:func:`editbench.harness.api.execute`); this module reads the flags and prints."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .options import given, run_options


@click.command(params=run_options())
@click.option("--config", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="A run file (YAML or JSON) with any of these options, method parameters and "
                   "presets; options given here override it. Each run keeps its resolved file in "
                   "OUT/run-files/.")
@click.option("--dump-config", is_flag=True,
              help="Print the resolved run file (the --config file with the options given here "
                   "over it) and exit.")
@click.option("--dry-run", is_flag=True,
              help="Resolve the run and print its plan (records, batches, checkpoints, each "
                   "method's settings and memory, what would stop it) without loading weights.")
@click.option("--columns", "table_columns", default=None, metavar="A,B",
              help="Columns of the end-of-run table (metric keys such as efficacy_acc, or headers "
                   "such as eff.(gen)); default: the protocol's headline metrics, teacher-forced "
                   "and generated.")
@click.option("--all", "table_all", is_flag=True,
              help="End-of-run table with every column at every checkpoint (wider than a "
                   "terminal).")
@click.pass_context
def run(ctx: click.Context, config: Path | None, dump_config: bool, dry_run: bool,
        table_columns: str | None, table_all: bool, **values) -> None:
    """Edit a fresh copy of the model with each method, batch after batch, and score it at
    checkpoints."""
    from ..api import execute
    from ..plan import runfile
    from ..plan.settings import RunSpec, layered

    # a bad flag or run file ends in one line naming it (the group's error handling, group.py)
    layers = [(runfile.read_file(config), f"--config {config}")] if config is not None else []
    spec = RunSpec(**layered([*layers, (given(ctx, values), "")]))
    if dump_config:
        click.echo(runfile.dump(spec.to_mapping()), nl=False)
        return
    if dry_run:
        from ..plan.preflight import preflight
        from ..plan.resolve import resolve_sweep

        for plan in resolve_sweep(spec):
            click.echo(format_plan(plan, preflight(plan)))
        return
    results = execute(spec, side_by_side=True)
    # after the run: execute starts the worker server first thing (worker_start.start_early)
    from ...core.store import load_results
    from ...reports.summary import TableChoice, terminal_width

    store = load_results(spec.out)
    try:
        table = TableChoice(table_columns, table_all, terminal_width())
        for runner, outcome in results:
            _print_run(store, runner, outcome, table)
        errors = store.cells().set_index(["run_id", "method"])["error"]
    finally:
        store.close()
    for _, outcome in results:
        for label, status in outcome.statuses.items():
            if status != "done":
                error = errors.get((outcome.run_id, label))
                detail = f": {error}" if isinstance(error, str) and error else ""
                click.echo(f"{label}: {status}{detail}", err=True)
    click.echo(f"results: {results[0][1].store_path}")
    sys.exit(0 if all(o.ok for _, o in results) else 1)


def _gib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**30:,.2f} GiB"


def format_plan(plan, findings: list[str]) -> str:
    """A resolved plan as a reader checks it before a long run."""
    from ...core.configs import config_dict

    scored = {len(p) for p in plan.positions.values()}
    sample = (f"a sample of {plan.spec.eval_sample} per checkpoint" if plan.spec.eval_sample
              else "every edit so far")
    lines = [
        f"plan of run {plan.run_id} (seed {plan.seed}); nothing is loaded or written",
        f"  protocol {plan.protocol.describe()}",
        f"  task {plan.task.name} ({plan.spec.split} split), {plan.edits} edits in "
        f"{len(plan.batches)} turns of up to {plan.spec.batch_size}; first: "
        f"{', '.join(r.uid for r in plan.records[:3])}",
        f"  checkpoints {','.join(map(str, plan.checkpoints))}; scored: {sample}"
        f" ({min(scored)}-{max(scored)} edits)" if scored else "",
        f"  model {plan.model_source}"
        f"{f' (recognised as {plan.architecture})' if plan.architecture else ''}, "
        f"{str(plan.dtype).removeprefix('torch.')} on {plan.device}, scored by {plan.backend}; "
        f"the device leaves the edited model {_gib(plan.capacity)}",
        "  methods (settings; planned peak by phase):",
    ]
    estimates = {item.label: item for item in plan.estimates}
    for setup in plan.methods:
        settings = ", ".join(f"{k}={v}" for k, v in config_dict(setup.config).items())
        lines.append(f"    {setup.label:<16} {settings or 'defaults'}")
        item = estimates.get(setup.label)
        if item is None or item.cost is None:
            lines.append(f"    {'':<16} peak: {'no cost model' if item else 'no estimate'}")
            continue
        host = plan.device.type == "cpu"
        phases = "; ".join(f"{phase.phase} {_gib(item.cost.peak(phase, host_shared=host))}"
                           for phase in item.cost.phases)
        lines.append(f"    {'':<16} peak: {phases}")
    lines += [f"  {note}" for note in plan.notes]
    lines.append("  would stop it: " + ("; ".join(findings) if findings else "nothing"))
    return "\n".join(line for line in lines if line)


def _unedited_line(baseline: dict, scored: int) -> str:
    """What the unedited model knows of the edits that are scored, saying which answer each figure
    is on."""
    parts = []
    if "pre_edit_accuracy" in baseline:
        generated = f", generated {baseline['pre_edit_gen_em']:.3f}" \
            if "pre_edit_gen_em" in baseline else ""
        parts.append(f"true answers: teacher-forced {baseline['pre_edit_accuracy']:.3f}{generated}")
    if "pre_edit_efficacy_acc" in baseline:
        generated = f", generated {baseline['pre_edit_efficacy_gen_em']:.3f}" \
            if "pre_edit_efficacy_gen_em" in baseline else ""
        parts.append("new targets (before editing): teacher-forced "
                     f"{baseline['pre_edit_efficacy_acc']:.3f}{generated}")
    return f"unedited model on the {scored} scored edits: " + "; ".join(parts) if parts else ""


def _print_run(store, runner, outcome, table) -> None:
    from ...core.numerics import describe_numerics
    from ...reports.metrics import CAPABILITY_PREFIX
    from ...reports.summary import MARKS_NOTE, run_board, terminal_table, unedited_capability

    runs = store.runs().set_index("run_id")
    baseline = runs.loc[outcome.run_id, "baseline"] or {}
    click.echo("")
    sessions = store.sessions()
    numerics = sessions.loc[sessions["run_id"] == outcome.run_id, "numerics"]
    summaries = "; ".join(dict.fromkeys(describe_numerics(n) for n in numerics))
    # the lines above the table wrap at its width too
    click.echo(table.note(f"run {outcome.run_id}  task={runner.task.name}  "
                          f"model={runner.model_source}  edits={runner.edits}  "
                          f"seed={runner.seed}  device={runs.loc[outcome.run_id, 'device']}"
                          + (f"  numerics={summaries}" if summaries else "")))
    click.echo(table.note(_unedited_line(
        baseline, len({p for scored in runner.positions.values() for p in scored}))))
    board = run_board(runner.spec.out, outcome.run_id)
    click.echo(table.note(f"protocol {board.protocol.describe()}"))
    try:
        click.echo(table.render(board))
    except ValueError as exc:  # a --columns name the run has no column for; the run is stored
        click.echo(f"{exc}; showing the default columns", err=True)
        click.echo(terminal_table(board, width=table.width))
    if table.everything or table.names:
        if board.rows:
            click.echo(table.note(MARKS_NOTE))
        return
    extra = [m.name for m in runner.task.metrics if m.name in {c.key for c in board.columns}]
    if extra:
        click.echo(f"\n{runner.task.name} metrics:")
        click.echo(terminal_table(board, extra, width=table.width, folded=False))
    capability = [c.key for c in board.columns if c.key.startswith(CAPABILITY_PREFIX)]
    if capability:
        unedited = unedited_capability(store, outcome.run_id)
        click.echo(
            "\ngeneral capability (accuracy; the unedited model: "
            f"{', '.join(f'{name} {value:.3f}' for name, value in sorted(unedited.items())) or '-'}"
            "):")
        click.echo(terminal_table(board, capability, width=table.width, folded=False))
    if board.rows:
        click.echo(table.note(MARKS_NOTE))


