"""``editbench compare``: two methods (of one store, or of two stores) side by side, checkpoint by
checkpoint, with the difference of each headline metric and its 95% interval.

A leaderboard says which method is ahead at each edit count; a comparison answers the next
question, by how much and whether this run can tell (the comparator views of public
leaderboards). The difference is B − A. Where both sides scored the same edits at a checkpoint
(one store, or two runs of the same task, records and seed) the interval is a paired bootstrap
over those edits, which removes the variation between edits that both methods share; otherwise
the two sides are resampled independently (``stats.bootstrap_difference``). A difference whose
interval excludes zero is marked ``*``.

Like every report it only reads the stores and never imports torch.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..core.outputs import FIRST_LINES
from .stats import Interval, bootstrap_difference, cell_rng

#: how a comparison page begins (``core/outputs.py`` knows it, so only such a page is replaced)
PAGE_START = FIRST_LINES["compare"]


@dataclass(frozen=True)
class Side:
    """One method of one run: what is compared."""

    source: Path
    run_id: str
    method: str
    task: str
    protocol: object  # core.protocol.Protocol
    scores: pd.DataFrame  # n_edits, uid, metric, value

    @property
    def name(self) -> str:
        return f"{self.method} ({self.source}, run {self.run_id})"


@dataclass(frozen=True)
class Difference:
    n_edits: int
    metric: str
    a: float  # A's mean over its edits
    b: float
    diff: Interval
    paired: bool

    @property
    def clear(self) -> bool:
        """Whether the interval of B − A excludes zero."""
        low, high = self.diff.low, self.diff.high
        return low is not None and high is not None and (low > 0 or high < 0)


@dataclass(frozen=True)
class Comparison:
    a: Side
    b: Side
    rows: list[Difference]
    notes: list[str]


def _sides(folder: Path, methods: list[str] | None) -> list[Side]:
    """Every (run, method) of the store in ``folder`` with stored scores, or only ``methods``."""
    from .collect import collect
    from .leaderboard import run_protocol

    found = collect([folder])
    runs = found.runs.set_index("run_id")
    sides = []
    for (run_id, method), scores in found.scores.groupby(["run_id", "method"], sort=True):
        if methods is not None and method not in methods:
            continue
        sides.append(Side(Path(folder), str(run_id), str(method), str(runs.loc[run_id, "task"]),
                          run_protocol(runs.loc[run_id, "config"]),
                          scores[["n_edits", "uid", "metric", "value"]]))
    return sides


def _one(sides: list[Side], method: str, where: Path) -> Side:
    mine = [s for s in sides if s.method == method]
    if not mine:
        held = sorted({s.method for s in sides})
        raise ValueError(f"{where} holds no scores of the method {method!r}; it holds "
                         f"{', '.join(held) or 'none'}")
    if len(mine) > 1:
        raise ValueError(f"{where} holds {len(mine)} runs of {method} "
                         f"({', '.join(s.run_id for s in mine)}); compare reads one run per side "
                         "(runs that differ by seed are pooled by `editbench report`)")
    return mine[0]


def choose(stores: list[Path], methods: list[str] | None) -> tuple[Side, Side]:
    """The two sides the command line names: ``A --methods M1,M2`` (two methods of one store),
    ``A B`` (the one method both hold, or each store's only method) or ``A B --methods M``."""
    if len(stores) == 1:
        if methods is None or len(methods) != 2:
            raise ValueError("one store: name the two methods to compare, --methods A,B")
        sides = _sides(stores[0], methods)
        return _one(sides, methods[0], stores[0]), _one(sides, methods[1], stores[0])
    if len(stores) != 2:
        raise ValueError(f"compare takes one or two results folders, not {len(stores)}")
    if methods is not None and len(methods) != 1:
        raise ValueError("two stores: --methods names the one method to compare between them")
    first, second = (_sides(s, methods) for s in stores)
    if methods is not None:
        return _one(first, methods[0], stores[0]), _one(second, methods[0], stores[1])
    common = sorted({s.method for s in first} & {s.method for s in second})
    if len(common) == 1:
        return _one(first, common[0], stores[0]), _one(second, common[0], stores[1])
    if len({s.method for s in first}) == 1 and len({s.method for s in second}) == 1 \
            and not common:
        return _one(first, first[0].method, stores[0]), _one(second, second[0].method, stores[1])
    raise ValueError(f"--methods: name the method to compare; {stores[0]} holds "
                     f"{', '.join(sorted({s.method for s in first})) or 'none'}, {stores[1]} "
                     f"holds {', '.join(sorted({s.method for s in second})) or 'none'}")


def compare(a: Side, b: Side, metrics: list[str] | None = None, seed: int = 0) -> Comparison:
    """B − A at every checkpoint both reached, for ``metrics`` (default: the headline metrics of
    A's protocol, teacher-forced and generated, that both sides stored)."""
    from .summary import headline_keys

    notes = []
    if a.task != b.task:
        notes.append(f"the sides ran different tasks ({a.task}, {b.task}): their scores are on "
                     "different edits")
    if a.protocol.board_key() != b.protocol.board_key():
        notes.append(f"the sides ran under different protocols ({a.protocol.label}, "
                     f"{b.protocol.label}): the leaderboard would not rank them together")
    stored = set(a.scores["metric"]) & set(b.scores["metric"])
    wanted = [m for m in (metrics or headline_keys(a.protocol)) if m in stored]
    counts = sorted(set(a.scores["n_edits"]) & set(b.scores["n_edits"]))
    if not counts or not wanted:
        raise ValueError(f"{a.name} and {b.name} share no checkpoint with a metric to compare")
    rows = []
    for n in counts:
        for metric in wanted:
            left = _values(a, n, metric)
            right = _values(b, n, metric)
            if left.empty or right.empty:
                continue
            paired = left.index.equals(right.index) or (
                set(left.index) == set(right.index) and left.index.is_unique)
            if paired:
                right = right.reindex(left.index)
            rng = cell_rng(seed, "compare", n, metric)
            diff = bootstrap_difference(left.to_numpy(), right.to_numpy(), rng, paired)
            rows.append(Difference(n, metric, float(left.mean()), float(right.mean()), diff,
                                   paired))
    if any(not r.paired for r in rows):
        notes.append("where the sides scored different edits the two are resampled apart "
                     "(unpaired)")
    return Comparison(a, b, rows, notes)


def _values(side: Side, n: int, metric: str) -> pd.Series:
    chosen = side.scores[(side.scores["n_edits"] == n) & (side.scores["metric"] == metric)]
    return chosen.set_index("uid")["value"].dropna()


def _signed(value: float) -> str:
    return f"{value:+.3f}".replace("-", "−")


def table_rows(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """Headers and text cells, shared by the terminal and the page."""
    from .summary import COLUMNS

    headers = ["edits", "metric", "A", "B", "B − A", "95% interval", "paired"]
    rows = []
    for r in comparison.rows:
        low, high = r.diff.low, r.diff.high
        interval = "–" if low is None or high is None else f"{_signed(low)} … {_signed(high)}"
        rows.append([str(r.n_edits), COLUMNS.get(r.metric, r.metric), f"{r.a:.3f}",
                     f"{r.b:.3f}", _signed(r.diff.mean) + ("*" if r.clear else " "),
                     interval, "yes" if r.paired else "no"])
    return headers, rows


def _lines(comparison: Comparison) -> list[str]:
    return [f"A: {comparison.a.name}", f"B: {comparison.b.name}",
            *comparison.notes,
            "* the 95% interval of B − A excludes 0 (a paired bootstrap over the edits both "
            "scored, else an unpaired one)"]


def format_comparison(comparison: Comparison) -> str:
    """The comparison as an aligned text table (one row per checkpoint and metric)."""
    headers, rows = table_rows(comparison)
    widths = [max(len(x) for x in column) for column in zip(headers, *rows)]
    lines = ["  ".join(c.ljust(w) if i == 1 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
             for cells in [headers, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    head = _lines(comparison)
    return "\n".join([*head[:-1], *lines, head[-1]]) + "\n"


def comparison_page(comparison: Comparison) -> str:
    """A small self-contained page of the comparison: no script, every string escaped."""
    headers, rows = table_rows(comparison)
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "\n".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>"
                     for row in rows)
    lines = "\n".join(f"<p>{esc(line)}</p>" for line in _lines(comparison))
    title = esc(f"{comparison.b.method} − {comparison.a.method}")
    return (PAGE_START +
            '<html lang="en"><head><meta charset="utf-8">'
            '<meta name="generator" content="editbench">'
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
            "style-src 'unsafe-inline'\">"
            f"<title>editbench compare: {title}</title>"
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{padding:.2em .8em;border-bottom:1px solid #ddd;text-align:right}"
            "td:nth-child(2),th:nth-child(2){text-align:left}</style></head><body>"
            f"<h1>editbench compare: {title}</h1>\n{lines}\n"
            f"<table><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>"
            "</body></html>\n")
