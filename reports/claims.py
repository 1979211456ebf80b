"""The field's established results, each checked by a rule written before the figures were seen.

editbench's pocket world is where every check runs and where a newcomer first meets the methods; if
it cannot show what the literature reports on real models, the demo board teaches the wrong
lessons (issue 32). This module states twelve such results as **pre-registered rules** over a
results store: each rule names the methods and metrics it reads and the comparison that decides
it, and was fixed on :data:`REGISTERED` before any run of the lifelong pocket scenario was looked
at. A rule changed afterwards keeps its old text in :attr:`Claim.changes` with the date and the
reason, so a reader can tell a finding from a goal post moved (docs/pocket-world.md, "Claims").

How the figures are read, the same for every claim:

* a method's figure at a checkpoint is the mean over its scored edits of a stored per-edit metric
  (``efficacy_acc`` teacher-forced efficacy, ``generalization_acc``, ``specificity_agree``
  agreement with the unedited model, ``efficacy_gen_em`` generated exact match), or the stored
  ``seconds_per_edit``;
* *first* is the smallest edit count scored, *last* the largest edit count every method the claim
  names reached (a method that failed early is judged where the others are, not skipped);
* with several seeds (runs whose configurations differ only in ``seed``), "mean" is the mean of
  the per-seed figures and "in every seed" compares each seed's own run; "ranges apart" means the
  lowest seed of one method lies above the highest seed of the other;
* a claim whose methods are not all in the store is *not measured*, never *holds*.

Reads only the store (through :mod:`.collect`); no torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pandas as pd

from .collect import Results

#: the day the rules below were fixed, before the lifelong scenario's figures were seen
REGISTERED = "2026-12-05"

EFFICACY, GENERALIZATION, SPECIFICITY = "efficacy_acc", "generalization_acc", "specificity_agree"
GENERATED_EFFICACY, TIME = "efficacy_gen_em", "seconds_per_edit"

#: the editors claim 9 compares retrieval with: every method that changes weights (GRACE and
#: WISE keep a memory beside the model, as retrieval does, so they are not the bar)
WEIGHT_EDITORS = ("memit", "alphaedit", "ultraedit", "rledit", "mend", "malmen", "ft-l", "ft-m",
                  "locft-bf")

#: the lifelong pocket scenario's run (``tasks/pocket_lifelong.py``): every method a claim names and
#: the weight editors beside them that claim 9's median is taken over. FT-M is left out for time
#: (25 optimiser steps for each of 5,000 edits: about ten of the scenario's 30 minutes)
SCENARIO_METHODS = ("memit", "alphaedit", "ultraedit", "rledit", "rledit@untrained", "mend",
                    "malmen", "ft-l", "locft-bf", "grace", "wise", "retrieval")
#: three seeds, the editbench protocol's turns of 10 and ladder of checkpoints, a seeded sample of
#: 500 edits scored at each
SCENARIO_COMMAND = (f"editbench run --task pocket-lifelong --methods {','.join(SCENARIO_METHODS)} "
                    "--seed 0,1,2 --eval-sample 500 --out lifelong-results")


class Figures:
    """Per-seed figures of one store's (or several stores') methods: ``at(method, metric, where)``
    gives one number per seed, ``where`` being ``"first"``, ``"last"`` or an edit count."""

    def __init__(self, results: Results, methods: Sequence[str],
                 judged: Sequence[str] | None = None) -> None:
        runs = results.runs
        seeds = {r.run_id: int((r.config or {}).get("seed", 0)) for r in runs.itertuples()}
        scores = results.scores
        keys = ["run_id", "method", "n_edits", "metric"]
        means = scores[scores["method"].isin(methods)].groupby(keys, as_index=False)["value"].mean()
        points = results.checkpoints
        points = points[points["method"].isin(methods)]
        timing = points.assign(metric=TIME, value=points[TIME].astype(float))[
            ["run_id", "method", "n_edits", "metric", "value"]]
        frame = pd.concat([means, timing], ignore_index=True)
        frame["seed"] = frame["run_id"].map(seeds)
        self.frame = frame[frame["n_edits"] > 0]
        self.methods = [m for m in methods if m in set(self.frame["method"])]
        reached = self.frame.groupby("method")["n_edits"].max()
        named = [m for m in (judged or self.methods) if m in self.methods]
        self.last = int(reached[named].min()) if named else 0
        self.first = int(self.frame["n_edits"].min()) if not self.frame.empty else 0

    def at(self, method: str, metric: str, where: str | int = "last") -> pd.Series:
        """One figure per seed (index: seed); empty where the store lacks it."""
        n_edits = {"first": self.first, "last": self.last}.get(where, where)
        rows = self.frame[(self.frame["method"] == method) & (self.frame["metric"] == metric)
                          & (self.frame["n_edits"] == n_edits)]
        return rows.groupby("seed")["value"].mean()

    def mean(self, method: str, metric: str, where: str | int = "last") -> float:
        values = self.at(method, metric, where)
        if values.empty:
            raise MissingFigure(f"{method} {metric} at {where}")
        return float(values.mean())


class MissingFigure(LookupError):
    """A figure a rule needs is not in the store (the method ran without that metric)."""


@dataclass(frozen=True)
class Verdict:
    holds: bool | None  # None: not measured
    figures: str  # the numbers the rule compared, as a reader would check them


@dataclass(frozen=True)
class Claim:
    number: int
    result: str  # what the literature reports
    source: str  # where (paper; table or section)
    rule: str  # the pre-registered rule, in words
    methods: tuple[str, ...]  # every method the rule reads
    check: Callable[[Figures], Verdict]
    changes: tuple[str, ...] = field(default=())  # "date: old rule -> why", after registration


def _apart(high: pd.Series, low: pd.Series) -> bool:
    """Every seed of ``high`` above every seed of ``low`` (the ranges do not overlap)."""
    return bool(high.min() > low.max())


def _every_seed(high: pd.Series, low: pd.Series) -> bool:
    """``high`` above ``low`` within each seed both were run with."""
    both = high.index.intersection(low.index)
    return len(both) > 0 and bool((high[both] > low[both]).all())


def _fmt(value: float) -> str:
    return f"{value:.3f}" if abs(value) >= 0.001 or value == 0 else f"{value:.2g}"


def _collapse(figures: Figures, method: str) -> tuple[bool, str]:
    first, last = figures.mean(method, EFFICACY, "first"), figures.mean(method, EFFICACY)
    return last < 0.5 * first, f"{method} efficacy {_fmt(first)} -> {_fmt(last)}"


def _memit_collapses(f: Figures) -> Verdict:
    holds, text = _collapse(f, "memit")
    return Verdict(holds, text)


def _alphaedit_outlasts_memit(f: Figures) -> Verdict:
    eff = _every_seed(f.at("alphaedit", EFFICACY), f.at("memit", EFFICACY))
    spec = _every_seed(f.at("alphaedit", SPECIFICITY), f.at("memit", SPECIFICITY))
    return Verdict(eff and spec, (
        f"efficacy {_fmt(f.mean('alphaedit', EFFICACY))} vs {_fmt(f.mean('memit', EFFICACY))}, "
        f"specificity {_fmt(f.mean('alphaedit', SPECIFICITY))} vs "
        f"{_fmt(f.mean('memit', SPECIFICITY))}"))


def _hypernets_collapse_rledit_holds(f: Figures) -> Verdict:
    mend, mend_text = _collapse(f, "mend")
    malmen, malmen_text = _collapse(f, "malmen")
    rledit_first, rledit_last = f.mean("rledit", EFFICACY, "first"), f.mean("rledit", EFFICACY)
    best_other = pd.concat([f.at("mend", EFFICACY), f.at("malmen", EFFICACY)])
    best_other = best_other.groupby(level=0).max()
    holds = (mend and malmen and rledit_last >= 0.5 * rledit_first
             and _every_seed(f.at("rledit", EFFICACY), best_other))
    return Verdict(holds, f"{mend_text}; {malmen_text}; rledit {_fmt(rledit_first)} -> "
                          f"{_fmt(rledit_last)}")


def _rledit_beats_alphaedit(f: Figures) -> Verdict:
    return Verdict(_every_seed(f.at("rledit", EFFICACY), f.at("alphaedit", EFFICACY)),
                   f"efficacy {_fmt(f.mean('rledit', EFFICACY))} vs "
                   f"{_fmt(f.mean('alphaedit', EFFICACY))}")


def _ultraedit_matches_rledit(f: Figures) -> Verdict:
    gap = abs(f.mean("ultraedit", EFFICACY) - f.mean("rledit", EFFICACY))
    spec = _every_seed(f.at("ultraedit", SPECIFICITY), f.at("rledit", SPECIFICITY))
    return Verdict(gap <= 0.10 and spec, (
        f"efficacy {_fmt(f.mean('ultraedit', EFFICACY))} vs {_fmt(f.mean('rledit', EFFICACY))}, "
        f"specificity {_fmt(f.mean('ultraedit', SPECIFICITY))} vs "
        f"{_fmt(f.mean('rledit', SPECIFICITY))}"))


def _grace_memorises(f: Figures) -> Verdict:
    eff, gen, spec = (f.mean("grace", m) for m in (EFFICACY, GENERALIZATION, SPECIFICITY))
    return Verdict(eff >= 0.9 and spec >= 0.95 and gen <= 0.5 * eff,
                   f"efficacy {_fmt(eff)}, specificity {_fmt(spec)}, generalization {_fmt(gen)}")


def _wise_local(f: Figures) -> Verdict:
    eff, spec = f.mean("wise", EFFICACY), f.mean("wise", SPECIFICITY)
    return Verdict(spec >= 0.9 and 0.2 <= eff <= 0.9,
                   f"efficacy {_fmt(eff)}, specificity {_fmt(spec)}")


def _ft_locality_decays(f: Figures) -> Verdict:
    first, last = f.mean("ft-l", SPECIFICITY, "first"), f.mean("ft-l", SPECIFICITY)
    return Verdict(last <= first - 0.15, f"ft-l specificity {_fmt(first)} -> {_fmt(last)}")


def _retrieval_competitive(f: Figures) -> Verdict:
    editors = [m for m in WEIGHT_EDITORS if m in f.methods]
    if not editors:
        raise MissingFigure("no weight editor beside retrieval")
    bar = float(pd.Series([f.mean(m, EFFICACY) for m in editors]).median())
    retrieval = f.mean("retrieval", EFFICACY)
    return Verdict(retrieval >= bar, f"retrieval {_fmt(retrieval)} vs the editors' median "
                                     f"{_fmt(bar)} ({len(editors)} editors)")


def _mirage(f: Figures) -> Verdict:
    gaps = {}
    for method in f.methods:
        try:
            gaps[method] = f.mean(method, EFFICACY) - f.mean(method, GENERATED_EFFICACY)
        except MissingFigure:
            continue
    if not gaps:
        raise MissingFigure("no generated scores")
    mean_gap = sum(gaps.values()) / len(gaps)
    below = sum(g > 0 for g in gaps.values())
    return Verdict(below == len(gaps) and mean_gap >= 0.10,
                   f"generated below teacher-forced for {below} of {len(gaps)} methods; "
                   f"mean gap {_fmt(mean_gap)}")


def _training_helps(f: Figures) -> Verdict:
    trained, untrained = f.at("rledit", EFFICACY), f.at("rledit@untrained", EFFICACY)
    return Verdict(_apart(trained, untrained) if len(trained) and len(untrained) else None,
                   f"trained {_fmt(f.mean('rledit', EFFICACY))} "
                   f"[{_fmt(trained.min())}, {_fmt(trained.max())}] vs untrained "
                   f"{_fmt(f.mean('rledit@untrained', EFFICACY))} "
                   f"[{_fmt(untrained.min())}, {_fmt(untrained.max())}] over {len(trained)} seeds")


def _rledit_fast(f: Figures) -> Verdict:
    rledit, alphaedit = f.mean("rledit", TIME), f.mean("alphaedit", TIME)
    return Verdict(rledit <= 0.10 * alphaedit,
                   f"{_fmt(rledit)} vs {_fmt(alphaedit)} s/edit ({100 * rledit / alphaedit:.1f}%)")


CLAIMS: tuple[Claim, ...] = (
    Claim(1, "MEMIT's efficacy collapses over thousands of sequential edits",
          "AlphaEdit (ICLR 2025) Table 1; UltraEdit Tables 1-2",
          "MEMIT's mean efficacy at the last checkpoint is below half its first",
          ("memit",), _memit_collapses),
    Claim(2, "AlphaEdit keeps efficacy and specificity far longer than MEMIT",
          "AlphaEdit (ICLR 2025) Table 1, Figure 4",
          "at the last checkpoint AlphaEdit is above MEMIT in efficacy and in specificity, "
          "in every seed", ("alphaedit", "memit"), _alphaedit_outlasts_memit),
    Claim(3, "MEND and MALMEN collapse in lifelong editing; RLEdit holds",
          "RLEdit (Li et al. 2025) Table 1",
          "MEND's and MALMEN's mean efficacy at the last checkpoint below half their first; "
          "RLEdit's at least half its first and above both in every seed",
          ("mend", "malmen", "rledit"), _hypernets_collapse_rledit_holds),
    Claim(4, "RLEdit ahead of AlphaEdit at 20,000 edits",
          "UltraEdit Table 1 (ZsRE, Llama-3-8B)",
          "RLEdit's efficacy above AlphaEdit's at the last checkpoint in every seed",
          ("rledit", "alphaedit"), _rledit_beats_alphaedit),
    Claim(5, "UltraEdit about RLEdit's efficacy, with higher specificity",
          "UltraEdit Table 1",
          "mean efficacies within 0.10 at the last checkpoint; UltraEdit's specificity above "
          "RLEdit's in every seed", ("ultraedit", "rledit"), _ultraedit_matches_rledit),
    Claim(6, "GRACE: near-perfect efficacy and locality, almost no generalization",
          "GRACE (NeurIPS 2023) Table 2; WISE (NeurIPS 2024) Table 2",
          "at the last checkpoint mean efficacy >= 0.9, specificity >= 0.95, generalization at "
          "most half the efficacy", ("grace",), _grace_memorises),
    Claim(7, "WISE: high locality, moderate efficacy at scale",
          "WISE (NeurIPS 2024) Table 2; UltraEdit Table 1",
          "at the last checkpoint mean specificity >= 0.9 and efficacy between 0.2 and 0.9",
          ("wise",), _wise_local),
    Claim(8, "fine-tuning's locality decays as edits accumulate",
          "RLEdit Table 1; WISE Figure 1",
          "FT-L's mean specificity at the last checkpoint at least 0.15 below its first",
          ("ft-l",), _ft_locality_decays),
    Claim(9, "retrieval is competitive with editors at scale",
          "WikiBigEdit (ICML 2025) Figure 3",
          "retrieval's mean efficacy at the last checkpoint at least the median of the weight "
          "editors' (memit, alphaedit, ultraedit, rledit, mend, malmen, ft-l, ft-m, locft-bf: "
          "those in the store)", ("retrieval",), _retrieval_competitive),
    Claim(10, "generated answers score far below teacher-forced ones",
          "The Mirage of Model Editing (ACL 2025) Table 2",
          "at the last checkpoint every method with generated scores has mean generated "
          "efficacy below teacher-forced, and the mean gap over methods is at least 0.10",
          (), _mirage),
    Claim(11, "training over edit sequences beats no training",
          "RLEdit ablation (Table 4)",
          "RLEdit trained above RLEdit untrained (preset rledit@untrained) at the last "
          "checkpoint, ranges over seeds apart", ("rledit", "rledit@untrained"), _training_helps),
    Claim(12, "RLEdit edits in a few percent of the others' time",
          "RLEdit abstract (2.11% of the time)",
          "RLEdit's mean seconds per edit at the last checkpoint at most 10% of AlphaEdit's",
          ("rledit", "alphaedit"), _rledit_fast),
)


@dataclass(frozen=True)
class ClaimRow:
    claim: Claim
    verdict: Verdict
    last: int  # the edit count judged
    seeds: int

    @property
    def status(self) -> str:
        return {True: "holds", False: "does not hold", None: "not measured"}[self.verdict.holds]


def check_claims(results: Results) -> list[ClaimRow]:
    """Every claim judged on the stores' runs (all seeds together)."""
    every_method = sorted(set(results.cells["method"]))
    rows = []
    for claim in CLAIMS:
        figures = Figures(results, every_method, claim.methods or None)
        missing = [m for m in claim.methods if m not in figures.methods]
        if missing or not figures.methods:
            verdict = Verdict(None, f"not in the store: {', '.join(missing) or 'any method'}")
        else:
            try:
                verdict = claim.check(figures)
            except MissingFigure as exc:
                verdict = Verdict(None, f"not in the store: {exc}")
        seeds = int(figures.frame["seed"].nunique()) if not figures.frame.empty else 0
        rows.append(ClaimRow(claim, verdict, figures.last, seeds))
    return rows


