"""Building typed config dataclasses from command-line overrides, with errors that name the
field."""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

C = TypeVar("C")

#: what ``--dtype`` accepts (``core.models.DTYPES`` maps the names to torch dtypes)
DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")
#: who scores prompts: Hugging Face transformers, vLLM, or vLLM where it can run
PROBE_BACKENDS = ("auto", "hf", "vllm")


class NonFinite(ValueError):
    """``nan`` or ``inf`` given for a number: refused whatever else the field would accept."""


def _convert(text: str, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if text.lower() in ("none", "null") and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(text, arg, where)
            except NonFinite:
                raise
            except ValueError:
                continue
        raise ValueError(f"{where}: cannot read {text!r} as {annotation}")
    if origin is tuple:
        item_type = args[0] if args else str
        parts = [p for p in text.replace(";", ",").split(",") if p.strip()]
        return tuple(_convert(p.strip(), item_type, where) for p in parts)
    if annotation is bool:
        lowered = text.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{where}: {text!r} is not a boolean (true/false)")
    if annotation in (int, float, str):
        try:
            value = annotation(text)
        except ValueError:
            raise ValueError(f"{where}: {text!r} is not a valid {annotation.__name__}") from None
        if annotation is float and not math.isfinite(value):
            raise NonFinite(f"{where}: {text!r} is not a finite number")
        return value
    raise ValueError(f"{where}: fields of type {annotation} cannot be set from the command line")


def build_config(cls: type[C], overrides: Mapping[str, str], owner: str) -> C:
    """Instantiate ``cls`` with string overrides converted to each field's declared type."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for key, text in overrides.items():
        if key not in fields:
            close = difflib.get_close_matches(key, sorted(fields), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(f"{owner} has no setting {key!r}; {hint}its settings are: "
                             f"{', '.join(sorted(fields))}")
        values[key] = _convert(text, hints[key], f"{owner}.{key}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{owner}: {exc}") from None


def config_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def config_hash(*parts: Any) -> str:
    """A short, stable digest of JSON-able parts (configs as dicts)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def parse_overrides(items: tuple[str, ...] | list[str]) -> dict[str, dict[str, str]]:
    """``["ft-m.lr=1e-3", "pocket.n_entities=40"]`` -> ``{"ft-m": {"lr": "1e-3"}, ...}``."""
    parsed: dict[str, dict[str, str]] = {}
    for item in items:
        owner_key, sep, value = item.partition("=")
        owner, dot, key = owner_key.rpartition(".")
        if not sep or not dot or not owner or not key:
            raise ValueError(f"--param {item!r}: expected NAME.FIELD=VALUE, e.g. ft-m.lr=1e-3")
        parsed.setdefault(owner, {})[key] = value
    return parsed
