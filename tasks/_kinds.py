"""Portability questions scored per kind, for tasks whose records carry several sorts of question
that their papers report apart (WikiBigEdit's personas and multi-hop questions, UniEdit's
rephrase, multi-hop, relation-reversal and same-entity questions).

The runner's ``portability_acc`` is the mean over all of a record's questions; a task lists the
kinds it reports apart in ``KIND_METRICS`` (kind -> :class:`Metric`), and :func:`kind_rows` scores
each kind's questions, teacher-forced, into its own metric: the mean top-1 token accuracy of the
record's questions of that kind, as ``portability_acc`` is computed.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..core.records import EditRecord, Metric, ScoreRow, ScoringPair


def kind_rows(probe, records: list[EditRecord], positions: list[int],
              metrics: Mapping[str, Metric]) -> list[ScoreRow]:
    chosen = [(p, records[p], [q for q in records[p].portability if q.kind in metrics])
              for p in positions]
    chosen = [item for item in chosen if item[2]]
    pairs = [ScoringPair(q.prompt, q.answer) for _, _, questions in chosen for q in questions]
    scores = iter(probe.score(pairs)) if pairs else iter(())
    rows = []
    for position, record, questions in chosen:
        by_kind: dict[str, list[float]] = {}
        for question in questions:
            by_kind.setdefault(question.kind, []).append(next(scores).token_accuracy)
        rows += [ScoreRow(position, record.uid, metrics[kind].name, sum(values) / len(values))
                 for kind, values in sorted(by_kind.items())]
    return rows
