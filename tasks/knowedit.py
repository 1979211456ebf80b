"""KnowEdit (Zhang et al. 2024, EasyEdit's benchmark): nested ``locality`` and ``portability``.

A KnowEdit record (ZsRE, wiki_counterfact, wiki_recent) has ``subject``, ``prompt``, ``target_new``,
``ground_truth``, a paraphrase (``rephrase`` or ``rephrase_prompt``) and two dicts of question
lists, each question ``{"prompt", "ground_truth"}`` with the answer as a string, a list of
strings or a list of alias lists (the first is taken):

- ``locality``: ``Relation_Specificity``, ``Forgetfulness``, ...: each key becomes a locality set
  scored apart (``locality_relation_specificity_agree`` ...);
- ``portability``: ``Subject_Aliasing``, ``reasoning``/``Reasoning``, ``Logical_Generalization``:
  questions whose answer follows from the edit (``portability_acc``), the key kept as their kind.

The CounterFact task reads the same records (its flat layout is KnowEdit's without the dicts).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.records import EditRecord, Neighbour, Portability
from ..core.sources import Fields, Where
from ..core.task import TASKS
from .filetask import FileTask


def _answer(value: Any, where: Where, name: str) -> str:
    while isinstance(value, list) and value:
        value = value[0]
    if not isinstance(value, str) or not value.strip():
        raise where.error(name, f"must hold a non-empty answer, got {value!r}")
    return value


def _questions(obj: Any, key: str, where: Where) -> dict[str, list[tuple[str, str]]]:
    groups = obj.get(key) or {}
    if not isinstance(groups, dict):
        raise where.error(key, "must be an object of question lists")
    out: dict[str, list[tuple[str, str]]] = {}
    for name, items in groups.items():
        items = [items] if isinstance(items, dict) else items
        if not isinstance(items, list):
            raise where.error(f"{key}.{name}", "must be a list of {prompt, ground_truth} objects")
        for i, item in enumerate(items):
            fields = Fields(item, where, prefix=f"{key}.{name}[{i}].")
            prompt = fields.str("prompt")
            out.setdefault(name, []).append((prompt, _answer(item.get("ground_truth"), where,
                                                             f"{key}.{name}[{i}].ground_truth")))
    return out


def parse_knowedit(obj: Any, where: Where, uid: str) -> EditRecord:
    fields = Fields(obj, where)
    paraphrases = ()
    key = next((k for k in ("rephrase", "rephrase_prompt") if fields.has(k)), None)
    if key:
        paraphrases = tuple(fields.str_list(key, allow_str=True))
    locality = {name: tuple(Neighbour(p, a) for p, a in items)
                for name, items in _questions(obj, "locality", where).items()}
    portability = tuple(Portability(p, a, None, name)
                        for name, items in _questions(obj, "portability", where).items()
                        for p, a in items)
    neighbours = ()
    if fields.has("locality_prompt"):
        neighbours = (Neighbour(fields.str("locality_prompt"),
                                fields.str("locality_ground_truth")),)
    return EditRecord(
        uid=uid, prompt=fields.str("prompt", "src"), subject=fields.str("subject"),
        target_new=fields.str("target_new", "alt"),
        target_true=(_answer(obj["ground_truth"], where, "ground_truth")
                     if fields.has("ground_truth") else None),
        paraphrases=paraphrases, neighbours=neighbours, locality=locality, portability=portability,
    )


@TASKS.register("knowedit")
class KnowEditTask(FileTask):
    name = "knowedit"
    description = ("KnowEdit/EasyEdit records with nested locality and portability dicts; "
                   "needs --data")

    def parse(self, obj, where: Where) -> EditRecord:
        return parse_knowedit(obj, where, f"{Path(where.source).name}#{where.index}")
