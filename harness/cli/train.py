"""``editbench train``: train a learned editor for ``run --editor``
(``harness/running/train.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ...core.configs import DTYPE_CHOICES, parse_overrides


@click.command()
@click.option("--method", required=True,
              help="The method to train, or METHOD@PRESET (e.g. rledit, rledit@release).")
@click.option("--task", default=None,
              help="Task whose train split to train on (default: the pocket world).")
@click.option("--data", default=None,
              help="The task's data: a local file, an http(s) URL or a Hugging Face datasets id.")
@click.option("--split", default="eval", show_default=True,
              help="The split the editor will be scored on; the train split must share no record "
                   "with it.")
@click.option("--model", default=None,
              help="Hugging Face hub name or local path; default: the task's own model.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Folder for the training state and the trained editor; rerun the same command "
                   "to resume.")
@click.option("--param", "params", multiple=True, metavar="NAME.FIELD=VALUE",
              help="Set a method's or task's setting, e.g. --param rledit.depth=5 (repeatable).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seeds the network's initialisation and data order.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--dtype", default="auto", show_default=True, type=click.Choice(DTYPE_CHOICES),
              help="Model weights dtype; auto = float32 on CPU, bfloat16 on GPU.")
@click.option("--trust-remote-code", is_flag=True,
              help="Allow the model's own Python code from the hub to run.")
def train(method: str, task: str | None, data: str | None, split: str, model: str | None,
          out: Path, params: tuple[str, ...], seed: int, device: str, dtype: str,
          trust_remote_code: bool) -> None:
    """Train a learned editor on a task's train split (resumable), for `run --editor`."""
    from ..running.train import train_editor

    # a --task FILE.jsonl is read as the jsonl task (RunSpec); a bad option, file or model ends
    # in one line: the command group's error handling (group.py, explain)
    folder = train_editor(method, out, task=task, data=data, split=split, model=model,
                          params=parse_overrides(params), seed=seed, device=device, dtype=dtype,
                          trust_remote_code=trust_remote_code)
    summary = json.loads((folder / "history.json").read_text())
    click.echo(f"trained {method}: kept the network of step {summary['kept_step']} of "
               f"{summary['steps']} (validation loss {summary['kept_val_loss']:.4f})")
    click.echo(f"editor: {folder}  "
               f"(use: editbench run --methods {method} --editor {method}={folder})")
