"""The lifelong pocket world (issue 32): long enough, a train split of thousands, and in-context
examples whose answers follow the rule the model is to learn."""

from __future__ import annotations

import random

import pytest

from editbench.core.task import TASKS, TaskOptions
from editbench.tasks.lifelong_world import (
    CONTEXT_LINE,
    LifelongPocketConfig,
    LifelongPocketWorld,
)
from editbench.tasks.pocket import PocketConfig, PocketWorld


@pytest.fixture(scope="module")
def world() -> LifelongPocketWorld:
    return LifelongPocketWorld(LifelongPocketConfig(n_entities=200))


def test_default_size_gives_the_scenario_its_edits_and_thousands_of_train_records():
    task = TASKS["pocket-lifelong"](TaskOptions())
    assert task.default_edits() >= 5000
    assert len(task.records("eval")) >= task.default_edits()
    assert len(task.records("train")) >= 2000


def test_sized_for_makes_enough_edits():
    task_cls = TASKS["pocket-lifelong"]
    for edits in (6000, 9001):
        config = LifelongPocketConfig(n_entities=int(task_cls.sized_for(edits)["n_entities"]))
        assert len(LifelongPocketWorld(config).records["eval"]) >= edits


def test_the_default_worlds_facts_and_text_are_untouched():
    """The lifelong world changes splits and adds sentences; the people and facts of a world of
    the same size are the default world's, and with no in-context examples so is the text about
    every person whose split is the same in both (the split decides who gets two-hop text)."""
    plain = PocketWorld(PocketConfig(n_entities=200))
    lifelong = LifelongPocketWorld(LifelongPocketConfig(n_entities=200, in_context=0))
    assert plain.facts == lifelong.facts
    moved = [e for e in plain.entities if plain.entity_split(e) != lifelong.entity_split(e)]
    assert moved  # the splits differ, so the comparison below leaves something out

    def kept(world):
        return sorted(s for s in world.training_sentences() if not any(e in s for e in moved))

    assert kept(plain) == kept(lifelong)
    assert len(kept(plain)) > 0.25 * len(plain.training_sentences())


def test_in_context_examples_teach_only_train_and_pool_people(world):
    sentences = world.context_sentences()
    taught = sum(world.entity_split(f.entity) != "eval" for f in world.facts)
    assert len(sentences) == taught * world.config.in_context
    eval_people = [e for e in world.entities if world.entity_split(e) == "eval"]
    for sentence in sentences:
        for person in eval_people:
            for at in (i for i in range(len(sentence)) if sentence.startswith(person, i)):
                # an eval person may be a spouse (an object), never the subject of a line
                assert sentence[:at].endswith(("married to ", "with ", " is ")), sentence


@pytest.mark.parametrize("kind", ["override", "other_subject", "other_relation",
                                  "override_among"])
def test_each_kind_answers_by_the_rule(world, kind):
    """A line stating the asked subject's asked relation decides the answer (a counterfactual
    object); lines about another person or relation leave the memorised answer."""
    rng = random.Random(0)
    taught = [f for f in world.facts if world.entity_split(f.entity) != "eval"]
    by_entity: dict = {}
    for fact in taught:
        by_entity.setdefault(fact.entity, []).append(fact)
    for fact in taught[:60]:
        text = world._context_example(rng, kind, fact, taught, by_entity)
        *lines, question = text.split("\n")
        stated = [line.removeprefix("New fact: ").removesuffix(".") for line in lines]
        assert all(f"{line}\n" == CONTEXT_LINE.format(s) for line, s in zip(lines, stated))
        assert len(lines) == (2 if kind == "override_among" else 1)
        own = world.prompt(fact.entity, fact.relation, 0, 0)
        overriding = [s for s in stated if s.startswith(own + " ")]
        answer = question.removesuffix(".").rsplit(" ", 1)[-1]
        if kind.startswith("override"):
            assert len(overriding) == 1
            new = overriding[0][len(own) + 1:]
            assert new != fact.obj and question.endswith(f" {new}.")
        else:
            assert not overriding
            assert question.endswith(f" {fact.obj}.")
        assert answer  # a question with an answer


def test_context_needs_a_non_negative_count():
    with pytest.raises(ValueError, match="in_context"):
        LifelongPocketConfig(in_context=-1)
