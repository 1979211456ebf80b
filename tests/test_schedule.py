"""The edit schedule (core/schedule.py): the checkpoint ladder, batches, the evaluation sample."""

import pytest

from editbench.core.schedule import batch_bounds, checkpoint_ladder, default_ladder, eval_positions


def test_default_ladder_is_geometric_and_ends_at_edits():
    assert default_ladder(200, 10) == (10, 20, 50, 100, 200)
    assert default_ladder(20000, 100) == (100, 200, 500, 1000, 2000, 5000, 10000, 20000)


def test_batches_never_cross_a_checkpoint():
    checkpoints = checkpoint_ladder((10, 100, 1000), 1000, 20)
    batches = batch_bounds(1000, 20, checkpoints)
    assert batches[0] == (0, 10)
    ends = {end for _, end in batches}
    assert set(checkpoints) <= ends
    assert all(end - start <= 20 for start, end in batches)
    assert [s for s, _ in batches[1:]] == [e for _, e in batches[:-1]]
    assert batches[-1][1] == 1000


def test_checkpoint_errors_name_the_option():
    from editbench.harness.plan.settings import RunSpec

    with pytest.raises(ValueError, match="--checkpoints"):
        RunSpec(checkpoints="10,x")
    with pytest.raises(ValueError, match="--checkpoints"):
        checkpoint_ladder((0, 10), 100, 10)
    with pytest.raises(ValueError, match="beyond --edits 100"):
        checkpoint_ladder((10, 500), 100, 10)


def test_eval_sample_is_stratified_seeded_and_covers_both_ends():
    positions = eval_positions(1000, 50, seed=3)
    assert positions == eval_positions(1000, 50, seed=3)
    assert positions != eval_positions(1000, 50, seed=4)
    assert 0 in positions and 999 in positions
    assert 50 <= len(positions) <= 52
    per_tenth = [sum(t * 100 <= p < (t + 1) * 100 for p in positions) for t in range(10)]
    assert min(per_tenth) >= 4
    assert eval_positions(30, None, 0) == list(range(30))
