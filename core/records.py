"""Typed records that flow between tasks, methods, probes and the store.

Nothing here imports torch: the store and the reports read and write these records too, and a
report must not pay for loading a tensor library.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Neighbour:
    """An unrelated prompt that an edit must leave alone, with the dataset's answer to it."""

    prompt: str
    answer: str


@dataclass(frozen=True)
class Portability:
    """A question whose answer must follow from an edit (KnowEdit's portability, MQuAKE's multi-hop
    questions): ``answer`` once the edit holds, ``before`` the unedited world's answer, if known.
    ``kind`` names the sort of question (alias, two_hop, multi_hop, ...) for readers of the store.
    ``aliases`` are other spellings of ``answer`` that a generated answer may match (MQuAKE's
    ``new_answer_alias``); teacher-forced scores use ``answer``."""

    prompt: str
    answer: str
    before: str | None = None
    kind: str = ""
    aliases: tuple[str, ...] = ()

    @property
    def answers(self) -> tuple[str, ...]:
        return (self.answer, *self.aliases)


@dataclass(frozen=True)
class EditRecord:
    """One requested edit: make ``prompt`` (which mentions ``subject``) continue with
    ``target_new``.

    ``paraphrases`` measure generalization, ``neighbours`` specificity. ``locality`` holds further,
    named locality sets, each scored apart (``locality_<name>_agree``/``_acc``); ``portability`` the
    questions whose answers the edit must change (``portability_acc``). ``extra`` holds
    task-specific fields (CounterFact's generation prompts, say) that only that task's metrics read.
    ``group`` names edits that belong together (an MQuAKE case whose multi-hop questions need all of
    its edits): the runner keeps a group's records consecutive, in their file order, in its shuffled
    stream, and a task puts the questions that need the whole group on the group's last record.
    """

    uid: str
    prompt: str
    subject: str
    target_new: str
    target_true: str | None = None
    paraphrases: tuple[str, ...] = ()
    neighbours: tuple[Neighbour, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)
    locality: Mapping[str, tuple[Neighbour, ...]] = field(default_factory=dict)
    portability: tuple[Portability, ...] = ()
    group: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["extra"] = dict(self.extra)
        # absent when empty, so the dataset hash of a record without them (and the run ids made
        # from it) is what it was before these fields existed
        for name in ("locality", "portability", "group"):
            if not data[name]:
                del data[name]
        for question in data.get("portability", ()):
            if not question["aliases"]:
                del question["aliases"]
        return data


def dataset_hash(records: Iterable[EditRecord]) -> str:
    """A stable digest of the records a run edits with, so results can name their data."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(json.dumps(record.to_json(), sort_keys=True, ensure_ascii=True).encode())
        digest.update(b"\n")
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class ScoringPair:
    """A (prompt, target) pair for teacher-forced scoring; the target follows after one space."""

    prompt: str
    target: str


@dataclass(frozen=True)
class PairScore:
    """What a probe returns for one pair.

    ``predictions`` are the model's argmax token ids at each target position (teacher-forced), so
    that specificity can compare an edited model with the unedited one token by token.
    """

    token_accuracy: float
    logprob: float
    n_tokens: int
    predictions: tuple[int, ...]

    def agreement(self, other: PairScore) -> float:
        """Share of target positions where two models predict the same token."""
        if not self.predictions:
            return 1.0
        same = sum(a == b for a, b in zip(self.predictions, other.predictions, strict=True))
        return same / len(self.predictions)


def check_disjoint(train: Iterable[EditRecord], scored: Iterable[EditRecord], task: str,
                   what: str) -> None:
    """Refuse a train split that shares a record (id or prompt) with records that will be scored."""
    scored = list(scored)
    uids, prompts = {r.uid for r in scored}, {r.prompt for r in scored}
    clash = next((r for r in train if r.uid in uids or r.prompt in prompts), None)
    if clash is not None:
        raise ValueError(f"the {task} train split overlaps {what} (record {clash.uid!r}, "
                         f"prompt {clash.prompt!r}); "
                         "a method must never train on what it is scored on")


@dataclass(frozen=True)
class Metric:
    """What one stored metric means. The runner writes these into the store with the run, so a
    report can title and rank a column without importing the task that defined it."""

    name: str
    description: str
    higher_is_better: bool = True


@dataclass(frozen=True)
class ScoreRow:
    """One metric of one edit at one checkpoint, as stored."""

    position: int
    uid: str
    metric: str
    value: float


#: the prompts a generated answer is stored for, in the order they are decoded for an edit: its
#: edit prompt (index 0), each paraphrase, each neighbourhood prompt, each portability question
SAMPLE_KINDS = ("edit", "paraphrase", "neighbour", "portability")


@dataclass(frozen=True)
class SamplePrompt:
    """One scored prompt of a run, stored once: what was asked (the prompt as decoded), the answer
    it is scored against (the new target; a neighbour's dataset answer; a portability question's
    answer) and the unedited model's greedy answer to it."""

    position: int
    uid: str
    kind: str  # one of SAMPLE_KINDS
    index: int
    prompt: str
    target: str
    unedited: str


@dataclass(frozen=True)
class SampleRow:
    """The edited model's greedy answer to one scored prompt at one checkpoint, with both verdicts:
    ``generated_pass`` is the prompt's generated exact match (agreement with the unedited model's
    answer at a neighbourhood prompt), ``teacher_forced_pass`` that every target token is the
    model's top-1 (token accuracy 1.0; agreement 1.0 with the unedited model at a neighbourhood
    prompt)."""

    position: int
    kind: str
    index: int
    text: str
    generated_pass: bool
    teacher_forced_pass: bool


@dataclass(frozen=True)
class PhaseTime:
    """Wall time of one phase of a run, as stored."""

    phase: str  # load | prepare | edit | eval | eval_forward | baseline | baseline_forward
    step: int  # batch index for edits, edit count for evaluations
    seconds: float
