"""The leaderboard as Markdown, LaTeX and CSV, for papers, READMEs and spreadsheets.

Markdown and LaTeX come from Jinja2 templates (``templates/leaderboard.md``, ``.tex``) with
autoescaping off, since neither is HTML: every string from the data passes through the
format's own escape filter instead (``md``, ``tex``), so a label cannot break a table or inject
a LaTeX command. In CSV, a text cell that a spreadsheet would run as a formula (one starting with
``=``, ``+``, ``-``, ``@``, a tab or a carriage return) is prefixed with ``'`` (OWASP's advice).
"""

from __future__ import annotations

import re
from functools import cache

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from .leaderboard import Board, Cell, boards_frame
from .render import TEMPLATES, format_value

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|<>~])")
_TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}"}


def md_escape(text: object) -> str:
    """Backslash-escape Markdown punctuation; newlines would end the table row, so they become
    spaces."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def md_code(text: object) -> str:
    """Text for a Markdown code span: a backtick would close the span and a newline end it (a
    CommonMark renderer then reads what follows as Markdown, raw HTML included), so backticks
    become quotes and every run of whitespace one space."""
    return " ".join(str(text).replace("`", "'").split())


def tex_escape(text: object) -> str:
    return "".join(_TEX_SPECIAL.get(ch, ch) for ch in " ".join(str(text).split()))


def plain_cell(cell: Cell, key: str, best: str = "{} ★") -> str:
    """A cell as text: its mean, ★ for a clear winner, ≈ for a tie, then its 95% interval; the
    Markdown and the terminal tables share it."""
    iv = cell.interval
    if iv is None:
        return "–"
    value = format_value(iv.mean, key)
    text = (best.format(value) if cell.mark == "best"
            else f"{value} ≈" if cell.mark == "tie" else value)
    if iv.low is not None and iv.high is not None:
        text += f" ({format_value(iv.low, key)}–{format_value(iv.high, key)})"
    return text


def md_cell(cell: Cell, key: str) -> str:
    return plain_cell(cell, key, best="**{}** ★")


def tex_cell(cell: Cell, key: str) -> str:
    iv = cell.interval
    if iv is None:
        return "--"
    value = format_value(iv.mean, key).replace(",", "{,}")
    text = (rf"\textbf{{{value}}}" if cell.mark == "best"
            else rf"{value}$^{{\approx}}$" if cell.mark == "tie" else value)
    if iv.low is not None and iv.high is not None:
        low, high = (format_value(v, key).replace(",", "{,}") for v in (iv.low, iv.high))
        text += rf" {{\scriptsize[{low}, {high}]}}"
    return text


@cache
def text_environment() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=False,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                      keep_trailing_newline=True)
    env.filters.update(md=md_escape, md_code=md_code, tex=tex_escape, md_cell=md_cell,
                       tex_cell=tex_cell)
    return env


def markdown(boards: list[Board]) -> str:
    return text_environment().get_template("leaderboard.md").render(boards=boards)


def latex(boards: list[Board]) -> str:
    return text_environment().get_template("leaderboard.tex").render(boards=boards)


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_escape(value: object) -> object:
    """A text cell that cannot start a spreadsheet formula; numbers and other values unchanged."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def csv_text(boards: list[Board]) -> str:
    """Every cell of every board as CSV, text cells escaped so no spreadsheet runs them as
    formulas."""
    frame = boards_frame(boards)
    text_columns = frame.select_dtypes(include=["object", "string"]).columns
    frame[text_columns] = frame[text_columns].apply(lambda column: column.map(csv_escape))
    return frame.to_csv(index=False)

