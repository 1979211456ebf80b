"""Run the RLEdit release (c6576a1) on the exported pocket world, with the shims stated in README.

Runs the release's own ``main.py`` (via runpy) in the release venv, with its Hydra config
overridden on the command line. What this file adds before ``main.py`` runs, and why:

* a ``wandb`` stub: the release reports ES/GS/LS only through ``wandb.log`` (editor/base.py:308);
  the stub writes every logged dict to ``wandb_log.jsonl`` instead of a server;
* a ``glue_eval.glue_eval`` stub: editor/base.py:18 imports it at the top, and its modules import
  ``datasets.load_metric``, which the pinned datasets 3.1.0 no longer has; with ``+glue_step=0``
  GLUE is never run, so the stub is never called (it raises if it were);
* ``torch.manual_seed(seed)``: the release seeds nothing (network init, loader shuffles);
* timers around the editor's ``train`` and ``sequential_valid``, and around the edit steps
  (``cache``, ``predict_param_shifts``, ``edit_model``) inside ``sequential_valid``, which give
  the edit's seconds apart from the scoring (no change to what they do).

    /work/release-venv/bin/python run_release.py --release DIR --method rledit --seed 0 \
        --data WORK --out WORK/release/rledit-s0
"""

from __future__ import annotations

import argparse
import json
import runpy
import sys
import time
import types
from collections import Counter
from pathlib import Path

# the modules the release edits on the pocket model: gate and up projections of layers 1-2,
# what editbench's presets take on a model no release names (methods/hypernet/modules.py:78-90)
EDIT_MODULES = [f"model.layers.{i}.mlp.{p}_proj" for p in ("gate", "up") for i in (1, 2)]


def install_stubs(out: Path) -> None:
    log = out / "wandb_log.jsonl"

    def log_line(values: dict) -> None:
        with log.open("a") as file:
            file.write(json.dumps({k: float(v) for k, v in values.items()}) + "\n")

    wandb = types.ModuleType("wandb")
    wandb.init = lambda **kw: None
    wandb.log = log_line
    sys.modules["wandb"] = wandb
    glue = types.ModuleType("glue_eval.glue_eval")

    class GLUEEval:  # noqa: D101
        def __init__(self, *a, **kw):
            raise RuntimeError("GLUE evaluation is stubbed out (run with +glue_step=0)")

    glue.GLUEEval = GLUEEval
    sys.modules["glue_eval.glue_eval"] = glue


def time_editor(timings: dict) -> None:
    """Wrap the editors' train and sequential_valid with wall-clock timers, and their edit steps
    with one that counts only inside sequential_valid (training makes the same calls)."""
    import editor.base
    import editor.malmen
    import editor.mend
    import editor.rledit

    running: Counter[str] = Counter()  # the timed calls under way, by key

    def timed(cls, name, key, inside=None):
        original = getattr(cls, name)

        def wrapper(self, *a, **kw):
            running[key] += 1
            start = time.perf_counter()
            try:
                return original(self, *a, **kw)
            finally:
                running[key] -= 1
                if inside is None or running[inside]:
                    timings[key] = timings.get(key, 0.0) + time.perf_counter() - start
        setattr(cls, name, wrapper)

    timed(editor.base.BaseEditor, "train", "train_s")  # MALMEN, MEND
    timed(editor.rledit.RLEDIT, "train", "train_s")
    timed(editor.base.BaseEditor, "sequential_valid", "edit_eval_s")
    for cls, name in ((editor.base.BaseEditor, "cache"), (editor.base.BaseEditor, "edit_model"),
                      (editor.malmen.MALMEN, "predict_param_shifts"),
                      (editor.mend.MEND, "predict_param_shifts"),
                      (editor.rledit.RLEDIT, "predict_param_shifts")):
        timed(cls, name, "edit_s", inside="edit_eval_s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--release", type=Path, required=True, help="checkout of c6576a1")
    parser.add_argument("--method", choices=("rledit", "malmen", "mend"), required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--data", type=Path, required=True, help="export.py's --out")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--edit-lr", default="1e-2")
    args = parser.parse_args()
    out, data = args.out.resolve(), args.data.resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "wandb_log.jsonl").unlink(missing_ok=True)
    timings: dict = {}
    install_stubs(out)
    release = args.release.resolve()
    sys.path.insert(0, str(release))
    import torch
    torch.manual_seed(args.seed)
    time_editor(timings)
    overrides = [
        "dataset=zsre", f"editor={args.method}", "num_seq=400",  # run.sh
        "model_device=cpu", "editor_device=cpu", "+glue_step=0",
        f"model.name_or_path={data / 'model'}", "model.name=pocket", "model.half=false",
        f"model.edit_modules=[{','.join(EDIT_MODULES)}]",
        f"dataset.train_path={data / f'release_train_seed{args.seed}.json'}",
        f"dataset.valid_path={data / 'release_eval.json'}",
        f"editor.lr={args.edit_lr}", f"hydra.run.dir={out}",
    ]
    (out / "overrides.json").write_text(json.dumps(overrides, indent=1))
    sys.argv = [str(release / "main.py"), *overrides]
    start = time.perf_counter()
    runpy.run_path(str(release / "main.py"), run_name="__main__")
    timings["total_s"] = time.perf_counter() - start
    logs = [json.loads(line) for line in (out / "wandb_log.jsonl").read_text().splitlines()]
    final = [d for d in logs if "ES" in d][-1]
    result = {"side": "release", "method": args.method, "seed": args.seed,
              "ES": 100 * final["ES"], "GS": 100 * final["GS"], "LS": 100 * final["LS"],
              "train_steps_logged": sum("gen_loss" in d for d in logs), **timings}
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
