"""``editbench export``: push stored runs to an experiment tracker (Weights & Biases, MLflow).

Each editbench run (one task, model and seed; every method) becomes one tracker run, named after
the task and the run id, with:

- its config: the run's stored settings, each method's settings (``methods.<label>.<field>``),
  the model, device and versions;
- per-checkpoint metrics, at step = edits made so far: the mean of every stored metric and the
  time and memory columns, keyed ``<metric>/<method>`` (W&B groups them by metric, so the
  methods of a run share a section);
- the report's plots of the run, as images (W&B) or artifacts (MLflow).

Both clients are optional extras (``pip install "editbench[wandb]"``, ``"editbench[mlflow]"``) and
are imported only here, when asked for. Nothing is read but the stores; exporting twice makes two
tracker runs.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

#: columns of the store's summary that are not metrics
_NOT_METRICS = ("run_id", "method", "n_edits", "created")
#: characters MLflow refuses in a metric or parameter key (W&B takes them, but one spelling serves
#: both)
_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. /]")


def safe_key(key: str) -> str:
    return _UNSAFE.sub("_", key)


@dataclass(frozen=True)
class TrackedRun:
    """What one editbench run gives a tracker."""

    name: str
    run_id: str
    config: dict[str, Any]
    steps: dict[int, dict[str, float]]  # edits made -> {metric/method: mean}
    plots: list[Path]


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) and value[:1] in "{[" else value


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested settings as ``a.b.c`` keys (what MLflow parameters need; W&B shows them the same)."""
    if isinstance(value, Mapping):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(flatten(item, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): (
        value if isinstance(value, (int, float, str, bool)) or value is None else str(value))}


def tracked_runs(folders: list[Path], plots_folder: Path, seed: int = 0) -> Iterator[TrackedRun]:
    """Every run stored in ``folders``, with its plots drawn into ``plots_folder``."""
    from .collect import collect
    from .derived import derive
    from .leaderboard import build_board
    from .plots import board_plots
    from .summary import only_run

    results = collect(folders)
    for row in results.runs.itertuples(index=False):
        run = only_run(results, row.run_id)
        summary = _summary(folders, row.run_id)
        steps: dict[int, dict[str, float]] = {}
        for point in summary.to_dict("records"):
            values = steps.setdefault(int(point["n_edits"]), {})
            for key, value in point.items():
                if key not in _NOT_METRICS and isinstance(value, (int, float)) and value == value:
                    values[safe_key(f"{key}/{point['method']}")] = float(value)
        cells = run.cells
        config = {"run_id": row.run_id, "task": row.task, "model": row.model, "device": row.device,
                  "seed": int(row.seed), "git_sha": row.git_sha, "source": row.source,
                  "run": _json(row.config), "versions": _json(row.versions),
                  "methods": {m: _json(c) for m, c in zip(cells["method"], cells["method_config"])}}
        board = build_board(derive(run), row.task, seed)
        drawn = board_plots(run, board, plots_folder / row.run_id, seed=seed, name=row.run_id[:8])
        yield TrackedRun(f"{row.task}-{row.run_id[:8]}", row.run_id, config, steps,
                         [p.png for p in drawn])


def _summary(folders: list[Path], run_id: str):
    """The run's per-checkpoint means, from whichever folder holds it."""
    from ..core.store import load_results

    for folder in folders:
        store = load_results(folder)
        try:
            frame = store.summary()
        finally:
            store.close()
        if not frame.empty and (frame["run_id"] == run_id).any():
            return frame[frame["run_id"] == run_id]
    raise ValueError(f"run {run_id}: no checkpoints stored")


def to_wandb(run: TrackedRun, project: str, entity: str | None = None) -> str:
    """One W&B run (``WANDB_MODE=offline`` writes it locally, to sync later); returns its id."""
    try:
        import wandb
    except ImportError:
        raise ValueError('--wandb needs `pip install "editbench[wandb]"`') from None
    try:
        tracker = wandb.init(project=project, entity=entity, name=run.name,
                             group=run.config["task"], config=flatten(run.config),
                             job_type="editbench")
    except wandb.errors.Error as exc:
        # not logged in, an unknown entity: one line naming the project
        raise ValueError(f"--wandb {project}: {str(exc).splitlines()[0]}") from None
    try:
        for step in sorted(run.steps):
            tracker.log({"edits": step, **run.steps[step]}, step=step)
        if run.plots:
            tracker.log({f"plots/{png.stem}": wandb.Image(str(png)) for png in run.plots})
        return tracker.id
    finally:
        tracker.finish()


def mlflow_tracking_uri(uri: str) -> str:
    """A folder (``./mlruns``) or ``file:`` URI is MLflow's file store, which MLflow 3 keeps only
    when asked (``MLFLOW_ALLOW_FILE_STORE``): naming a folder asks for it. Other URIs (a server,
    ``sqlite:///mlflow.db``, Databricks) pass unchanged."""
    from ..core.outputs import check_work_folder

    if uri.startswith("sqlite:///"):  # MLflow's own database must not be a results store
        check_work_folder(Path(uri.removeprefix("sqlite:///")).parent, "--mlflow")
        if Path(uri.removeprefix("sqlite:///")).name == "results.sqlite":
            raise ValueError(f"--mlflow {uri}: that is a results store's name; choose another "
                             "database file")
    if ":" in uri and not uri.startswith("file:") and not Path(uri).drive:
        return uri
    check_work_folder(Path(uri.removeprefix("file:")), "--mlflow")
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return uri if uri.startswith("file:") else Path(uri).resolve().as_uri()


