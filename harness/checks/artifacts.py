"""``editbench artifacts``: check the shipped offline world, or build it again.

The package ships the default run's pocket model and the editors its hypernetwork methods train,
and the lifelong scenario's model (``--task pocket-lifelong``; ``core/artifacts.py`` says why).
``--rebuild`` trains them as the default run and the scenario would, on this machine, into a fresh
cache, and writes them with a new manifest (the scenario's model alone is about half an hour of it
on two cores). It trains on the thread count the shipped manifest records (``--threads``
overrides), so the machine's core count is not a difference (two threads rebuilt the scenario's
model byte for byte, 2026-12-06); a rebuild on another CPU (another kernel set) trains another
world: the default table then moves by more than the tolerance the README states, so a rebuild is
a change to commit and to say, never a routine step.
Each entry's manifest line records the code hash of what built it (``core/identity.py``): after a
change to that code the shipped entry is passed over until a rebuild records the new hash (and, if
the new code builds other bytes, the new world).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

log = logging.getLogger(__name__)

#: the tasks whose own pocket model the package ships: the default world's (the default run's) and
#: the lifelong scenario's, whose 20,000 training steps diverge between CPUs as the default
#: model's do (a scenario run on another machine moved RLEdit's claim-3 figures;
#: docs/pocket-world.md)
MODEL_TASKS = ("pocket", "pocket-lifelong")


def build_artifacts(into: Path, seeds: tuple[int, ...] = (0,)) -> dict:
    """Train the default run's pocket model and trained editors (for each seed) and the model of
    each other task of :data:`MODEL_TASKS` in a fresh cache, and lay them out under ``into`` with
    their manifest; returns the manifest."""
    import tokenizers
    import torch
    import transformers

    from ..._version import __version__
    from ...core import artifacts
    from ...core.method import is_trainable
    from ...methods import METHODS
    from ..plan.resolve import default_methods, resolve
    from ..plan.settings import RunSpec
    from ..running import threads
    from ..running.runner import Runner

    trainable = tuple(name for name in default_methods() if is_trainable(METHODS[name]))
    previous = os.environ.get(artifacts.SKIP_VARIABLE)
    os.environ[artifacts.SKIP_VARIABLE] = "1"  # build, never reuse what is shipped now
    threads_before, chosen_before = torch.get_num_threads(), threads.chosen_by_user()
    shipped_threads = artifacts.read_manifest().get("built_with", {}).get("threads")
    if not chosen_before and isinstance(shipped_threads, int) and shipped_threads > 0:
        # the thread count the shipped world was trained on, whatever the machine's cores or the
        # one-thread rule for small models say, so that a rebuild can reproduce it byte for byte
        torch.set_num_threads(shipped_threads)
        threads.mark_explicit(True)
    try:
        with tempfile.TemporaryDirectory(prefix="editbench-artifacts-") as work:
            cache = Path(work) / "cache"
            for seed in seeds:  # a short run builds exactly the entries the default run looks up
                spec = RunSpec(
                    methods=trainable,
                    edits=10,
                    seed=seed,
                    gen_eval=False,
                    cache_dir=cache,
                    out=Path(work) / f"run-{seed}",
                )
                Runner(resolve(spec)).run()
            for task in MODEL_TASKS:  # the default world's is built by the runs above already
                _build_task_model(task, cache)
            built = sorted([*cache.glob("models/pocket-*"), *cache.glob("hypernets/*")])
            built = [p for p in built if p.is_dir() and not p.name.startswith(".")]
            into.mkdir(parents=True, exist_ok=True)
            entries = {}
            for folder in built:
                # the cache keeps each code's build apart; the package ships one, under its name
                name, code = artifacts.uncoded(folder.relative_to(cache).as_posix())
                target = into / name
                shutil.rmtree(target, ignore_errors=True)
                shutil.copytree(folder, target, ignore=shutil.ignore_patterns(".*", "state-*"))
                for written in target.glob("*.json"):  # the model's path: the entry, not a temp one
                    text = written.read_text()
                    written.write_text(text.replace(f"{cache.as_posix()}/", ""))
                entries[name] = {
                    "code": code,
                    "description": _describe(name),
                    "files": artifacts.folder_digests(target),
                }
        built_threads = torch.get_num_threads()
    finally:
        if previous is None:
            os.environ.pop(artifacts.SKIP_VARIABLE, None)
        else:
            os.environ[artifacts.SKIP_VARIABLE] = previous
        torch.set_num_threads(threads_before)
        threads.mark_explicit(chosen_before)
    for stale in [*into.glob("models/*"), *into.glob("hypernets/*")]:
        if stale.relative_to(into).as_posix() not in entries:
            shutil.rmtree(stale)
    manifest = {
        "format": artifacts.MANIFEST_FORMAT,
        "built_with": {
            "editbench": __version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": built_threads,
            "seeds": list(seeds),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        },
        "entries": entries,
    }
    (into / artifacts.MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    artifacts.forget_verified()
    return manifest


def expected_code(name: str) -> str | None:
    """The code hash this editbench builds shipped entry ``name`` with (None: an entry of a kind it
    does not know): what the manifest must record for the entry to be used."""
    kind, _, key = name.partition("/")
    if kind == "models":
        return model_entries().get(name, (None, None))[1]
    if kind == "hypernets":
        from ...methods import METHODS

        method = key.rsplit("-", 1)[0]
        return METHODS[method].training_code() if method in METHODS else None
    return None


def _describe(name: str) -> str:
    kind, _, key = name.partition("/")
    if kind == "models":
        task = model_entries().get(name, ("pocket", None))[0]
        return ("the lifelong scenario's pocket model (pocket-lifelong) and its tokenizer"
                if task == "pocket-lifelong" else
                "the pocket world's model (default world, small size) and its tokenizer")
    return f"the {key.rsplit('-', 1)[0]} editor trained on the pocket world's train split"


def _task(name: str, cache: Path | None):
    from ...core.task import TASKS, TaskOptions

    cls = TASKS[name]
    return cls(TaskOptions(cache_dir=cache), cls.Config())


def _build_task_model(name: str, cache: Path) -> None:
    """Task ``name``'s own model, at its default settings, built into ``cache`` (shipped entries
    are off during a rebuild, so it is trained here unless the cache has it)."""
    _task(name, cache).default_model()


def model_entries() -> dict[str, tuple[str, str]]:
    """Shipped-model entry name (``models/pocket-<digest>``) -> (task, the code hash this editbench
    builds it with), for each of :data:`MODEL_TASKS` at its default settings; nothing is built."""
    from ...tasks.pocket_model import building_code

    found = {}
    with tempfile.TemporaryDirectory(prefix="editbench-entries-") as scratch:
        for name in MODEL_TASKS:
            task = _task(name, Path(scratch))
            code = building_code(type(task.world))
            # the shipped folder's name, or the cache's with the code hash appended
            folder = Path(task.default_model(build=False)).name
            found[f"models/{folder.removesuffix(f'-{code}')}"] = (name, code)
    return found
