"""``editbench train``: train a learned editor (hypernetworks) on a task's train split.

Being built under the hypernetwork issue; until then the command says so and exits non-zero.
"""

from __future__ import annotations

import click


@click.command()
@click.option("--method", required=True, help="The method to train (e.g. rledit).")
@click.option("--task", default="pocket", show_default=True, help="Task whose train split to train on.")
@click.option("--model", default=None, help="Hugging Face hub name or local path; default: the task's own model.")
@click.option("--out", type=click.Path(), required=True, help="Folder for checkpoints; rerun to resume.")
def train(method: str, task: str, model: str | None, out: str) -> None:
    """Train a learned editor on a task's train split (resumable)."""
    raise click.ClickException("editbench train is not available yet")
