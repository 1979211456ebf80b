"""Edit time alone, the two codes under the same conditions: the release's ``execute_ft`` (its
``fine-tune.py`` definitions, the device line made 'cpu' as in run_release.py, its model set-up:
[PAD] added and the embeddings resized, ``:239-241``) or editbench's ``editbench.edit`` (the
runner's edit phase is this call), on the seed's 100 records, REPS times each, alternating.
Runs in either venv (the release side needs ``--release``; the editbench side editbench).

    PY fidelity/locft-release/time_edit.py --sides release,editbench --release SRC --data FILE \
        --model MODEL --seed 0 --chunk 10 --lr 5e-4 --reps 3
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import sys
import time
from pathlib import Path

import torch


def release_edit(args) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = args.release / "fine-tune.py"
    source = path.read_text().replace("f'cuda:{config.device}'", "'cpu'")
    head = source.split('if __name__ == "__main__":', 1)[0]
    sys.path.insert(0, str(args.release))
    namespace = {"__name__": "fine_tune"}
    exec(compile(head, str(path), "exec"), namespace)
    config = namespace["FTHyperParams"](model_name_or_path=str(args.model), data_path="",
                                        save_model_dir="", layer=2,
                                        rewrite_module="model.layers.{}.mlp.down_proj.weight",
                                        batch_size=args.chunk, lr=args.lr, num_steps=25)
    requests = [{"prompt": d["prompt"], "target_new": d["target_new"]}
                for d in json.loads(args.data.read_text())]
    tok = AutoTokenizer.from_pretrained(str(args.model))
    model = AutoModelForCausalLM.from_pretrained(str(args.model))
    tok.add_special_tokens({"pad_token": "[PAD]"})
    model.resize_token_embeddings(len(tok))
    model.config.pad_token_id = tok.pad_token_id
    random.seed(args.seed)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        namespace["execute_ft"](model, tok, requests, config)
    return time.perf_counter() - start


def editbench_edit(args) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import editbench
    import editbench.methods  # noqa: F401  (the method modules, imported by editbench.edit on
    # its first call: imported here, before the clock starts, as the release's definitions are)

    rows = json.loads(args.data.read_text())
    records = [{"prompt": d["prompt"], "target_new": d["target_new"], "subject": d["subject"]}
               for d in rows]
    tok = AutoTokenizer.from_pretrained(str(args.model))
    model = AutoModelForCausalLM.from_pretrained(str(args.model), dtype=torch.float32).eval()
    model.requires_grad_(False)
    start = time.perf_counter()
    editbench.edit(model, tok, "locft-bf", records, batch_size=len(records), seed=args.seed,
                   params={"layer": 2, "chunk": args.chunk, "lr": args.lr})
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", default="release,editbench")
    parser.add_argument("--release", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk", type=int, default=10)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    import transformers

    sides = args.sides.split(",")
    times: dict[str, list[float]] = {side: [] for side in sides}
    for _ in range(args.reps):
        for side in sides:
            times[side].append(release_edit(args) if side == "release" else editbench_edit(args))
    print(json.dumps({"transformers": transformers.__version__, "torch": torch.__version__,
                      "chunk": args.chunk, "lr": args.lr, "seconds": times}))


if __name__ == "__main__":
    main()
