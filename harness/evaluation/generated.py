"""Generated metrics: the edited model must produce the answer, not only rank it first.

Teacher-forced token accuracy feeds the target's tokens in and checks each for being the argmax,
which leaks the answer's content and length; "The Mirage of Model Editing" (ACL 2025) finds
success falling from 96.8% to 38.5% once the model has to generate the answer, and "Fine-tuning
Done Right in Model Editing" (ICLR 2026) scores with greedy decoding and exact match. editbench
stores both, side by side, at every checkpoint:

- ``efficacy_gen_em`` / ``generalization_gen_em``: greedy decoding from the edit prompt (each
  paraphrase) until an end-of-sequence token, a newline, or a budget of ``n + 3`` new tokens for
  a target of ``n`` tokens (``core/generate.answer_budget``, capped by ``--gen-max-tokens``), then
  exact match with the new target after :func:`normalise_answer`;
- ``*_gen_prefix``: the normalised generation starts with the normalised target (the model said
  the answer, then went on);
- ``specificity_gen_agree``: at each neighbourhood prompt, the edited model generates what the
  unedited model generated (normalised), the generations of the unedited model being computed once
  per run and kept in the store;
- ``portability_gen_em``: at each portability question (an alias, a second hop), the answer the
  edit implies, exact match, mean over the edit's questions.

A task may put the prompt into a format for generation (``Task.generation_prompt``).

Under the ``wild`` rule (``--gen-rule wild``; QAEdit's and LocFT-BF's evaluation) an answer may take
up to ``--gen-max-tokens`` (32) new tokens whatever the target's length, ends at ".", a newline or
end of sequence, and is compared after LocFT-BF's normalisation (``eval_edit_metric.py:16-33``:
lower case, every punctuation character removed, articles removed, spaces collapsed).

Every decoded answer is also kept (:func:`sample_rows`): the store holds, at each checkpoint, what
the edited model said at each scored prompt with both verdicts, beside the unedited model's answer
(:func:`unedited_prompts`, decoded once per run); ``editbench samples`` and the run page show them.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ...core.generate import ANSWER_RULES
from ...core.probe import ProbeBackend
from ...core.records import (
    SAMPLE_KINDS,
    EditRecord,
    Metric,
    SamplePrompt,
    SampleRow,
    ScoreRow,
    ScoringPair,
)
from ...core.task import Task
from .distinct import once_each

_DECODING = ("greedy decoding from the prompt until an end-of-sequence token, a newline or the "
             "target's length plus three tokens")
_NORMALISED = ("after normalisation (lower case, articles removed, spaces collapsed, outer "
               "punctuation stripped)")

GENERATED_METRICS: tuple[Metric, ...] = (
    Metric("efficacy_gen_em",
           f"{_DECODING} at the edit prompt; 1 if the answer equals target_new {_NORMALISED}"),
    Metric("generalization_gen_em", "the same at each paraphrase, mean over paraphrases"),
    Metric("efficacy_gen_prefix", f"{_DECODING} at the edit prompt; 1 if the answer starts with "
                                  f"target_new at a word boundary, {_NORMALISED}"),
    Metric("generalization_gen_prefix", f"{_DECODING} at each paraphrase; 1 if the answer starts "
                                        f"with target_new at a word boundary, {_NORMALISED}; "
                                        "mean over paraphrases"),
    Metric("specificity_gen_agree", f"{_DECODING} at each neighbourhood prompt; 1 if the answer "
                                    f"equals the unedited model's answer {_NORMALISED}; "
                                    "mean over neighbours"),
)

PORTABILITY_GEN_METRIC = Metric(
    "portability_gen_em", f"{_DECODING} at each portability question; 1 if the answer equals the "
                          f"answer the edit implies {_NORMALISED}; "
                          "mean over the edit's questions")


_WILD = ("greedy decoding from the prompt until '.', a newline, an end-of-sequence token or "
         "the run's token cap (the wild rule)")
_WILD_NORMALISED = ("after normalisation (lower case, all punctuation removed, articles removed, "
                    "spaces collapsed)")


def generated_metrics(rule: str = "editbench") -> tuple[Metric, ...]:
    """The generated metrics' catalogue entries, described under the run's answer rule."""
    if rule == "editbench":
        return GENERATED_METRICS
    return tuple(Metric(m.name, m.description.replace(_DECODING, _WILD)
                        .replace(_NORMALISED, _WILD_NORMALISED)) for m in GENERATED_METRICS)


def record_generated_metrics(records: Sequence[EditRecord]) -> tuple[Metric, ...]:
    """Catalogue entries for the generated metrics that depend on what the records carry."""
    return (PORTABILITY_GEN_METRIC,) if any(r.portability for r in records) else ()


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_SURROUNDING = string.punctuation + string.whitespace


def normalise_answer(text: str) -> str:
    """Lower case, articles (a, an, the) removed, runs of whitespace made one space, and punctuation
    and whitespace stripped from both ends ("The Ostwen Ford." -> "ostwen ford"). Inner
    punctuation stays: "St. Louis" and "St Louis" differ."""
    text = _ARTICLES.sub(" ", text.lower())
    return " ".join(text.split()).strip(_SURROUNDING)


_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalise_wild(text: str) -> str:
    """The wild rule's normalisation (LocFT-BF, ``eval_edit_metric.py:16-30``): lower case, every
    punctuation character removed ("St. Louis" and "St Louis" agree), articles removed, runs of
    whitespace made one space."""
    text = _ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION))
    return " ".join(text.split())


NORMALISERS = {"editbench": normalise_answer, "wild": normalise_wild}


def exact_match(generated: str, target: str, rule: str = "editbench") -> float:
    normalise = NORMALISERS[rule]
    return float(normalise(generated) == normalise(target))


def prefix_match(generated: str, target: str, rule: str = "editbench") -> float:
    """The generation starts with the target, at a word boundary ("paris, france" for "Paris";
    not "parisian")."""
    normalise = NORMALISERS[rule]
    got, want = normalise(generated), normalise(target)
    return float(got == want or (bool(want) and got.startswith(want)
                                 and not got[len(want)].isalnum()))


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def unedited_generations(probe: ProbeBackend, task: Task, records: Sequence[EditRecord],
                         max_new_tokens: int, rule: str = "editbench") -> dict[str, str]:
    """The unedited model's answer at every neighbourhood prompt of ``records`` (prompt -> text)."""
    pairs = list(dict.fromkeys(ScoringPair(task.generation_prompt(n.prompt), n.answer)
                               for r in records for n in r.neighbours))
    return dict(zip((p.prompt for p in pairs),
                    probe.generate_answers(pairs, max_new_tokens, ANSWER_RULES[rule])))


