"""The ``run`` command's options, generated from :class:`~editbench.harness.plan.settings.RunSpec`.

The command line writes no default and no check of its own: each option's help, metavar and
choices come from its field, its shown default is the field's, and only the options a user typed
are handed on (:func:`given`), so the spec's own defaults and checks decide everything else.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import click
from click.core import ParameterSource

from ..plan.settings import flag_of, option_of, settings_fields


def _shown(item: dataclasses.Field) -> Any:
    default = item.default
    if isinstance(default, tuple):
        return ",".join(map(str, default)) if default else None
    if isinstance(default, bool) and option_of(item).kind == "on-off":
        return "on" if default else "off"
    return default


def _option(item: dataclasses.Field) -> click.Option:
    option, flag = option_of(item), flag_of(item)
    common: dict[str, Any] = {"help": option.help, "metavar": option.metavar}
    kind = option.kind
    if kind == "flag":
        return click.Option([flag, item.name], is_flag=True, default=False, **common)
    if kind == "switch":
        name = flag.removeprefix("--")
        return click.Option([f"{flag}/--no-{name}", item.name], default=item.default,
                            show_default=True, **common)
    if kind in ("params", "editors"):
        return click.Option([flag, item.name], multiple=True, **common)
    if kind == "on-off":
        return click.Option([flag, item.name], type=click.Choice(["on", "off"]),
                            default=_shown(item), show_default=True, **common)
    # the spec converts and checks every value (the same messages as a run file's); click only
    # shows the choices
    if option.choices:
        common["metavar"] = "[" + "|".join(option.choices) + "]"
    kind_type = {"int": click.INT, "float": click.FLOAT}.get(kind, click.STRING)
    shown = _shown(item)
    return click.Option([flag, item.name], type=kind_type, default=shown,
                        show_default=shown is not None, **common)


def run_options(names: tuple[str, ...] | None = None,
                help: dict[str, str] | None = None) -> list[click.Option]:
    """Every setting of a run (or those ``names``, for a command that takes a few, such as
    ``train``) as a click option, in the order the fields are declared; ``help`` rewords an
    option for that command. ``click.command(params=run_options())``."""
    chosen = [item for item in settings_fields() if names is None or item.name in names]
    options = [_option(item) for item in chosen]
    for option in options:
        if help and option.name in help:
            option.help = help[option.name]
    return options


def given(ctx: click.Context, values: dict[str, Any]) -> dict[str, Any]:
    """The settings the user typed (or set through click's environment variables), as text or
    natural values for :class:`RunSpec` to read; a default click filled in is left out."""
    chosen = {}
    for item in settings_fields():
        if item.name not in values:
            continue
        source = ctx.get_parameter_source(item.name)
        if source in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
            value = values[item.name]
            if option_of(item).kind == "on-off":
                value = value == "on"
            chosen[item.name] = list(value) if isinstance(value, tuple) else value
    return chosen
