"""Seaborn figures of a board, written as PNG and SVG and shown in the pages.

Figures are drawn on ``matplotlib.figure.Figure`` objects, never through pyplot, so building a
report sets no global backend or state. Every band and error bar is the interval the leaderboard
computed, so a plot and the table beside it cannot disagree.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib as mpl
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .collect import Results
from .derived import MIRAGE_GAPS
from .leaderboard import Board
from .metrics import Column
from .retention import retention_frame

PANEL = (3.3, 2.7)  # inches per panel
MAX_COLUMNS = 4
MIB = 2**20
#: The metrics of the Pareto plot: what an edit achieves, what it costs the rest of the model.
PARETO_PREFERENCE = ("efficacy", "generalization", "specificity")


@dataclass(frozen=True)
class Plot:
    name: str  # file stem, unique within the site
    title: str
    caption: str
    svg: Path
    png: Path


def slug(text: str) -> str:
    """A file-name-safe form of a task or run name; data never chooses a path outside the site."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "x"
    return cleaned[:80]


def palette(labels: Sequence[str]) -> dict[str, tuple]:
    colors = sns.color_palette("colorblind" if len(labels) <= 10 else "husl", len(labels))
    return dict(zip(labels, colors))


def _frame(board: Board) -> pd.DataFrame:
    records = []
    for row in board.rows:
        for key, cell in row.cells.items():
            if cell.interval is not None:
                iv = cell.interval
                records.append({"label": row.label, "n_edits": row.n_edits, "column": key,
                                "mean": iv.mean, "low": iv.low, "high": iv.high})
    return pd.DataFrame.from_records(records,
                                     columns=["label", "n_edits", "column", "mean", "low", "high"])


def _panels(n: int) -> tuple[Figure, list[Axes]]:
    cols = min(n, MAX_COLUMNS)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(PANEL[0] * cols, PANEL[1] * rows + 0.5), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for extra in axes[n:]:
        extra.set_visible(False)
    return fig, axes[:n]


def _lines(ax: Axes, data: pd.DataFrame, x: str, colors: dict[str, tuple],
           scale: float = 1.0) -> None:
    """Mean per label as a line with its interval as a band; seaborn draws, we supply the band."""
    data = data.assign(mean=data["mean"] / scale, low=data["low"] / scale,
                       high=data["high"] / scale)
    sns.lineplot(data=data, x=x, y="mean", hue="label", palette=colors, marker="o", markersize=5,
                 errorbar=None, legend=False, ax=ax)
    for label, group in data.groupby("label", sort=False):
        band = group.dropna(subset=["low", "high"]).sort_values(x)
        if len(band):
            ax.fill_between(band[x], band["low"], band["high"], color=colors[label], alpha=0.18,
                            linewidth=0)


def _legend(fig: Figure, colors: dict[str, tuple]) -> None:
    handles = [mpl.lines.Line2D([], [], color=c, marker="o", markersize=5, label=label)
               for label, c in colors.items()]
    fig.legend(handles=handles, loc="outside upper center", ncols=min(len(handles), 6),
               frameon=False)


