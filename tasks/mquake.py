"""MQuAKE (Zhong et al., EMNLP 2023): multi-hop questions whose answers an edit must change; by
default its corrected release, MQuAKE-Remastered (Zhong et al., ICLR 2025).

MQuAKE-Remastered (henryzhongsc/MQuAKE-Remastered 59eb58c) fixes the 33-76% of MQuAKE's questions
and labels it found corrupted, in MQuAKE's layout: ``datasets/MQuAKE-Remastered-<subset>.json``
(read by ``data_utils.py:22-50``: ``requested_rewrite[].target_new.str``, ``orig.edit_triples``);
its Hugging Face copy (``eval/mquake_remastered/mquake_dataset.py:12``) flattens a rewrite's
targets to ``target_new_str``/``target_true_str`` (:93-94), which are read too. The subsets by
name: ``--param mquake.subset=CF-3k`` (default), ``CF-9k``, ``CF-6334``, ``T``
(``mquake_dataset.py:7``). Their per-edit-count ``split``/``6334_split`` labels (which cases a
G-Walk or MeLLo run edits) are not used: a lifelong run edits the stream it is given. The
original MQuAKE stays reachable: ``--param mquake.release=original`` (subsets CF-3k, that is
``MQuAKE-CF-3k-v2``, CF-9k and T).


A published case (``princeton-nlp/MQuAKE`` ``datasets/MQuAKE-CF-3k-v2.json``, layout in its
README) holds one to four ``requested_rewrite`` entries (CounterFact's layout plus a ``question``),
two to four hops of facts before (``single_hops``) and after (``new_single_hops``) the edits, each
``{question, cloze, answer, answer_alias}``, and three multi-hop ``questions`` whose answer is
``answer`` before the edits and ``new_answer`` (aliases ``new_answer_alias``) after all of them.

How a case becomes records:

- each rewrite is one edit (``mquake-<case_id>-<i>``), its ``question`` its paraphrase; the
  case's rewrites form one ``group``, so the runner edits them one after another;
- the case's last record carries what needs all of its edits: the multi-hop questions as
  portability (kind ``multi_hop``, ``before`` = ``answer``), and a locality set ``chain``: the
  single-hop facts of both chains that no edit of the case changes (their cloze differs from every
  rewrite's prompt), which must keep their answers;
- single hops whose cloze is an edited prompt are the edits themselves (scored as efficacy).

Questions are asked as MQuAKE asks them, ``Q: <question> A:``, after ``fewshot`` demonstrations if
given (MQuAKE's own are ``prompts/multihop-prompts.txt`` in its repository; pass a path or URL).
Beside ``portability_acc`` (the mean over the three questions), ``multihop_acc`` applies MQuAKE's
rule: a case counts as answered when any of its questions is (here, teacher-forced: every token of
``new_answer`` is the top prediction). ``answer_alias`` and ``orig`` are not used and are named in
the load warning. MQuAKE-CF (the 9k file) has cases whose edits conflict (the same prompt edited to
different objects); the loader warns with their count, and ``-3k-v2`` has none.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from ..core.records import EditRecord, Metric, Neighbour, Portability, ScoreRow, ScoringPair
from ..core.sources import Fields, Where, local_file, read_text
from ..core.task import TASKS
from .filetask import FileTask, FileTaskConfig

log = logging.getLogger(__name__)

MULTIHOP_METRIC = Metric("multihop_acc",
                         "MQuAKE's rule: 1 if any of a case's multi-hop questions gets every "
                         "token of the new answer as the top prediction (teacher-forced)")


_REMASTERED = ("https://raw.githubusercontent.com/henryzhongsc/MQuAKE-Remastered/"
               "59eb58c35deb267bb796fc9883d37f8070f6faf2/datasets/MQuAKE-Remastered-{}.json")
_ORIGINAL = "https://raw.githubusercontent.com/princeton-nlp/MQuAKE/main/datasets/{}"
#: release -> subset -> the published file
RELEASES = {
    "remastered": {name: _REMASTERED.format(name) for name in ("CF-3k", "CF-9k", "CF-6334", "T")},
    "original": {"CF-3k": _ORIGINAL.format("MQuAKE-CF-3k-v2.json"),
                 "CF-9k": _ORIGINAL.format("MQuAKE-CF.json"),
                 "T": _ORIGINAL.format("MQuAKE-T.json")},
}


def _target(rewrite: Fields, name: str) -> str:
    """A rewrite's target: MQuAKE's ``{name: {"str": ...}}``, or the Hugging Face copy's
    ``<name>_str``."""
    if rewrite.has(f"{name}_str") and not rewrite.has(name):
        return rewrite.str(f"{name}_str")
    return rewrite.nested(name).str("str")


@dataclass(frozen=True)
class MquakeConfig(FileTaskConfig):
    #: demonstrations put before every question (a path or URL), e.g. MQuAKE's
    #: prompts/multihop-prompts.txt
    fewshot: str | None = None
    #: remastered: MQuAKE-Remastered (ICLR 2025); original: MQuAKE as first released
    release: str = "remastered"
    #: the subset whose published file is read when no --data is given
    subset: str = "CF-3k"

    def __post_init__(self) -> None:
        super().__post_init__()
        files = RELEASES.get(self.release)
        if files is None:
            raise ValueError(f"release must be one of {', '.join(RELEASES)}, got "
                             f"{self.release!r}")
        if self.subset not in files:
            raise ValueError(f"subset {self.subset!r} is not in the {self.release} release; it "
                             f"has {', '.join(files)}")


def _hop(fields: Fields, name: str, index: int) -> tuple[str, str]:
    item = fields.obj[name][index]
    hop = Fields(item, fields.where, prefix=f"{name}[{index}].")
    hop.str("question")  # read: the cloze is what is scored, as MQuAKE scores edited facts
    return hop.str("cloze"), hop.str("answer")


@TASKS.register("mquake")
class MquakeTask(FileTask):
    name = "mquake"
    description = ("MQuAKE-Remastered cases (requested_rewrite list, multi-hop questions, single "
                   "hops); subsets CF-3k, CF-9k, CF-6334, T by mquake.subset, the original "
                   "MQuAKE by mquake.release=original; needs --data or the network")
    Config = MquakeConfig
    metrics = (MULTIHOP_METRIC,)
    default_data = RELEASES["remastered"]["CF-3k"]

    def _eval_source(self) -> str:
        config: MquakeConfig = self.config  # type: ignore[assignment]
        return self.options.data or RELEASES[config.release][config.subset]

    def __init__(self, options, config=None) -> None:
        super().__init__(options, config)
        self._fewshot: str | None = None

    def fewshot(self) -> str:
        """The demonstrations before each question, ending in a newline (empty when none are
        set)."""
        if self._fewshot is None:
            source = self.config.fewshot  # type: ignore[attr-defined]
            if not source:
                self._fewshot = ""
            else:
                path = local_file(source, "--param mquake.fewshot", self.options.cache_dir)
                self._fewshot = read_text(path).rstrip("\n") + "\n"
        return self._fewshot

    def question(self, text: str) -> str:
        return f"{self.fewshot()}Q: {text} A:"

    def parse(self, obj, where: Where) -> tuple[EditRecord, ...]:
        fields = Fields(obj, where)
        case = obj.get("case_id")
        case_id = case if isinstance(case, int) else f"{Path(where.source).name}#{where.index}"
        rewrites = obj.get("requested_rewrite")
        if not isinstance(rewrites, list) or not rewrites:
            raise where.error("requested_rewrite", "must be a non-empty list of rewrites")
        group = f"mquake-{case_id}"
        edits = []
        for i in range(len(rewrites)):
            rewrite = Fields(rewrites[i], where, prefix=f"requested_rewrite[{i}].")
            template, subject = rewrite.subject_template("prompt"), rewrite.str("subject")
            edits.append(EditRecord(
                uid=f"{group}-{i}", prompt=template.format(subject), subject=subject,
                target_new=_target(rewrite, "target_new"),
                target_true=_target(rewrite, "target_true"),
                paraphrases=(self.question(rewrite.str("question")),),
                extra={"relation_id": rewrites[i].get("relation_id"),
                       "target_new_id": (rewrites[i].get("target_new") or {}).get("id")},
                group=group,
            ))
        edited = {e.prompt for e in edits}
        chain: dict[str, str] = {}
        for name in ("single_hops", "new_single_hops"):
            hops = fields.obj.get(name)
            if hops is not None and not isinstance(hops, list):
                raise where.error(name, f"must be a list of hops, got {type(hops).__name__}")
            for index in range(len(hops or [])):
                cloze, answer = _hop(fields, name, index)
                if cloze not in edited:
                    chain.setdefault(cloze, answer)
        answer, new_answer = fields.str("answer"), fields.str("new_answer")
        aliases = (tuple(fields.str_list("new_answer_alias"))
                   if fields.obj.get("new_answer_alias") else ())
        questions = tuple(Portability(self.question(q), new_answer, answer, "multi_hop", aliases)
                          for q in fields.str_list("questions"))
        locality = {"chain": tuple(Neighbour(c, a) for c, a in chain.items())} if chain else {}
        edits[-1] = replace(edits[-1], portability=questions, locality=locality)
        return tuple(edits)

    def read(self, data: str) -> list[EditRecord]:
        fresh = data not in self._cache
        records = super().read(data)
        if fresh:
            targets: dict[str, set[str]] = {}
            for record in records:
                targets.setdefault(record.prompt, set()).add(record.target_new)
            conflicts = Counter(len(t) > 1 for t in targets.values())[True]
            if conflicts:
                log.warning("%s: %d edited prompts get different new objects in different cases; "
                            "a later edit overrides an earlier one in a lifelong run "
                            "(MQuAKE-CF-3k-v2 has no such conflicts)",
                            data, conflicts)
        return records

    def extra_metrics(self, probe, records: list[EditRecord],
                      positions: list[int]) -> list[ScoreRow]:
        chosen = [(p, records[p]) for p in positions
                  if any(q.kind == "multi_hop" for q in records[p].portability)]
        pairs = [ScoringPair(q.prompt, q.answer) for _, r in chosen for q in r.portability
                 if q.kind == "multi_hop"]
        scores = iter(probe.score(pairs))
        rows = []
        for position, record in chosen:
            answered = [next(scores).token_accuracy == 1.0 for q in record.portability
                        if q.kind == "multi_hop"]
            rows.append(ScoreRow(position, record.uid, "multihop_acc", float(any(answered))))
        return rows
