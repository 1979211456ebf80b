"""The pre-registered claims (reports/claims.py): each rule decides on the figures it names, in
both directions, and a claim without its methods is not measured."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from editbench.core.records import Metric, PhaseTime, ScoreRow
from editbench.core.store import ResultsStore
from editbench.harness.cli.group import main
from editbench.reports.claims import CLAIMS, SCENARIO_COMMAND, SCENARIO_METHODS, check_claims
from editbench.reports.collect import collect

METRICS = ("efficacy_acc", "generalization_acc", "specificity_agree", "efficacy_gen_em")
FIRST, LAST, EDITS = 10, 40, 20  # checkpoints, and edits scored at each


def _literature() -> dict[str, dict[int, dict[str, float]]]:
    """Figures as the literature reports them: every claim should hold on these."""
    def fig(eff, gen, spec, gen_em=None):
        return {"efficacy_acc": eff, "generalization_acc": gen, "specificity_agree": spec,
                "efficacy_gen_em": eff - 0.3 if gen_em is None else gen_em}

    return {
        "memit": {FIRST: fig(0.9, 0.6, 0.9), LAST: fig(0.2, 0.1, 0.4)},
        "alphaedit": {FIRST: fig(0.95, 0.7, 0.95), LAST: fig(0.5, 0.4, 0.8)},
        "mend": {FIRST: fig(0.8, 0.5, 0.8), LAST: fig(0.1, 0.1, 0.2)},
        "malmen": {FIRST: fig(0.8, 0.5, 0.8), LAST: fig(0.15, 0.1, 0.2)},
        "rledit": {FIRST: fig(0.9, 0.7, 0.8), LAST: fig(0.8, 0.6, 0.6)},
        "rledit@untrained": {FIRST: fig(0.6, 0.4, 0.6), LAST: fig(0.3, 0.2, 0.4)},
        "ultraedit": {FIRST: fig(0.9, 0.7, 0.9), LAST: fig(0.75, 0.6, 0.85)},
        "grace": {FIRST: fig(1.0, 0.2, 1.0), LAST: fig(0.95, 0.2, 1.0)},
        "wise": {FIRST: fig(0.7, 0.5, 1.0), LAST: fig(0.5, 0.4, 0.95)},
        "ft-l": {FIRST: fig(0.9, 0.5, 0.95), LAST: fig(0.5, 0.3, 0.6)},
        "retrieval": {FIRST: fig(0.9, 0.8, 1.0), LAST: fig(0.85, 0.8, 1.0)},
    }


#: seconds per edit: RLEdit a few percent of AlphaEdit's
SECONDS = {"rledit": 0.001, "alphaedit": 0.05}


def build(folder: Path, figures: dict, seeds=(0, 1, 2), seconds=SECONDS) -> Path:
    with ResultsStore(folder) as store:
        for seed in seeds:
            run_id = f"run-{seed}"
            store.ensure_run(run_id, task="pocket", model="m", config={"seed": seed},
                             versions={}, device="cpu", seed=seed, git_sha=None,
                             dataset_hash="d", n_edits=LAST)
            store.save_run_outline(run_id, [Metric(m, m) for m in METRICS],
                                   [(0, FIRST), (FIRST, LAST)])
            for method, by_n in figures.items():
                store.start_cell(run_id, method, {}, method)
                for n_edits, values in by_n.items():
                    # seed moves every figure a little, as seeds do; the rules must see through it
                    rows = [ScoreRow(p, f"u{p}", metric,
                                     float(p < round(EDITS * min(1.0, value + 0.02 * seed))))
                            for p in range(EDITS) for metric, value in values.items()]
                    spent = seconds.get(method, 0.01) * n_edits
                    store.commit_checkpoint(run_id, method, n_edits, rows,
                                            [PhaseTime("edit", n_edits, spent)], 1)
    return folder


def _verdicts(folder: Path) -> dict[int, bool | None]:
    return {row.claim.number: row.verdict.holds for row in check_claims(collect([folder]))}


def test_every_claim_holds_on_the_literatures_figures(tmp_path):
    verdicts = _verdicts(build(tmp_path / "r", _literature()))
    assert verdicts == {claim.number: True for claim in CLAIMS}


def test_each_claim_fails_when_its_figures_say_otherwise(tmp_path):
    """Each rule turned the other way by changing only the figures it reads."""
    flipped = _literature()
    flipped["memit"][LAST]["efficacy_acc"] = 0.6  # 1: no collapse
    flipped["alphaedit"][LAST]["specificity_agree"] = 0.3  # 2: below MEMIT's 0.4
    flipped["malmen"][LAST]["efficacy_acc"] = 0.7  # 3: MALMEN holds
    flipped["grace"][LAST]["generalization_acc"] = 0.9  # 6: GRACE generalizes (not 10's figure)
    flipped["wise"][LAST]["specificity_agree"] = 0.5  # 7: WISE loses locality
    flipped["ft-l"][LAST]["specificity_agree"] = 0.9  # 8: no decay
    flipped["retrieval"][LAST].update(efficacy_acc=0.1, efficacy_gen_em=0.0)  # 9: below the median
    flipped["grace"][LAST]["efficacy_gen_em"] = 1.0  # 10: generated above teacher-forced
    flipped["rledit@untrained"][LAST]["efficacy_acc"] = 0.8  # 11: as good as trained
    verdicts = _verdicts(build(tmp_path / "r", flipped, seconds={"rledit": 0.05,
                                                                "alphaedit": 0.05}))
    failed = {n for n, holds in verdicts.items() if holds is False}
    assert failed == {1, 2, 3, 6, 7, 8, 9, 10, 11, 12}
    # RLEdit above AlphaEdit (4) and UltraEdit near RLEdit (5) were not touched
    assert verdicts[4] is True and verdicts[5] is True


def test_overlapping_seeds_do_not_hold_a_ranges_apart_rule(tmp_path):
    """Claim 11 asks for every trained seed above every untrained one: one seed's overlap fails
    it, even with the mean well ahead."""
    figures = _literature()
    figures["rledit@untrained"][LAST]["efficacy_acc"] = 0.78  # seeds 0.78-0.82 vs 0.80-0.84
    assert _verdicts(build(tmp_path / "r", figures))[11] is False


def test_claims_without_their_methods_are_not_measured(tmp_path):
    figures = {m: v for m, v in _literature().items() if m in ("memit", "alphaedit")}
    verdicts = _verdicts(build(tmp_path / "r", figures, seeds=(0,)))
    assert verdicts[1] is True and verdicts[2] is True
    assert all(verdicts[n] is None for n in (3, 4, 5, 6, 7, 8, 9, 11, 12))


def test_claims_command_prints_every_claim_within_100_columns(tmp_path):
    folder = build(tmp_path / "r", _literature(), seeds=(0,))
    result = CliRunner().invoke(main, ["claims", str(folder)], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("12 of 12 claims hold")
    assert all(len(line) <= 100 for line in lines)
    assert sum("[holds]" in line for line in lines) == 12


def test_an_unmeasured_claim_points_to_the_scenario_that_measures_it(tmp_path):
    figures = {m: v for m, v in _literature().items() if m in ("memit", "alphaedit")}
    folder = build(tmp_path / "r", figures, seeds=(0,))
    result = CliRunner().invoke(main, ["claims", str(folder)], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    assert all(len(line) <= 100 for line in result.output.splitlines())
    assert "--task pocket-lifelong" in result.output
    assert ",".join(SCENARIO_METHODS) in result.output.replace("\n", " ").split()


def test_the_scenario_runs_every_method_a_claim_reads():
    from editbench.methods import METHODS

    named = {m for claim in CLAIMS for m in claim.methods}
    assert named <= set(SCENARIO_METHODS)
    for label in SCENARIO_METHODS:
        name, _, preset = label.partition("@")
        assert name in METHODS
        assert not preset or preset in METHODS[name].presets
    assert "--task pocket-lifelong" in SCENARIO_COMMAND and "--seed 0,1,2" in SCENARIO_COMMAND
