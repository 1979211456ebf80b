"""Run files: a run's settings (method parameters and presets included) in one YAML or JSON file,
so that a run can be written down, versioned, shared and repeated.

A file's keys are the fields of :class:`~.settings.RunSpec` (``batch_size`` or ``batch-size``;
``seed``, ``param`` and ``editor`` also as ``seeds``, ``params``, ``editors``), in their natural
YAML types: lists for the comma-separated options (``methods: [ft-m, memit@llama3-8b]``,
``seed: [0, 1, 2]``), a mapping for ``params`` (``params: {ft-m: {lr: 1e-3}}``) and ``editors``,
booleans for flags. The spec reads them with the same checks as the flags. ``editbench run
--config run.yaml`` reads one, the flags given beside it win (``params`` and ``editors`` merge,
field by field); ``--dump-config`` prints the resolved file; every run keeps its resolved file in
its results folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ...core.sources import StrictJSONError, strict_json

log = logging.getLogger(__name__)

#: where a run's resolved file is kept in its results folder
FOLDER = "run-files"


def yaml_module():
    """PyYAML when installed (a dependency of editbench, but a run file may be JSON without it)."""
    try:
        import yaml
    except ImportError:
        return None
    return yaml


def _unique_keys_loader(yaml):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (PyYAML
    keeps the last silently, so a run file's second ``edits:`` would quietly win)."""

    class UniqueKeys(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, (str, int, float, bool)) or key is None:
                    break  # an unhashable or odd key: PyYAML's own error names it
                if key in seen:
                    raise StrictJSONError(f"the key {key!r} appears twice in one mapping "
                                          f"(line {key_node.start_mark.line + 1})")
                seen.add(key)
            return super().construct_mapping(node, deep)

    return UniqueKeys


def read_file(path: Path) -> dict[str, Any]:
    """A run file's mapping; JSON when the name ends in .json (YAML is a superset of it anyway)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"--config {path}: no such file") from None
    yaml = yaml_module()
    try:
        if path.suffix == ".json" or yaml is None:
            data = strict_json(text)
        else:
            data = yaml.load(text, Loader=_unique_keys_loader(yaml))
    except StrictJSONError as exc:
        raise ValueError(f"--config {path}: {exc}") from None
    except (ValueError, getattr(yaml, "YAMLError", ValueError)) as exc:
        hint = ("" if yaml is not None or path.suffix == ".json"
                else " (a YAML file needs `pip install pyyaml`)")
        kind = "JSON" if yaml is None else "YAML or JSON"
        raise ValueError(f"--config {path}: not valid {kind}{hint}: "
                         f"{str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: expected a mapping of run options, found a "
                         f"{type(data).__name__}")
    return data


def dump(data: Mapping[str, Any]) -> str:
    """YAML when PyYAML is installed, else JSON (which YAML reads too)."""
    yaml = yaml_module()
    if yaml is None:
        return json.dumps(data, indent=2) + "\n"
    return yaml.safe_dump(dict(data), sort_keys=False, default_flow_style=None,
                          allow_unicode=True)


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