@dataclass(frozen=True)
class Answer:
    """The edited model's greedy answer to one scored prompt of an edit, and its verdict: exact
    match with the target (with the unedited model's answer at a neighbourhood prompt; with any of
    a portability question's answers)."""

    position: int
    kind: str  # one of SAMPLE_KINDS
    index: int
    target: str
    text: str
    passed: bool


def scored_pairs(task: Task, record: EditRecord) -> list[tuple[str, int, ScoringPair]]:
    """What is decoded for one edit, as (kind, index, pair) in ``SAMPLE_KINDS`` order: the edit
    prompt, each paraphrase (against the new target), each neighbourhood prompt (its answer sets
    only the length budget) and each portability question."""
    def pair(prompt: str, target: str) -> ScoringPair:
        return ScoringPair(task.generation_prompt(prompt), target)

    return [("edit", 0, pair(record.prompt, record.target_new)),
            *(("paraphrase", i, pair(p, record.target_new))
              for i, p in enumerate(record.paraphrases)),
            *(("neighbour", i, pair(n.prompt, n.answer)) for i, n in enumerate(record.neighbours)),
            *(("portability", i, pair(q.prompt, q.answer))
              for i, q in enumerate(record.portability))]


def asked_answers(task: Task, records: Sequence[EditRecord], positions: Sequence[int]
                  ) -> list[tuple[int, str, int, ScoringPair]]:
    """Every (position, kind, index, pair) decoded for the edits at ``positions``."""
    return [(position, kind, index, pair) for position in positions
            for kind, index, pair in scored_pairs(task, records[position])]


def generate_answers(probe: ProbeBackend, task: Task, unedited: Mapping[str, str],
                     records: Sequence[EditRecord], positions: Sequence[int],
                     max_new_tokens: int, rule: str = "editbench") -> list[Answer]:
    """The answers to every scored prompt of the edits at ``positions``, in one batched decoding
    call, each with its verdict."""
    asked = asked_answers(task, records, positions)
    texts = once_each(lambda pairs: probe.generate_answers(pairs, max_new_tokens,
                                                           ANSWER_RULES[rule]),
                      [pair for *_, pair in asked])
    answers = []
    for (position, kind, index, pair), text in zip(asked, texts, strict=True):
        if kind == "neighbour":
            passed = exact_match(text, unedited[pair.prompt], rule)
        elif kind == "portability":
            passed = max(exact_match(text, a, rule)
                         for a in records[position].portability[index].answers)
        else:
            passed = exact_match(text, pair.target, rule)
        answers.append(Answer(position, kind, index, pair.target, text, bool(passed)))
    return answers