def to_mlflow(run: TrackedRun, uri: str, experiment: str) -> str:
    """One MLflow run in ``experiment`` at tracking ``uri`` (a local folder works); returns its
    id."""
    try:
        import mlflow
    except ImportError:
        raise ValueError('--mlflow needs `pip install "editbench[mlflow]"`') from None
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(uri)
    try:
        mlflow.set_experiment(experiment)
        with mlflow.start_run(run_name=run.name, tags={"editbench.run_id": run.run_id}) as active:
            params = {safe_key(k): "" if v is None else str(v)[:6000]
                      for k, v in flatten(run.config).items()}
            mlflow.log_params(params)
            for step in sorted(run.steps):
                mlflow.log_metrics(run.steps[step], step=step)
            for png in run.plots:
                mlflow.log_artifact(str(png), artifact_path="plots")
            return active.info.run_id
    except MlflowException as exc:  # a tracking server or store that refuses: one line naming it
        raise ValueError(f"--mlflow {uri}: {str(exc).splitlines()[0]}") from None


@click.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--wandb", "wandb_project", default=None, metavar="PROJECT",
              help="Log each run to this Weights & Biases project (WANDB_MODE=offline logs "
                   "locally).")
@click.option("--wandb-entity", default=None, help="The W&B team or user (default: yours).")
@click.option("--mlflow", "mlflow_uri", default=None, metavar="URI",
              help="Log each run to this MLflow tracking URI (a server, or a local folder such as "
                   "./mlruns).")
@click.option("--experiment", default="editbench", show_default=True, help="The MLflow experiment.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seeds the plots' bootstrap intervals.")
@click.option("--lm-eval", "lm_eval", is_flag=True,
              help="Write a run's edits as lm-evaluation-harness tasks (YAML and JSONL: efficacy, "
                   "generalization, locality by loglikelihood and by generation) into --out.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("editbench-lm-eval"),
              show_default=True, help="The folder for --lm-eval (new, empty, or an earlier "
                                      "export's).")
@click.option("--run", "run_id", default=None,
              help="--lm-eval: the run (its id or a prefix; needed when the store holds several).")
@click.option("--edits", "n_edits", type=int, default=None,
              help="--lm-eval: only the first N edits (a saved model's checkpoint; default: all "
                   "the run's edits).")
@click.option("--method", default=None,
              help="--lm-eval: put this method's stored verdicts at --edits beside each document.")
def export(results: tuple[Path, ...], wandb_project: str | None, wandb_entity: str | None,
           mlflow_uri: str | None, experiment: str, seed: int, lm_eval: bool, out: Path,
           run_id: str | None, n_edits: int | None, method: str | None) -> None:
    """Push stored runs (RESULTS folders) to an experiment tracker: each run's config, its metrics
    at every checkpoint and its plots; or, with --lm-eval, write a run's edits as an
    lm-evaluation-harness task folder that scores any saved model."""
    stray = [name for name, value in (("--run", run_id), ("--edits", n_edits),
                                      ("--method", method)) if value is not None]
    if stray and not lm_eval:
        raise click.UsageError(f"{stray[0]} goes with --lm-eval")
    if lm_eval:
        _export_lm_eval(results, out, run_id, n_edits, method)
        if wandb_project is None and mlflow_uri is None:
            return
    if wandb_project is None and mlflow_uri is None:
        raise click.UsageError("name a tracker: --wandb PROJECT and/or --mlflow URI, or "
                               "--lm-eval")
    if mlflow_uri is not None:
        mlflow_uri = mlflow_tracking_uri(mlflow_uri)
    with tempfile.TemporaryDirectory(prefix="editbench-export-") as plots:
        for run in tracked_runs(list(results), Path(plots), seed):
            if wandb_project is not None:
                click.echo(f"{run.name}: W&B run {to_wandb(run, wandb_project, wandb_entity)} "
                           f"in {wandb_project}")
            if mlflow_uri is not None:
                click.echo(f"{run.name}: MLflow run {to_mlflow(run, mlflow_uri, experiment)} "
                           f"at {mlflow_uri}")


def _export_lm_eval(results: tuple[Path, ...], out: Path, run_id: str | None,
                    n_edits: int | None, method: str | None) -> None:
    from .lmeval_task import write_lm_eval_task

    if len(results) != 1:
        raise click.UsageError("--lm-eval exports one results folder at a time")
    try:
        done = write_lm_eval_task(results[0], out, run_id, n_edits, method)
    except (FileNotFoundError, RuntimeError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"lm-eval tasks of run {done.run_id[:8]} ({sum(done.tasks.values())} documents, "
               f"{len(done.tasks)} tasks tagged {done.tag}): {out}")
    click.echo(f"  lm_eval --model hf --model_args pretrained=MODEL --include_path {out} "
               f"--tasks {done.tag}")
