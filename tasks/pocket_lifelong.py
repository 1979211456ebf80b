"""``--task pocket-lifelong``: the pocket world long enough for lifelong editing (issue 32).

A named setting of the pocket task, not a new default: 5,000 edits over the lifelong world
(``tasks/lifelong_world.py``: 5,049 eval edits, 2,754 train records, a model that can read a fact
from its context), its own model trained once and cached. ``editbench claims`` judges the field's
lifelong results on its runs; ``SCENARIO_COMMAND`` in ``reports/claims.py`` is the run it reads
(docs/pocket-world.md, "The lifelong scenario"). On its shipped model, three seeds: 9 of the 12
claims hold (10 on 2026-12-05's model, trained on another CPU); RLEdit's training keeps its initial
network here too, as on the default world, so the larger train split alone did not make its
training pay (docs/pocket-world.md, "The scenario's verdict" and "What 11 of 12 would take").
"""

from __future__ import annotations

from dataclasses import replace
from functools import cached_property

from ..core.task import TASKS
from .lifelong_world import POOL_SLOTS, TRAIN_SLOTS, LifelongPocketConfig, LifelongPocketWorld
from .pocket import PocketTask

#: the lifelong world's model: the default pocket model's architecture (the methods' pocket
#: defaults were chosen on it) trained for 20,000 steps of 64 sentences, 5.8 passes over the
#: world's 219,036 (the default model makes 7.2 over 21,354). It knows every eval fact, and its
#: paraphrases, before editing (docs/pocket-world.md, "The lifelong scenario")
STEPS = 20_000
#: the scenario's edits, turned as the editbench protocol turns them
EDITS = 5_000


@TASKS.register("pocket-lifelong")
class LifelongPocketTask(PocketTask):
    name = "pocket-lifelong"
    description = ("the pocket world sized for lifelong editing: 5,049 edits, 2,754 train "
                   "records, a model that also reads facts from its context")
    Config = LifelongPocketConfig

    @cached_property
    def world(self) -> LifelongPocketWorld:
        return LifelongPocketWorld(self.config)  # type: ignore[arg-type]

    def default_model(self, build: bool = True) -> str:
        from .pocket_model import MODEL_SIZES, ensure_pocket_model

        config: LifelongPocketConfig = self.config  # type: ignore[assignment]
        model = replace(MODEL_SIZES[config.model], steps=STEPS * (2 if config.model == "large"
                                                                 else 1))
        return str(ensure_pocket_model(self.world, self.options.cache_dir, model, build=build))

    def default_edits(self) -> int:
        return EDITS

    @classmethod
    def sized_for(cls, edits: int) -> dict[str, str]:
        """Eval people are 11 in 20 (nine facts each)."""
        eval_share = 20 - len(TRAIN_SLOTS) - len(POOL_SLOTS)
        people = -(-edits * 20 // (9 * eval_share)) + 20
        return {"n_entities": str(max(cls.Config().n_entities, people + people % 2))}
