"""What the hypernetwork editors (MEND, MALMEN, RLEdit) cost, for ``editbench plan`` (``core/costs.py``).

Editing a batch reads keys and output gradients at the edited modules (one forward and backward pass
whose gradient reaches down to the lowest edited layer), turns them into one update per module and
adds it to the weights. Training repeats that for every train batch and, for each step, scores the
paraphrases of the last ``depth`` batches through the updates in the window (a second forward and
backward pass over them) and the locality prompts (a forward pass); the editor networks and their Adam
moments stay resident.
"""

from __future__ import annotations

from ...core.costs import (
    MethodCost,
    ModelShape,
    PhaseCost,
    RunShape,
    backward_bytes,
    forward_flops,
    master_copy_bytes,
    weights_bytes,
)


def hypernet_cost(method, shape: ModelShape, run: RunShape) -> MethodCost:
    config = method.config
    modules = method.modules
    lowest = min(shape.layout.layer_of(m.name) for m in modules)
    above = shape.n_layers - lowest
    sizes = [(m.key_size, m.value_size) for m in modules]
    rows_bytes = sum(k + v for k, v in sizes) * 4 * 2  # float32 keys and gradients, and their normalised copies
    dense = sum(k * v for k, v in sizes) * 4  # one float32 update per module
    nets = getattr(method, "nets", None)  # UltraEdit's core has none
    net_params = sum(p.numel() for p in nets.parameters()) if nets is not None else 0
    per_token = forward_flops(shape, 1) * (1 + 2 * above / shape.n_layers)

    def read(tokens: int) -> int:
        return backward_bytes(shape, tokens, above) + tokens * rows_bytes

    batch_tokens = run.batch_size * run.tokens_per_record
    editing = PhaseCost("editing", read(batch_tokens) + dense, run.edits * run.tokens_per_record * per_token)
    phases = [editing]
    resident = weights_bytes(shape) + master_copy_bytes(shape, run, method.edited_parameters()) + 4 * net_params
    if nets is not None and method.ctx.trained_editor is None and config.max_steps != 0:
        train_tokens = config.train_batch * run.tokens_per_record
        window = max(1, config.depth)
        records = min(run.train_records or 10_000, config.max_train_records or run.train_records or 10_000)
        warm_up = records * run.tokens_per_record * sum(k + v for k, v in sizes) * 4 if config.warm_up else 0
        transient = (read(train_tokens) + window * (dense + backward_bytes(shape, train_tokens, above))
                     + 2 * 4 * net_params + warm_up)
        steps = config.max_steps or max(1, records // config.train_batch)
        flops = steps * max(1, config.sequence_length) * train_tokens * per_token * (2 + window)
        phases.insert(0, PhaseCost("training", transient, flops,
                                   f"{steps:,} steps at most, window {window}; once per model (cached)"))
    return MethodCost(method.name, resident, tuple(phases))