def generated_rows(records: Sequence[EditRecord], answers: Sequence[Answer],
                   rule: str = "editbench") -> list[ScoreRow]:
    """The generated metrics of each edit from its answers (means over paraphrases, neighbours
    and portability questions)."""
    by_edit: dict[int, dict[str, list[Answer]]] = {}
    for answer in answers:
        by_edit.setdefault(answer.position, {kind: [] for kind in SAMPLE_KINDS})[
            answer.kind].append(answer)
    rows: list[ScoreRow] = []
    for position, kinds in by_edit.items():
        uid = records[position].uid
        (own,) = kinds["edit"]
        rows += [ScoreRow(position, uid, "efficacy_gen_em", float(own.passed)),
                 ScoreRow(position, uid, "efficacy_gen_prefix", prefix_match(own.text, own.target,
                                                                    rule))]
        if paraphrased := kinds["paraphrase"]:
            rows += [ScoreRow(position, uid, "generalization_gen_em",
                              _mean([float(a.passed) for a in paraphrased])),
                     ScoreRow(position, uid, "generalization_gen_prefix",
                              _mean([prefix_match(a.text, a.target, rule)
                                     for a in paraphrased]))]
        if neighbours := kinds["neighbour"]:
            rows.append(ScoreRow(position, uid, "specificity_gen_agree",
                                 _mean([float(a.passed) for a in neighbours])))
        if ported := kinds["portability"]:
            rows.append(ScoreRow(position, uid, "portability_gen_em",
                                 _mean([float(a.passed) for a in ported])))
    return rows


def score_generated(probe: ProbeBackend, task: Task, unedited: Mapping[str, str],
                    records: Sequence[EditRecord], positions: Sequence[int],
                    max_new_tokens: int, rule: str = "editbench") -> list[ScoreRow]:
    """Generated metrics for the edits at ``positions``, in one batched decoding call."""
    return generated_rows(records, generate_answers(probe, task, unedited, records, positions,
                                                    max_new_tokens, rule), rule)


def sample_rows(answers: Sequence[Answer],
                teacher_forced_passed: Mapping[tuple[int, str, int], bool]) -> list[SampleRow]:
    """The answers as the store keeps them, each with the teacher-forced verdict of its prompt
    (keyed by position, kind and index, as ``teacher_forced.TeacherForced.passed``)."""
    return [SampleRow(a.position, a.kind, a.index, a.text, a.passed,
                      teacher_forced_passed[(a.position, a.kind, a.index)]) for a in answers]


def unedited_prompts(probe: ProbeBackend, task: Task, unedited: Mapping[str, str],
                     records: Sequence[EditRecord], positions: Sequence[int],
                     max_new_tokens: int, rule: str = "editbench") -> list[SamplePrompt]:
    """Every scored prompt of the edits at ``positions`` with the unedited model's answer: at a
    neighbourhood prompt the one in ``unedited`` (:func:`unedited_generations`, the generated
    specificity's reference), elsewhere decoded here, each distinct pair once, in one batched call
    and with the budgets the checkpoints use."""
    asked = asked_answers(task, records, positions)
    todo = list(dict.fromkeys(pair for _, kind, _, pair in asked if kind != "neighbour"))
    texts = (dict(zip(todo, probe.generate_answers(todo, max_new_tokens, ANSWER_RULES[rule]),
                      strict=True))
             if todo else {})
    return [SamplePrompt(position, records[position].uid, kind, index, pair.prompt, pair.target,
                         unedited[pair.prompt] if kind == "neighbour" else texts[pair])
            for position, kind, index, pair in asked]


def pre_edit_generated(probe: ProbeBackend, task: Task, records: Sequence[EditRecord],
                       max_new_tokens: int, rule: str = "editbench") -> dict[str, float]:
    """What the unedited model generates: exact match with the true answers, and with the new
    targets."""
    summary: dict[str, float] = {}
    known = [r for r in records if r.target_true]
    if known:
        pairs = [ScoringPair(task.generation_prompt(r.prompt), r.target_true) for r in known]
        answers = probe.generate_answers(pairs, max_new_tokens, ANSWER_RULES[rule])
        summary["pre_edit_gen_em"] = _mean([exact_match(a, p.target, rule)
                                            for a, p in zip(answers, pairs)])
    pairs = [ScoringPair(task.generation_prompt(r.prompt), r.target_new) for r in records]
    answers = probe.generate_answers(pairs, max_new_tokens, ANSWER_RULES[rule])
    summary["pre_edit_efficacy_gen_em"] = _mean([exact_match(a, p.target, rule)
                                                 for a, p in zip(answers, pairs)])
    pairs = [ScoringPair(task.generation_prompt(q.prompt), q.before)
             for r in records for q in r.portability if q.before]
    if pairs:
        answers = probe.generate_answers(pairs, max_new_tokens, ANSWER_RULES[rule])
        summary["pre_edit_portability_gen_em"] = _mean([exact_match(a, p.target, rule)
                                                        for a, p in zip(answers, pairs)])
    return summary
