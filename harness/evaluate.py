"""From probe scores to per-edit metrics.

Every metric is computed per edit and stored per edit, under a name that says its variant. The
core metrics hold for every task; a task may add its own (CounterFact's fluency, say) through
``Task.extra_metrics``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..core.probe import ProbeBackend
from ..core.records import EditRecord, Metric, PairScore, ScoreRow, ScoringPair

CORE_METRICS: tuple[Metric, ...] = (
    Metric("efficacy_acc", "teacher-forced top-1 token accuracy of target_new at the edit prompt"),
    Metric("generalization_acc", "teacher-forced top-1 token accuracy of target_new, mean over paraphrases"),
    Metric("specificity_agree",
           "share of neighbourhood answer tokens where the edited model's top-1 equals the unedited model's"),
    Metric("specificity_acc", "teacher-forced top-1 token accuracy of the dataset answer at neighbourhood prompts"),
)


def neighbour_pairs(records: Sequence[EditRecord]) -> list[ScoringPair]:
    return [ScoringPair(n.prompt, n.answer) for r in records for n in r.neighbours]


@dataclass
class Baseline:
    """The unedited model's predictions on neighbourhood pairs, computed once per run, and its greedy
    answers at neighbourhood prompts (for the generated metrics; empty when they are off)."""

    predictions: dict[tuple[str, str], PairScore]
    generations: dict[str, str] = field(default_factory=dict)

    @classmethod
    def compute(cls, probe: ProbeBackend, records: Sequence[EditRecord]) -> Baseline:
        pairs = list(dict.fromkeys(neighbour_pairs(records)))
        return cls(dict(zip(((p.prompt, p.target) for p in pairs), probe.score(pairs))))


def pre_edit_summary(probe: ProbeBackend, records: Sequence[EditRecord]) -> dict[str, float]:
    """What the unedited model knows: accuracy of the true answers, and of the new targets."""
    known = [r for r in records if r.target_true]
    summary: dict[str, float] = {}
    if known:
        scores = probe.score([ScoringPair(r.prompt, r.target_true) for r in known])
        summary["pre_edit_accuracy"] = sum(s.token_accuracy for s in scores) / len(scores)
        para = [ScoringPair(p, r.target_true) for r in known for p in r.paraphrases]
        if para:
            scores = probe.score(para)
            summary["pre_edit_paraphrase_accuracy"] = sum(s.token_accuracy for s in scores) / len(scores)
    scores = probe.score([ScoringPair(r.prompt, r.target_new) for r in records])
    summary["pre_edit_efficacy_acc"] = sum(s.token_accuracy for s in scores) / len(scores)
    return summary


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def score_edits(probe: ProbeBackend, baseline: Baseline, records: Sequence[EditRecord],
                positions: Sequence[int]) -> list[ScoreRow]:
    """Core metrics for the edits at ``positions`` of the stream, in one batched probe call."""
    chosen = [records[p] for p in positions]
    pairs: list[ScoringPair] = []
    spans = []
    for record in chosen:
        start = len(pairs)
        pairs.append(ScoringPair(record.prompt, record.target_new))
        pairs.extend(ScoringPair(p, record.target_new) for p in record.paraphrases)
        pairs.extend(ScoringPair(n.prompt, n.answer) for n in record.neighbours)
        spans.append(start)
    scores = probe.score(pairs)
    rows: list[ScoreRow] = []
    for position, record, start in zip(positions, chosen, spans):
        n_para, n_nbr = len(record.paraphrases), len(record.neighbours)
        rows.append(ScoreRow(position, record.uid, "efficacy_acc", scores[start].token_accuracy))
        para = scores[start + 1 : start + 1 + n_para]
        if para:
            rows.append(ScoreRow(position, record.uid, "generalization_acc", _mean([s.token_accuracy for s in para])))
        if n_nbr:
            nbr = scores[start + 1 + n_para : start + 1 + n_para + n_nbr]
            agree = [s.agreement(baseline.predictions[(n.prompt, n.answer)]) for s, n in zip(nbr, record.neighbours)]
            rows.append(ScoreRow(position, record.uid, "specificity_agree", _mean(agree)))
            rows.append(ScoreRow(position, record.uid, "specificity_acc", _mean([s.token_accuracy for s in nbr])))
    return rows
