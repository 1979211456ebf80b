"""The floor under UltraEdit's edit: one turn's forward and backward pass timed alone, and two ways
of doing less, on the suite's records and the shipped pocket model (one thread).

UltraEdit's edit of a turn is one pass over the turn's records that reads, at the answer positions,
the inputs of the edited projections and the gradients at their outputs, then a ridge solve per
projection. This times the pass as editbench makes it (the records encoded and padded as
``UltraEdit._read`` pads them, the logits computed at the answer positions only), then:

- ``left``: the same pass on a left-padded batch (positions from the attention mask), which puts
  every row's answer at the end;
- ``suffix``: the left-padded rows' common prompt prefix run once without gradient and kept as the
  key-value cache, only the suffix from there run with gradient (every position whose output the
  answer's gradient depends on is in the suffix, so the gradients are the same up to rounding;
  the script prints the largest difference).

    .venv/bin/python fidelity/ultraedit-release/pass_alone.py WORK [REPEATS]

WORK is the suite's folder (``export.py --out WORK``: ``editbench_eval.jsonl``). Prints
milliseconds per turn of 100 records (median over REPEATS passes of each of the first 3 turns).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from statistics import median

import torch

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "artifacts" / "models" / "pocket-5cd5fddbcd24c6f2"
#: the release's Llama-3 choice carried over to the pocket model (run_editbench.sh)
MODULES = ("model.layers.1.mlp.gate_proj", "model.layers.2.mlp.up_proj")
TURN = 100


def batches(work: Path, encoder):
    records = [json.loads(line) for line in (work / "editbench_eval.jsonl").open()][: 3 * TURN]
    for start in range(0, len(records), TURN):
        pairs = encoder.encode_many([(r["prompt"], r["target_new"])
                                     for r in records[start:start + TURN]])
        yield encoder.collate(pairs), encoder.collate(pairs, left=True)


def read(model, batch, suffix_from: int = 0) -> list[torch.Tensor]:
    """Gradients of the answer tokens' mean NLL at each edited module's output, at the answer
    positions; the head only there. ``suffix_from``: positions before it run first, without
    gradient, as the cache of the rest."""
    outputs: dict[str, torch.Tensor] = {}
    handles = [model.get_submodule(name).register_forward_hook(
        lambda _m, _a, out, name=name: outputs.__setitem__(name, out)) for name in MODULES]
    weights = [model.get_submodule(name).weight for name in MODULES]
    positions = (batch.attention_mask.cumsum(1) - 1).clamp_min(0)
    reading = batch.target_mask[:, suffix_from:]
    head = model.get_output_embeddings()
    try:
        for weight in weights:
            weight.requires_grad_(True)
        cache = None
        if suffix_from:
            with torch.no_grad():
                cache = model.model(input_ids=batch.input_ids[:, :suffix_from],
                                    attention_mask=batch.attention_mask[:, :suffix_from],
                                    position_ids=positions[:, :suffix_from],
                                    use_cache=True).past_key_values
        hidden = model.model(input_ids=batch.input_ids[:, suffix_from:],
                             attention_mask=batch.attention_mask,
                             position_ids=positions[:, suffix_from:], past_key_values=cache,
                             use_cache=False).last_hidden_state
        logits = head(hidden[reading])
        loss = torch.nn.functional.cross_entropy(logits, batch.labels[:, suffix_from:][reading])
        grads = torch.autograd.grad(loss, [outputs[name] for name in MODULES])
    finally:
        for handle in handles:
            handle.remove()
        for weight in weights:
            weight.requires_grad_(False)
    return [g[reading] for g in grads]


def main() -> None:
    from editbench.core.models import load_model
    from editbench.core.tokenize import PairEncoder
    from editbench.harness.running.allocator import tune_allocator

    work = Path(sys.argv[1])
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    torch.set_num_threads(1)
    tune_allocator()  # as the harness does: no fresh pages for every activation
    model, tokenizer = load_model(str(MODEL), torch.device("cpu"), torch.float32)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    encoder = PairEncoder(tokenizer)
    turns = list(batches(work, encoder))
    # the first position any row's answer reads from, on the left-padded batch
    cut = [int(left.target_mask.float().argmax(1).min()) for _, left in turns]
    variants = {
        "right (editbench's)": lambda i: read(model, turns[i][0]),
        "left": lambda i: read(model, turns[i][1]),
        "suffix": lambda i: read(model, turns[i][1], cut[i]),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(2):  # warm
        for run in variants.values():
            run(0)
    for _ in range(repeats):
        for i in range(len(turns)):
            for name, run in variants.items():  # alternated
                start = time.perf_counter()
                run(i)
                times[name].append(time.perf_counter() - start)
    worst = max(float((a - b).abs().max()) for i in range(len(turns))
                for a, b in zip(read(model, turns[i][1]), read(model, turns[i][1], cut[i])))
    print(f"turns of {TURN}: widths {[tuple(r.input_ids.shape) for r, _ in turns]}, "
          f"suffix from {cut}")
    for name, values in times.items():
        print(f"{name:22s} {1e3 * median(values):6.1f} ms a turn (min {1e3 * min(values):.1f})")
    print(f"suffix against left, largest gradient difference: {worst:.1e}")


if __name__ == "__main__":
    main()
