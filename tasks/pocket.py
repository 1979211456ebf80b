"""The pocket world: a seeded, fictional world small enough to teach a model from scratch.

Offline users still need a real editing benchmark, so editbench makes one: entities with four
relations, four phrasings per relation crossed with four sentence prefixes. The model is trained
on every (prefix, phrasing) combination except the diagonal ones, which are held out as
paraphrases; crossing prefixes with phrasings is what lets a small model generalise to an unseen
combination (see shared NOTES: three fixed phrasings alone were memorised, not generalised).

Entities are split three ways by index: ``eval`` entities supply edits, ``train`` entities supply
training edits for methods that learn (hypernetworks), and a ``pool`` of entities is never edited
and supplies neighbourhood prompts, so specificity is measured on facts no edit touches.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cached_property

from ..core.records import EditRecord, Neighbour
from ..core.task import TASKS, Task, TaskConfig

PREFIXES = ("", "Fact:", "As everyone knows,", "In short,")

# relation -> (phrasings with {} for the subject, object kind)
RELATIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "city": (
        ("{} lives in", "The home town of {} is", "{} has a house in", "The city where {} resides is"),
        "place",
    ),
    "job": (
        ("{} works as a", "The profession of {} is", "{} earns a living as a", "By trade, {} is a"),
        "job",
    ),
    "language": (
        ("{} speaks", "The native language of {} is", "{} was raised speaking", "At home, {} talks in"),
        "tongue",
    ),
    "instrument": (
        ("{} plays the", "The instrument of {} is the", "{} practises the", "On stage, {} performs on the"),
        "instrument",
    ),
}

_SYLLABLES = ("ka", "lo", "mir", "ve", "dan", "tho", "ru", "sel", "bra", "qui", "nor", "ost",
              "fen", "gal", "hu", "ix", "jar", "pel", "wen", "zu", "ther", "mo", "ska", "dil")
_JOBS = ("baker", "sailor", "weaver", "potter", "miner", "fisher", "tailor", "mason", "brewer",
         "farmer", "hunter", "scribe", "healer", "smith", "carter", "glazier")
_INSTRUMENTS = ("lute", "harp", "flute", "drum", "fiddle", "horn", "oboe", "zither", "lyre",
                "bagpipe", "cello", "viola")


def _name(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(syllables)).capitalize()


@dataclass(frozen=True)
class PocketConfig(TaskConfig):
    """The world's size and seed. The world seed is fixed apart from ``--seed``, which orders edits:
    the model is trained on the world, so changing the world means training a new model."""

    n_entities: int = 200
    world_seed: int = 0
    n_neighbours: int = 4

    def __post_init__(self) -> None:
        if self.n_entities < 10:
            raise ValueError(f"n_entities must be at least 10, got {self.n_entities}")
        if self.n_neighbours < 1:
            raise ValueError(f"n_neighbours must be at least 1, got {self.n_neighbours}")


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
        self.objects: dict[str, tuple[str, ...]] = {
            "city": self._unique(rng, 20, lambda: f"{_name(rng, 2)} {rng.choice(('Vale', 'Ford', 'Hill', 'Port'))}"),
            "job": _JOBS,
            "language": self._unique(rng, 12, lambda: _name(rng, 2) + "ish"),
            "instrument": _INSTRUMENTS,
        }
        self.entities = self._unique(rng, config.n_entities, lambda: f"{_name(rng, 2)} {_name(rng, 2)}")
        self.facts = [
            Fact(entity, relation, rng.choice(self.objects[relation]))
            for entity in self.entities
            for relation in RELATIONS
        ]
        self._rng_state = rng.getstate()

    @staticmethod
    def _unique(rng: random.Random, n: int, make) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for _ in range(n * 1000):
            seen.setdefault(make(), None)
            if len(seen) == n:
                return tuple(seen)
        raise ValueError(f"could not draw {n} distinct names; lower n_entities")

    @staticmethod
    def prompt(fact_entity: str, relation: str, prefix: int, phrasing: int) -> str:
        text = RELATIONS[relation][0][phrasing].format(fact_entity)
        lead = PREFIXES[prefix]
        if lead.endswith(",") and not text.startswith(fact_entity):
            text = text[0].lower() + text[1:]
        return f"{lead} {text}".strip()

    @staticmethod
    def held_out(prefix: int, phrasing: int) -> bool:
        """Diagonal combinations other than the canonical (0, 0) are paraphrase-only."""
        return prefix == phrasing and prefix != 0

    def split_of(self, entity_index: int) -> str:
        return {3: "train", 4: "pool"}.get(entity_index % 5, "eval")

    def training_sentences(self) -> list[str]:
        sentences = []
        for fact in self.facts:
            for prefix in range(len(PREFIXES)):
                for phrasing in range(4):
                    if not self.held_out(prefix, phrasing):
                        sentences.append(f"{self.prompt(fact.entity, fact.relation, prefix, phrasing)} {fact.obj}.")
        return sentences

    @cached_property
    def records(self) -> dict[str, list[EditRecord]]:
        rng = random.Random(f"{self.config.world_seed}-edits")
        by_relation: dict[str, list[Fact]] = {}
        for index, fact in enumerate(self.facts):
            if self.split_of(index // len(RELATIONS)) == "pool":
                by_relation.setdefault(fact.relation, []).append(fact)
        out: dict[str, list[EditRecord]] = {"eval": [], "train": []}
        for index, fact in enumerate(self.facts):
            split = self.split_of(index // len(RELATIONS))
            if split == "pool":
                continue
            new = rng.choice([o for o in self.objects[fact.relation] if o != fact.obj])
            neighbours = rng.sample(by_relation[fact.relation], min(self.config.n_neighbours, len(by_relation[fact.relation])))
            out[split].append(EditRecord(
                uid=f"pocket-{index}",
                prompt=self.prompt(fact.entity, fact.relation, 0, 0),
                subject=fact.entity,
                target_new=new,
                target_true=fact.obj,
                paraphrases=tuple(self.prompt(fact.entity, fact.relation, k, k) for k in range(1, len(PREFIXES))),
                neighbours=tuple(Neighbour(self.prompt(n.entity, n.relation, 0, 0), n.obj) for n in neighbours),
                extra={"relation": fact.relation},
            ))
        return out


@TASKS.register("pocket", default=True)
class PocketTask(Task):
    name = "pocket"
    description = "built-in fictional world (4 relations, held-out phrasings); trains its own model offline"
    Config = PocketConfig

    @cached_property
    def world(self) -> PocketWorld:
        return PocketWorld(self.config)  # type: ignore[arg-type]

    def load(self, split: str) -> list[EditRecord]:
        if split not in ("eval", "train"):
            raise ValueError(f"--split {split!r}: the pocket task has splits 'eval' and 'train'")
        return list(self.world.records[split])

    def default_model(self) -> str:
        from .pocket_model import ensure_pocket_model

        return str(ensure_pocket_model(self.world, self.options.cache_dir))

    def default_edits(self) -> int:
        return 200

    @classmethod
    def sized_for(cls, edits: int) -> dict[str, str]:
        """The eval split holds 60% of the entities, four facts each."""
        return {"n_entities": str(max(cls.Config().n_entities, -(-edits * 5 // 12) + 20))}

    def corpus(self) -> list[str]:
        return self.world.training_sentences()
