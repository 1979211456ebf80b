"""``editbench train``: train a learned editor for ``run --editor``
(``harness/running/train.py``). Its settings are the run's (``options.py``): the same names,
defaults and checks."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .options import given, run_options

#: the run's settings that training takes
TRAIN_SETTINGS = ("task", "data", "split", "model", "params", "seed", "device", "dtype",
                  "trust_remote_code", "cache_dir")


@click.command(params=run_options(TRAIN_SETTINGS, help={
    "task": "Task whose train split to train on (default: the pocket world), or a JSONL file.",
    "split": "The split the editor will be scored on; the train split must share no record "
             "with it.",
    "params": "Set a method's or task's setting, e.g. --param rledit.depth=5 (repeatable).",
    "seed": "Seeds the network's initialisation and data order.",
}))
@click.option("--method", required=True,
              help="The method to train, or METHOD@PRESET (e.g. rledit, rledit@release).")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Folder for the training state and the trained editor; rerun the same command "
                   "to resume.")
@click.pass_context
def train(ctx: click.Context, method: str, out: Path, **values) -> None:
    """Train a learned editor on a task's train split (resumable), for `run --editor`."""
    from ...core.outputs import check_work_folder
    from ..plan.settings import RunSpec, layered
    from ..running.train import train_editor

    check_work_folder(out, "--out")

    # a bad option, file or model ends in one line: the group's error handling (group.py)
    spec = RunSpec(**layered([(given(ctx, values), "")]))
    if len(spec.seed) != 1:
        raise click.BadParameter("one seed: an editor is trained per seed", param_hint="--seed")
    folder = train_editor(method, out, task=spec.task, data=spec.data, split=spec.split,
                          model=spec.model, params=spec.params, seed=spec.seed[0],
                          device=spec.device, dtype=spec.dtype,
                          trust_remote_code=spec.trust_remote_code, cache_dir=spec.cache_dir)
    summary = json.loads((folder / "history.json").read_text())
    click.echo(f"trained {method}: kept the network of step {summary['kept_step']} of "
               f"{summary['steps']} (validation loss {summary['kept_val_loss']:.4f})")
    click.echo(f"editor: {folder}  "
               f"(use: editbench run --methods {method} --editor {method}={folder})")
