"""From probe scores to per-edit metrics.

Every metric is computed per edit and stored per edit, under a name that says its variant. The
core metrics hold for every task; a task may add its own (CounterFact's fluency, say) through
``Task.extra_metrics``. Records that carry further locality sets or portability questions get
their metrics from here too, whatever the task (:func:`record_metrics` names them): each locality
set is scored apart, as the neighbours are (``locality_<set>_agree`` and ``_acc``), and portability
is the teacher-forced accuracy of the answer the edit implies (``portability_acc``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from ...core.probe import ProbeBackend
from ...core.records import EditRecord, Metric, Neighbour, PairScore, ScoreRow, ScoringPair
from ...core.task import Task
from .distinct import once_each

CORE_METRICS: tuple[Metric, ...] = (
    Metric("efficacy_acc", "teacher-forced top-1 token accuracy of target_new at the edit prompt"),
    Metric("generalization_acc",
           "teacher-forced top-1 token accuracy of target_new, mean over paraphrases"),
    Metric("specificity_agree",
           "share of neighbourhood answer tokens where the edited model's top-1 equals the "
           "unedited model's"),
    Metric("specificity_acc",
           "teacher-forced top-1 token accuracy of the dataset answer at neighbourhood prompts"),
)


PORTABILITY_METRIC = Metric("portability_acc", "teacher-forced top-1 token accuracy, at questions "
                                                "that follow from the edit (an alias, a second "
                                                "hop), of the answer the edit implies; mean over "
                                                "the edit's questions")


def locality_metric_name(name: str) -> str:
    """A locality set's name as part of a metric name: ``Relation_Specificity`` ->
    ``locality_relation_specificity``."""
    return "locality_" + re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def _locality_items(record: EditRecord) -> list[Neighbour]:
    return [n for name in sorted(record.locality) for n in record.locality[name]]


def neighbour_pairs(records: Sequence[EditRecord]) -> list[ScoringPair]:
    """Every prompt whose unedited answer an edit must keep: neighbours and every locality set."""
    return [ScoringPair(n.prompt, n.answer)
            for r in records for n in (*r.neighbours, *_locality_items(r))]


def record_metrics(task: Task, records: Sequence[EditRecord]) -> tuple[Metric, ...]:
    """The catalogue entries for the locality sets and portability questions ``records`` carry,
    described by the task where it says what a set holds (``Task.locality_descriptions``)."""
    names = sorted({name for r in records for name in r.locality})
    metrics: list[Metric] = []
    for name in names:
        what = task.locality_descriptions.get(name, f"the data's locality set {name!r}")
        metric = locality_metric_name(name)
        metrics += [Metric(f"{metric}_agree", "share of answer tokens where the edited model's "
                                              "top-1 equals the unedited model's, at prompts of "
                                              f"{what}"),
                    Metric(f"{metric}_acc", "teacher-forced top-1 token accuracy of the dataset "
                                            f"answer at prompts of {what}")]
    if any(r.portability for r in records):
        metrics.append(PORTABILITY_METRIC)
    return tuple(metrics)


@dataclass
class Baseline:
    """The unedited model's predictions on neighbourhood pairs, computed once per run, and its
    greedy answers at neighbourhood prompts (for the generated metrics; empty when they are
    off)."""

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
            summary["pre_edit_paraphrase_accuracy"] = (sum(s.token_accuracy for s in scores)
                                                       / len(scores))
    scores = probe.score([ScoringPair(r.prompt, r.target_new) for r in records])
    summary["pre_edit_efficacy_acc"] = sum(s.token_accuracy for s in scores) / len(scores)
    summary.update(pre_edit_portability(probe, records))
    return summary


def pre_edit_portability(probe: ProbeBackend, records: Sequence[EditRecord]) -> dict[str, float]:
    """The unedited model on the portability questions, against their unedited answers: does it
    answer them at all (a two-hop question it cannot compose says nothing about an edit's ripple)?
    Overall and per kind of question (``pre_edit_portability_two_hop_accuracy``, ...)."""
    questions = [q for r in records for q in r.portability if q.before]
    if not questions:
        return {}
    scores = probe.score([ScoringPair(q.prompt, q.before) for q in questions])  # type: ignore[arg-type]
    by_kind: dict[str, list[float]] = {}
    for question, score in zip(questions, scores, strict=True):
        by_kind.setdefault(question.kind, []).append(score.token_accuracy)
    summary = {"pre_edit_portability_accuracy": _mean([s.token_accuracy for s in scores])}
    for kind, values in sorted(by_kind.items()):
        if kind and len(by_kind) > 1:
            summary[f"pre_edit_portability_{kind}_accuracy"] = _mean(values)
    return summary


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


@dataclass(frozen=True)
class TeacherForced:
    """The core metrics of a checkpoint's edits, and whether each scored prompt passes
    teacher-forced, keyed by (position, kind, index) as the generated samples are: every target
    token is the model's top-1 (token accuracy 1.0); at a neighbourhood prompt, every answer
    token's top-1 is the unedited model's (agreement 1.0), as the headline specificity counts."""

    rows: list[ScoreRow]
    passed: dict[tuple[int, str, int], bool]


def score_edits(probe: ProbeBackend, baseline: Baseline, records: Sequence[EditRecord],
                positions: Sequence[int]) -> list[ScoreRow]:
    """Core metrics for the edits at ``positions`` of the stream, in one batched probe call."""
    return teacher_forced(probe, baseline, records, positions).rows


def teacher_forced(probe: ProbeBackend, baseline: Baseline, records: Sequence[EditRecord],
                   positions: Sequence[int]) -> TeacherForced:
    """:func:`score_edits` with each prompt's verdict."""
    chosen = [records[p] for p in positions]
    pairs: list[ScoringPair] = []
    spans = []
    for record in chosen:
        start = len(pairs)
        pairs.append(ScoringPair(record.prompt, record.target_new))
        pairs.extend(ScoringPair(p, record.target_new) for p in record.paraphrases)
        pairs.extend(ScoringPair(n.prompt, n.answer)
                     for n in (*record.neighbours, *_locality_items(record)))
        pairs.extend(ScoringPair(q.prompt, q.answer) for q in record.portability)
        spans.append(start)
    scores = once_each(probe.score, pairs)
    rows: list[ScoreRow] = []
    passed: dict[tuple[int, str, int], bool] = {}
    for position, record, start in zip(positions, chosen, spans):
        n_para, n_nbr = len(record.paraphrases), len(record.neighbours)
        rows += _locality_and_portability(position, record, baseline,
                                          scores[start + 1 + n_para + n_nbr:])
        rows.append(ScoreRow(position, record.uid, "efficacy_acc", scores[start].token_accuracy))
        passed[(position, "edit", 0)] = scores[start].token_accuracy == 1.0
        para = scores[start + 1 : start + 1 + n_para]
        if para:
            rows.append(ScoreRow(position, record.uid, "generalization_acc",
                                 _mean([s.token_accuracy for s in para])))
        passed.update(((position, "paraphrase", i), s.token_accuracy == 1.0)
                      for i, s in enumerate(para))
        if n_nbr:
            nbr = scores[start + 1 + n_para : start + 1 + n_para + n_nbr]
            agree = [s.agreement(baseline.predictions[(n.prompt, n.answer)])
                     for s, n in zip(nbr, record.neighbours)]
            rows.append(ScoreRow(position, record.uid, "specificity_agree", _mean(agree)))
            rows.append(ScoreRow(position, record.uid, "specificity_acc",
                                 _mean([s.token_accuracy for s in nbr])))
            passed.update(((position, "neighbour", i), a == 1.0) for i, a in enumerate(agree))
        ported = start + 1 + n_para + n_nbr + len(_locality_items(record))
        passed.update(((position, "portability", i), s.token_accuracy == 1.0)
                      for i, s in enumerate(scores[ported : ported + len(record.portability)]))
    return TeacherForced(rows, passed)


def _locality_and_portability(position: int, record: EditRecord, baseline: Baseline,
                              scores: Sequence[PairScore]) -> list[ScoreRow]:
    """The rows of the record's locality sets (in name order) and portability questions, from
    ``scores``, which start with theirs."""
    rows: list[ScoreRow] = []
    start = 0
    for name in sorted(record.locality):
        items = record.locality[name]
        if not items:
            continue
        got = scores[start : start + len(items)]
        start += len(items)
        agree = [s.agreement(baseline.predictions[(n.prompt, n.answer)])
                 for s, n in zip(got, items)]
        metric = locality_metric_name(name)
        rows += [ScoreRow(position, record.uid, f"{metric}_agree", _mean(agree)),
                 ScoreRow(position, record.uid, f"{metric}_acc",
                          _mean([s.token_accuracy for s in got]))]
    if record.portability:
        got = scores[start : start + len(record.portability)]
        rows.append(ScoreRow(position, record.uid, "portability_acc",
                             _mean([s.token_accuracy for s in got])))
    return rows