def _log_edits(ax: Axes, edit_counts: Sequence[int]) -> None:
    ax.set_xscale("log")
    ax.set_xticks(list(edit_counts))
    ax.xaxis.set_major_formatter(mpl.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(mpl.ticker.NullFormatter())
    ax.set_xlabel("edits made")


def metrics_figure(board: Board, colors: dict[str, tuple],
                   keys: set[str] | None = None) -> Figure | None:
    """One panel per metric column against edit count (only ``keys``, where given)."""
    frame = _frame(board)
    columns = [c for c in board.columns if not c.is_cost and (frame["column"] == c.key).any()
               and (keys is None or c.key in keys)]
    if not columns:
        return None
    fig, axes = _panels(len(columns))
    for ax, column in zip(axes, columns):
        data = frame[frame["column"] == column.key]
        _lines(ax, data, "n_edits", colors)
        _log_edits(ax, board.edit_counts)
        ax.set_title(column.label)
        ax.set_ylabel("mean over edits")
        _share_axis(ax, data)
    _legend(fig, colors)
    return fig


def _share_axis(ax: Axes, data: pd.DataFrame) -> None:
    """A metric whose values all lie in [0, 1] (an accuracy, a share, a success rate) is drawn on
    the whole 0-1 scale, so that a difference of half a point does not fill the panel."""
    values = data[["mean", "low", "high"]].to_numpy(dtype=float)
    values = values[~pd.isna(values)]
    if values.size and values.min() >= 0 and values.max() <= 1:
        ax.set_ylim(-0.02, 1.02)


def cost_figure(board: Board, colors: dict[str, tuple]) -> Figure | None:
    frame = _frame(board)
    if frame.empty:
        return None
    fig, (time_ax, memory_ax) = _panels(2)
    _lines(time_ax, frame[frame["column"] == "seconds_per_edit"], "n_edits", colors)
    time_ax.set(title="time", ylabel="seconds per edit")
    _lines(memory_ax, frame[frame["column"] == "peak_memory_bytes"], "n_edits", colors, scale=MIB)
    memory_ax.set(title="memory", ylabel="peak MiB")
    for ax in (time_ax, memory_ax):
        _log_edits(ax, board.edit_counts)
    _legend(fig, colors)
    return fig


def retention_figure(results: Results, board: Board, colors: dict[str, tuple],
                     seed: int) -> Figure | None:
    frame = retention_frame(results, board, seed=seed)
    columns = [c for c in board.columns if not c.is_cost and (frame["metric"] == c.key).any()]
    if not columns:
        return None
    fig, axes = _panels(len(columns))
    for ax, column in zip(axes, columns):
        _lines(ax, frame[frame["metric"] == column.key], "position", colors)
        ax.set(title=column.label, xlabel="position of the edit (0 = first made)",
               ylabel="mean over the slice")
    _legend(fig, colors)
    return fig


def pareto_columns(board: Board) -> list[Column]:
    chosen = []
    for family in PARETO_PREFERENCE:
        found = [c for c in board.columns if not c.is_cost and c.key.startswith(family)]
        chosen.extend(found[:1])
    return chosen or [c for c in board.columns if not c.is_cost][:1]


def pareto_front(points: Sequence[tuple[float, float]], higher_is_better: bool = True) -> list[int]:
    """Indices of the points no other point beats on both cost (lower x) and score (y)."""
    sign = 1 if higher_is_better else -1
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -sign * points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if sign * points[i][1] > best:
            front.append(i)
            best = sign * points[i][1]
    return front


def pareto_figure(board: Board, colors: dict[str, tuple]) -> Figure | None:
    rows = board.final_rows()
    columns = [c for c in pareto_columns(board) if any(r.cells[c.key].interval for r in rows)]
    if not columns or not rows:
        return None
    fig, axes = _panels(len(columns))
    for ax, column in zip(axes, columns):
        points, labels = [], []
        for row in rows:
            score, cost = row.cells[column.key].interval, row.cells["seconds_per_edit"].interval
            if score is None or cost is None:
                continue
            xerr = ([[cost.mean - cost.low], [cost.high - cost.mean]] if cost.low is not None
                    else None)
            yerr = ([[score.mean - score.low], [score.high - score.mean]] if score.low is not None
                    else None)
            ax.errorbar(cost.mean, score.mean, xerr=xerr, yerr=yerr, fmt="o",
                        color=colors[row.label], markersize=6, capsize=2, linewidth=1)
            points.append((cost.mean, score.mean))
            labels.append(row.label)
        front = pareto_front(points, column.higher_is_better)
        if len(front) > 1:
            ax.plot([points[i][0] for i in front], [points[i][1] for i in front], color="0.4",
                    linestyle="--", linewidth=1, drawstyle="steps-post", zorder=0)
        costs = [x for x, _ in points]
        wide = bool(costs) and min(costs) > 0 and max(costs) / min(costs) > 10
        if wide:
            ax.set_xscale("log")
        else:
            ax.xaxis.set_major_locator(mpl.ticker.MaxNLocator(4))
        ax.xaxis.set_major_formatter(mpl.ticker.FuncFormatter(lambda v, _: f"{v:.3g}"))
        ax.xaxis.set_minor_formatter(mpl.ticker.NullFormatter())
        ax.set(title=column.label, xlabel="seconds per edit" + (" (log)" if wide else ""),
               ylabel="mean over edits")
    _legend(fig, colors)
    return fig


def _save(fig: Figure, folder: Path, name: str) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    svg, png = folder / f"{name}.svg", folder / f"{name}.png"
    with mpl.rc_context({"svg.hashsalt": name, "svg.fonttype": "none"}):
        fig.savefig(svg, format="svg", metadata={"Date": None})
    fig.savefig(png, format="png", dpi=150)
    return svg, png


def board_plots(results: Results, board: Board, folder: Path, seed: int = 0,
                name: str | None = None) -> list[Plot]:
    """Draw and write every figure of ``board`` into ``folder`` as ``NAME-KIND.svg/.png`` (NAME:
    the task's slug by default); the captions say how to read them."""
    colors = palette(board.labels())
    final = board.final_edits
    specs: list[tuple[str, str, str, Callable[[], Figure | None]]] = [
        ("metrics", "Scores as edits accumulate",
         "Mean over all edits made so far, at each checkpoint (log scale); bands are 95% bootstrap "
         "intervals over edits.", lambda: metrics_figure(board, colors)),
        ("mirage", "The mirage gap: teacher-forced minus generated",
         "For the same edits at each checkpoint, teacher-forced token accuracy minus exact match "
         "of the greedily generated answer (The Mirage of Model Editing, ACL 2025): how much "
         "teacher forcing flatters each method as edits accumulate. Bands: 95% intervals "
         "over edits.",
         lambda: metrics_figure(board, colors, {d.name for d in MIRAGE_GAPS})),
        ("cost", "Time and memory",
         "Seconds per edit (cumulative edit time / edits; band: 95% interval over edit batches) "
         "and peak memory up to each checkpoint.", lambda: cost_figure(board, colors)),
        ("retention", f"Retention at the final checkpoint ({final} edits)",
         "Score of each edit by the position at which it was made, in tenths of the stream: a "
         "curve that climbs to the right means early edits were forgotten. Bands: 95% intervals "
         "within each tenth.",
         lambda: retention_figure(results, board, colors, seed)),
        ("pareto", "Accuracy against cost",
         "Each method at its final checkpoint: score against seconds per edit (log scale when "
         "they span more than tenfold), with 95% intervals. The "
         "dashed line joins the methods no other method beats on both.",
         lambda: pareto_figure(board, colors)),
    ]
    plots = []
    with sns.axes_style("whitegrid"), sns.plotting_context("paper", font_scale=1.15):
        for kind, title, caption, draw in specs:
            fig = draw()
            if fig is None:
                continue
            stem = f"{name or slug(board.name)}-{kind}"
            svg, png = _save(fig, folder, stem)
            plots.append(Plot(stem, title, caption, svg, png))
    return plots


def bench_plots(bench: dict, folder: Path) -> list[Plot]:
    """The figure of an ``editbench bench`` result (its ``bench.json``): edits per second and peak
    memory against edits made, per method. A flat memory line is the design goal of every method
    whose state does not grow with the edit count."""
    throughput = pd.DataFrame(bench["edit_throughput"])
    if throughput.empty:
        return []
    frame = pd.concat([
        throughput.assign(column=column, mean=throughput[field], low=float("nan"),
                          high=float("nan"))
        for column, field in (("rate", "edits_per_second"), ("memory", "peak_memory_mib"))
    ]).rename(columns={"method": "label", "edits": "n_edits"})
    colors = palette(list(dict.fromkeys(frame["label"])))
    edit_counts = sorted(set(frame["n_edits"]))
    with sns.axes_style("whitegrid"), sns.plotting_context("paper", font_scale=1.15):
        fig, (rate_ax, memory_ax) = _panels(2)
        _lines(rate_ax, frame[frame["column"] == "rate"], "n_edits", colors)
        rate_ax.set(title="edit throughput", ylabel="edits per second")
        rates = throughput["edits_per_second"]
        if rates.max() > 10 * rates.min() > 0:  # methods differ by orders of magnitude
            rate_ax.set_yscale("log")
            rate_ax.yaxis.set_major_formatter(mpl.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        else:
            rate_ax.set_ylim(bottom=0)
        _lines(memory_ax, frame[frame["column"] == "memory"], "n_edits", colors)
        memory_ax.set(title="memory", ylabel="peak MiB")
        memory_ax.set_ylim(bottom=0)  # from zero, so that growth looks as large as it is
        for ax in (rate_ax, memory_ax):
            _log_edits(ax, edit_counts)
        _legend(fig, colors)
        svg, png = _save(fig, folder, "bench")
    caption = (f"Edits per second (cumulative) and peak memory up to each edit count, "
               f"one lifelong run per method on {bench['device']}.")
    return [Plot("bench", "editbench's own speed and memory", caption, svg, png)]
