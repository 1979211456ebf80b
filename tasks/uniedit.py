"""UniEdit (Chen et al., 2025, arXiv 2505.12345): 311K open-domain edits from Wikidata in 25
domains, each with one generality and one locality question built from fact chains.

Layout (qizhou000/UniEdit 72ae7f8 ``README.md:116-186``; read by ``dataset/llm.py:262-317``): one
JSON file per domain (``train/<domain>.json``, ``test/<domain>.json``), each an object mapping a
sample id to ``{"edit": {prompt, target, subject, head_entity, property, tail_entity, ...},
"generality": {"0": {...}}, "locality": {"0": {...}}}``; a generality or locality entry has
``path_type`` (``single`` or ``double``), ``prompt``, ``target`` and its chain (``paths``,
``one_hops``, or ``single_path1``/``single_path2`` for ``double``).

How records are scored: the edit is ``edit.prompt`` -> ``edit.target``; the generality question is
a portability question of its kind, each kind also scored apart (the release's patterns,
``dataset/llm.py:382-418``): ``rephrase`` (one chain, the edit fact itself), ``relation_reverse``
(a chain through the reversed edit), ``multi_hop`` (two or more facts in a chain),
``same_entity`` (``double``); the locality question is the locality set ``uniedit``. As in the
release (:312-314) a ``double`` question asks " The answer is (Yes/No):". ``--data`` is one
domain file or a folder of them (read in name order; uid ``<domain>-<sample id>``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.records import EditRecord, Metric, Neighbour, Portability, ScoreRow
from ..core.sources import (
    Fields,
    RawRecords,
    RecordError,
    StrictJSONError,
    Where,
    parse_all,
    read_text,
    strict_json,
)
from ..core.task import TASKS
from ._kinds import kind_rows
from .filetask import FileTask

KIND_METRICS = {kind: Metric(f"uniedit_{kind}_acc", f"teacher-forced top-1 token accuracy at "
                             f"UniEdit's {kind.replace('_', ' ')} generality questions")
                for kind in ("rephrase", "relation_reverse", "multi_hop", "same_entity")}
YES_NO = " The answer is (Yes/No):"


def _paths(entry: dict, where: Where, name: str) -> list:
    chains = ([entry.get("paths")] if entry.get("path_type") == "single"
              else [(entry.get(k) or {}).get("paths") for k in ("single_path1", "single_path2")])
    for chain in chains:
        if not isinstance(chain, list) or not all(isinstance(p, list) for p in chain):
            raise where.error(f"{name}.paths", "must be a list of encoded chains (lists)")
    return chains


def generality_kind(entry: dict, where: Where, name: str) -> str:
    """The release's pattern of a generality entry (``dataset/llm.py:382-418``), one per entry,
    the most specific first."""
    chains = _paths(entry, where, name)
    if entry.get("path_type") == "double":
        return "same_entity"
    if any(len(chain) >= 2 for chain in chains):
        return "multi_hop"
    if any(p[:4] == ["t_e", "r_e", "h_e", "b"] for chain in chains for p in chain):
        return "relation_reverse"
    return "rephrase"


def _question(obj: Any, key: str, where: Where) -> tuple[str, str, dict] | None:
    group = obj.get(key)
    if not isinstance(group, dict):
        raise where.error(key, 'must be an object of entries ({"0": {...}})')
    if not group:
        return None
    first = next(iter(group))  # the release makes one entry per sample (README.md:140)
    name, entry = f"{key}.{first}", group[first]
    fields = Fields(entry, where, prefix=f"{name}.")
    path_type = fields.str("path_type")
    if path_type not in ("single", "double"):
        raise where.error(f"{name}.path_type", f"must be 'single' or 'double', got {path_type!r}")
    prompt = fields.str("prompt") + (YES_NO if path_type == "double" else "")
    return prompt, fields.str("target"), entry


@TASKS.register("uniedit")
class UniEditTask(FileTask):
    name = "uniedit"
    description = ("UniEdit domain files (edit, generality, locality per sample id); generality "
                   "kinds scored apart; needs --data FILE_OR_DIR")
    metrics = tuple(KIND_METRICS.values())
    locality_descriptions = {"uniedit": "UniEdit's locality question (a fact chain near the "
                                        "edit's head, tail or relation), against its answer"}

    def parse(self, obj, where: Where) -> EditRecord:
        sample_id = getattr(where, "sample_id", where.index)
        edit = Fields(obj, where).nested("edit")
        general = _question(obj, "generality", where)
        local = _question(obj, "locality", where)
        portability = ()
        if general is not None:
            prompt, target, entry = general
            kind = generality_kind(entry, where, "generality")
            portability = (Portability(prompt, target, None, kind),)
        return EditRecord(
            uid=f"{Path(where.source).stem}-{sample_id}", prompt=edit.str("prompt"),
            subject=edit.str("subject"), target_new=edit.str("target"),
            portability=portability,
            locality={"uniedit": (Neighbour(local[0], local[1]),)} if local else {},
        )

    def read(self, data: str) -> list[EditRecord]:
        if data in self._cache:
            return self._cache[data]
        root = Path(data).expanduser()
        files = sorted(root.glob("*.json")) if root.is_dir() else [root]
        if not files:
            raise RecordError(f"--data {data}: no UniEdit domain files (*.json) in the folder")
        records: list[EditRecord] = []
        for path in files:
            if not path.is_file():
                raise FileNotFoundError(f"--data {data}: no such file or folder")
            try:
                value = strict_json(read_text(path))
            except (ValueError, StrictJSONError) as exc:
                raise RecordError(f"{path}: not valid JSON: {exc}") from None
            if not isinstance(value, dict):
                raise RecordError(f"{path}: expected UniEdit's layout, a JSON object of samples "
                                  f"by id, found a {type(value).__name__}")
            ids = list(value)
            raw = _Samples(str(path), list(value.values()), ids)
            parsed, report = parse_all(raw, self.parse, self.options.lenient)
            records += parsed
            self.load_reports[str(path)] = report
        self._cache[data] = records
        return records

    def extra_metrics(self, probe, records: list[EditRecord],
                      positions: list[int]) -> list[ScoreRow]:
        return kind_rows(probe, records, positions, KIND_METRICS)


class _SampleWhere(Where):
    """A record's place named by its sample id, as UniEdit's files key them."""

    sample_id: str

    def __str__(self) -> str:
        return f"{self.source}: sample {self.sample_id!r}"


class _Samples(RawRecords):
    def __init__(self, source: str, items: list, ids: list[str]) -> None:
        super().__init__(source, items)
        object.__setattr__(self, "ids", ids)

    def where(self, index: int) -> Where:
        where = _SampleWhere(self.source, index)
        object.__setattr__(where, "sample_id", self.ids[index])  # type: ignore[attr-defined]
        return where
