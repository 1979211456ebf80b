"""What the hypernetwork editors (MEND, MALMEN, RLEdit) cost, for ``editbench plan``
(``core/costs.py``).

Editing a batch reads keys and output gradients at the edited modules (one forward and backward pass
whose gradient reaches down to the lowest edited layer), turns them into one update per module and
adds it to the weights. Training repeats that for every train batch and, for each step, scores the
paraphrases of the last ``depth`` batches through the updates in the window (a second forward and
backward pass over them) and the locality prompts (a forward pass); the editor networks and their
Adam moments stay resident.
"""

from __future__ import annotations

from dataclasses import replace

from ...core.costs import (
    ANSWER_SHARE,
    MethodCost,
    ModelShape,
    PhaseCost,
    RunShape,
    backward_bytes,
    forward_flops,
    master_copy_bytes,
    weights_bytes,
)
from .memory import (
    FLOAT32,
    TRAINED_PARAMETER_BYTES,
    ModelShapes,
    Workload,
    editing_peak,
    network_parameters,
    read_bytes,
    records_per_read,
    training_peak,
)


def hypernet_cost(method, shape: ModelShape, run: RunShape) -> MethodCost:
    config = method.config
    modules = method.modules
    lowest = min(shape.layout.layer_of(m.name) for m in modules)
    above = shape.n_layers - lowest
    sizes = [(m.key_size, m.value_size) for m in modules]
    rows_bytes = sum(k + v for k, v in sizes) * 4  # float32 keys and gradients
    dense = sum(k * v for k, v in sizes) * 4  # one float32 update per module
    nets = getattr(method, "nets", None)  # UltraEdit's core has none
    per_token = forward_flops(shape, 1) * (1 + 2 * above / shape.n_layers)

    def read(tokens: int) -> int:
        return (
            backward_bytes(shape, tokens, above, length=run.tokens_per_record) + tokens * rows_bytes
        )

    editing_flops = run.edits * run.tokens_per_record * per_token
    resident = weights_bytes(shape) + master_copy_bytes(shape, run, method.edited_parameters())
    shapes = ModelShapes.of(shape.meta, config, shape.dtype, modules=modules)
    answer = max(1, round(run.tokens_per_record * ANSWER_SHARE))
    # a turn's sub-batches share one pass where the whole turn's read fits beside what is resident,
    # by the formula the method checks against the free memory when it edits (core.py,
    # EditorCore._whole_turn_fits), so the estimate is the path that runs
    whole = read_bytes(shapes, run.batch_size, run.tokens_per_record, answer)
    per_read = records_per_read(config, run.batch_size, resident + whole <= run.device_bytes)
    note = (
        f"turns read {per_read} records per pass" if per_read < run.batch_size else ""
    )
    if nets is None:  # the untrained core: one read, the dense updates
        return MethodCost(
            method.name,
            resident,
            (PhaseCost(
                "editing", read(per_read * run.tokens_per_record) + dense, editing_flops, note
            ),),
        )
    # the trained editors: the term-by-term formulas of memory.py, less the weights counted as
    # resident
    workload = Workload(run.tokens_per_record, answer, run.batch_size)
    weights = weights_bytes(shape)
    phases = [
        PhaseCost(
            "editing",
            editing_peak(shapes, config, workload, per_read).total - weights,
            editing_flops,
            note,
        )
    ]
    # training (or, with max_steps=0, its warm-up alone) comes first
    if method.ctx.trained_editor is None:
        train_tokens = config.train_batch * run.tokens_per_record
        window = max(1, config.depth)
        records = run.train_records or 10_000
        per_epoch = max(1, records // config.train_batch)
        steps = per_epoch if config.max_steps is None else config.max_steps
        # a sequence is at most one pass (training.py, _sequence_length)
        length = min(config.sequence_length, per_epoch) if config.sequence_length else per_epoch
        flops = steps * length * train_tokens * per_token * (2 + window)
        phases.insert(
            0,
            PhaseCost(
                "training",
                training_peak(shapes, config, workload).total - weights
                if steps else warm_up_peak(shapes, config, workload) - weights,
                flops,
                (
                    f"{steps:,} steps at most, window {window}"
                    if steps
                    else "the normalisers' warm-up only"
                )
                + "; once per model (cached)",
            ),
        )
    return MethodCost(method.name, resident, tuple(phases))


def warm_up_peak(shapes: ModelShapes, config, workload: Workload) -> int:
    """Peak bytes of a training run with ``max_steps=0``: the normalisers' warm-up alone, which
    reads keys and gradients batch by batch as a training step of depth one does, but keeps no
    back-tracking window and takes no optimiser step: each network parameter holds its value and
    the copy written with the trained editor, not a gradient or Adam's moments."""
    parameters, _ = network_parameters(shapes, config)
    step = training_peak(shapes, replace(config, depth=1), workload).total
    return step - parameters * (TRAINED_PARAMETER_BYTES - 2 * FLOAT32)
