"""Jinja2 rendering of the pages; the templates are files in ``reports/templates/``.

Autoescaping is on for every template, so a method label, uid, error message or config string
is shown as text, never run as markup; data for the page's script goes into a
``<script type="application/json">`` block through Jinja's ``tojson``, which escapes ``<``, ``>``,
``&`` and ``'``, so a stored text cannot close the block. The one inline script is our own files
(``sort.js``, ``answers.js``); its SHA-256 goes into the page's Content-Security-Policy, so even
markup that slipped past escaping could not run a script, load a resource from the network or
submit a form.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from .metrics import Column
from .stats import Interval

TEMPLATES = Path(__file__).resolve().parent / "templates"
MIB = 2**20


def format_value(value: float | None, key: str) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    if key == "peak_memory_bytes":
        return f"{value / MIB:,.0f}"
    if key == "seconds_per_edit":
        return f"{value:.3g}"
    return f"{value:.3f}"


def format_interval(interval: Interval | None, key: str) -> str:
    if interval is None or interval.low is None or interval.high is None:
        return ""
    return f"{format_value(interval.low, key)}–{format_value(interval.high, key)}"


def pretty_json(value: Any) -> str:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    return json.dumps(value, indent=2, sort_keys=True, default=str)


def duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "–"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


def column_title(column: Column) -> str:
    direction = "higher is better" if column.higher_is_better else "lower is better"
    return f"{column.description} ({direction})" if column.description else direction


@cache
def _asset(name: str) -> str:
    return (TEMPLATES / name).read_text(encoding="utf-8")


def script_hash(script: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()


@cache
def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                      keep_trailing_newline=True)
    env.filters.update(value=format_value, interval=format_interval, pretty_json=pretty_json,
                       duration=duration, column_title=column_title)
    script = _asset("sort.js") + _asset("answers.js")  # one inline script, one hash
    env.globals.update(inline_css=Markup(_asset("style.css")), inline_js=Markup(script),
                       script_hash=script_hash(script))
    return env


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)
