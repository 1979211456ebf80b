"""Name -> class registries for editing methods and tasks.

Modelled on lm-evaluation-harness's registry: a decorator registers built-ins, third-party
packages plug in through an entry-point group that is read lazily (only when a name is missing or
the full list is asked for), and an unknown name raises a KeyError that lists what *is* known.
One entry may declare itself the default (``register(name, default=True)``), so the application
that uses a registry never has to name a particular method or task.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of classes, filled by ``@registry.register("name")`` and entry points."""

    def __init__(self, kind: str, entry_point_group: str) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._items: dict[str, T] = {}
        self._plugins_loaded = False
        self._default: str | None = None

    def register(self, name: str, default: bool = False) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            self._check_name(name, obj)
            existing = self._items.get(name)
            if existing is not None and existing is not obj:
                raise ValueError(f"{self.kind} {name!r} is already registered by {existing!r}")
            if default:
                if self._default not in (None, name):
                    raise ValueError(f"{name!r} and {self._default!r} both declare themselves "
                                     f"the default {self.kind}")
                self._default = name
            self._items[name] = obj
            return obj

        return decorator

    def _check_name(self, name: str, obj: T) -> None:
        """A class that says its own name (``name = "..."``, as methods and tasks do) must be
        registered under it: the store, the reports and snapshots call it by that name."""
        if not isinstance(obj, type) or not any(
                "name" in vars(k) or "name" in vars(k).get("__annotations__", {})
                for k in obj.__mro__):
            return  # a class of a kind that does not name itself
        declared = getattr(obj, "name", None)
        if declared != name:
            raise ValueError(f"{self.kind} {name!r} is registered from {obj.__qualname__}, "
                             f"whose name is {declared!r}; set {obj.__qualname__}.name = {name!r}")

    def default(self) -> str:
        """The name of the entry that declared itself the default."""
        if self._default is None:
            raise KeyError(f"no {self.kind} is registered as the default; name one")
        return self._default

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in entry_points(group=self.entry_point_group):
            if ep.name in self._items:
                continue
            try:
                loaded = ep.load()
                self._check_name(ep.name, loaded)
                self._items[ep.name] = loaded
            except Exception as exc:
                # a broken plugin must not take the built-ins down with it; logged whole
                log.warning("could not load %s plugin %r from %s: %s", self.kind, ep.name,
                            ep.value, exc, exc_info=True)

    def get(self, name: str) -> T:
        if name not in self._items:
            self._load_plugins()
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "(none)"
            raise KeyError(f"unknown {self.kind} {name!r}; "
                           f"registered {self.kind}s: {known}") from None

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(self._items)

    def items(self) -> Iterator[tuple[str, T]]:
        for name in self.names():
            yield name, self._items[name]

    def __contains__(self, name: object) -> bool:
        if name not in self._items:
            self._load_plugins()
        return name in self._items
