"""The pocket world: a seeded, fictional world small enough to teach a model from scratch.

Offline users still need a real editing benchmark, so editbench makes one. People have nine
relations of different shapes: many-to-one with a few dozen multi-token objects (home city,
employer), attributes from a handful of values (pet, favourite colour) to a dozen (job, language,
instrument, birth month), and a one-to-one relation over the people themselves (spouse: hundreds
of two-word objects). The objects have facts of their own (a city's country, a country's
currency), and every person has an alias. Each relation has four phrasings crossed with four
sentence prefixes; the model is trained on every combination except the diagonal ones, which are
held out as paraphrases (crossing prefixes with phrasings is what lets a small model generalise to
an unseen combination: shared NOTES).

Entities are split three ways by index: ``eval`` entities supply edits, ``train`` entities supply
training edits for methods that learn (hypernetworks), and a ``pool`` of entities is never edited
and supplies the locality prompts, so locality is measured on facts no edit touches. Each edit is
scored on three locality sets (README, "Locality and portability"):

- ``neighbours`` (the core specificity metrics): the same relation of pool people (CounterFact);
- ``unrelated``: other relations of pool people and the cities' and countries' own facts (ZsRE's
  unrelated questions);
- ``subject``: the edited person's other relations (editing where X lives must not change X's job).

Portability questions ask what follows from the edit: the alias as subject (KnowEdit's
Subject_Aliasing), and two-hop questions (MQuAKE) for the two relations another fact hangs off:
the country X lives in (the country of X's city) and the city X's spouse lives in. The model
learns two-hop sentences for train and pool people only; for eval people it must compose them
(docs/pocket-world.md measures how well it does, and what that costs).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cached_property

from ..core.records import EditRecord, Neighbour, Portability
from ..core.task import TASKS, Task, TaskConfig

PREFIXES = ("", "Fact:", "As everyone knows,", "In short,")

# relation -> (phrasings with {} for the subject, what the subject is)
RELATIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "city": (("{} lives in", "The home town of {} is", "{} has a house in",
              "The city where {} resides is"), "person"),
    "job": (("{} works as a", "The profession of {} is", "{} earns a living as a",
             "By trade, {} is a"), "person"),
    "language": (("{} speaks", "The native language of {} is", "{} was raised speaking",
                  "At home, {} talks in"), "person"),
    "instrument": (("{} plays the", "The instrument of {} is the", "{} practises the",
                    "On stage, {} performs on the"), "person"),
    "pet": (("{} keeps a pet", "The pet of {} is a", "{} feeds a pet",
             "At home, {} looks after a pet"), "person"),
    "colour": (("{} likes the colour", "The favourite colour of {} is", "{} always wears",
                "{} paints in"), "person"),
    "month": (("{} was born in", "The birth month of {} is", "{} celebrates a birthday in",
               "The birthday of {} falls in"), "person"),
    "employer": (("{} is employed by", "The employer of {} is", "{} draws a wage from",
                  "Each day, {} works for"), "person"),
    "spouse": (("{} is married to", "The spouse of {} is", "{} shares a home with",
                "The partner of {} is"), "person"),
    "country": (("{} lies in", "The country of {} is", "{} belongs to",
                 "The land that holds {} is"), "city"),
    "currency": (("{} pays in", "The currency of {} is the", "In {}, people pay in",
                  "Money in {} is the"), "country"),
}
PERSON_RELATIONS = tuple(r for r, (_, kind) in RELATIONS.items() if kind == "person")

#: two-hop questions about a person: name -> (phrasings, first relation, second relation)
TWO_HOPS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "home_country": (("The country {} lives in is", "{} lives in the country of",
                      "{} has a house in the land of", "The homeland of {} is"), "city", "country"),
    "spouse_city": (("The spouse of {} lives in", "{} is married to someone who lives in",
                     "The home town of the partner of {} is", "The partner of {} has a house in"),
                    "spouse", "city"),
}
#: the same two hops asked step by step (MQuAKE's chain-of-thought setting): "Step by step: X lives
#: in C, which lies in K". The first hop is stated, then the second continues from it, so the model
#: composes in the open what it cannot compose latently (docs/pocket-world.md)
CHAIN_LEAD = "Step by step:"
CHAIN_LINKS = {"home_country": "which lies in", "spouse_city": "who lives in"}
#: subjects of the chains that teach the second step for every bridge object ("Someone lives in C,
#: which lies in K"): the step reads the bridge in the sentence, never a person's memorised answer
CHAIN_STAND_INS = ("Someone", "A friend", "A neighbour")
ALIAS_PHRASINGS = ("{} is also known as {}.", "{} is another name for {}.")

_SYLLABLES = ("ka", "lo", "mir", "ve", "dan", "tho", "ru", "sel", "bra", "qui", "nor", "ost",
              "fen", "gal", "hu", "ix", "jar", "pel", "wen", "zu", "ther", "mo", "ska", "dil")
_FIXED = {
    "job": ("baker", "sailor", "weaver", "potter", "miner", "fisher", "tailor", "mason", "brewer",
            "farmer", "hunter", "scribe", "healer", "smith", "carter", "glazier"),
    "instrument": ("lute", "harp", "flute", "drum", "fiddle", "horn", "oboe", "zither", "lyre",
                   "bagpipe", "cello", "viola"),
    "pet": ("cat", "dog", "owl", "goat", "hare"),
    "colour": ("red", "blue", "green", "amber", "violet", "grey"),
    "month": ("January", "February", "March", "April", "May", "June", "July", "August", "September",
              "October", "November", "December"),
}


def _name(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(syllables)).capitalize()


@dataclass(frozen=True)
class PocketConfig(TaskConfig):
    """The world's size and seed. The world seed is fixed apart from ``--seed``, which orders edits:
    the model is trained on the world, so changing the world means training a new model.
    ``model="large"`` trains a wider, longer-trained model on the same world
    (docs/pocket-world.md)."""

    n_entities: int = 120
    world_seed: int = 0
    n_neighbours: int = 4
    # locality prompts per edit from other people's other relations and the objects' facts
    n_unrelated: int = 3
    n_same_subject: int = 3  # locality prompts per edit from the edited person's other relations
    n_cities: int = 30
    model: str = "small"

    def __post_init__(self) -> None:
        if self.n_entities < 10 or self.n_entities % 2:
            raise ValueError(f"n_entities must be even (spouses pair people) and at least 10, "
                             f"got {self.n_entities}")
        for name in ("n_neighbours", "n_unrelated", "n_same_subject"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.n_cities < 6:
            raise ValueError(f"n_cities must be at least 6, got {self.n_cities}")
        if self.model not in ("small", "large"):
            raise ValueError(f"model must be 'small' or 'large', got {self.model!r}")


@dataclass(frozen=True)
class Fact:
    entity: str
    relation: str
    obj: str


class PocketWorld:
    """The facts of one seeded world, and the sentences that state them."""

    def __init__(self, config: PocketConfig) -> None:
        self.config = config
        rng = random.Random(config.world_seed)
        countries = self._unique(rng, 6, lambda: _name(rng, 2) + "ia")
        cities = self._unique(
            rng, config.n_cities,
            lambda: f"{_name(rng, 2)} {rng.choice(('Vale', 'Ford', 'Hill', 'Port'))}")
        people = self._unique(rng, config.n_entities + 6 + config.n_cities,
                              lambda: f"{_name(rng, 2)} {_name(rng, 2)}")
        self.entities = tuple(p for p in people if p not in cities)[: config.n_entities]
        aliases = self._unique(rng, config.n_entities + len(people), lambda: _name(rng, 3))
        taken = set(self.entities) | set(cities) | set(countries)
        self.aliases = dict(zip(self.entities, (a for a in aliases if a not in taken),
                                strict=False))
        currencies = self._unique(rng, len(countries), lambda: _name(rng, 1).lower() + "a")
        self.objects: dict[str, tuple[str, ...]] = {
            **_FIXED, "city": cities,
            "language": self._unique(rng, 12, lambda: _name(rng, 2) + "ish"),
            "employer": self._unique(
                rng, 40, lambda: f"{_name(rng, 2)} {rng.choice(('Works', 'Guild', 'Mills'))}"),
            "spouse": self.entities, "country": countries, "currency": currencies,
        }
        order = list(self.entities)
        rng.shuffle(order)
        spouse = {}
        for a, b in zip(order[0::2], order[1::2], strict=False):
            spouse[a], spouse[b] = b, a
        self.facts: list[Fact] = []
        for entity in self.entities:
            for relation in PERSON_RELATIONS:
                obj = spouse[entity] if relation == "spouse" else rng.choice(self.objects[relation])
                self.facts.append(Fact(entity, relation, obj))
        # every country holds a city, and each country has its own currency
        self.object_facts = [Fact(city, "country",
                                  countries[i % len(countries)] if i < len(countries)
                                  else rng.choice(countries)) for i, city in enumerate(cities)]
        self.object_facts += [Fact(country, "currency", cur)
                              for country, cur in zip(countries, currencies)]
        self.lookup = {(f.entity, f.relation): f.obj for f in (*self.facts, *self.object_facts)}

    @staticmethod
    def _unique(rng: random.Random, n: int, make) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for _ in range(n * 1000):
            seen.setdefault(make(), None)
            if len(seen) == n:
                return tuple(seen)
        raise ValueError(f"could not draw {n} distinct names; lower n_entities")

    @staticmethod
    def phrase(template: str, subject: str, prefix: int) -> str:
        text = template.format(subject)
        lead = PREFIXES[prefix]
        if lead.endswith(",") and not text.startswith(subject):
            text = text[0].lower() + text[1:]
        return f"{lead} {text}".strip()

    @classmethod
    def prompt(cls, subject: str, relation: str, prefix: int, phrasing: int) -> str:
        return cls.phrase(RELATIONS[relation][0][phrasing], subject, prefix)

    @classmethod
    def two_hop_prompt(cls, subject: str, name: str, prefix: int = 0, phrasing: int = 0) -> str:
        return cls.phrase(TWO_HOPS[name][0][phrasing], subject, prefix)

    @classmethod
    def chain_prompt(cls, subject: str, name: str, prefix: int = 0, phrasing: int = 0) -> str:
        return f"{CHAIN_LEAD} {cls.prompt(subject, TWO_HOPS[name][1], prefix, phrasing)}"

    def chain_answer(self, subject: str, name: str, first: str | None = None) -> str:
        """The chain's completion: the first hop's object, then the second hop from it."""
        bridge = first if first is not None else self.lookup[(subject, TWO_HOPS[name][1])]
        return f"{bridge}, {CHAIN_LINKS[name]} {self.two_hop_answer(subject, name, bridge)}"

    def two_hop_answer(self, subject: str, name: str, first: str | None = None) -> str:
        """The answer, with ``first`` standing in for the subject's first-hop object (after an
        edit)."""
        _, first_relation, second_relation = TWO_HOPS[name]
        bridge = first if first is not None else self.lookup[(subject, first_relation)]
        return self.lookup[(bridge, second_relation)]

    @staticmethod
    def held_out(prefix: int, phrasing: int) -> bool:
        """Diagonal combinations other than the canonical (0, 0) are paraphrase-only."""
        return prefix == phrasing and prefix != 0

    def split_of(self, entity_index: int) -> str:
        return {3: "train", 4: "pool"}.get(entity_index % 5, "eval")

    def entity_split(self, entity: str) -> str:
        return self.split_of(self._entity_index[entity])

    @cached_property
    def _entity_index(self) -> dict[str, int]:
        return {entity: index for index, entity in enumerate(self.entities)}

    def _crossed(self, template_prompt, obj: str) -> list[str]:
        return [f"{template_prompt(prefix, phrasing)} {obj}." for prefix in range(len(PREFIXES))
                for phrasing in range(4) if not self.held_out(prefix, phrasing)]

    def training_sentences(self) -> list[str]:
        """Every fact in every non-held-out phrasing, the aliases and facts stated of the alias (two
        phrasings), and two-hop sentences, latent and step by step, for train and pool people only:
        eval people's two-hop questions are the ones the model must answer by composition."""
        sentences = []
        for fact in (*self.facts, *self.object_facts):
            sentences += self._crossed(lambda k, j, f=fact: self.prompt(f.entity, f.relation, k, j),
                                       fact.obj)
        for entity, alias in self.aliases.items():
            sentences += [template.format(alias, entity) for template in ALIAS_PHRASINGS]
        for fact in self.facts:
            sentences += [f"{self.prompt(self.aliases[fact.entity], fact.relation, 0, j)} "
                          f"{fact.obj}." for j in (0, 1)]
        for entity in self.entities:
            if self.entity_split(entity) != "eval":
                for name in TWO_HOPS:
                    answer = self.two_hop_answer(entity, name)
                    sentences += self._crossed(
                        lambda k, j, e=entity, n=name: self.two_hop_prompt(e, n, k, j), answer)
                    chain = self.chain_answer(entity, name)
                    sentences += self._crossed(
                        lambda k, j, e=entity, n=name: self.chain_prompt(e, n, k, j), chain)
        for name, (_, first, _) in TWO_HOPS.items():
            for index, bridge in enumerate(self.objects[first]):
                who = CHAIN_STAND_INS[index % len(CHAIN_STAND_INS)]
                sentences += self._crossed(
                    lambda k, j, w=who, n=name: self.chain_prompt(w, n, k, j),
                    self.chain_answer(who, name, bridge))
        return sentences

    def portability(self, fact: Fact, new: str) -> tuple[Portability, ...]:
        """What follows from setting ``fact`` to ``new``: the alias's answer changes with it, and a
        two-hop question whose first hop is the edited relation takes the new object's second
        hop."""
        questions = [Portability(self.prompt(self.aliases[fact.entity], fact.relation, 0, 0), new,
                                 fact.obj, "alias")]
        for name, (_, first, _) in TWO_HOPS.items():
            if first == fact.relation:
                questions.append(Portability(self.two_hop_prompt(fact.entity, name),
                                             self.two_hop_answer(fact.entity, name, new),
                                             self.two_hop_answer(fact.entity, name), "two_hop"))
                questions.append(Portability(self.chain_prompt(fact.entity, name),
                                             self.chain_answer(fact.entity, name, new),
                                             self.chain_answer(fact.entity, name), "two_hop_chain"))
        return tuple(questions)

    def _new_object(self, rng: random.Random, fact: Fact) -> str:
        """A counterfactual object; a new city is in another country and a new spouse lives in
        another city, so that the two-hop answer changes too."""
        choices = [o for o in self.objects[fact.relation] if o != fact.obj and o != fact.entity]
        for name, (_, first, second) in TWO_HOPS.items():
            if first == fact.relation:
                old = self.two_hop_answer(fact.entity, name)
                # the second hop from each candidate, by one dictionary lookup (two_hop_answer)
                choices = [o for o in choices if self.lookup[(o, second)] != old] or choices
        return rng.choice(choices)

    @cached_property
    def records(self) -> dict[str, list[EditRecord]]:
        rng = random.Random(f"{self.config.world_seed}-edits")
        pool = [f for f in self.facts if self.entity_split(f.entity) == "pool"]
        by_relation: dict[str, list[Fact]] = {}
        for fact in pool:
            by_relation.setdefault(fact.relation, []).append(fact)
        by_entity: dict[str, list[Fact]] = {}
        for fact in self.facts:
            by_entity.setdefault(fact.entity, []).append(fact)
        out: dict[str, list[EditRecord]] = {"eval": [], "train": []}
        config = self.config
        #: per relation, the facts unrelated to it (the same list for every fact of the relation,
        #: built once: rebuilding it per fact made a 20,000-edit world quadratic)
        unrelated_to = {relation: [f for f in pool if f.relation != relation] + self.object_facts
                        for relation in {f.relation for f in self.facts}}
        for index, fact in enumerate(self.facts):
            split = self.entity_split(fact.entity)
            if split == "pool":
                continue
            new = self._new_object(rng, fact)
            neighbours = rng.sample(by_relation[fact.relation],
                                    min(config.n_neighbours, len(by_relation[fact.relation])))
            others = unrelated_to[fact.relation]
            unrelated = rng.sample(others, min(config.n_unrelated, len(others)))
            own = [f for f in by_entity[fact.entity] if f.relation != fact.relation]
            same_subject = rng.sample(own, min(config.n_same_subject, len(own)))
            out[split].append(EditRecord(
                uid=f"pocket-{index}",
                prompt=self.prompt(fact.entity, fact.relation, 0, 0),
                subject=fact.entity,
                target_new=new,
                target_true=fact.obj,
                paraphrases=tuple(self.prompt(fact.entity, fact.relation, k, k)
                                  for k in range(1, len(PREFIXES))),
                neighbours=self._as_neighbours(neighbours),
                locality={"unrelated": self._as_neighbours(unrelated),
                          "subject": self._as_neighbours(same_subject)},
                portability=self.portability(fact, new),
                extra={"relation": fact.relation},
            ))
        return out

    def _as_neighbours(self, facts: list[Fact]) -> tuple[Neighbour, ...]:
        return tuple(Neighbour(self.prompt(f.entity, f.relation, 0, 0), f.obj) for f in facts)


