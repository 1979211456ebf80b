"""Run the UltraEdit release (0beb222) on the exported pocket world, with the README's shims.

Runs the release's own ``main.py`` (via runpy) in the release venv, with its Hydra config
overridden on the command line. What this file adds before ``main.py`` runs, and why:

* a ``wandb`` stub: the release reports ES/GS/LS only through ``wandb.log``
  (editor/base.py:229); the stub writes every logged dict to ``wandb_log.jsonl`` instead;
* timers around ``ULTRAEDIT.cache`` and ``predict_param_shifts`` and ``BaseEditor.edit_model``
  (the edit: reading keys and gradients, the solve, adding the shift) and around
  ``sequential_valid`` (edit + evaluation; evaluation = the rest). They change nothing;
* a recorder of the per-record scores: a forward pre-hook keeps the model's last inputs and a
  wrapper of ``succ_ratios`` (editor/base.py:182) pairs each returned score with its row's tokens,
  which name the record (its prompt and answer, tokenized by the release's own
  ``ZSREDataset.tok_tuples``). It changes nothing either; ``per_record.json`` lets collect.py
  compare edit by edit.

No seed is set here: ``main.py:29`` seeds everything with 42 and UltraEdit draws nothing at
random; the seed is carried by the order of the exported valid file (export.py).

    /tmp/ultraedit-venv/bin/python run_release.py --release DIR --seed 0 --data WORK \
        --out WORK/fp32-lr1e-3/release/s0 [--lr 1e-3] [--bf16]
"""

from __future__ import annotations

import argparse
import json
import runpy
import sys
import time
import types
from pathlib import Path

# The pocket model's analogue of the release's Llama-3-8B choice (run.sh:3-7: gate_proj of layers
# 11-15 and up_proj of 18-24, of 32): the gate projection of layer 1 and the up projection of
# layer 2, of 4. Both are 128 -> 384, so they share one lifelong normaliser, as Llama's do.
EDIT_MODULES = ["model.layers.1.mlp.gate_proj", "model.layers.2.mlp.up_proj"]


def install_wandb_stub(out: Path) -> None:
    log = out / "wandb_log.jsonl"

    def log_line(values: dict) -> None:
        with log.open("a") as file:
            file.write(json.dumps({k: float(v) for k, v in values.items()}) + "\n")

    wandb = types.ModuleType("wandb")
    wandb.init = lambda **kw: None
    wandb.log = log_line
    sys.modules["wandb"] = wandb


def install_timers(timings: dict) -> None:
    import editor.base
    import editor.ultraedit

    def timed(cls, name, key):
        original = getattr(cls, name)

        def wrapper(self, *a, **kw):
            start = time.perf_counter()
            try:
                return original(self, *a, **kw)
            finally:
                timings[key] = timings.get(key, 0.0) + time.perf_counter() - start
        setattr(cls, name, wrapper)

    timed(editor.ultraedit.ULTRAEDIT, "cache", "edit_s")
    timed(editor.ultraedit.ULTRAEDIT, "predict_param_shifts", "edit_s")
    timed(editor.base.BaseEditor, "edit_model", "edit_s")
    timed(editor.base.BaseEditor, "sequential_valid", "edit_eval_s")


