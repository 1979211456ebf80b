"""The statistics behind the leaderboard: bootstrap intervals, winners and ties, the Pareto
front."""

import numpy as np
import pytest

from editbench.reports.plots import pareto_front
from editbench.reports.stats import Interval, bootstrap_mean, bootstrap_ratio, cell_rng, rank_marks


def test_the_interval_holds_the_mean_and_is_reproducible():
    values = np.random.default_rng(0).random(200)
    a = bootstrap_mean(values, cell_rng(0, "run", "ft-m", 200, "efficacy_acc"))
    b = bootstrap_mean(values, cell_rng(0, "run", "ft-m", 200, "efficacy_acc"))
    assert a == b
    assert a.mean == pytest.approx(values.mean())
    assert a.low < a.mean < a.high and a.n == 200
    other = bootstrap_mean(values, cell_rng(1, "run", "ft-m", 200, "efficacy_acc"))
    assert other.mean == a.mean and (other.low, other.high) != (a.low, a.high)


def test_more_edits_give_a_narrower_interval_and_constant_scores_none_at_all():
    rng = np.random.default_rng(1)
    small = bootstrap_mean(rng.random(20), cell_rng(0, "s"))
    large = bootstrap_mean(rng.random(2000), cell_rng(0, "l"))
    assert large.high - large.low < (small.high - small.low) / 4
    flat = bootstrap_mean([1.0] * 30, cell_rng(0, "f"))
    assert (flat.low, flat.mean, flat.high) == (1.0, 1.0, 1.0)
    single = bootstrap_mean([0.5], cell_rng(0, "one"))
    assert single.low is None and single.high is None and single.mean == 0.5
    assert bootstrap_mean([np.nan, 1.0, 0.0], cell_rng(0, "nan")).n == 2
    with pytest.raises(ValueError, match="at least one finite value"):
        bootstrap_mean([np.nan], cell_rng(0, "empty"))


def test_the_95_percent_interval_covers_the_true_mean_about_95_percent_of_the_time():
    truth, hits, trials = 0.6, 0, 300
    rng = np.random.default_rng(7)
    for t in range(trials):
        iv = bootstrap_mean(rng.random(80) < truth, cell_rng(0, t), n_boot=1000)
        hits += iv.low <= truth <= iv.high
    assert 0.89 <= hits / trials <= 0.99


def test_the_ratio_resamples_batches_with_their_sizes():
    seconds, sizes = [1.0, 1.0, 4.0], [10, 10, 20]
    iv = bootstrap_ratio(seconds, sizes, cell_rng(0, "t"))
    assert iv.mean == pytest.approx(6.0 / 40)
    assert 0.1 <= iv.low <= iv.mean <= iv.high <= 0.2 and iv.n == 3
    with pytest.raises(ValueError):
        bootstrap_ratio([1.0], [1, 2], cell_rng(0, "bad"))


def test_a_clear_winner_is_best_and_overlapping_leaders_are_tied():
    high, low = Interval(0.9, 0.85, 0.95, 100), Interval(0.5, 0.45, 0.55, 100)
    near = Interval(0.82, 0.75, 0.88, 100)
    assert rank_marks([low, high], higher_is_better=True) == ["", "best"]
    assert rank_marks([low, high], higher_is_better=False) == ["best", ""]
    assert rank_marks([high, near, low], higher_is_better=True) == ["tie", "tie", ""]
    assert rank_marks([high, None], higher_is_better=True) == ["", ""]  # one entry: no race
    assert rank_marks([high], higher_is_better=True) == [""]


def test_single_measurements_tie_only_when_within_the_tolerance():
    a, b, c = (Interval(v, None, None, 1) for v in (100.0, 101.0, 150.0))
    assert rank_marks([a, b], higher_is_better=False) == ["tie", "tie"]
    assert rank_marks([a, c], higher_is_better=False) == ["best", ""]


def test_the_pareto_front_keeps_only_undominated_points():
    points = [(1.0, 0.5), (2.0, 0.9), (3.0, 0.7), (0.5, 0.2), (2.5, 0.95)]
    assert sorted(pareto_front(points)) == [0, 1, 3, 4]
    assert pareto_front([(1.0, 0.3), (2.0, 0.1)], higher_is_better=False) == [0, 1]


def test_seed_variance_widens_a_pooled_interval():
    """Three seeds whose means differ (0.3, 0.5, 0.7) with many edits each: resampling edits within
    seeds gives a narrow interval; drawing seeds first covers the spread between them."""
    from editbench.reports.stats import bootstrap_pooled, bootstrap_seeds

    rng = np.random.default_rng(0)
    groups = [rng.random(400) < p for p in (0.3, 0.5, 0.7)]
    within = bootstrap_pooled(groups, cell_rng(0, "x"))
    both = bootstrap_seeds(groups, cell_rng(0, "x"))
    assert both.mean == pytest.approx(within.mean)
    assert within.high - within.low < 0.08
    assert both.low < 0.4 and both.high > 0.6  # seed spread is inside
    agreeing = [rng.random(400) < 0.5 for _ in range(3)]  # seeds that agree: about the same width
    narrow = bootstrap_seeds(agreeing, cell_rng(0, "y"))
    assert narrow.high - narrow.low < 0.12
    single = bootstrap_seeds([groups[0]], cell_rng(0, "z"))
    assert single == bootstrap_pooled([groups[0]], cell_rng(0, "z"))


def test_verdicts_resample_as_a_binomial_with_the_index_bootstraps_distribution():
    """0/1 scores take the binomial shortcut (stats.resampled_sums); its resample sums must have
    the distribution of drawing indices: the same mean and spread within Monte Carlo error, and a
    mixed array still draws indices."""
    from editbench.reports.stats import resampled_sums

    verdicts = (np.random.default_rng(3).random(150) < 0.3).astype(float)
    fast = resampled_sums(verdicts, np.random.default_rng(4), 20000)
    slow = verdicts[np.random.default_rng(5).integers(0, 150, size=(20000, 150))].sum(axis=1)
    assert fast.mean() == pytest.approx(slow.mean(), abs=0.2)  # both near 150 * p
    assert fast.std() == pytest.approx(slow.std(), rel=0.05)
    assert np.percentile(fast, 2.5) == pytest.approx(np.percentile(slow, 2.5), abs=1.0)
    assert np.percentile(fast, 97.5) == pytest.approx(np.percentile(slow, 97.5), abs=1.0)
    mixed = np.array([0.0, 0.5, 1.0, 0.25])
    sums = resampled_sums(mixed, np.random.default_rng(6), 500)
    assert set(np.round(sums * 4)) - set(range(17)) == set()  # sums of four quarters
    assert np.any(sums * 4 % 2 == 1)  # an odd number of quarters: 0.25 or 0.5 was drawn


def test_many_cells_bootstrapped_on_threads_get_the_intervals_of_one_after_another():
    """A board's cells run their bootstraps on several threads; each has its own generator, so
    every interval equals the one a call after another gives."""
    from editbench.reports.stats import bootstrap_many, bootstrap_seeds, cell_rng

    data = np.random.default_rng(0)
    cells = [[data.integers(0, 4, size=int(data.integers(5, 300))) / 3
              for _ in range(int(data.integers(1, 4)))] for _ in range(200)]
    together = bootstrap_many([(groups, cell_rng(0, str(i))) for i, groups in enumerate(cells)])
    apart = [bootstrap_seeds(groups, cell_rng(0, str(i))) for i, groups in enumerate(cells)]
    assert together == apart
    assert len({interval.low for interval in apart}) > 100  # cells that differ