@TASKS.register("pocket", default=True)
class PocketTask(Task):
    name = "pocket"
    description = ("built-in fictional world (11 relations, aliases, two-hop questions, "
                   "held-out phrasings); trains its own model offline")
    Config = PocketConfig
    locality_descriptions = {
        "unrelated": ("facts of other (never edited) people and relations, and of the cities and "
                      "countries (ZsRE-style)"),
        "subject": ("the edited person's other relations (editing where X lives must not change "
                    "X's job)"),
    }

    @cached_property
    def world(self) -> PocketWorld:
        return PocketWorld(self.config)  # type: ignore[arg-type]

    def load(self, split: str) -> list[EditRecord]:
        if split not in ("eval", "train"):
            raise ValueError(f"--split {split!r}: the pocket task has splits 'eval' and 'train'")
        return list(self.world.records[split])

    def default_model(self, build: bool = True) -> str:
        from .pocket_model import MODEL_SIZES, ensure_pocket_model

        config: PocketConfig = self.config  # type: ignore[assignment]
        return str(ensure_pocket_model(self.world, self.options.cache_dir,
                                       MODEL_SIZES[config.model], build=build))

    def default_edits(self) -> int:
        return 200

    @classmethod
    def sized_for(cls, edits: int) -> dict[str, str]:
        """The eval split holds 60% of the people, nine facts each."""
        needed = -(-edits * 5 // 27) + 20
        return {"n_entities": str(max(cls.Config().n_entities, needed + needed % 2))}

    def corpus(self) -> list[str]:
        return self.world.training_sentences()
