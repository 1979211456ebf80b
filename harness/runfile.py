"""Run files: every option of ``editbench run`` (method parameters and presets included) in one
YAML or JSON file, so that a run can be written down, versioned, shared and repeated.

``editbench run --config run.yaml`` reads one; options given on the command line override it
(``--param`` settings merge with the file's, field by field); ``editbench run --dump-config``
prints the resolved file and exits; every run stores its resolved file in the results folder.
The Python API (:mod:`editbench.harness.api`) takes the same keys.

A file's keys are the options of ``run`` with ``_`` or ``-`` (``batch_size``, ``batch-size``);
values take their natural YAML types: lists for comma-separated options (``methods: [ft-m,
memit@llama3-8b]``, ``seed: [0, 1, 2]``), a mapping for ``params`` (``params: {ft-m: {lr: 1e-3}}``)
and ``editors``, booleans for flags. Each is turned into the text the command line would take, so
the file and the flags pass through the same checks and defaults (click's ``default_map``).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

log = logging.getLogger(__name__)

#: options of ``run`` that are about the run file itself, never written into one
OWN_OPTIONS = ("config", "dump_config")
#: options whose command-line form is a comma-separated list
LISTS = ("methods", "capability", "restart", "checkpoints", "capability_at", "seeds")
#: what a file may call an option, besides its own name
ALIASES = {"seed": "seeds", "param": "params", "editor": "editors"}
#: the ``run`` options a file's ``params`` and ``editors`` merge into (not replaced by the flags)
MERGED = ("params", "editors")
#: where a run's resolved file is kept in its results folder
FOLDER = "run-files"


def yaml_module():
    """PyYAML when installed (a dependency of editbench, but a run file may be JSON without it)."""
    try:
        import yaml
    except ImportError:
        return None
    return yaml


def read_file(path: Path) -> dict[str, Any]:
    """A run file's mapping; JSON when the name ends in .json (YAML is a superset of it anyway)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"--config {path}: no such file") from None
    yaml = yaml_module()
    try:
        if path.suffix == ".json" or yaml is None:
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except (ValueError, getattr(yaml, "YAMLError", ValueError)) as exc:
        hint = "" if yaml is not None or path.suffix == ".json" else " (a YAML file needs `pip install pyyaml`)"
        raise ValueError(f"--config {path}: not valid {'JSON' if yaml is None else 'YAML or JSON'}{hint}: "
                         f"{str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: expected a mapping of run options, found a {type(data).__name__}")
    return data


def to_text(value: Any) -> str:
    """A value as the command line spells it."""
    if isinstance(value, (list, tuple)):
        return ",".join(to_text(v) for v in value)
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _params(value: Any, where: str) -> tuple[str, ...]:
    """``{ft-m: {lr: 1e-3}}`` or ``["ft-m.lr=1e-3"]`` -> ``("ft-m.lr=1e-3",)``."""
    if isinstance(value, Mapping):
        items = []
        for owner, settings in value.items():
            if not isinstance(settings, Mapping):
                raise ValueError(f"{where}: params.{owner} must map settings to values, e.g. {{lr: 0.001}}")
            items += [f"{owner}.{field}={to_text(v)}" for field, v in settings.items()]
        return tuple(items)
    if isinstance(value, (list, tuple)):
        return tuple(str(v) for v in value)
    raise ValueError(f"{where}: params must be a mapping such as {{ft-m: {{lr: 0.001}}}}")


def _editors(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, Mapping):
        return tuple(f"{method}={folder}" for method, folder in value.items())
    if isinstance(value, (list, tuple)):
        return tuple(str(v) for v in value)
    raise ValueError(f"{where}: editors must map a method to a folder, e.g. {{rledit: trained/rledit}}")


def to_options(data: Mapping[str, Any], command: click.Command, where: str) -> dict[str, Any]:
    """A run file's mapping as the values ``command``'s options take on the command line, checked:
    an unknown key is an error naming the file, with the closest known key."""
    known = {p.name: p for p in command.params if p.name and p.name not in OWN_OPTIONS}
    options: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        key = ALIASES.get(key, key)
        if key not in known:
            names = sorted(known)
            close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(f"{where}: unknown option {raw_key!r}; {hint}options: {', '.join(names)}")
        param = known[key]
        if key == "params":
            options[key] = _params(value, where)
        elif key == "editors":
            options[key] = _editors(value, where)
        elif isinstance(param, click.Option) and param.is_flag:
            if not isinstance(value, bool):
                raise ValueError(f"{where}: {raw_key} is a flag: true or false, got {value!r}")
            options[key] = value
        elif isinstance(value, bool) and isinstance(param.type, click.Choice) and "on" in param.type.choices:
            options[key] = "on" if value else "off"  # YAML reads a bare on/off as a boolean
        elif value is None:
            options[key] = None
        else:
            options[key] = to_text(value)
    return options


def from_options(params: Mapping[str, Any], command: click.Command) -> dict[str, Any]:
    """The resolved options of ``command`` (click's values) as a run file's mapping, in natural
    types and in the order of ``command --help``: reading it back with :func:`to_options` gives the
    same options."""
    from ..core.configs import parse_overrides

    data: dict[str, Any] = {}
    order = [p.name for p in command.params if p.name in params]
    for key, value in ((name, params[name]) for name in order):
        if key in OWN_OPTIONS:
            continue
        if key == "params":
            data[key] = {owner: dict(settings) for owner, settings in parse_overrides(value).items()}
        elif key == "editors":
            data[key] = dict(item.partition("=")[::2] for item in value)
        elif key == "seeds":
            data["seed"] = value[0] if len(value) == 1 else list(value)
        elif key in LISTS and isinstance(value, str):
            data[key] = [int(part) if part.strip().isdigit() else part.strip() for part in value.split(",")
                         if part.strip()]
        elif isinstance(value, Path):
            data[key] = str(value)
        else:
            data[key] = value
    return data


def dump(data: Mapping[str, Any]) -> str:
    """YAML when PyYAML is installed, else JSON (which YAML reads too)."""
    yaml = yaml_module()
    if yaml is None:
        return json.dumps(data, indent=2) + "\n"
    return yaml.safe_dump(dict(data), sort_keys=False, default_flow_style=None, allow_unicode=True)


def load_into(ctx: click.Context, path: Path) -> None:
    """``--config``: the file's options become ``ctx``'s defaults, so flags given beside it win.
    ``params`` and ``editors`` are kept aside to merge with the flags' (see :func:`merged`)."""
    options = to_options(read_file(path), ctx.command, f"--config {path}")
    ctx.meta["runfile"] = {key: options.pop(key) for key in MERGED if key in options}
    ctx.default_map = {**(ctx.default_map or {}), **options}


def merged(ctx: click.Context, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with the run file's ``--param`` and ``--editor`` items first, so the flags win."""
    aside = ctx.meta.get("runfile", {})
    return {**params, **{key: (*aside.get(key, ()), *params.get(key, ())) for key in MERGED if key in params}}


def store(out: Path, data: Mapping[str, Any]) -> Path:
    """Keep a run's resolved file in its results folder, named by its content, so every distinct
    command that wrote into the folder is kept and ``editbench run --config`` repeats it."""
    text = dump(data)
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    path = Path(out) / FOLDER / f"run-{digest}.{'yaml' if yaml_module() else 'json'}"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(text, encoding="utf-8")
    log.info("run file: %s (editbench run --config %s repeats this run)", path, path)
    return path
