"""Figures of a board, written as SVG (the pages) and PNG (slides, exports).

Figures are drawn on ``matplotlib.figure.Figure`` objects, never through pyplot, so building a
report sets no global backend or state. Every band and error bar is the interval the leaderboard
computed, so a plot and the table beside it cannot disagree.

Twelve to twenty methods stay apart: each method gets its own colour from a fixed list of twenty,
in one order (family, then name) that every figure's legend follows, and its family (locate-then-
edit, hypernetwork, fine-tuning, memory, retrieval) its marker and dash, so two methods never share
both. Panels of one kind of metric share one y range (every share on 0-1, every mirage gap on one
range), so that panels side by side compare at a glance. The layout is computed from fixed margins
rather than matplotlib's constrained layout, and each figure is drawn once per format: the report
of a default run then takes about a second of drawing, not ten.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

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
#: Formats a figure is written in: SVG for the pages, PNG for slides and exports.
FORMATS = ("svg", "png")

#: Twenty colours that differ from each other on white (Tableau's ten, then ten darker or more
#: saturated ones that none of the ten resembles), handed out in this order.
COLOURS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#000075", "#800000", "#469990", "#f032e6", "#556b2f", "#e6ab02",
    "#000000", "#a6cee3", "#fb9a99", "#6a3d9a",
)
#: The method families of the literature, in legend order. Reports do not import the methods, so
#: the registered names of editbench's methods (and common ones of other tools) are listed here;
#: a method not listed is drawn as "other".
FAMILIES = ("locate-then-edit", "hypernetwork", "fine-tuning", "memory", "retrieval", "other")
METHOD_FAMILY = {
    **dict.fromkeys(("rome", "r-rome", "memit", "pmet", "emmet", "alphaedit", "prune", "rect",
                     "anyedit", "nse", "lyaplock"), "locate-then-edit"),
    **dict.fromkeys(("mend", "malmen", "rledit", "hiedit", "ultraedit", "stableedit",
                     "instructedit"), "hypernetwork"),
    **dict.fromkeys(("ft", "ft-l", "ft-m", "locft-bf", "lora", "lora-ft", "qlora", "adalora"),
                    "fine-tuning"),
    **dict.fromkeys(("grace", "wise", "memoir", "melo", "serac", "t-patcher",
                     "alphaedit-memory"), "memory"),
    **dict.fromkeys(("retrieval", "ike", "icl", "rag", "mello"), "retrieval"),
}
#: (marker, dash) per family
FAMILY_STYLE = {
    "locate-then-edit": ("o", "-"),
    "hypernetwork": ("s", "--"),
    "fine-tuning": ("^", ":"),
    "memory": ("D", "-."),
    "retrieval": ("v", (0, (6, 2, 1, 2, 1, 2))),
    "other": ("X", (0, (1, 1))),
}


@dataclass(frozen=True)
class Style:
    """How one method is drawn, everywhere: colour, marker and dash."""

    color: str
    marker: str
    dash: str | tuple
    family: str


def family(label: str) -> str:
    """The family of a row label: its method's name before any ``@preset`` or `` (setup)``."""
    method = label.split(" (", 1)[0].split("@", 1)[0].strip().lower()
    return METHOD_FAMILY.get(method, "other")


def method_order(labels: Sequence[str]) -> list[str]:
    """The one order of legends and colours: by family, then by name."""
    return sorted(dict.fromkeys(labels), key=lambda lab: (FAMILIES.index(family(lab)), lab))


def palette(labels: Sequence[str]) -> dict[str, Style]:
    """A style per label, in :func:`method_order`: a colour of its own (past twenty, hues from
    a wheel), the marker and dash of its family."""
    ordered = method_order(labels)
    more = max(0, len(ordered) - len(COLOURS))
    wheel = mpl.colormaps["hsv"]
    colours = [*COLOURS, *(mpl.colors.to_hex(wheel(i / more)) for i in range(more))]
    styles = {}
    for label, colour in zip(ordered, colours):
        kind = family(label)
        marker, dash = FAMILY_STYLE[kind]
        styles[label] = Style(colour, marker, dash, kind)
    return styles


