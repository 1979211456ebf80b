"""Snapshots that let a killed run resume exactly where its last stored checkpoint left it.

A snapshot holds only the weights the method declares it edits (safetensors), the method's
lifelong state (safetensors) and the RNG states. It is written to a staging folder and renamed
into place *before* the checkpoint's database transaction commits, and older snapshots are
removed only *after* it commits, so the store's last checkpoint always has its snapshot.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .cache import publish_dir, staging_dir


def _dir(root: Path, n_edits: int) -> Path:
    return root / f"edits-{n_edits:09d}"


def save_snapshot(root: Path, n_edits: int, model: nn.Module, parameter_names: list[str],
                  method_state: dict[str, torch.Tensor], generator: torch.Generator) -> Path:
    final = _dir(root, n_edits)
    if final.exists():
        shutil.rmtree(final)
    tmp = staging_dir(final)
    weights = {name: model.get_parameter(name).detach().to("cpu").contiguous() for name in parameter_names}
    save_file(weights, tmp / "weights.safetensors")
    save_file({k: v.detach().to("cpu").contiguous() for k, v in method_state.items()}, tmp / "state.safetensors")
    save_file({"torch": torch.get_rng_state(), "generator": generator.get_state()}, tmp / "rng.safetensors")
    (tmp / "meta.json").write_text(json.dumps({"n_edits": n_edits, "parameters": parameter_names}))
    return publish_dir(tmp, final)


def load_snapshot(root: Path, n_edits: int, model: nn.Module,
                  generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Copy the snapshot's weights into ``model``, restore RNGs, return the method state."""
    folder = _dir(root, n_edits)
    if not (folder / "meta.json").is_file():
        raise FileNotFoundError(
            f"the store records a checkpoint at {n_edits} edits but its snapshot {folder} is missing; "
            "resume is impossible for this method - remove its results or use a new --out"
        )
    with torch.no_grad():
        for name, tensor in load_file(folder / "weights.safetensors").items():
            param = model.get_parameter(name)
            param.copy_(tensor.to(param.device, param.dtype))
    rng = load_file(folder / "rng.safetensors")
    torch.set_rng_state(rng["torch"])
    generator.set_state(rng["generator"])
    return load_file(folder / "state.safetensors")


def prune_snapshots(root: Path, keep: int) -> None:
    for folder in root.glob("edits-*"):
        if folder.name != _dir(root, keep).name:
            shutil.rmtree(folder, ignore_errors=True)