def install_recorder(data_file: Path, model_dir: Path, scores: dict) -> None:
    """Per-record ES/GS/LS as the release computes them, keyed by the record's uid."""
    import editor.base
    from data.zsre import ZSREDataset
    from transformers import AutoTokenizer

    reader = types.SimpleNamespace(tok=AutoTokenizer.from_pretrained(model_dir))

    def key(input_ids, labels) -> tuple:
        return tuple(input_ids.tolist()), tuple(labels[labels != -100].tolist())

    names: dict[tuple, list[tuple[str, str]]] = {}
    for row in json.loads(data_file.read_text()):
        for metric, prompt, answer in (("ES", row["src"], row["ans"]),
                                       ("GS", row["rephrase"], row["ans"]),
                                       ("LS", row["loc"] + "?", row["loc_ans"])):
            t = ZSREDataset.tok_tuples(reader, prompt, answer)
            names.setdefault(key(t["input_ids"][0], t["labels"][0]), []).append(
                (row["uid"], metric))
    last: dict = {}
    original_succ = editor.base.succ_ratios

    def succ_ratios(logits, labels, *a, **kw):
        values = original_succ(logits, labels, *a, **kw)
        for i, value in enumerate(values):
            ids = last["input_ids"][i][last["attention_mask"][i].bool()]
            for uid, metric in names[key(ids, labels[i])]:
                scores.setdefault(uid, {})[metric] = 100 * value
        return values
    editor.base.succ_ratios = succ_ratios
    original_valid = editor.base.BaseEditor.sequential_valid

    def sequential_valid(self, loader):
        def keep(_module, _args, kwargs):
            last.update(input_ids=kwargs["input_ids"], attention_mask=kwargs["attention_mask"])
        handle = self.model.register_forward_pre_hook(keep, with_kwargs=True)
        try:
            return original_valid(self, loader)
        finally:
            handle.remove()
    editor.base.BaseEditor.sequential_valid = sequential_valid


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--release", type=Path, required=True, help="checkout of 0beb222")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--data", type=Path, required=True, help="export.py's --out")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--lr", default="1e-3")
    parser.add_argument("--turns", type=int, default=3, help="num_seq: turns of 100 edits")
    parser.add_argument("--bf16", action="store_true", help="model.half=true, as released")
    parser.add_argument("--float-loss", action="store_true",
                        help="diagnostic only: the edit loss on float32 logits, as editbench "
                        "computes it (methods/objectives.py:13), instead of the bf16 logits")
    args = parser.parse_args()
    out, data = args.out.resolve(), args.data.resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "wandb_log.jsonl").unlink(missing_ok=True)
    timings: dict = {}
    install_wandb_stub(out)
    release = args.release.resolve()
    sys.path.insert(0, str(release))
    import torch
    torch.set_num_threads(1)
    scores: dict = {}
    valid = data / f"release_eval_seed{args.seed}.json"
    install_recorder(valid, data / "model", scores)
    install_timers(timings)
    if args.float_loss:
        import editor.ultraedit
        import util
        editor.ultraedit.cross_entropy = lambda logits, labels: util.cross_entropy(
            logits.float(), labels)
    overrides = [
        "dataset=zsre", "model=llama-3-instruct", "editor=ultraedit",  # run.sh:3, the defaults
        f"num_seq={args.turns}", "dataset.n_edits=100", "dataset.batch_size=10",  # run.sh:4-6
        "editor.cache_dir=cache",
        "model_device=cpu", "editor_device=cpu",
        f"model.name_or_path={data / 'model'}", "model.name=pocket",
        f"model.half={'true' if args.bf16 else 'false'}",
        f"model.edit_modules=[{','.join(EDIT_MODULES)}]",
        f"dataset.valid_path={valid}",
        f"editor.lr={args.lr}", f"hydra.run.dir={out}",
    ]
    (out / "overrides.json").write_text(json.dumps(overrides, indent=1))
    sys.argv = [str(release / "main.py"), *overrides]
    start = time.perf_counter()
    runpy.run_path(str(release / "main.py"), run_name="__main__")
    timings["total_s"] = time.perf_counter() - start
    logs = [json.loads(line) for line in (out / "wandb_log.jsonl").read_text().splitlines()]
    final = [d for d in logs if "ES" in d][-1]
    result = {"side": "release", "seed": args.seed, "lr": args.lr, "bf16": args.bf16,
              "turns": args.turns, "float_loss": args.float_loss, "ES": 100 * final["ES"],
              "GS": 100 * final["GS"], "LS": 100 * final["LS"], **timings}
    result["eval_s"] = result["edit_eval_s"] - result["edit_s"]
    (out / "result.json").write_text(json.dumps(result, indent=1))
    (out / "per_record.json").write_text(json.dumps(scores))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
