"""``editbench train``: train a learned editor (the hypernetworks) on a task's train split.

The trained editor goes to ``--out`` as safetensors plus its config as JSON; rerunning the same
command after a kill resumes from the last saved training state. ``editbench run --editor
METHOD=DIR`` then edits with it. Without one, ``editbench run`` trains the same way into its cache.
A method is trainable when it implements :class:`editbench.core.method.Trainable`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

import click

from ..core.configs import DTYPE_CHOICES, parse_overrides

log = logging.getLogger(__name__)


def train_editor(method: str, out: Path, task: str | None = None, data: str | None = None, split: str = "eval",
                 model: str | None = None, params: Mapping[str, Mapping[str, str]] | None = None, seed: int = 0,
                 device: str = "auto", dtype: str = "auto", trust_remote_code: bool = False,
                 cache_dir: Path | None = None) -> Path:
    """Train ``method`` (``NAME`` or ``NAME@PRESET``) on the task's train split into ``out``."""
    import torch

    from ..core.cache import cache_root, exclusive_lock
    from ..core.method import EditContext, is_trainable
    from ..core.models import ModelLayout, load_model, resolve_device, resolve_dtype
    from ..core.records import check_disjoint
    from ..methods import METHODS
    from .runner import RunSpec, check_param_owners, resolve_methods, resolve_task
    from .threads import fit_threads_to_model

    spec = RunSpec(methods=(method,), task=task, data=data, split=split, model=model, params=params or {},
                   seed=seed, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                   cache_dir=cache_dir, out=Path(out))
    task_obj = resolve_task(spec)
    (plan,) = resolve_methods(spec)
    check_param_owners(spec, task_obj, [plan])
    if not is_trainable(plan.cls):
        trainable = sorted(n for n, c in METHODS.items() if is_trainable(c))
        raise ValueError(f"--method {method}: {plan.ref.name} learns nothing to train; "
                         f"trainable methods: {', '.join(trainable)}")
    source = model or task_obj.default_model()
    if source is None:
        raise ValueError(f"the {task_obj.name} task has no built-in model: pass --model NAME_OR_PATH")
    train_records = task_obj.load("train")
    check_disjoint(train_records, task_obj.load(split), task_obj.name, f"its {split!r} split")
    torch_device = resolve_device(device)
    lm, tokenizer = load_model(source, torch_device, resolve_dtype(dtype, torch_device), trust_remote_code)
    fit_threads_to_model(lm, torch_device)  # one thread for a small model (harness/threads.py)
    ctx = EditContext(model=lm, tokenizer=tokenizer, layout=ModelLayout.of(lm), device=torch_device,
                      cache_dir=cache_dir or cache_root(), task=task_obj, seed=seed,
                      generator=torch.Generator().manual_seed(seed), train_records=lambda: train_records)
    editor = plan.cls(plan.config, ctx)
    log.info("training %s on %d %s train records with %s", plan.label, len(train_records), task_obj.name, source)
    with exclusive_lock(Path(out) / ".lock", f"training into {out}", wait=False):  # one trainer per folder
        editor.fit(Path(out), train_records)
    return Path(out)


@click.command()
@click.option("--method", required=True, help="The method to train, or METHOD@PRESET (e.g. rledit, rledit@release).")
@click.option("--task", default=None, help="Task whose train split to train on (default: the pocket world).")
@click.option("--data", default=None, help="The task's data: a local file, an http(s) URL or a Hugging Face datasets id.")
@click.option("--split", default="eval", show_default=True,
              help="The split the editor will be scored on; the train split must share no record with it.")
@click.option("--model", default=None, help="Hugging Face hub name or local path; default: the task's own model.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Folder for the training state and the trained editor; rerun the same command to resume.")
@click.option("--param", "params", multiple=True, metavar="NAME.FIELD=VALUE",
              help="Set a method's or task's setting, e.g. --param rledit.depth=5 (repeatable).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the network's initialisation and data order.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--dtype", default="auto", show_default=True, type=click.Choice(DTYPE_CHOICES),
              help="Model weights dtype; auto = float32 on CPU, bfloat16 on GPU.")
@click.option("--trust-remote-code", is_flag=True, help="Allow the model's own Python code from the hub to run.")
def train(method: str, task: str | None, data: str | None, split: str, model: str | None, out: Path,
          params: tuple[str, ...], seed: int, device: str, dtype: str, trust_remote_code: bool) -> None:
    """Train a learned editor on a task's train split (resumable), for `run --editor`."""
    from .cli import task_and_data

    task, data = task_and_data(task, data)
    # a bad option, file or model ends in one line: the command group's error handling (cli.explain)
    folder = train_editor(method, out, task=task, data=data, split=split, model=model,
                          params=parse_overrides(params), seed=seed, device=device, dtype=dtype,
                          trust_remote_code=trust_remote_code)
    summary = json.loads((folder / "history.json").read_text())
    click.echo(f"trained {method}: kept the network of step {summary['kept_step']} of {summary['steps']} "
               f"(validation loss {summary['kept_val_loss']:.4f})")
    click.echo(f"editor: {folder}  (use: editbench run --methods {method} --editor {method}={folder})")