@dataclass(frozen=True)
class Plot:
    name: str  # file stem, unique within the site
    title: str
    caption: str
    svg: Path | None
    png: Path | None


def slug(text: str) -> str:
    """A file-name-safe form of a task or run name; data never chooses a path outside the site."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "x"
    return cleaned[:80]


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


# fixed margins, in inches: room for tick labels, axis labels and titles without a layout engine
_LEFT, _RIGHT, _BOTTOM, _GAP_W, _GAP_H, _TITLE = 0.62, 0.12, 0.48, 0.72, 0.82, 0.32
_LEGEND_ROW, _LEGEND_COLUMN = 0.21, 1.2


def _legend_columns(width: float, n_labels: int) -> int:
    return max(1, min(n_labels, int(width // _LEGEND_COLUMN)))


def _panels(n: int, n_labels: int) -> tuple[Figure, list[Axes]]:
    cols = min(n, MAX_COLUMNS)
    rows = math.ceil(n / cols)
    width = max(PANEL[0] * cols, 6.0)
    legend_cols = _legend_columns(width, n_labels)
    legend = _LEGEND_ROW * math.ceil(n_labels / legend_cols) + 0.1
    height = PANEL[1] * rows + legend
    fig = Figure(figsize=(width, height))
    axes_w = (width - _LEFT - _RIGHT - (cols - 1) * _GAP_W) / cols
    axes_h = (height - legend - _TITLE - _BOTTOM - (rows - 1) * _GAP_H) / rows
    fig.subplots_adjust(left=_LEFT / width, right=1 - _RIGHT / width, bottom=_BOTTOM / height,
                        top=1 - (legend + _TITLE) / height, wspace=_GAP_W / axes_w,
                        hspace=_GAP_H / axes_h)
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for extra in axes[n:]:
        extra.set_visible(False)
    return fig, axes[:n]


def _lines(ax: Axes, data: pd.DataFrame, x: str, styles: dict[str, Style],
           scale: float = 1.0) -> None:
    """Mean per label as a line with its interval as a band, in the legend's order (so the
    same method is drawn above the same others in every panel). The bands of a panel are one
    collection: a ``fill_between`` per method was a third of the drawing time."""
    xs = data[x].to_numpy(dtype=float)
    order = np.argsort(xs, kind="stable")
    xs = xs[order]
    labels = data["label"].to_numpy()[order]
    mean, low, high = (data[c].to_numpy(dtype=float)[order] / scale
                       for c in ("mean", "low", "high"))
    bands, colours = [], []
    for label, style in styles.items():
        mine = labels == label
        if not mine.any():
            continue
        ax.add_line(Line2D(xs[mine], mean[mine], color=style.color, marker=style.marker,
                           markersize=4.5, linestyle=style.dash, linewidth=1.4))
        ok = mine & ~np.isnan(low) & ~np.isnan(high)
        if ok.any():
            bands.append(np.column_stack([np.r_[xs[ok], xs[ok][::-1]],
                                          np.r_[low[ok], high[ok][::-1]]]))
            colours.append(style.color)
    if bands:
        ax.add_collection(PolyCollection(bands, facecolors=colours, alpha=0.14, linewidths=0,
                                         edgecolors="none"), autolim=True)
    ax.autoscale_view()


def _legend(fig: Figure, styles: dict[str, Style]) -> None:
    handles = [mpl.lines.Line2D([], [], color=s.color, marker=s.marker, markersize=5,
                                linestyle=s.dash, linewidth=1.4, label=label)
               for label, s in styles.items()]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 1.0),
               ncols=_legend_columns(fig.get_figwidth(), len(handles)), frameon=False,
               handlelength=2.6, columnspacing=1.0, borderaxespad=0.3)


def _log_edits(ax: Axes, edit_counts: Sequence[int]) -> None:
    ax.set_xscale("log")
    ax.set_xticks(list(edit_counts))
    ax.xaxis.set_major_formatter(mpl.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(mpl.ticker.NullLocator())  # no minor ticks to build and draw
    ax.set_xlabel("edits made")


SHARE = (-0.02, 1.02)


def is_gap(key: str) -> bool:
    return key.endswith("_gap") or key in {d.name for d in MIRAGE_GAPS}


def y_ranges(frame: pd.DataFrame, keys: Sequence[str],
             column: str = "column") -> dict[str, tuple[float, float]]:
    """One y range per kind of metric: every metric whose values (means and interval ends) lie in
    [0, 1] on the whole 0-1 scale, so that a difference of half a point does not fill a panel; every
    mirage gap on one range that holds all of them and 0. Others keep their own range."""
    found: dict[str, tuple[float, float]] = {}
    gaps = []
    for key in keys:
        values = frame.loc[frame[column] == key, ["mean", "low", "high"]].to_numpy(dtype=float)
        values = values[~pd.isna(values)]
        if not values.size:
            continue
        if is_gap(key):
            gaps.append(values)
        elif values.min() >= 0 and values.max() <= 1:
            found[key] = SHARE
    if gaps:
        low = min(0.0, min(float(v.min()) for v in gaps))
        high = max(0.0, max(float(v.max()) for v in gaps))
        pad = 0.06 * (high - low or 1.0)
        found.update({key: (low - pad, high + pad) for key in keys if is_gap(key)})
    return found


def metrics_figure(board: Board, styles: dict[str, Style],
                   keys: set[str] | None = None) -> Figure | None:
    """One panel per metric column against edit count (only ``keys``, where given; without
    ``keys`` every metric but the mirage gaps, which have their own figure)."""
    frame = _frame(board)
    present = set(frame["column"])
    columns = [c for c in board.columns if not c.is_cost and c.key in present
               and (c.key in keys if keys is not None else not is_gap(c.key))]
    if not columns:
        return None
    # the ranges are those of every metric column, so a figure of some shows them as the whole does
    ranges = y_ranges(frame, [c.key for c in board.columns if not c.is_cost])
    fig, axes = _panels(len(columns), len(styles))
    for ax, column in zip(axes, columns):
        _lines(ax, frame[frame["column"] == column.key], "n_edits", styles)
        _log_edits(ax, board.edit_counts)
        ax.set_title(column.label)
        ax.set_ylabel("mean over edits")
        if column.key in ranges:
            ax.set_ylim(*ranges[column.key])
    _legend(fig, styles)
    return fig


def cost_figure(board: Board, styles: dict[str, Style]) -> Figure | None:
    frame = _frame(board)
    if frame.empty:
        return None
    fig, (time_ax, memory_ax) = _panels(2, len(styles))
    _lines(time_ax, frame[frame["column"] == "seconds_per_edit"], "n_edits", styles)
    time_ax.set(title="time", ylabel="seconds per edit")
    _lines(memory_ax, frame[frame["column"] == "peak_memory_bytes"], "n_edits", styles,
           scale=MIB)
    memory_ax.set(title="memory", ylabel="peak MiB")
    for ax in (time_ax, memory_ax):
        _log_edits(ax, board.edit_counts)
    _legend(fig, styles)
    return fig


def retention_figure(results: Results, board: Board, styles: dict[str, Style],
                     seed: int) -> Figure | None:
    frame = board.retention if board.retention is not None else retention_frame(
        results, board, seed=seed, metrics=board.retention_keys())
    present = set(frame["metric"])
    columns = [c for c in board.columns if not c.is_cost and c.key in present]
    if not columns:
        return None
    ranges = y_ranges(frame, [c.key for c in columns], column="metric")
    fig, axes = _panels(len(columns), len(styles))
    for ax, column in zip(axes, columns):
        _lines(ax, frame[frame["metric"] == column.key], "position", styles)
        ax.set(title=column.label, xlabel="position of the edit (0 = first made)",
               ylabel="mean over the slice")
        if column.key in ranges:
            ax.set_ylim(*ranges[column.key])
    _legend(fig, styles)
    return fig


def pareto_columns(board: Board) -> list[Column]:
    chosen = []
    for family_ in PARETO_PREFERENCE:
        found = [c for c in board.columns if not c.is_cost and c.key.startswith(family_)]
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


def pareto_figure(board: Board, styles: dict[str, Style]) -> Figure | None:
    rows = board.final_rows()
    columns = [c for c in pareto_columns(board) if any(r.cells[c.key].interval for r in rows)]
    if not columns or not rows:
        return None
    ranges = y_ranges(_frame(board), [c.key for c in columns])
    fig, axes = _panels(len(columns), len(styles))
    rank = {label: i for i, label in enumerate(styles)}
    rows = sorted(rows, key=lambda r: rank.get(r.label, len(rank)))
    for ax, column in zip(axes, columns):
        points, labels, whiskers, colours = [], [], [], []
        for row in rows:
            score, cost = row.cells[column.key].interval, row.cells["seconds_per_edit"].interval
            if score is None or cost is None:
                continue
            style = styles[row.label]
            # a marker and its interval whiskers (one collection per panel: errorbar per point
            # was most of this figure's time)
            ax.add_line(Line2D([cost.mean], [score.mean], color=style.color,
                               marker=style.marker, markersize=6, linestyle="none"))
            if cost.low is not None:
                whiskers.append([(cost.low, score.mean), (cost.high, score.mean)])
                colours.append(style.color)
            if score.low is not None:
                whiskers.append([(cost.mean, score.low), (cost.mean, score.high)])
                colours.append(style.color)
            points.append((cost.mean, score.mean))
            labels.append(row.label)
        if whiskers:
            ax.add_collection(LineCollection(whiskers, colors=colours, linewidths=1, zorder=1.5),
                              autolim=True)
        ax.autoscale_view()
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
        ax.xaxis.set_minor_locator(mpl.ticker.NullLocator())
        ax.set(title=column.label, xlabel="seconds per edit" + (" (log)" if wide else ""),
               ylabel="mean over edits")
        if column.key in ranges:
            ax.set_ylim(*ranges[column.key])
    _legend(fig, styles)
    return fig


def _save(fig: Figure, folder: Path, name: str,
          formats: Sequence[str] = FORMATS) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for fmt in formats:
        path = folder / f"{name}.{fmt}"
        if fmt == "svg":
            with mpl.rc_context({"svg.hashsalt": name, "svg.fonttype": "none"}):
                fig.savefig(path, format="svg", metadata={"Date": None})
        else:
            fig.savefig(path, format=fmt, dpi=150)
        written[fmt] = path
    return written


#: The look (seaborn's "whitegrid" style in its "paper" context, fonts scaled by 1.15), set here so
#: that drawing a report does not import seaborn
STYLE = {
    "axes.facecolor": "white", "axes.edgecolor": ".8", "axes.grid": True, "axes.axisbelow": True,
    "axes.labelcolor": ".15", "axes.linewidth": 1.0, "axes.spines.top": False,
    "axes.spines.right": False, "grid.color": ".8", "grid.linestyle": "-",
    "text.color": ".15", "xtick.color": ".15", "ytick.color": ".15",
    "xtick.bottom": False, "ytick.left": False, "xtick.direction": "out", "ytick.direction": "out",
    "font.family": ["sans-serif"],
    "font.sans-serif": ["Arial", "DejaVu Sans", "Liberation Sans", "Bitstream Vera Sans",
                        "sans-serif"],
    "lines.solid_capstyle": "round", "patch.edgecolor": "w", "patch.force_edgecolor": True,
    "font.size": 11.04, "axes.labelsize": 11.04, "axes.titlesize": 11.04,
    "xtick.labelsize": 10.12, "ytick.labelsize": 10.12, "legend.fontsize": 10.12,
    "legend.title_fontsize": 11.04, "lines.linewidth": 1.2, "lines.markersize": 4.8,
    "patch.linewidth": 0.8, "path.simplify": True,
    # a fixed title position: placing titles clear of the ticks measured every tick label
    "axes.titley": 1.0, "axes.titlepad": 5.0,
}


#: the figures of a board, in the order pages show them
PLOT_KINDS = ("metrics", "mirage", "cost", "retention", "pareto")


def board_plots(results: Results, board: Board, folder: Path, seed: int = 0,
                name: str | None = None, formats: Sequence[str] = FORMATS,
                kinds: Sequence[str] = PLOT_KINDS) -> list[Plot]:
    """Draw and write the figures of ``board`` (``kinds``: which; all by default) into ``folder``
    as ``NAME-KIND.svg/.png`` (NAME: the task's slug by default; ``formats``: which of the two);
    the captions say how to read them."""
    styles = palette(board.labels())
    final = board.final_edits
    specs: list[tuple[str, str, str, Callable[[], Figure | None]]] = [
        ("metrics", "Scores as edits accumulate",
         "Mean over all edits made so far, at each checkpoint (log scale); bands are 95% bootstrap "
         "intervals over edits. Colour: the method; marker and dash: its family.",
         lambda: metrics_figure(board, styles)),
        ("mirage", "The mirage gap: teacher-forced minus generated",
         "For the same edits at each checkpoint, teacher-forced token accuracy minus exact match "
         "of the greedily generated answer (The Mirage of Model Editing, ACL 2025): how much "
         "teacher forcing flatters each method as edits accumulate. Bands: 95% intervals "
         "over edits.",
         lambda: metrics_figure(board, styles, {d.name for d in MIRAGE_GAPS})),
        ("cost", "Time and memory",
         "Seconds per edit (cumulative edit time / edits; band: 95% interval over edit batches) "
         "and peak memory up to each checkpoint.", lambda: cost_figure(board, styles)),
        ("retention", f"Retention at the final checkpoint ({final} edits)",
         "Score of each edit by the position at which it was made, in tenths of the stream, for "
         "the headline metrics: a curve that climbs to the right means early edits were "
         "forgotten. Bands: 95% intervals within each tenth.",
         lambda: retention_figure(results, board, styles, seed)),
        ("pareto", "Accuracy against cost",
         "Each method at its final checkpoint: score against seconds per edit (log scale when "
         "they span more than tenfold), with 95% intervals. The "
         "dashed line joins the methods no other method beats on both.",
         lambda: pareto_figure(board, styles)),
    ]
    plots = []
    with mpl.rc_context(STYLE):
        for kind, title, caption, draw in specs:
            if kind not in kinds:
                continue
            fig = draw()
            if fig is None:
                continue
            stem = f"{name or slug(board.name)}-{kind}"
            files = _save(fig, folder, stem, formats)
            plots.append(Plot(stem, title, caption, files.get("svg"), files.get("png")))
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
    styles = palette(list(dict.fromkeys(frame["label"])))
    edit_counts = sorted(set(frame["n_edits"]))
    with mpl.rc_context(STYLE):
        fig, (rate_ax, memory_ax) = _panels(2, len(styles))
        _lines(rate_ax, frame[frame["column"] == "rate"], "n_edits", styles)
        rate_ax.set(title="edit throughput", ylabel="edits per second")
        rates = throughput["edits_per_second"]
        if rates.max() > 10 * rates.min() > 0:  # methods differ by orders of magnitude
            rate_ax.set_yscale("log")
            rate_ax.yaxis.set_major_formatter(mpl.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        else:
            rate_ax.set_ylim(bottom=0)
        _lines(memory_ax, frame[frame["column"] == "memory"], "n_edits", styles)
        memory_ax.set(title="memory", ylabel="peak MiB")
        memory_ax.set_ylim(bottom=0)  # from zero, so that growth looks as large as it is
        for ax in (rate_ax, memory_ax):
            _log_edits(ax, edit_counts)
        _legend(fig, styles)
        files = _save(fig, folder, "bench")
    caption = (f"Edits per second (cumulative) and peak memory up to each edit count, "
               f"one lifelong run per method on {bench['device']}.")
    return [Plot("bench", "editbench's own speed and memory", caption, files["svg"],
                 files["png"])]
