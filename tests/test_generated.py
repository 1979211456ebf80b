"""Generated metrics: answer normalisation, exact and prefix match, and scoring through a
backend."""

from __future__ import annotations

import pytest
import torch

from editbench.core.generate import StopRule, answer_budget, greedy_decode
from editbench.core.models import load_model
from editbench.core.probe import HFProbe
from editbench.core.records import EditRecord, Neighbour, Portability, ScoringPair
from editbench.harness.evaluation.generated import (
    exact_match,
    normalise_answer,
    prefix_match,
    score_generated,
)


@pytest.mark.parametrize("text, expected", [
    ("The Ostwen Ford.", "ostwen ford"),
    ("  Paris  ", "paris"),
    ("an apple a day", "apple day"),
    ('"Kalo Vale"!', "kalo vale"),
    ("St. Louis", "st. louis"),
    ("Theatre", "theatre"),  # "the" only as a word
    ("", ""),
])
def test_normalisation_by_hand(text, expected):
    assert normalise_answer(text) == expected


def test_exact_and_prefix_match():
    assert exact_match(" Paris.", "Paris") == 1.0
    assert exact_match("Paris, France", "Paris") == 0.0
    assert prefix_match("Paris, France", "Paris") == 1.0
    assert prefix_match("Parisian food", "Paris") == 0.0  # a word boundary is required
    assert prefix_match("the lute", "Lute") == 1.0
    assert prefix_match("", "Lute") == 0.0


class ScriptedProbe:
    """Answers each prompt from a table, as a backend would after decoding."""

    forward_seconds = 0.0

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers, self.asked = answers, []

    def generate_answers(self, pairs, max_new_tokens, rule=None):
        self.asked.append(list(pairs))
        return [self.answers.get(p.prompt, "") for p in pairs]


class PlainTask:
    def generation_prompt(self, prompt: str) -> str:
        return prompt


def test_each_generated_metric_from_scripted_answers():
    record = EditRecord("u1", "Kalo lives in", "Kalo", "Ostwen Ford", "Mir Vale",
                        paraphrases=("Fact: Kalo lives in", "In short, Kalo lives in"),
                        neighbours=(Neighbour("Dan lives in", "Mir Vale"),
                                    Neighbour("Ru lives in", "Sel Hill")))
    probe = ScriptedProbe({
        "Kalo lives in": "Ostwen Ford.", "Fact: Kalo lives in": "Ostwen Ford and more",
        "In short, Kalo lives in": "Mir Vale.", "Dan lives in": "Mir Vale.",
        "Ru lives in": "Ostwen",
    })
    unedited = {"Dan lives in": "Mir Vale", "Ru lives in": "Sel Hill."}
    rows = {
        r.metric: r.value for r in score_generated(probe, PlainTask(), unedited, [record], [0], 20)
    }
    assert rows == {"efficacy_gen_em": 1.0, "efficacy_gen_prefix": 1.0,
                    "generalization_gen_em": 0.0, "generalization_gen_prefix": 0.5,
                    "specificity_gen_agree": 0.5}


def test_a_portability_answer_counts_when_it_matches_any_alias():
    questions = (
        Portability("Q: capital? A:", "Rome", "London", "multi_hop", ("Roma", "the Eternal City")),
        Portability("Q: head? A:", "Zoran", None, "multi_hop"),
    )
    record = EditRecord("u1", "Kalo lives in", "Kalo", "Ostwen Ford", portability=questions)
    probe = ScriptedProbe(
        {"Kalo lives in": "Ostwen Ford", "Q: capital? A:": "Eternal City.", "Q: head? A:": "Roma"}
    )
    rows = {r.metric: r.value for r in score_generated(probe, PlainTask(), {}, [record], [0], 20)}
    # "the Eternal City" normalises as "eternal city"; "Roma" is not Zoran's
    assert rows["portability_gen_em"] == 0.5


def test_the_hf_backend_decodes_answers_within_their_budget(micro_llama):
    model, tokenizer = load_model(micro_llama, torch.device("cpu"), torch.float32)
    probe = HFProbe(model, tokenizer, torch.device("cpu"))
    pairs = [ScoringPair("Kalo lives in", "Ostwen Ford"), ScoringPair("x", "y")]
    answers = probe.generate_answers(pairs, max_new_tokens=3)
    stop = StopRule.for_model(model, tokenizer)
    ids = greedy_decode(
        model, probe.encoder, ["Kalo lives in", "x"], [3, 3], stop, torch.device("cpu")
    )
    # budgets: min(3, n + 3)
    assert answers == tokenizer.batch_decode(ids, skip_special_tokens=True)
    assert probe.forward_seconds > 0
    assert answer_budget(1, 50) == 4 and answer_budget(60, 50) == 50


def test_a_checkpoint_reads_each_distinct_pair_once_and_every_edit_gets_its_result():
    """Edits that share a neighbour (the pocket world's do: 1,906 pairs, 1,320 distinct at 200
    edits) ask the probe for it once, teacher-forced and generated; each edit's rows are those of
    asking for every pair."""
    from editbench.core.records import PairScore
    from editbench.harness.evaluation.teacher_forced import Baseline, teacher_forced

    shared = Neighbour("Dan lives in", "Mir Vale")
    records = [EditRecord("u1", "Kalo lives in", "Kalo", "Ostwen Ford", "Mir Vale",
                          paraphrases=("Fact: Kalo lives in",),
                          neighbours=(shared, Neighbour("Ru lives in", "Sel Hill"))),
               EditRecord("u2", "Sam lives in", "Sam", "Ostwen Ford", "Kel Moor",
                          paraphrases=("Fact: Kalo lives in",), neighbours=(shared,))]

    class CountingProbe(ScriptedProbe):
        def score(self, pairs):
            self.scored = list(pairs)
            return [PairScore(len(p.prompt) % 2, -1.0, 1, (len(p.target),)) for p in pairs]

    probe = CountingProbe({"Kalo lives in": "Ostwen Ford", "Fact: Kalo lives in": "Ostwen",
                           "Sam lives in": "Kel Moor", "Dan lives in": "Mir Vale",
                           "Ru lives in": "Sel Hill"})
    baseline = Baseline({(n.prompt, n.answer): PairScore(1.0, 0.0, 1, (len(n.answer),))
                         for r in records for n in r.neighbours})
    rows = teacher_forced(probe, baseline, records, [0, 1]).rows
    assert len(probe.scored) == len(set(probe.scored)) == 5  # of 7 asked
    by_edit = {(r.position, r.metric): r.value for r in rows}
    # token accuracy is the prompt's length modulo 2: "Fact: Kalo lives in" 1, "Dan lives in" 0
    assert by_edit[(1, "generalization_acc")] == by_edit[(0, "generalization_acc")] == 1.0
    assert by_edit[(1, "specificity_acc")] == 0.0 and by_edit[(0, "specificity_acc")] == 0.5
    generated = {(r.position, r.metric): r.value for r in score_generated(
        probe, PlainTask(), {"Dan lives in": "Mir Vale", "Ru lives in": "Sel Hill"}, records,
        [0, 1], 20)}
    (asked,) = probe.asked
    assert len(asked) == len(set(asked)) == 5
    assert generated[(0, "generalization_gen_em")] == generated[(1, "generalization_gen_em")] == 0
    assert generated[(1, "specificity_gen_agree")] == 1.0
