"""``editbench train``: train a learned editor (the hypernetworks) on a task's train split.

The trained editor goes to ``--out`` as safetensors plus its config as JSON; rerunning the same
command after a kill resumes from the last saved training state. ``editbench run --editor
METHOD=DIR`` then edits with it. Without one, ``editbench run`` trains the same way into its cache.
A method is trainable when it implements :class:`editbench.core.method.Trainable`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)


def train_editor(method: str, out: Path, task: str | None = None, data: str | None = None,
                 split: str = "eval", model: str | None = None,
                 params: Mapping[str, Mapping[str, str]] | None = None, seed: int = 0,
                 device: str = "auto", dtype: str = "auto", trust_remote_code: bool = False,
                 cache_dir: Path | None = None) -> Path:
    """Train ``method`` (``NAME`` or ``NAME@PRESET``) on the task's train split into ``out``."""
    import torch

    from ...core.cache import cache_root, exclusive_lock
    from ...core.method import EditContext, is_trainable
    from ...core.models import ModelLayout, load_model, resolve_device, resolve_dtype
    from ...core.records import check_disjoint
    from ...methods import METHODS
    from ..plan.resolve import check_param_owners, method_setups, resolve_task
    from ..plan.settings import RunSpec
    from .threads import fit_threads_to_model

    spec = RunSpec(methods=(method,), task=task, data=data, split=split, model=model,
                   params=params or {},
                   seed=seed, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                   cache_dir=cache_dir, out=Path(out))
    task_obj = resolve_task(spec)
    (setup,) = method_setups(spec)
    check_param_owners(spec, task_obj, [setup])
    if not is_trainable(setup.cls):
        trainable = sorted(n for n, c in METHODS.items() if is_trainable(c))
        raise ValueError(f"--method {method}: {setup.ref.name} learns nothing to train; "
                         f"trainable methods: {', '.join(trainable)}")
    source = spec.model or task_obj.default_model()
    if source is None:
        raise ValueError(f"the {task_obj.name} task has no built-in model: "
                         "pass --model NAME_OR_PATH")
    train_records = task_obj.load("train")
    check_disjoint(train_records, task_obj.load(spec.split), task_obj.name,
                   f"its {spec.split!r} split")
    torch_device = resolve_device(device)
    lm, tokenizer = load_model(source, torch_device, resolve_dtype(dtype, torch_device),
                               trust_remote_code)
    fit_threads_to_model(lm, torch_device)  # one thread for a small model (threads.py)
    ctx = EditContext(model=lm, tokenizer=tokenizer, layout=ModelLayout.of(lm), device=torch_device,
                      cache_dir=cache_dir or cache_root(), task=task_obj, seed=seed,
                      generator=torch.Generator().manual_seed(seed),
                      train_records=lambda: train_records)
    editor = setup.cls(setup.config, ctx)
    log.info("training %s on %d %s train records with %s", setup.label, len(train_records),
             task_obj.name, source)
    # one trainer per folder
    with exclusive_lock(Path(out) / ".lock", f"training into {out}", wait=False):
        editor.fit(Path(out), train_records)
    return Path(out)