def claims_table(rows: Sequence[ClaimRow], width: int = 100) -> str:
    """The claims as a terminal table: one block per claim (number, verdict, result, the rule and
    the figures), wrapped to ``width`` columns."""
    import textwrap

    held = sum(r.verdict.holds is True for r in rows)
    measured = sum(r.verdict.holds is not None for r in rows)
    out = [f"{held} of {len(rows)} claims hold ({measured} measured); rules registered "
           f"{REGISTERED} (docs/pocket-world.md, Claims)", ""]
    if measured < len(rows):
        out[1:1] = textwrap.wrap(f"The lifelong scenario the rules were written for: "
                                 f"{SCENARIO_COMMAND}", width, break_on_hyphens=False,
                                 break_long_words=False)
    for row in rows:
        where = (f" (at {row.last:,} edits, {row.seeds} seed{'s' * (row.seeds != 1)})"
                 if row.verdict.holds is not None else "")
        out.extend(textwrap.wrap(f"{row.claim.number:>2}. [{row.status}] {row.claim.result}{where}",
                                 width, subsequent_indent="    "))
        for label, text in (("rule", row.claim.rule), ("seen", row.verdict.figures),
                            ("source", row.claim.source)):
            out.extend(textwrap.wrap(text, width, initial_indent=f"    {label}: ",
                                     subsequent_indent=" " * (6 + len(label))))
        for change in row.claim.changes:
            out.extend(textwrap.wrap(change, width, initial_indent="    changed: ",
                                     subsequent_indent=" " * 13))
    return "\n".join(out)
