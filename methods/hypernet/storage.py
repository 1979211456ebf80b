"""What a trained editor and a training run leave on disk, and how they are read back.

A training folder (``editbench train --out DIR`` or the run cache) holds

- ``config.json``: what was trained - method, settings, model fingerprint, train-data hash,
  edited modules and the initial edit lrs that the scaling rule chose;
- ``state-NNNNNN/``: the training state of an unfinished run after step NNNNNN, written whole to a
  staging folder and renamed into place, so a kill leaves either the previous or the new state:
  ``net.safetensors`` (networks and normaliser statistics), ``optimizer.safetensors`` (Adam),
  ``best.safetensors`` (the best network by validation loss so far) and ``trainer.json``;
- ``editor.safetensors`` and ``history.json`` once training is finished: the kept network (the
  best by validation loss, or the last) and the validation curve.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save, save_file

from ...core.cache import atomic_write_bytes, publish_dir, staging_dir
from ...core.method import MethodSetupError
from ...core.models import model_fingerprint

log = logging.getLogger(__name__)

#: part of every trained editor's identity (and so of the cache key): bump it when what a saved
#: editor means changes (2: keys and gradients from per-record losses, batch-size invariant; 3: a
#: training sequence is at most one pass over the train split, and a bf16 model's float32 master
#: copies are reset with its weights after each sequence: editors cached before are retrained)
FORMAT_VERSION = 3
EDITOR_FILE = "editor.safetensors"
CONFIG_FILE = "config.json"


def is_complete(folder: Path) -> bool:
    return (folder / EDITOR_FILE).is_file() and (folder / CONFIG_FILE).is_file()


def write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(
        path, (json.dumps(data, indent=2, sort_keys=True, default=str) + "\n").encode()
    )


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """safetensors, written beside the target and renamed over it."""
    atomic_write_bytes(
        path, save({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()})
    )


def net_tensors(method) -> dict[str, torch.Tensor]:
    return {f"{key}.{name}": t.detach().clone() for key, net in method.nets.items()
            for name, t in net.state_dict().items()}


def load_net_tensors(method, tensors: dict[str, torch.Tensor]) -> None:
    for key, net in method.nets.items():
        prefix = f"{key}."
        net.load_state_dict(
            {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        )


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out = {}
    for index, state in optimizer.state_dict()["state"].items():
        for name, value in state.items():
            out[f"{index}.{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return out


def load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    saved = optimizer.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    saved["state"] = state
    optimizer.load_state_dict(saved)


def _states(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("state-*") if (p / "trainer.json").is_file())


def latest_state(folder: Path) -> Path | None:
    found = _states(folder)
    return found[-1] if found else None


def save_state(
    folder: Path,
    step: int,
    net: dict[str, torch.Tensor],
    optimizer: dict[str, torch.Tensor],
    best: dict[str, torch.Tensor],
    trainer: dict[str, Any],
) -> Path:
    final = folder / f"state-{step:06d}"
    if final.exists():
        shutil.rmtree(final)
    tmp = staging_dir(final)
    save_file({k: v.contiguous() for k, v in net.items()}, tmp / "net.safetensors")
    save_file({k: v.contiguous() for k, v in optimizer.items()}, tmp / "optimizer.safetensors")
    save_file({k: v.contiguous() for k, v in best.items()}, tmp / "best.safetensors")
    (tmp / "trainer.json").write_text(json.dumps(trainer, sort_keys=True))
    publish_dir(tmp, final)
    for old in _states(folder):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_state(path: Path) -> tuple[dict, dict, dict, dict]:
    return (load_file(path / "net.safetensors"), load_file(path / "optimizer.safetensors"),
            load_file(path / "best.safetensors"), json.loads((path / "trainer.json").read_text()))


def finish(folder: Path, best: dict[str, torch.Tensor], summary: dict[str, Any]) -> None:
    """``summary``: the kept network's step and validation loss, the steps taken, the
    validations."""
    write_json(folder / "history.json", summary)
    save_tensors(folder / EDITOR_FILE, best)
    for old in _states(folder):
        shutil.rmtree(old, ignore_errors=True)


def describe_modules(method) -> list[list[Any]]:
    return [[m.name, m.key_size, m.value_size] for m in method.modules]


def load_editor(method, folder: Path) -> None:
    """Load a finished editor into ``method``, refusing one that does not fit this model or
    setting."""
    if not is_complete(folder):
        partial = " (training there is unfinished: rerun the same `editbench train` to finish it)" \
            if latest_state(folder) is not None else ""
        raise MethodSetupError(
            f"{folder} holds no trained editor ({EDITOR_FILE} and {CONFIG_FILE}){partial}"
        )
    saved = read_json(folder / CONFIG_FILE)
    if saved.get("method") != method.name:
        raise MethodSetupError(f"{folder} holds a {saved.get('method')} editor, not {method.name}")
    trained = saved["identity"]["config"]
    for field in sorted(method.config.ARCHITECTURE_FIELDS):
        ours = getattr(method.config, field)
        theirs = trained.get(field)
        if (list(ours) if isinstance(ours, tuple) else ours) != theirs:
            raise MethodSetupError(
                f"{folder} was trained with {field}={theirs!r} but this run asks for {ours!r}; "
                f"pass --param {method.name}.{field}=... to match, or train again"
            )
    if saved["modules"] != describe_modules(method):
        raise MethodSetupError(f"{folder} was trained for modules {saved['modules']}, but this "
                               f"model has {describe_modules(method)}: it belongs to another "
                               "model")
    ours = json.loads(json.dumps(method.config.training_fields(), default=str))
    differing = sorted(k for k in ours if trained.get(k) != ours[k])
    if differing:
        log.warning(
            "%s: %s was trained with other settings (%s) than this run's; using it as trained",
            method.name,
            folder,
            ", ".join(f"{k}={trained.get(k)!r}" for k in differing),
        )
    if saved["identity"]["model"] != model_fingerprint(method.ctx.model):
        log.warning("%s: %s was trained on other weights of this architecture; using it anyway",
                    method.name, folder)
    load_net_tensors(
        method, {k: v.to(method.ctx.device) for k, v in load_file(folder / EDITOR_FILE).items()}
    )
    log.info("%s: loaded the trained editor from %s", method.name, folder)
