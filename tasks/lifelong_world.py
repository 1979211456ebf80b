"""The lifelong pocket world: the pocket world made long enough for lifelong editing (issue 32).

The default pocket world (``tasks/pocket.py``) is sized for a 200-edit demo: 648 edits, 216 train
records, and a model that has only ever read facts stated on their own. The field's lifelong
results (MEMIT collapses over thousands of edits, hypernetworks trained for a fixed model break
and RLEdit's sequence training holds, retrieval rivals the editors at scale) need three things it
lacks, and this world adds them without changing the default one (its model and shipped
artefacts are untouched: this module is not in their code's closure):

- **Length**: by default 1,020 people, so the eval split holds 5,049 edits (a 5,000-edit ladder).
- **A train split of thousands**: people are split 55 / 30 / 15 (eval / train / pool) instead of
  60 / 20 / 20, so the hypernetworks train on 2,754 records (the seed trains on ZsRE's
  tens of thousands; 160 records made RLEdit's trained network no better than its initial one).
- **Facts read from the context**: a real model answers from a fact put before the question,
  which is what retrieval and in-context editing rely on. The pocket model learns it from
  "New fact: ..." lines (the retrieval baseline's own context format) followed by a question:
  when a line states the asked subject's asked relation the answer is the line's object, a
  counterfactual one, never its memorised fact; when the lines are about another person or
  another relation of the same person, the answer is the memorised fact. Only train and pool
  people are taught this way, so eval people meet in-context facts about themselves only when a
  method puts them there.

Everything here shapes the world and its model, nothing a method does; the model is cached by a
hash of this module's code like the default one (``tasks/pocket_model.py``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .pocket import PREFIXES, PocketConfig, PocketWorld

#: how a fact is put in the context: the retrieval baseline's default line
#: (``methods/retrieval.py``, EasyEdit IKE's "New fact:" wording)
CONTEXT_LINE = "New fact: {}.\n"
#: which in-context example a fact gets, and how often: the asked fact stated with another object
#: (answer: that object), another person's fact or the same person's other relation in the context
#: (answer: the memorised object), or both kinds of line together in either order (answer: the
#: stated object)
CONTEXT_KINDS = (("override", 0.35), ("other_subject", 0.3), ("other_relation", 0.15),
                 ("override_among", 0.2))
#: how often another person's line states the asked relation (what a keyword match retrieves for
#: a neighbour's question): the distinction the model must learn is by subject, not by relation
SAME_RELATION = 0.7

#: in a split of twenty people by index, which go to train and to the never-edited pool
TRAIN_SLOTS = frozenset({2, 5, 9, 12, 15, 18})
POOL_SLOTS = frozenset({3, 10, 17})


@dataclass(frozen=True)
class LifelongPocketConfig(PocketConfig):
    """The lifelong world's size: 1,020 people give 5,049 eval edits and 2,754 train records.
    ``in_context`` is how many in-context examples each train and pool fact gets in the model's
    training text (0: none, a model that cannot read its context, as the default world's)."""

    n_entities: int = 1020
    in_context: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.in_context < 0:
            raise ValueError(f"in_context must be 0 or more, got {self.in_context}")


class LifelongPocketWorld(PocketWorld):
    """The pocket world's facts and sentences, split 55 / 30 / 15, with in-context examples."""

    config: LifelongPocketConfig

    def split_of(self, entity_index: int) -> str:
        slot = entity_index % 20
        return "train" if slot in TRAIN_SLOTS else "pool" if slot in POOL_SLOTS else "eval"

    def training_sentences(self) -> list[str]:
        return super().training_sentences() + self.context_sentences()

    def context_sentences(self) -> list[str]:
        """``in_context`` examples per fact of a train or pool person, drawn from a seeded stream
        of its own (the rest of the world's draws are unchanged)."""
        rng = random.Random(f"{self.config.world_seed}-context")
        taught = [f for f in self.facts if self.entity_split(f.entity) != "eval"]
        by_entity: dict[str, list] = {}
        for fact in taught:
            by_entity.setdefault(fact.entity, []).append(fact)
        weights = [w for _, w in CONTEXT_KINDS]
        kinds = [k for k, _ in CONTEXT_KINDS]
        out = []
        for fact in taught:
            for _ in range(self.config.in_context):
                kind = rng.choices(kinds, weights)[0]
                out.append(self._context_example(rng, kind, fact, taught, by_entity))
        return out

    def _question(self, rng: random.Random, entity: str, relation: str) -> str:
        """The fact asked in a phrasing the model is trained on (never a held-out paraphrase)."""
        while True:
            prefix, phrasing = rng.randrange(len(PREFIXES)), rng.randrange(4)
            if not self.held_out(prefix, phrasing):
                return self.prompt(entity, relation, prefix, phrasing)

    def _stated(self, entity: str, relation: str, obj: str) -> str:
        return CONTEXT_LINE.format(f"{self.prompt(entity, relation, 0, 0)} {obj}")

    def _other_object(self, rng: random.Random, fact) -> str:
        return rng.choice([o for o in self.objects[fact.relation]
                           if o != fact.obj and o != fact.entity])

    def _context_example(self, rng: random.Random, kind: str, fact, taught: list,
                         by_entity: dict[str, list]) -> str:
        question = self._question(rng, fact.entity, fact.relation)
        if kind == "other_relation":
            other = rng.choice([f for f in by_entity[fact.entity] if f.relation != fact.relation])
            return f"{self._stated(other.entity, other.relation, self._other_object(rng, other))}" \
                   f"{question} {fact.obj}."
        # another person's fact, mostly of the asked relation (SAME_RELATION)
        other = rng.choice(taught)
        while other.entity == fact.entity:
            other = rng.choice(taught)
        if rng.random() < SAME_RELATION and other.relation != fact.relation:
            obj = self._other_object(rng, fact)
            other = type(fact)(other.entity, fact.relation, obj)
        distractor = self._stated(other.entity, other.relation, self._other_object(rng, other))
        if kind == "other_subject":
            return f"{distractor}{question} {fact.obj}."
        new = self._other_object(rng, fact)
        stated = self._stated(fact.entity, fact.relation, new)
        if kind == "override":
            return f"{stated}{question} {new}."
        lines = [stated, distractor]
        rng.shuffle(lines)
        return f"{''.join(lines)}{question} {new}."
