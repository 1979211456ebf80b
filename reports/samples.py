"""The edited models' own answers, as stored at each checkpoint (``core/store.py``, ``samples``).

A score says how often a method's edits work; the answers say what the model actually says, so a
reader can trust the number or see where it misleads (a prompt that passes teacher-forced while
the generated answer is something else: "The Mirage of Model Editing", ACL 2025). Two readers:
``editbench samples`` prints one checkpoint's answers as a table (:func:`select_samples`,
:func:`format_samples`) and the run page's answer browser embeds them (:func:`browser_data`).
"""

from __future__ import annotations

import textwrap
import unicodedata
from pathlib import Path
from typing import Any

import pandas as pd

from ..core.records import SAMPLE_KINDS
from ..core.store import load_results

#: the metric each kind of prompt counts towards (efficacy_*, generalization_*, ...)
KIND_METRICS = {"edit": "efficacy", "paraphrase": "generalization", "neighbour": "specificity",
                "portability": "portability"}
#: answers embedded in one run page at most; beyond it each checkpoint keeps its first answers
SAMPLES_ON_PAGE = 20_000

VERDICT_RULES = (
    "gen: the greedy answer's exact match with the target (normalised: lower case, articles and "
    "outer punctuation dropped); at a neighbourhood prompt, with the unedited model's answer. "
    "tf (teacher-forced): every target token is the model's top-1 (token accuracy 1.0); at a "
    "neighbourhood prompt, every answer token's top-1 is the unedited model's (agreement 1.0).")


def _no_samples(folder: Path) -> str:
    return (f"{folder} holds no stored answers: its runs were made by an editbench from before "
            "they were stored (results schema 2 or older) or with --gen-eval off; rerun with "
            "generated scoring on to store them")


def select_samples(folder: Path, method: str, n_edits: int, *, failed: bool = False,
                   run_id: str | None = None) -> pd.DataFrame:
    """One checkpoint's answers (``ResultsStore.samples``' columns), of every run in the store that
    has them unless ``run_id`` names one; only those whose generated answer fails with
    ``failed``. A ValueError in one line names the option at fault and what would work."""
    store = load_results(folder)
    try:
        where = store.sample_checkpoints()
        if run_id is not None:
            runs = sorted(store.runs()["run_id"])
            if run_id not in runs:
                raise ValueError(f"--run {run_id}: {folder} holds no such run; its runs: "
                                 f"{', '.join(runs) or 'none'}")
            where = where[where["run_id"] == run_id]
        if where.empty:
            raise ValueError(_no_samples(folder))
        methods = sorted(where["method"].unique())
        if method not in methods:
            raise ValueError(f"--method {method}: {folder} holds no answers of it; methods with "
                             f"answers: {', '.join(methods)}")
        counts = sorted(int(n) for n in where.loc[where["method"] == method, "n_edits"].unique())
        if n_edits not in counts:
            raise ValueError(f"--edits {n_edits} is not a checkpoint of {method} with answers; "
                             f"its checkpoints: {', '.join(map(str, counts))}")
        frame = store.samples(run_id, method, n_edits)
    finally:
        store.close()
    return frame[~frame["generated_pass"]] if failed else frame


def shown(text: str) -> str:
    """A stored string as a terminal shows it safely: outer whitespace trimmed, control and other
    invisible characters written as escapes (a model's answer could hold a terminal escape)."""
    text = "".join(c if unicodedata.category(c)[0] != "C" else ascii(c)[1:-1]
                   for c in text.strip())
    return text or "(nothing)"


def format_samples(frame: pd.DataFrame, *, failed: bool = False) -> str:
    """A table per run: edit, uid, prompt kind, both verdicts, the answer, the target, the unedited
    model's answer and the prompt (last, as the longest)."""
    lines: list[str] = []
    for (run_id, method, n_edits), group in frame.groupby(["run_id", "method", "n_edits"],
                                                          sort=True):
        where = f"{method} at {n_edits} edits, run {run_id}"
        lines.append(f"{where}: {len(group)} answers at {group['position'].nunique()} edits"
                     + (" whose generated answer fails" if failed else ""))
        table = [["edit", "uid", "kind", "gen", "tf", "answer", "target", "unedited", "prompt"]]
        for row in group.itertuples(index=False):
            kind = row.kind if row.kind == "edit" else f"{row.kind} {row.index + 1}"
            table.append([str(row.position), shown(row.uid), kind,
                          "pass" if row.generated_pass else "FAIL",
                          "pass" if row.teacher_forced_pass else "FAIL",
                          shown(row.text), shown(row.target), shown(row.unedited),
                          shown(row.prompt)])
        widths = [min(max(len(r[i]) for r in table), 40) for i in range(len(table[0]) - 1)]
        for cells in table:
            lines.append("  ".join([*(c.ljust(w) for c, w in zip(cells, widths)), cells[-1]])
                         .rstrip())
        lines.append("")
    if frame.empty:
        lines.append("no answers " + ("fail" if failed else "stored") + " at that checkpoint")
    lines += textwrap.wrap(VERDICT_RULES, 100)
    return "\n".join(lines) + "\n"


def browser_data(folder: Path | str, run_id: str,
                 limit: int = SAMPLES_ON_PAGE) -> dict[str, Any] | None:
    """A run's answers for the run page's browser, compact: each distinct string once (``texts``),
    each scored prompt once (``prompts``: position, uid, kind, index, prompt, target, unedited as
    indexes), each answer as [method, edits, prompt, text, generated pass, teacher-forced pass].
    ``None`` when the run has none. Beyond ``limit`` answers, each checkpoint keeps its first."""
    store = load_results(folder)
    try:
        frame = store.samples(run_id)
    finally:
        store.close()
    if frame.empty:
        return None
    total = len(frame)
    groups = frame.groupby(["method", "n_edits"], sort=True)
    if total > limit:
        frame = groups.head(max(1, limit // groups.ngroups))
    texts: dict[str, int] = {}

    def text(value: str) -> int:
        return texts.setdefault(value, len(texts))

    prompt_keys = ["position", "kind", "index"]
    prompts = frame.drop_duplicates(prompt_keys).sort_values(prompt_keys)
    prompt_index = {key: i for i, key in enumerate(
        zip(prompts["position"], prompts["kind"], prompts["index"]))}
    methods = sorted(frame["method"].unique())
    method_index = {m: i for i, m in enumerate(methods)}
    return {
        "kinds": list(SAMPLE_KINDS),
        "metrics": [KIND_METRICS[k] for k in SAMPLE_KINDS],
        "methods": methods,
        "prompts": [[int(p.position), text(p.uid), SAMPLE_KINDS.index(p.kind), int(p.index),
                     text(p.prompt), text(p.target), text(p.unedited)]
                    for p in prompts.itertuples(index=False)],
        # columns zipped, methods by dict: itertuples and list.index were most of a report's
        # page-writing time on a run of 12 methods
        "rows": [[method_index[m], int(n), prompt_index[(p, k, i)], text(t), int(g), int(f)]
                 for m, n, p, k, i, t, g, f in zip(
                     frame["method"], frame["n_edits"], frame["position"], frame["kind"],
                     frame["index"], frame["text"], frame["generated_pass"],
                     frame["teacher_forced_pass"])],
        "texts": list(texts),
        "total": total,
    }
